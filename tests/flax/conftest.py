"""Flax tests: float64 available, full float32 matmuls on accelerators, and the layer's
default input path.

Every test module here switches ``jax_enable_x64`` on at import and runs float64 cases
against the float64 oracle; a run where x64 did not take effect fails every test with the
reason (never a quiet skip).

On a GPU, JAX computes float32 matmuls in TF32 by default (about 1e-3 relative), which the
suite's float32 tolerance (1e-5, ``support.TOL``) cannot take; every test here runs under
``jax.default_matmul_precision("highest")`` when JAX's default backend is not the CPU
(on the CPU float32 matmuls are full float32 already, and nothing is changed).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest


def _jax_backend() -> str | None:
    if importlib.util.find_spec("jax") is None:
        return None
    import jax

    return jax.default_backend()


@pytest.fixture(autouse=True)
def _float64_ready() -> None:
    """Fail, never skip, when jax cannot compute in float64 in this process."""
    if importlib.util.find_spec("jax") is None:
        return  # the module's framework("jax") skips, or fails under UNIRNN_REQUIRE
    import jax

    if not jax.config.read("jax_enable_x64"):
        pytest.fail("float64: the Flax tests compare float64 results with the float64 oracle "
                    "and need jax_enable_x64, which is off in this process (each module turns "
                    "it on with jax.config.update('jax_enable_x64', True) at import; set "
                    "JAX_ENABLE_X64=1 if something turned it off again)")


@pytest.fixture(autouse=True)
def _full_float32_matmuls() -> Iterator[None]:
    backend = _jax_backend()
    if backend in (None, "cpu"):
        yield
        return
    import jax

    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture
def default_kernel() -> str:
    """The path a layer built with default options runs, worked out here rather than asked
    of the library: the input GEMM inside each step on XLA:CPU, hoisted elsewhere."""
    return "unirnn-scan(input-per-step)" if _jax_backend() == "cpu" else "unirnn-scan"
