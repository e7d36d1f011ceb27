"""Flax tests: full float32 matmuls on accelerators, and the layer's default input path.

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
