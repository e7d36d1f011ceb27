"""Golden values (tests/golden.py) on the Keras backend, float64, on the path ``auto`` picks
and on the forced custom cell (on jax and torch float64 is the custom cell either way)."""

from __future__ import annotations

import pytest
from conftest import require_float64
from golden import CASES, IDS, assert_golden
from support import framework

keras = framework("keras")
from unirnn.backends import keras as keras_backend_module  # noqa: E402


@pytest.mark.parametrize("path", ["auto", "custom"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden_keras(keras_backend, case, path):
    require_float64(keras_backend)
    assert_golden(keras_backend_module.evaluate, case, path=path)
