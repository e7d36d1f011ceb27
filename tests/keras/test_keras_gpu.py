"""GPU checks: run when the Keras backend sees a GPU, skip cleanly otherwise."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights

import unirnn

keras = framework("keras")
from unirnn.backends import keras as keras_backend_module  # noqa: E402


def _keras_sees_gpu() -> bool:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


requires_gpu = pytest.mark.skipif(not _keras_sees_gpu(), reason="Keras' backend sees no GPU")


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("path", ["auto", "custom"])
@pytest.mark.parametrize("name", ["lstm", "gru", "gru-gelu-z"])
def test_gpu_matches_oracle(keras_backend, name, path):
    spec = {"lstm": unirnn.lstm(8, 16), "gru": unirnn.gru(8, 16, bidirectional=True),
            "gru-gelu-z": unirnn.gru(8, 16, activations={"z": "gelu"})}[name]
    weights = nonzero_weights(spec, scale=0.3).astype(np.float32)
    x, state, _ = example_inputs(spec, batch=4, steps=6, with_lengths=False)
    result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           dtype="float32", path=path)
    ref, _ = oracle.run(spec, weights, x, state)
    # GPU matmuls may use TF32; hold them to a float32-on-GPU tolerance.
    assert max_rel_error(result.outputs, ref) <= 1e-3
    if path == "custom":  # unirnn's cell computes in float32 as on CPU, TF32 aside
        assert max_rel_error(result.outputs, ref) <= 100 * TOL["float32"]
