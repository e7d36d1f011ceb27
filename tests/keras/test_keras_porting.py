"""Weights to and from Keras' own layers and files, checked against Keras itself and the oracle."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from support import TOL, framework, max_rel_error, nonzero_weights

import unirnn
from unirnn.layouts.keras import native_problem

keras = framework("keras")

# name -> a function building Keras' own layer (built, randomly initialised by Keras)
KERAS_LAYERS = {
    "LSTM": lambda: keras.layers.LSTM(4, return_sequences=True),
    "LSTM-relu-seed": lambda: keras.layers.LSTM(4, activation="relu",
                                                recurrent_activation="sigmoid",
                                                return_sequences=True),
    "LSTM-nobias-hardsig": lambda: keras.layers.LSTM(4, use_bias=False,
                                                     recurrent_activation="hard_sigmoid",
                                                     return_sequences=True),
    "GRU-reset-after": lambda: keras.layers.GRU(4, return_sequences=True),
    "GRU-reset-before": lambda: keras.layers.GRU(4, reset_after=False, return_sequences=True),
    "SimpleRNN-relu": lambda: keras.layers.SimpleRNN(4, activation="relu",
                                                     return_sequences=True),
    "Bidirectional-GRU": lambda: keras.layers.Bidirectional(
        keras.layers.GRU(4, return_sequences=True)),
    "Sequential-LSTM-stack": lambda: keras.Sequential([
        keras.Input((None, 3)),
        keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
        keras.layers.Dropout(0.25),
        keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
    ]),
}


def _randomise(layer, seed=0):
    """Keras initialises biases to zero; make every weight non-zero so biases are tested."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype)
                       for w in layer.get_weights()])


@pytest.mark.parametrize("name", list(KERAS_LAYERS))
def test_from_keras_reproduces_keras_outputs(keras_backend, name):
    layer = KERAS_LAYERS[name]()
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(layer(x))  # builds it
    _randomise(layer)
    expected = keras.ops.convert_to_numpy(layer(x))
    spec, weights = unirnn.from_keras(layer)
    assert spec.input_size == 3 and spec.hidden_size == 4
    ref, _ = oracle.run(spec, weights, x)
    assert max_rel_error(ref, expected) <= TOL["float32"]
    # and unirnn's layer built from the imported weights gives the same numbers
    ours = unirnn.build(spec, backend="keras", weights=weights)
    assert max_rel_error(keras.ops.convert_to_numpy(ours(x)), expected) <= TOL["float32"]


def test_spec_inferred_from_configs(keras_backend):
    layer = KERAS_LAYERS["Sequential-LSTM-stack"]()
    spec, _ = unirnn.from_keras(layer)
    assert spec == unirnn.lstm(3, 4, num_layers=2, bidirectional=True, dropout=0.25)
    gru = keras.layers.GRU(4, reset_after=False, activation="softsign")
    gru.build((None, None, 3))
    assert unirnn.from_keras(gru)[0] == unirnn.gru(3, 4, reset="before", activation="softsign")


ROUND_TRIP = {
    "lstm": unirnn.lstm(3, 4),
    "gru-after": unirnn.gru(3, 4),
    "gru-before": unirnn.gru(3, 4, reset="before"),
    "rnn-relu": unirnn.rnn(3, 4, activation="relu"),
    "gru-after-bidir-2layer": unirnn.gru(3, 4, num_layers=2, bidirectional=True, dropout=0.1),
    "lstm-nobias": unirnn.lstm(3, 4, bias=False),
    "gru-gelu-z": unirnn.gru(3, 4, activations={"z": "gelu"}),
    "lstm-peephole-proj": unirnn.lstm(3, 5, peepholes=True, proj_size=2),
}
NATIVE_TYPES = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_to_keras_from_keras_round_trip(keras_backend, name):
    spec = ROUND_TRIP[name]
    weights = nonzero_weights(spec).astype(np.float32)
    layer = unirnn.to_keras(spec, weights)
    native = native_problem(spec) is None
    if not native:
        assert type(layer).__name__ == "UniRNN" and layer.kernel == "unirnn.keras-cell"
    elif spec.num_layers > 1:
        assert isinstance(layer, keras.Sequential)
    elif spec.bidirectional:
        assert isinstance(layer, keras.layers.Bidirectional)
    else:
        assert type(layer).__name__ == NATIVE_TYPES[spec.family]
    spec_back, back = unirnn.from_keras(layer)
    assert spec_back == spec
    folded = native and spec.bias and not (spec.family == "gru" and spec.reset == "after")
    for key, value in weights.items():
        if folded and key.endswith(".b_x"):
            np.testing.assert_array_equal(back[key], value + weights[key[:-3] + "b_h"])
        elif folded and key.endswith(".b_h"):
            np.testing.assert_array_equal(back[key], np.zeros_like(value))
        else:
            np.testing.assert_array_equal(back[key], value)  # bit-identical
    x = np.random.default_rng(2).standard_normal((2, 5, 3)).astype(np.float32)
    ref, _ = oracle.run(spec, weights, x)
    assert max_rel_error(keras.ops.convert_to_numpy(layer(x)), ref) <= TOL["float32"]


