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
from conftest import float64_ready, require_float64
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights

import unirnn

keras = framework("keras")
from unirnn.backends import keras as keras_backend_module  # noqa: E402
from unirnn.backends._keras_cell import KERAS_ACTIVATIONS  # noqa: E402
from unirnn.layouts.keras import native_problem  # noqa: E402

NATIVE = {"keras.layers.LSTM", "keras.layers.GRU", "keras.layers.SimpleRNN"}


def _flat(state):
    return np.concatenate([np.ravel(s) for s in (state if isinstance(state, tuple) else (state,))])


def _float64_tol(backend: str, kernel: str) -> float:
    if kernel in NATIVE and backend != "tensorflow":
        return TOL["float32"]  # Keras' own layers compute float64 in float32 on jax/torch
    return TOL["float64"]


def test_float64_auto_path_is_exact_on_every_backend(keras_backend):
    """Keras' own layers are float64-exact on tensorflow only; elsewhere auto takes the cell."""
    require_float64(keras_backend)
    layer = unirnn.build(unirnn.lstm(3, 4), backend="keras", dtype="float64")
    expected = "keras.layers.LSTM" if keras_backend == "tensorflow" else "unirnn.keras-cell"
    assert layer.kernel == expected


FLOAT64_ACTIVATION_SPECS = {
    "gru-gelu": unirnn.gru(3, 4, activation="gelu"),
    "lstm-leaky-0.2": unirnn.lstm(3, 4, activation="leaky_relu(0.2)"),
    "rnn-gelu": unirnn.rnn(3, 4, activation="gelu"),
    "gru-leaky-gates": unirnn.gru(3, 4, recurrent_activation="leaky_relu(0.2)"),
}


@pytest.mark.parametrize("name", list(FLOAT64_ACTIVATION_SPECS))
def test_float64_gelu_and_leaky_relu_are_exact(keras_backend, name):
    """Keras' own layers compute these specs, but TensorFlow's gelu and leaky_relu miss
    float64 (5e-9, 2e-8): in float64 `auto` takes the custom cell and `native` refuses."""
    require_float64(keras_backend)
    spec = FLOAT64_ACTIVATION_SPECS[name]
    assert native_problem(spec) is None  # Keras' layers express it (float32 runs there)
    weights = nonzero_weights(spec, scale=1.0)
    x, state, lengths = example_inputs(spec)
    result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           lengths=lengths, dtype="float64")
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert result.kernel == "unirnn.keras-cell"
    assert max_rel_error(result.outputs, ref_out) <= TOL["float64"]
    assert max_rel_error(_flat(result.state), _flat(ref_final)) <= TOL["float64"]
    with pytest.raises(ValueError, match=r"path='native'.*float64"):
        unirnn.build(spec, backend="keras", dtype="float64", path="native")
    assert unirnn.build(spec, backend="keras").kernel.startswith("keras.layers.")


def test_float64_inexact_set_is_tensorflows(keras_backend):
    """FLOAT64_INEXACT_ON_TENSORFLOW names exactly the mapped activations whose TensorFlow
    kernels miss the oracle's float64 formulas (the others are within 1e-14)."""
    if keras_backend != "tensorflow":
        pytest.skip("the set describes TensorFlow's kernels; Keras' own layers are not "
                    "used in float64 on jax or torch")
    from unirnn.layouts.keras import FLOAT64_INEXACT_ON_TENSORFLOW, KERAS_ACTIVATION_NAMES

    x = np.linspace(-7.0, 7.0, 20001)
    inexact = set()
    for name, keras_name in KERAS_ACTIVATION_NAMES.items():
        ref = oracle._activation(name)(x)
        got = keras.ops.convert_to_numpy(
            keras.activations.get(keras_name)(keras.ops.convert_to_tensor(x, "float64")))
        if max_rel_error(got, ref) > 1e-14:
            inexact.add(name)
    assert inexact == set(FLOAT64_INEXACT_ON_TENSORFLOW)


def test_native_float64_is_refused_where_keras_computes_float32(keras_backend):
    """Keras' own layers compute float64 in float32 on jax and torch: path='native' raises
    there, and to_keras in float64 gives the custom layer (auto) or raises (native)."""
    require_float64(keras_backend)
    spec = unirnn.gru(3, 4, bidirectional=True)
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    ref, _ = oracle.run(spec, weights, x, state, lengths)
    layer = unirnn.to_keras(spec, weights, dtype="float64")
    if keras_backend == "tensorflow":
        result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                               lengths=lengths, path="native")
        assert result.kernel == "keras.layers.GRU"
        assert max_rel_error(result.outputs, ref) <= TOL["float64"]
        assert isinstance(layer, keras.layers.Bidirectional)
        return
    message = (rf"path='native'.*dtype float64: Keras' own layers compute float64 in "
               rf"float32 on Keras' {keras_backend} backend")
    with pytest.raises(ValueError, match=message):
        unirnn.build(spec, backend="keras", dtype="float64", path="native")
    with pytest.raises(ValueError, match=message):
        unirnn.to_keras(spec, weights, dtype="float64", path="native")
    assert layer.kernel == "unirnn.keras-cell" and layer.compute_dtype == "float64"
    mask = np.arange(6)[None, :] < lengths[:, None]
    out = keras.ops.convert_to_numpy(layer(x, mask=mask, initial_state=[
        state[row] for row in range(2)]))
    assert max_rel_error(out, ref) <= TOL["float64"]


