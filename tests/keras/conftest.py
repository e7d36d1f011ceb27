"""Keras tests run once per Keras backend (one per process: ``KERAS_BACKEND``).

float64 on Keras' jax backend needs x64, which jax reads when it is first imported, so it
is switched on here, before any test module imports keras.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("JAX_ENABLE_X64", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

KERAS_BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


@pytest.fixture(params=[KERAS_BACKEND], ids=[f"keras-{KERAS_BACKEND}"])
def keras_backend(request) -> str:
    """The Keras backend of this process (named in every test id that uses it)."""
    from support import framework

    keras = framework("keras")
    assert keras.backend.backend() == request.param
    return request.param


def float64_ready(backend: str) -> bool:
    """Whether this process can compute float64 on ``backend`` (jax: x64 switched on)."""
    if backend != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


def require_float64(backend: str) -> None:
    """Fail, never skip, a float64 test this process cannot run (jax imported without x64)."""
    if not float64_ready(backend):
        pytest.fail("float64 on Keras' jax backend needs x64, but jax was imported without "
                    "it before tests/keras/conftest.py set JAX_ENABLE_X64=1; run tests/keras "
                    "in a process of its own (or set JAX_ENABLE_X64=1)")
