"""Golden values (tests/golden.py) on the Flax backend, float64, linen and nnx, with the
input GEMM hoisted and per step."""

from __future__ import annotations

import importlib

import pytest
from golden import CASES, IDS, assert_golden
from support import framework

jax = framework("jax")
framework("flax")
jax.config.update("jax_enable_x64", True)
flax_backend = importlib.import_module("unirnn.backends.flax")


@pytest.mark.parametrize("hoist_input", [True, False], ids=["hoisted", "input-per-step"])
@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden_flax(case, api, hoist_input):
    assert_golden(flax_backend.evaluate, case, api=api, hoist_input=hoist_input)
