"""Test support shared by every backend's tests: backend presence, tolerances, inputs."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

REQUIRED = {name.strip() for name in os.environ.get("UNIRNN_REQUIRE", "").split(",") if name}
"""Frameworks this run must have (set by the nox sessions and CI): missing ones fail."""


def framework(name: str):
    """Import a framework, or skip; when the run requires it (``UNIRNN_REQUIRE``), fail."""
    if name in REQUIRED:
        try:
            return importlib.import_module(name)
        except ImportError as err:
            pytest.fail(f"{name} is required in this run (UNIRNN_REQUIRE) but missing: {err}")
    return pytest.importorskip(name)


def max_rel_error(actual, expected) -> float:
    """max |actual - expected| divided by the output scale max(1, max |expected|)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


TOL = {"float64": 1e-10, "float32": 1e-5}
"""DESIGN.md's tolerances against the float64 oracle (relative to the output scale)."""


def example_inputs(spec, batch=3, steps=6, seed=0, with_state=True, with_lengths=True):
    """Inputs with non-zero initial state and ragged lengths (longest = T)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, spec.input_size))
    rows = spec.num_layers * spec.num_directions
    state = None
    if with_state:
        h0 = 0.5 * rng.standard_normal((rows, batch, spec.output_size))
        if spec.has_cell_state:
            state = (h0, 0.5 * rng.standard_normal((rows, batch, spec.hidden_size)))
        else:
            state = h0
    lengths = None
    if with_lengths:
        lengths = rng.integers(1, steps + 1, size=batch)
        lengths[0] = steps
    return x, state, lengths


def directional_gradient_error(spec, weights, x, state, lengths, cotangent, grads, rng=0,
                               eps=1e-6, directions=2):
    """``grads`` (of ``sum(outputs * cotangent)`` w.r.t. ``"x"`` and every weight) against
    central differences of the float64 oracle along random directions of all of them at
    once: the worst error relative to ``max(1, |numeric|)``."""
    import oracle

    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng

    def loss(w, inputs):
        return float((oracle.run(spec, w, inputs, state, lengths)[0] * cotangent).sum())

    worst = 0.0
    for _ in range(directions):
        v = {k: rng.standard_normal(np.shape(a)) for k, a in weights.items()}
        vx = rng.standard_normal(x.shape)
        plus = loss({k: weights[k] + eps * v[k] for k in weights}, x + eps * vx)
        minus = loss({k: weights[k] - eps * v[k] for k in weights}, x - eps * vx)
        numeric = (plus - minus) / (2 * eps)
        analytic = sum(float((grads[k] * v[k]).sum()) for k in weights)
        analytic += float((grads["x"] * vx).sum())
        worst = max(worst, abs(numeric - analytic) / max(1.0, abs(numeric)))
    return worst


def nonzero_weights(spec, seed=0, scale=0.6):
    """Canonical float64 weights with every tensor, biases included, non-zero and O(1)."""
    import unirnn

    rng = np.random.default_rng(seed)
    return unirnn.Weights(
        {
            name: scale * rng.uniform(-1, 1, size=shape)
            for name, shape in unirnn.weight_shapes(spec).items()
        }
    )


def run_keras_python(code, keras_backend, cwd):
    """Run ``code`` in a fresh Python process with Keras on ``keras_backend``; its stdout."""
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": keras_backend, "JAX_ENABLE_X64": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=cwd, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
