"""Every built-in activation in torch against the registry's numpy reference."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from support import framework

import unirnn
from unirnn._activations import BUILTIN_NAMES, NUMPY_ACTIVATIONS, parse_activation

torch = framework("torch")
torch_backend = importlib.import_module("unirnn.backends.torch")

CASES = [*BUILTIN_NAMES, "hard_sigmoid(0.2, 0.5)", "leaky_relu(0.3)", "elu(0.5)"]
X = np.concatenate([np.linspace(-30.0, 30.0, 601), [-3.0, 0.0, 3.0, 2.5, -2.5]])


@pytest.mark.parametrize("name", CASES)
def test_builtin_matches_numpy_reference(name):
    act = parse_activation(name)
    reference = NUMPY_ACTIVATIONS[act.name](X, *act.args)
    actual = torch_backend.TorchOps().activation(name)(torch.tensor(X)).numpy()
    np.testing.assert_allclose(actual, reference, rtol=1e-12, atol=1e-14)


def test_every_builtin_has_a_torch_implementation():
    assert set(torch_backend.TORCH_ACTIVATIONS) == set(BUILTIN_NAMES)


def test_hard_sigmoid_default_is_torch_hardsigmoid():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(torch_backend.TorchOps().activation("hard_sigmoid")(x),
                               torch.nn.functional.hardsigmoid(x))


def test_registered_activation_is_used():
    unirnn.register_activation("scaled_tanh_torch_test", numpy=lambda x, a: a * np.tanh(x),
                               torch=lambda x, a: a * torch.tanh(x), params={"a": 1.5},
                               overwrite=True)
    spec = unirnn.gru(2, 3, activations={"n": "scaled_tanh_torch_test(1.7)"})
    weights = unirnn.init_weights(spec, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 4, 2))
    expected = unirnn.build(spec, backend="numpy", weights=weights, dtype=np.float64)(x)[0]
    actual = torch_backend.evaluate(spec, weights, x).outputs
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


def test_activation_without_torch_implementation_is_a_clear_error():
    unirnn.register_activation("numpy_only_torch_test", numpy=np.tanh, overwrite=True)
    spec = unirnn.rnn(2, 3, activation="numpy_only_torch_test")
    with pytest.raises(ValueError, match="no 'torch' implementation"):
        unirnn.build(spec, backend="torch")