# (case, path): every case as unirnn.build picks it, and the custom cell forced on the
# cases Keras' own layers compute (elsewhere "auto" already is the custom cell).
PATH_CASES = [(name, "auto") for name in SPECS] + [
    (name, "custom") for name, spec in SPECS.items() if native_problem(spec) is None
]


@pytest.mark.parametrize("variant", ["plain", "state+lengths"])
@pytest.mark.parametrize(("name", "path"), PATH_CASES, ids=[f"{n}-{p}" for n, p in PATH_CASES])
def test_float64_matches_oracle(keras_backend, name, path, variant):
    spec = SPECS[name]
    require_float64(keras_backend)
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
    "rnn-nobias": "keras.layers.SimpleRNN",
    "lstm-nobias": "keras.layers.LSTM",
    "gru-nobias": "keras.layers.GRU",
    "gru-before-nobias-bidir": "keras.layers.GRU",
}
DISPATCH_SPECS = {
    **STANDARD,
    "seed-relu-lstm": unirnn.lstm(3, 64, activation="relu", recurrent_activation="sigmoid"),
    "gru-before": unirnn.gru(3, 4, reset="before"),
    "lstm-bidir-2layer": unirnn.lstm(3, 4, num_layers=2, bidirectional=True, dropout=0.2),
    "lstm-hard-sigmoid": unirnn.lstm(3, 4, recurrent_activation="hard_sigmoid"),
    "rnn-nobias": unirnn.rnn(3, 4, bias=False),
    "lstm-nobias": unirnn.lstm(3, 4, bias=False),
    "gru-nobias": unirnn.gru(3, 4, bias=False),
    "gru-before-nobias-bidir": unirnn.gru(3, 4, reset="before", bias=False, bidirectional=True),
}


@pytest.mark.parametrize("name", list(DISPATCH_SPECS))
def test_native_when_keras_expresses_it(keras_backend, name):
    spec = DISPATCH_SPECS[name]
    if name == "gru-nobias" and not _keras_gru_without_bias_runs():
        pytest.skip("Keras' own GRU(use_bias=False) fails here (jax with x64); "
                    "test_gru_without_bias_where_keras_fails covers it")
    weights = nonzero_weights(spec).astype(np.float32)
    layer = unirnn.build(spec, backend="keras", weights=weights)
    assert layer.kernel == EXPECTED_NATIVE[name]
    assert layer.resolved_path == "native" and layer.native_layers and not layer.cells
    for native in layer.native_layers:
        inner = native.forward_layer if spec.bidirectional else native
        assert inner.use_bias == spec.bias
    forced = unirnn.build(spec, backend="keras", path="custom", weights=weights)
    assert forced.kernel == "unirnn.keras-cell"
    x, _, _ = example_inputs(spec, with_state=False, with_lengths=False)
    ref, _ = oracle.run(spec, weights, x.astype(np.float32))
    for built in (layer, forced):
        out = keras.ops.convert_to_numpy(built(x.astype(np.float32)))
        assert max_rel_error(out, ref) <= TOL["float32"]


def _keras_gru_without_bias_runs() -> bool:
    layer = keras.layers.GRU(4, use_bias=False, return_sequences=True)
    try:
        layer(np.zeros((2, 5, 3), np.float32))
    except Exception:  # Keras' jax GRU kernel: a float64 zero bias under x64
        return False
    return True


def test_gru_without_bias_where_keras_fails(keras_backend):
    """unirnn takes Keras' GRU(use_bias=False) exactly where it runs (on jax with x64 its
    fused kernel adds a float64 zero bias and fails); otherwise the custom cell, same numbers."""
    spec = unirnn.gru(3, 4, bias=False)
    runs = _keras_gru_without_bias_runs()
    assert runs == (keras_backend != "jax" or not float64_ready(keras_backend))
    weights = nonzero_weights(spec).astype(np.float32)
    layer = unirnn.build(spec, backend="keras", weights=weights)
    assert layer.kernel == ("keras.layers.GRU" if runs else "unirnn.keras-cell")
    x, _, _ = example_inputs(spec, with_state=False, with_lengths=False)
    ref, _ = oracle.run(spec, weights, x.astype(np.float32))
    out = keras.ops.convert_to_numpy(layer(x.astype(np.float32)))
    assert max_rel_error(out, ref) <= TOL["float32"]
    if not runs:
        with pytest.raises(ValueError, match="bias=False with reset='after'"):
            unirnn.build(spec, backend="keras", path="native")


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
def test_activation_matches_oracle(keras_backend, name, dtype):
    if dtype == "float64":
        require_float64(keras_backend)
    from unirnn._activations import parse_activation, resolve_activation

    x = np.linspace(-7.0, 7.0, 2001).astype(dtype)
    ours = resolve_activation(name, "keras", KERAS_ACTIVATIONS)
    ref = oracle._activation(str(parse_activation(name)))(x.astype(np.float64))
    got = keras.ops.convert_to_numpy(ours(keras.ops.convert_to_tensor(x)))
    assert got.dtype == np.dtype(dtype)
    assert max_rel_error(got, ref) <= (1e-14 if dtype == "float64" else 1e-6)


def test_registered_activation_runs_in_the_custom_cell(keras_backend, monkeypatch):
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
    oracle_activation = oracle._activation
    monkeypatch.setattr(oracle, "_activation", lambda text, xp=np: (
        lambda v: 1.5 * np.tanh(v)) if text.startswith("keras_test_scaled_tanh")
        else oracle_activation(text, xp))
    expected, _ = oracle.run(spec, weights, x, state, lengths)
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
