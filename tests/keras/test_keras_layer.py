"""Keras conventions of unirnn's Keras layer: masks, states, go_backwards, dropout, saving.

Numbers are checked against the independent oracle (tests/oracle.py) in float32.
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights

import unirnn
from unirnn.backends.numpy import reverse_padded

keras = framework("keras")

CASES = {
    "lstm-bidir": unirnn.lstm(3, 4, bidirectional=True),
    "gru-gelu-z-bidir": unirnn.gru(3, 4, activations={"z": "gelu"}, bidirectional=True),
    "lstm-proj-2layer": unirnn.lstm(3, 5, proj_size=2, num_layers=2),
}
PATHS = ["auto", "custom"]


def _layer(spec, path, **options):
    weights = nonzero_weights(spec).astype(np.float32)
    return unirnn.build(spec, backend="keras", weights=weights, path=path, **options), weights


def _padded(spec, lengths, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(lengths), 6, spec.input_size)).astype(np.float32)
    for n, length in enumerate(lengths):
        x[n, length:] = 0.0
    return x


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(CASES))
def test_masking_layer_means_lengths(keras_backend, name, path):
    spec = CASES[name]
    layer, weights = _layer(spec, path, return_state=True)
    lengths = np.array([6, 2, 4])
    x = _padded(spec, lengths)
    masked = keras.layers.Masking(0.0)
    result = layer(masked(x))
    ref_out, ref_state = oracle.run(spec, weights, x, None, lengths)
    out = keras.ops.convert_to_numpy(result[0])
    assert max_rel_error(out, ref_out) <= TOL["float32"]
    assert np.all(out[1, 2:] == 0.0) and np.all(out[2, 4:] == 0.0)  # padded steps are zero
    states = [keras.ops.convert_to_numpy(s) for s in result[1:]]
    S = 2 if spec.family == "lstm" else 1
    ref = ref_state if isinstance(ref_state, tuple) else (ref_state,)
    for i in range(S):
        assert max_rel_error(np.stack(states[i::S]), ref[i]) <= TOL["float32"]


@pytest.mark.parametrize("path", PATHS)
def test_return_sequences_false_gives_last_valid_output(keras_backend, path):
    spec = CASES["lstm-bidir"]
    layer, weights = _layer(spec, path, return_sequences=False)
    lengths = np.array([6, 3])
    x = _padded(spec, lengths)
    mask = np.arange(6)[None, :] < lengths[:, None]
    last = keras.ops.convert_to_numpy(layer(x, mask=mask))
    _, (h, _) = oracle.run(spec, weights, x, None, lengths)
    assert last.shape == (2, 8)
    assert max_rel_error(last, np.concatenate([h[0], h[1]], axis=-1)) <= TOL["float32"]


@pytest.mark.parametrize("path", PATHS)
def test_initial_state_is_a_keras_list_per_layer_and_direction(keras_backend, path):
    spec = unirnn.gru(3, 4, num_layers=2, bidirectional=True)
    layer, weights = _layer(spec, path, return_state=True)
    x, h0, _ = example_inputs(spec, with_lengths=False)
    x = x.astype(np.float32)
    result = layer(x, initial_state=[h0[row].astype(np.float32) for row in range(4)])
    assert len(result) == 1 + 4
    ref_out, ref_h = oracle.run(spec, weights, x, h0)
    assert max_rel_error(keras.ops.convert_to_numpy(result[0]), ref_out) <= TOL["float32"]
    h = np.stack([keras.ops.convert_to_numpy(s) for s in result[1:]])
    assert max_rel_error(h, ref_h) <= TOL["float32"]
    with pytest.raises(ValueError, match="expected a list of 4 tensors"):
        layer(x, initial_state=[h0[0].astype(np.float32)])


@pytest.mark.parametrize("path", PATHS)
def test_go_backwards_reads_valid_steps_reversed(keras_backend, path):
    spec = unirnn.lstm(3, 4)
    layer, weights = _layer(spec, path, go_backwards=True)
    lengths = np.array([6, 4])
    x = _padded(spec, lengths)
    mask = np.arange(6)[None, :] < lengths[:, None]
    out = keras.ops.convert_to_numpy(layer(x, mask=mask))
    # Keras' meaning: outputs in processing order, i.e. a forward run on the reversed steps.
    ref, _ = oracle.run(spec, weights, reverse_padded(x, lengths), None, lengths)
    assert max_rel_error(out, ref) <= TOL["float32"]


@pytest.mark.parametrize("path", PATHS)
def test_dropout_between_layers_only_in_training(keras_backend, path):
    spec = unirnn.gru(3, 4, num_layers=2, dropout=0.5)
    layer, weights = _layer(spec, path)
    x = _padded(spec, [6, 6])
    inference = keras.ops.convert_to_numpy(layer(x, training=False))
    ref, _ = oracle.run(spec, weights, x)
    assert max_rel_error(inference, ref) <= TOL["float32"]
    training = keras.ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(training, inference)
    single = unirnn.build(unirnn.gru(3, 4), backend="keras")
    assert single.dropout_layer is None


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["lstm-bidir", "gru-gelu-z-bidir"])
def test_keras_file_round_trip(keras_backend, name, path, tmp_path):
    spec = CASES[name]
    layer, _ = _layer(spec, path)
    config = layer.get_config()
    assert unirnn.Spec.from_dict(config["spec"]) == spec
    clone = type(layer).from_config(config)
    assert clone.spec == spec and clone.kernel == layer.kernel
    model = keras.Sequential([keras.Input((None, 3)), layer])
    x = _padded(spec, [6, 6])
    expected = keras.ops.convert_to_numpy(model(x))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    restored = loaded.layers[-1]
    assert restored.spec == spec and restored.kernel == layer.kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), expected)
    for key, value in restored.canonical_weights().items():
        np.testing.assert_array_equal(value, layer.canonical_weights()[key])


def test_cell_runs_inside_keras_rnn(keras_backend):
    """UniRNNCell is a Keras RNN cell: keras.layers.RNN(cell) computes the spec."""
    from unirnn.backends.keras import UniRNNCell

    spec = unirnn.lstm(3, 5, peepholes=True, proj_size=2, cell_clip=0.8)
    weights = nonzero_weights(spec).astype(np.float32)
    cell = UniRNNCell(spec)
    cell.set_canonical(weights.layer(0))
    rnn = keras.layers.RNN(cell, return_sequences=True)
    x = _padded(spec, [6, 6])
    ref, _ = oracle.run(spec, weights, x)
    assert max_rel_error(keras.ops.convert_to_numpy(rnn(x)), ref) <= TOL["float32"]