def test_to_keras_native_refuses_what_keras_cannot_express(keras_backend):
    spec = unirnn.gru(3, 4, update="new")
    with pytest.raises(ValueError, match="update='new'"):
        unirnn.to_keras(spec, unirnn.init_weights(spec), path="native")


def test_from_unirnn_layers_both_paths(keras_backend):
    spec = unirnn.gru(3, 4, bidirectional=True)
    weights = nonzero_weights(spec).astype(np.float32)
    for path in ("native", "custom"):
        layer = unirnn.build(spec, backend="keras", weights=weights, path=path)
        spec_back, back = unirnn.from_keras(layer)
        assert spec_back == spec
        for key, value in weights.items():  # reset-after GRU keeps both biases exactly
            np.testing.assert_array_equal(back[key], value)


def test_weights_h5_with_model_and_inferred(keras_backend, tmp_path):
    model = KERAS_LAYERS["Sequential-LSTM-stack"]()
    _randomise(model)
    path = tmp_path / "stack.weights.h5"
    model.save_weights(path)
    spec, expected = unirnn.from_keras(model)
    fresh = KERAS_LAYERS["Sequential-LSTM-stack"]()
    spec_file, weights = unirnn.from_keras(path, model=fresh)
    assert spec_file == spec
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value)
    with pytest.raises(ValueError, match="(?i)pass model="):
        unirnn.from_keras(path)

    single = keras.Sequential([keras.Input((None, 3)), KERAS_LAYERS["Bidirectional-GRU"]()])
    _randomise(single, seed=4)
    single.save_weights(tmp_path / "bigru.weights.h5")
    spec_one, weights_one = unirnn.from_keras(tmp_path / "bigru.weights.h5")
    assert spec_one == unirnn.gru(3, 4, bidirectional=True)
    _, direct = unirnn.from_keras(single)
    for key, value in direct.items():
        np.testing.assert_array_equal(weights_one[key], value)


def test_keras_file_of_native_layers(keras_backend, tmp_path):
    model = KERAS_LAYERS["Sequential-LSTM-stack"]()
    _randomise(model, seed=5)
    model.save(tmp_path / "stack.keras")
    spec, weights = unirnn.from_keras(tmp_path / "stack.keras")
    _, direct = unirnn.from_keras(model)
    assert spec.num_layers == 2
    for key, value in direct.items():
        np.testing.assert_array_equal(weights[key], value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: keras.layers.Dense(3), "expected keras.layers.LSTM"),
        (lambda: keras.layers.LSTM(4), "not built"),
        (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4), merge_mode="sum"),
         "merge_mode='concat'"),
    ],
    ids=["dense", "unbuilt", "merge-sum"],
)
def test_from_keras_rejects(keras_backend, make, message):
    layer = make()
    if isinstance(layer, keras.layers.Bidirectional):
        layer.build((None, None, 3))
    with pytest.raises(ValueError, match=message):
        unirnn.from_keras(layer)


def test_activation_without_identical_unirnn_name_is_refused(keras_backend):
    layer = keras.layers.SimpleRNN(4, activation="relu6")
    layer.build((None, None, 3))
    with pytest.raises(ValueError, match="no identical unirnn activation"):
        unirnn.from_keras(layer)


