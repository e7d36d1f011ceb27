"""Gradients of the Keras backend against finite differences of the float64 oracle.

``evaluate(..., cotangent=c)`` gives d sum(outputs * c) for ``x`` and every canonical
weight; they are held to central differences of tests/oracle.py along random directions
(one directional derivative covers all tensors at once). Runs on every Keras backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import SPECS
from conftest import require_float64
from support import directional_gradient_error, example_inputs, framework, nonzero_weights

import unirnn

keras = framework("keras")
from unirnn.backends import keras as keras_backend_module  # noqa: E402

CASES = ["lstm", "gru-before", "rnn-2layer-bidir", "lstm-peephole-clip",
         "lstm-proj-bidir-2layer", "gru-gelu-z"]


@pytest.mark.parametrize("name", CASES)
def test_gradients_match_finite_differences(keras_backend, name):
    require_float64(keras_backend)
    spec = SPECS[name]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    cotangent = np.random.default_rng(7).standard_normal(
        (x.shape[0], x.shape[1], spec.num_directions * spec.output_size))
    result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           lengths=lengths, cotangent=cotangent)
    assert set(result.grads) == {"x", *unirnn.weight_shapes(spec)}
    for key, shape in unirnn.weight_shapes(spec).items():
        assert result.grads[key].shape == shape
    assert directional_gradient_error(spec, weights, x, state, lengths, cotangent,
                                      result.grads) <= 1e-7


def test_native_and_custom_gradients_agree(keras_backend):
    """Keras' own GRU (float32) and the custom cell give the same canonical gradients,
    the one-bias fold included (reset before: Keras' bias is b_x + b_h)."""
    spec = unirnn.gru(3, 4, reset="before", bidirectional=True)
    weights = nonzero_weights(spec).astype(np.float32)
    x, state, lengths = example_inputs(spec)
    cotangent = np.random.default_rng(8).standard_normal((3, 6, 8))
    native = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           lengths=lengths, cotangent=cotangent,
                                           dtype="float32", path="native")
    custom = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           lengths=lengths, cotangent=cotangent,
                                           dtype="float32", path="custom")
    assert native.kernel == "keras.layers.GRU" and custom.kernel == "unirnn.keras-cell"
    for key, value in custom.grads.items():
        scale = max(1.0, float(np.abs(value).max()))
        assert float(np.abs(native.grads[key] - value).max()) / scale <= 1e-4, key
