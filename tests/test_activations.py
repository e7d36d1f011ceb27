"""The activation registry: each built-in against its formula, parameters, registration."""

from __future__ import annotations

import math

import numpy as np
import pytest

import unirnn
from unirnn._activations import NUMPY_ACTIVATIONS, parse_activation, resolve_activation

X = np.linspace(-6, 6, 49)


def _numpy(name):
    return resolve_activation(name, "numpy", NUMPY_ACTIVATIONS)


# Reference values from the formulas, computed point by point with math.
EXPECTED = {
    "sigmoid": lambda v: 1 / (1 + math.exp(-v)),
    "tanh": math.tanh,
    "relu": lambda v: max(v, 0.0),
    "identity": lambda v: v,
    "gelu": lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))),
    "gelu_tanh": lambda v: 0.5 * v * (
        1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))
    ),
    "silu": lambda v: v / (1 + math.exp(-v)),
    "hard_sigmoid": lambda v: min(max(v / 6 + 0.5, 0.0), 1.0),
    "hard_sigmoid(0.2, 0.5)": lambda v: min(max(0.2 * v + 0.5, 0.0), 1.0),
    "softsign": lambda v: v / (1 + abs(v)),
    "softplus": lambda v: math.log(1 + math.exp(v)),
    "elu": lambda v: v if v > 0 else math.exp(v) - 1,
    "elu(0.5)": lambda v: v if v > 0 else 0.5 * (math.exp(v) - 1),
    "leaky_relu": lambda v: v if v >= 0 else 0.01 * v,
    "leaky_relu(0.2)": lambda v: v if v >= 0 else 0.2 * v,
    "min_g": lambda v: v + 0.5 if v >= 0 else 1 / (1 + math.exp(-v)),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_builtin_matches_formula(name):
    expected = np.array([EXPECTED[name](v) for v in X])
    np.testing.assert_allclose(_numpy(name)(X), expected, rtol=1e-14, atol=1e-15)


def test_every_builtin_has_a_reference_here():
    from unirnn._activations import BUILTIN_NAMES

    assert set(BUILTIN_NAMES) <= {n.split("(")[0] for n in EXPECTED}


def test_float32_stays_float32():
    for name in NUMPY_ACTIVATIONS:
        assert _numpy(name)(X.astype(np.float32)).dtype == np.float32, name


def test_parse():
    assert parse_activation("leaky_relu").args == (0.01,)
    assert str(parse_activation("hard_sigmoid(0.2, 0.5)")) == "hard_sigmoid(0.2, 0.5)"
    assert str(parse_activation("hard_sigmoid(0.16666666666666666, 0.5)")) == "hard_sigmoid"


def test_register_user_activation():
    unirnn.register_activation(
        "test_scaled_tanh", numpy=lambda x, a: a * np.tanh(x), params={"a": 1.0},
        formula="a * tanh(x)", overwrite=True,
    )
    spec = unirnn.gru(2, 3, activations={"n": "test_scaled_tanh(2.0)"})
    f = resolve_activation(spec.activations["n"], "numpy", NUMPY_ACTIVATIONS)
    np.testing.assert_allclose(f(X), 2.0 * np.tanh(X))
    assert "test_scaled_tanh" in unirnn.activation_names()
    # a spec using it stays serialisable by name
    assert unirnn.Spec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="has no 'torch' implementation"):
        resolve_activation("test_scaled_tanh", "torch", {})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(name="tanh", numpy=np.tanh), "built-in"),
        (dict(name="bad name", numpy=np.tanh), "identifier"),
        (dict(name="ok_name", numpy=3), "must be callable"),
    ],
    ids=["builtin", "bad-name", "not-callable"],
)
def test_register_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        unirnn.register_activation(**kwargs)


def test_register_twice_needs_overwrite():
    unirnn.register_activation("test_twice", numpy=np.tanh, overwrite=True)
    with pytest.raises(ValueError, match="already registered"):
        unirnn.register_activation("test_twice", numpy=np.tanh)
