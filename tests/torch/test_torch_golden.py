"""Golden values (tests/golden.py) on the torch backend, fused kernel and custom path."""

from __future__ import annotations

import importlib

import pytest
from golden import CASES, IDS, assert_golden
from support import framework

framework("torch")
torch_backend = importlib.import_module("unirnn.backends.torch")


@pytest.mark.parametrize("path", ["auto", "custom"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden_torch(case, path):
    assert_golden(torch_backend.evaluate, case, path=path)
