"""The Keras backend against the independent float64 oracle (tests/oracle.py).

Every case of tests/cases.py, on the path ``unirnn.build`` picks (``auto``: Keras' own
layer where it computes the spec) and on the forced custom cell, float64 to 1e-10 and
float32 to 1e-5. (Keras' *own* layers compute float64 in float32 on the jax and torch
backends, Keras 3's ``BIT64_TO_BIT32_DTYPE`` promotion, so ``auto`` takes the custom cell
there in float64; ``_float64_tol`` would allow for it should Keras be chosen anyway.)
"""

from __future__ import annotations

import re

import numpy as np
import oracle
import pytest
from cases import SPECS, STANDARD
from conftest import float64_ready
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights

import unirnn

keras = framework("keras")
from unirnn.backends import keras as keras_backend_module  # noqa: E402
from unirnn.backends._keras_cell import KERAS_ACTIVATIONS  # noqa: E402
from unirnn.backends._keras_layout import native_problem  # noqa: E402

NATIVE = {"keras.layers.LSTM", "keras.layers.GRU", "keras.layers.SimpleRNN"}


def _flat(state):
    return np.concatenate([np.ravel(s) for s in (state if isinstance(state, tuple) else (state,))])


def _float64_tol(backend: str, kernel: str) -> float:
    if kernel in NATIVE and backend != "tensorflow":
        return TOL["float32"]  # Keras' own layers compute float64 in float32 on jax/torch
    return TOL["float64"]


def test_float64_auto_path_is_exact_on_every_backend(keras_backend):
    """Keras' own layers are float64-exact on tensorflow only; elsewhere auto takes the cell."""
    if not float64_ready(keras_backend):
        pytest.skip("jax without x64")
    layer = unirnn.build(unirnn.lstm(3, 4), backend="keras", dtype="float64")
    expected = "keras.layers.LSTM" if keras_backend == "tensorflow" else "unirnn.keras-cell"
    assert layer.kernel == expected


# (case, path): every case as unirnn.build picks it, and the custom cell forced on the
# cases Keras' own layers compute (elsewhere "auto" already is the custom cell).
PATH_CASES = [(name, "auto") for name in SPECS] + [
    (name, "custom") for name, spec in SPECS.items() if native_problem(spec) is None
]


@pytest.mark.parametrize("variant", ["plain", "state+lengths"])
@pytest.mark.parametrize(("name", "path"), PATH_CASES, ids=[f"{n}-{p}" for n, p in PATH_CASES])
def test_float64_matches_oracle(keras_backend, name, path, variant):
    spec = SPECS[name]
    if not float64_ready(keras_backend):
        pytest.skip("jax was imported without x64 before this module; run tests/keras alone")
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, with_state=variant != "plain",
                                       with_lengths=variant != "plain")
    result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           lengths=lengths, dtype="float64", path=path)
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert result.outputs.dtype == np.float64
    assert result.outputs.shape == ref_out.shape
    tol = _float64_tol(keras_backend, result.kernel)
    assert max_rel_error(result.outputs, ref_out) <= tol
    assert max_rel_error(_flat(result.state), _flat(ref_final)) <= tol


@pytest.mark.parametrize(("name", "path"), PATH_CASES, ids=[f"{n}-{p}" for n, p in PATH_CASES])
def test_float32_matches_oracle(keras_backend, name, path):
    spec = SPECS[name]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    result = keras_backend_module.evaluate(spec, weights.astype(np.float32), x,
                                           initial_state=state, lengths=lengths,
                                           dtype="float32", path=path)
    ref_out, ref_final = oracle.run(spec, weights.astype(np.float32), x, state, lengths)
    assert result.outputs.dtype == np.float32
    assert max_rel_error(result.outputs, ref_out) <= TOL["float32"]
    assert max_rel_error(_flat(result.state), _flat(ref_final)) <= TOL["float32"]


EXPECTED_NATIVE = {
    **{name: f"keras.layers.{ {'rnn': 'SimpleRNN', 'lstm': 'LSTM', 'gru': 'GRU'}[s.family]}"
       for name, s in STANDARD.items()},
    "seed-relu-lstm": "keras.layers.LSTM",
    "gru-before": "keras.layers.GRU",
    "lstm-bidir-2layer": "keras.layers.LSTM",
    "lstm-hard-sigmoid": "keras.layers.LSTM",
}
DISPATCH_SPECS = {
    **STANDARD,
    "seed-relu-lstm": unirnn.lstm(3, 64, activation="relu", recurrent_activation="sigmoid"),
    "gru-before": unirnn.gru(3, 4, reset="before"),
    "lstm-bidir-2layer": unirnn.lstm(3, 4, num_layers=2, bidirectional=True, dropout=0.2),
    "lstm-hard-sigmoid": unirnn.lstm(3, 4, recurrent_activation="hard_sigmoid"),
}


