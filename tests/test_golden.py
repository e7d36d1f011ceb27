"""Golden values (tests/golden.py) on the numpy backend; each framework's tests assert the
same constants on its own backend."""

from __future__ import annotations

import pytest
from golden import CASES, IDS, assert_golden

from unirnn.backends import numpy as numpy_backend


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden_numpy(case):
    assert_golden(numpy_backend.evaluate, case)