def test_bidirectional_backward_layer_must_match_the_forward_one(keras_backend):
    """Keras' backward_layer may differ from the forward layer; a unirnn spec cannot."""
    layer = keras.layers.Bidirectional(
        keras.layers.LSTM(4, return_sequences=True),
        backward_layer=keras.layers.LSTM(4, activation="relu", go_backwards=True,
                                         return_sequences=True))
    layer.build((None, None, 3))
    with pytest.raises(ValueError, match=r"backward layer .* differs in activations: forward "
                                         r".*'g': 'tanh'.* backward .*'g': 'relu'"):
        unirnn.from_keras(layer)
    bigger = keras.layers.Bidirectional(
        keras.layers.GRU(4), backward_layer=keras.layers.GRU(4, reset_after=False,
                                                             go_backwards=True))
    bigger.build((None, None, 3))
    with pytest.raises(ValueError, match="differs in reset: forward 'after', backward 'before'"):
        unirnn.from_keras(bigger)
    forward_backwards = keras.layers.Bidirectional(keras.layers.LSTM(4, go_backwards=True),
                                                   backward_layer=keras.layers.LSTM(4))
    forward_backwards.build((None, None, 3))
    with pytest.raises(ValueError, match="forward layer with go_backwards=False"):
        unirnn.from_keras(forward_backwards)


def test_bidirectional_with_an_equal_backward_layer_is_imported(keras_backend):
    layer = keras.layers.Bidirectional(
        keras.layers.LSTM(4, return_sequences=True),
        backward_layer=keras.layers.LSTM(4, go_backwards=True, return_sequences=True,
                                         name="my_backward"))
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    layer(x)
    _randomise(layer, seed=2)
    expected = keras.ops.convert_to_numpy(layer(x))
    spec, weights = unirnn.from_keras(layer)
    assert spec == unirnn.lstm(3, 4, bidirectional=True)
    ref, _ = oracle.run(spec, weights, x)
    assert max_rel_error(ref, expected) <= TOL["float32"]


def test_to_keras_rejects_unknown_path_and_dtype(keras_backend):
    spec = unirnn.gru(3, 4, update="new")  # a custom-only spec: path was checked too late
    weights = unirnn.init_weights(spec)
    with pytest.raises(ValueError, match=r"path: expected one of auto, native, custom; "
                                         r"received 'bogus'"):
        unirnn.to_keras(spec, weights, path="bogus")
    with pytest.raises(ValueError, match="path: expected one of"):
        unirnn.to_keras(unirnn.gru(3, 4), unirnn.init_weights(unirnn.gru(3, 4)), path="fast")
    with pytest.raises(ValueError, match="dtype: expected float32 or float64; received int32"):
        unirnn.to_keras(spec, weights, dtype="int32")


def test_weights_h5_with_spec_and_no_model(keras_backend, tmp_path):
    """spec= reads a weights file whose activations the file cannot record."""
    gru = keras.layers.GRU(4, activation="relu", reset_after=False, return_sequences=True)
    model = keras.Sequential([keras.Input((None, 3)), gru])
    _randomise(model, seed=6)
    path = tmp_path / "gru.weights.h5"
    model.save_weights(path)
    spec = unirnn.gru(3, 4, activation="relu", reset="before")
    spec_file, weights = unirnn.from_keras(path, spec=spec)
    assert spec_file == spec
    _, direct = unirnn.from_keras(model)
    for key, value in direct.items():
        np.testing.assert_array_equal(weights[key], value)
    x = np.random.default_rng(3).standard_normal((2, 5, 3)).astype(np.float32)
    ref, _ = oracle.run(spec, weights, x)
    assert max_rel_error(ref, keras.ops.convert_to_numpy(model(x))) <= TOL["float32"]
    # inferred without spec=: Keras' default activations, which this file did not use
    assert unirnn.from_keras(path)[0] == unirnn.gru(3, 4, reset="before")
    with pytest.raises(ValueError, match="holds 1 recurrent layer directions; the spec needs 2"):
        unirnn.from_keras(path, spec=unirnn.gru(3, 4, reset="before", bidirectional=True))
    with pytest.raises(ValueError, match=r"expected kernel \(I, 15\)"):
        unirnn.from_keras(path, spec=unirnn.gru(3, 5, reset="before"))