@pytest.mark.parametrize("name", list(DISPATCH_SPECS))
def test_native_when_keras_expresses_it(keras_backend, name):
    layer = unirnn.build(DISPATCH_SPECS[name], backend="keras")
    assert layer.kernel == EXPECTED_NATIVE[name]
    assert layer.native_layers and not layer.cells
    forced = unirnn.build(DISPATCH_SPECS[name], backend="keras", path="custom")
    assert forced.kernel == "unirnn.keras-cell"


CUSTOM_ONLY = {
    "gru-gelu-z": ("r and z differ", SPECS["gru-gelu-z"]),
    "lstm-peephole-clip": ("peepholes", SPECS["lstm-peephole-clip"]),
    "lstm-proj": ("proj_size", unirnn.lstm(3, 5, proj_size=2)),
    "lstm-clip": ("cell_clip", unirnn.lstm(3, 4, cell_clip=1.0)),
    "gru-new": ("update='new'", unirnn.gru(3, 4, update="new")),
    "lstm-g-c-differ": ("g and c differ", unirnn.lstm(3, 4, activations={"c": "relu"})),
    "lstm-gates-differ": ("i, f, o differ", unirnn.lstm(3, 4, activations={"f": "relu"})),
    "gru-leaky-0.01": ("activations['n']", unirnn.gru(3, 4, activation="leaky_relu")),
    "rnn-gelu-tanh": ("activations['h']", unirnn.rnn(3, 4, activation="gelu_tanh")),
}


@pytest.mark.parametrize("name", list(CUSTOM_ONLY))
def test_custom_cell_otherwise_and_native_refuses(keras_backend, name):
    field, spec = CUSTOM_ONLY[name]
    assert unirnn.build(spec, backend="keras").kernel == "unirnn.keras-cell"
    with pytest.raises(ValueError, match=r"path='native'.*" + re.escape(field)):
        unirnn.build(spec, backend="keras", path="native")


PARAMETRISED = ["hard_sigmoid(0.2, 0.5)", "elu(0.5)", "leaky_relu(0.2)", "leaky_relu(0.3)"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(unirnn._activations.BUILTIN_NAMES) + PARAMETRISED)
def test_activation_matches_numpy_reference(keras_backend, name, dtype):
    if dtype == "float64" and not float64_ready(keras_backend):
        pytest.skip("jax without x64")
    from unirnn._activations import NUMPY_ACTIVATIONS, resolve_activation

    x = np.linspace(-7.0, 7.0, 2001).astype(dtype)
    ours = resolve_activation(name, "keras", KERAS_ACTIVATIONS)
    ref = resolve_activation(name, "numpy", NUMPY_ACTIVATIONS)(x.astype(np.float64))
    got = keras.ops.convert_to_numpy(ours(keras.ops.convert_to_tensor(x)))
    assert got.dtype == np.dtype(dtype)
    assert max_rel_error(got, ref) <= (1e-14 if dtype == "float64" else 1e-6)


def test_registered_activation_runs_in_the_custom_cell(keras_backend):
    unirnn.register_activation(
        "keras_test_scaled_tanh",
        numpy=lambda x, a: a * np.tanh(x),
        keras=lambda x, a: a * keras.ops.tanh(x),
        params={"a": 1.7159},
        overwrite=True,
    )
    spec = unirnn.gru(3, 4, activations={"n": "keras_test_scaled_tanh(1.5)"})
    weights = nonzero_weights(spec).astype(np.float32)
    x, state, lengths = example_inputs(spec)
    result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           lengths=lengths, dtype="float32")
    assert result.kernel == "unirnn.keras-cell"
    expected, _ = unirnn.build(spec, backend="numpy", weights=weights, dtype=np.float64)(
        x, initial_state=state, lengths=lengths)
    assert max_rel_error(result.outputs, expected) <= TOL["float32"]


def test_registered_activation_without_keras_implementation_is_refused(keras_backend):
    unirnn.register_activation("keras_test_numpy_only", numpy=np.tanh, overwrite=True)
    spec = unirnn.rnn(3, 4, activation="keras_test_numpy_only")
    with pytest.raises(ValueError, match="no 'keras' implementation"):
        unirnn.build(spec, backend="keras")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": np.zeros((2, 5))}, "rank-3"),
        ({"x": np.zeros((2, 5, 4))}, "expected 3 features"),
        ({"x": np.zeros((2, 5, 3)), "lengths": [5, 0]}, r"\[1, 5\]"),
        ({"x": np.zeros((2, 5, 3)), "initial_state": np.zeros((2, 2, 4))}, "h0"),
        ({"x": np.zeros((2, 5, 3)), "dtype": "int32"}, "float32 or float64"),
    ],
    ids=["rank", "features", "lengths", "state-shape", "dtype"],
)
def test_evaluate_rejects_bad_input(keras_backend, kwargs, message):
    spec = unirnn.gru(3, 4)
    with pytest.raises(ValueError, match=message):
        keras_backend_module.evaluate(spec, unirnn.init_weights(spec), **kwargs)


def test_build_rejects_unknown_path(keras_backend):
    with pytest.raises(ValueError, match="path: expected one of auto, native, custom"):
        unirnn.build(unirnn.gru(3, 4), backend="keras", path="fast")
