"""port() keeps a Keras layer's interface, unirnn's Keras cell module, float64 from float32
weights: judged by Keras' own layers and the float64 oracle, on this process' backend."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from conftest import require_float64
from support import framework, max_rel_error, nonzero_weights

import unirnn

keras = framework("keras")

X = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")


def _np(value):
    if isinstance(value, (list, tuple)):
        return [_np(v) for v in value]
    return np.asarray(keras.ops.convert_to_numpy(value), np.float64)


def _built(layer):
    want = layer(X)
    return layer, want


def _assert_same(got, want, tol=1e-5):
    got, want = _np(got), _np(want)
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            assert max_rel_error(g, w) <= tol
    else:
        assert max_rel_error(got, want) <= tol


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.layers.LSTM(4),  # return_sequences=False: Keras' default
        lambda: keras.layers.GRU(4, return_sequences=True, return_state=True),
        lambda: keras.layers.SimpleRNN(4, go_backwards=True, return_sequences=True),
        lambda: keras.layers.GRU(4, unroll=True, return_sequences=True),
        lambda: keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True),
                                           merge_mode="sum"),
        lambda: keras.layers.Bidirectional(keras.layers.GRU(4), merge_mode=None),
    ],
    ids=["return_sequences-False", "return_state", "go_backwards", "unroll", "merge_mode-sum",
         "merge_mode-None"],
)
def test_port_to_keras_keeps_the_interface(make, keras_backend):
    layer, want = _built(make())
    ported = unirnn.port(layer, to="keras")
    _assert_same(ported(X), want)


def test_recurrent_dropout_is_carried_not_dropped(keras_backend):
    layer, want = _built(keras.layers.LSTM(4, recurrent_dropout=0.3, dropout=0.2,
                                           return_sequences=True))
    with pytest.raises(unirnn.SpecError, match=r"recurrent_dropout=0.3 is not part of a "
                       r"unirnn spec.*drop=\['recurrent_dropout'\]"):
        unirnn.from_keras(layer)
    spec, _ = unirnn.from_keras(layer, drop=["recurrent_dropout", "dropout"])
    assert spec == unirnn.lstm(3, 4)
    ported = unirnn.port(layer, to="keras")
    assert ported.interface.recurrent_dropout == 0.3 and ported.interface.input_dropout == 0.2
    inner = ported.native_layers[0]
    assert inner.recurrent_dropout == 0.3 and inner.dropout == 0.2
    _assert_same(ported(X, training=False), want)


def test_dropout_on_custom_cell_is_refused(keras_backend):
    with pytest.raises(unirnn.SpecError, match=r"recurrent_dropout=0.2: only Keras' own layers"):
        unirnn.build(unirnn.gru(3, 4, activations={"z": "gelu"}), backend="keras",
                     recurrent_dropout=0.2)


def test_stateful_is_carried(keras_backend):
    layer = keras.layers.GRU(4, stateful=True, return_sequences=True)
    layer.build((2, 5, 3))
    ported = unirnn.port(layer, to="keras")
    assert ported.interface.stateful and ported.interface.batch_size == 2
    for _ in range(2):  # the second call starts from the first call's final state
        _assert_same(ported(X), layer(X))
    ported.reset_state()
    layer.reset_state()
    _assert_same(ported(X), layer(X))
    with pytest.raises(unirnn.SpecError, match=r"stateful=True: Keras' own layers keep"):
        unirnn.build(unirnn.gru(3, 4, update="new"), backend="keras", stateful=True,
                     batch_size=2)


def test_unirnn_layer_options_survive_its_config(keras_backend):
    spec = unirnn.gru(3, 4, bidirectional=True)
    layer = unirnn.build(spec, backend="keras", merge_mode="mul", return_sequences=False)
    clone = type(layer).from_config(layer.get_config())
    assert clone.interface == layer.interface
    again = unirnn.port(layer, to="keras")
    assert again.interface.merge_mode == "mul" and not again.return_sequences


def test_cell_module_in_keras_rnn(keras_backend):
    spec = unirnn.lstm(3, 4, activation="relu", peepholes=True)
    weights = nonzero_weights(spec, seed=3)
    cell = unirnn.build(spec, backend="keras", module="cell", weights=weights)
    assert type(cell).__name__ == "UniRNNCell"
    got = keras.layers.RNN(cell, return_sequences=True)(X)
    want, _ = oracle.run(spec, weights, X)
    assert max_rel_error(_np(got), want) <= 1e-5


@pytest.mark.parametrize("spec", [unirnn.lstm(3, 4), unirnn.gru(3, 4, reset="before")],
                         ids=["lstm", "gru-before"])
def test_float64_from_float32_weights(spec, keras_backend):
    """Keras' one-bias layers fold b_x + b_h: in float64 when the layer is float64."""
    require_float64(keras_backend)
    weights = nonzero_weights(spec, seed=6).astype(np.float32)
    x = X.astype(np.float64)
    want, _ = oracle.run(spec, weights, x)
    layer = unirnn.build(spec, backend="keras", weights=weights, dtype="float64")
    assert max_rel_error(_np(layer(x)), want) <= 1e-12
    if keras_backend == "tensorflow":  # Keras' own layers compute float64 there
        assert layer.kernel.startswith("keras.layers.")
        native = unirnn.to_keras(spec, weights, dtype="float64")
        assert max_rel_error(_np(native(x)), want) <= 1e-12


def test_weights_file_without_spec_says_what_was_assumed(tmp_path, keras_backend):
    layer = keras.layers.LSTM(4, activation="relu")
    model = keras.Sequential([keras.Input((None, 3)), layer])
    path = tmp_path / "plain.weights.h5"
    model.save_weights(path)
    read = unirnn.from_keras(str(path))
    assert read.spec == unirnn.lstm(3, 4) and "stores no activations" in read.assumed
    spec = unirnn.lstm(3, 4, activation="relu")
    assert unirnn.from_keras(str(path), spec=spec).assumed is None


def test_from_gates_takes_keras_dense_layers(keras_backend):
    """A hand-written Keras cell with one Dense per gate and side ((in, out) kernels)."""
    spec = unirnn.gru(3, 4, reset="before")
    dense = {(g, side): keras.layers.Dense(4, use_bias=side == "x") for g in "zrh"
             for side in "xh"}
    for (_, side), layer in dense.items():
        layer.build((None, 3 if side == "x" else 4))
        layer.set_weights([0.5 * w + 0.1 for w in layer.get_weights()])
    weights = unirnn.from_gates(spec, {g: {"w_x": dense[g, "x"], "w_h": dense[g, "h"]}
                                       for g in "zrh"})
    x = X[:, 0]
    h0 = np.full((2, 4), 0.3, np.float32)
    h = keras.ops.convert_to_tensor(h0)
    z = keras.ops.sigmoid(dense["z", "x"](x) + dense["z", "h"](h))
    r = keras.ops.sigmoid(dense["r", "x"](x) + dense["r", "h"](h))
    n = keras.ops.tanh(dense["h", "x"](x) + dense["h", "h"](r * h))
    want = z * h + (1 - z) * n
    got, _ = oracle.run(spec, weights, x[:, None], initial_state=h0[None])
    assert max_rel_error(got[:, 0], _np(want)) <= 1e-5
