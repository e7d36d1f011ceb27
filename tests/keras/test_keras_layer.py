"""Keras conventions of unirnn's Keras layer: masks, states, go_backwards, dropout, saving.

Numbers are checked against the independent oracle (tests/oracle.py) in float32.
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from support import (
    TOL,
    example_inputs,
    framework,
    max_rel_error,
    nonzero_weights,
    run_keras_python,
)

import unirnn

keras = framework("keras")

CASES = {
    "lstm-bidir": unirnn.lstm(3, 4, bidirectional=True),
    "gru-gelu-z-bidir": unirnn.gru(3, 4, activations={"z": "gelu"}, bidirectional=True),
    "lstm-proj-2layer": unirnn.lstm(3, 5, proj_size=2, num_layers=2),
}
PATHS = ["auto", "custom"]


def reverse_padded(x, lengths):
    """Each sequence's valid steps reversed in place, padding left where it was."""
    out = np.array(x)
    for n, length in enumerate(lengths):
        out[n, :length] = x[n, :length][::-1]
    return out


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
    with pytest.raises(ValueError, match=r"initial_state: expected 4 tensors \(per layer and "
                                         r"direction, \[h\]\); received 1"):
        layer(x, initial_state=[h0[0].astype(np.float32)])


@pytest.mark.parametrize("path", PATHS)
def test_go_backwards_reads_valid_steps_reversed(keras_backend, path):
    spec = unirnn.lstm(3, 4)
    layer, weights = _layer(spec, path, go_backwards=True)
    lengths = np.array([6, 4])
    x = _padded(spec, lengths)
    mask = np.arange(6)[None, :] < lengths[:, None]
    out = keras.ops.convert_to_numpy(layer(x, mask=mask))
    # Keras' go_backwards: the time-reversed input and mask, outputs in processing order,
    # so a sequence of L valid steps of T gives [0] * (T - L) + [y_{L-1}, ..., y_0] where
    # y is a forward run over the valid steps reversed.
    ref, _ = oracle.run(spec, weights, reverse_padded(x, lengths), None, lengths)
    assert max_rel_error(out[0], ref[0]) <= TOL["float32"]
    assert max_rel_error(out[1, 2:], ref[1, :4]) <= TOL["float32"]
    assert np.all(out[1, :2] == 0.0)


def _keras_layer(cls, seed, **config):
    """Keras' own layer (built, every weight non-zero) and a go_backwards=False twin holding
    the same weights, which from_keras imports (it refuses a lone go_backwards layer)."""
    layer = cls(4, return_sequences=True, return_state=True, **config)
    layer.build((None, None, 3))
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype)
                       for w in layer.get_weights()])
    if isinstance(layer, keras.layers.Bidirectional):
        return layer, layer
    twin = cls(4, **{k: v for k, v in config.items() if k != "go_backwards"})
    twin.build((None, None, 3))
    twin.set_weights(layer.get_weights())
    return layer, twin


def _pre_padded(seed=3):
    """keras.utils.pad_sequences' default padding='pre', and a Masking layer's mask."""
    rng = np.random.default_rng(seed)
    sequences = [rng.standard_normal((n, 3)) for n in (6, 2, 4)]
    x = keras.utils.pad_sequences(sequences, dtype="float32")  # padding="pre"
    mask = keras.ops.convert_to_numpy(keras.layers.Masking(0.0).compute_mask(x))
    assert mask.tolist()[1] == [False] * 4 + [True] * 2
    return x, mask


MASKS = {
    "pre-padded": lambda: _pre_padded(),
    "holes": lambda: (_padded(CASES["lstm-bidir"], [6, 6, 6], seed=4),
                      np.array([[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 1], [1, 1, 1, 1, 1, 0]],
                               bool)),
}
RECURRENT = {"LSTM": lambda: keras.layers.LSTM, "GRU": lambda: keras.layers.GRU,
             "GRU-reset-before": lambda: keras.layers.GRU}


def _config(name, **config):
    return {**config, "reset_after": False} if name == "GRU-reset-before" else config


def _assert_like_keras(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert max_rel_error(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)) \
            <= TOL["float32"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("name", list(RECURRENT))
def test_mask_means_what_keras_layers_do(keras_backend, name, mask_name, path):
    """Any mask pattern: a masked step keeps the state and outputs zero, as Keras' own
    LSTM/GRU with zero_output_for_mask=True (their default repeats the previous output,
    which for pre-padding is the same zeros)."""
    x, mask = MASKS[mask_name]()
    theirs, twin = _keras_layer(RECURRENT[name](), seed=5,
                                **_config(name, zero_output_for_mask=True))
    spec, weights = unirnn.from_keras(twin)
    layer = unirnn.build(spec, backend="keras", weights=weights, path=path, return_state=True)
    ours = layer(x, mask=mask)
    _assert_like_keras(ours, theirs(x, mask=mask))
    if mask_name == "pre-padded":
        default, _ = _keras_layer(RECURRENT[name](), seed=5, **_config(name))
        _assert_like_keras(ours, default(x, mask=mask))
        # and the oracle: the valid steps alone, outputs zero before them
        out = keras.ops.convert_to_numpy(ours[0])
        for n, length in enumerate(mask.sum(axis=1)):
            ref, _ = oracle.run(spec, weights, x[n:n + 1, 6 - length:])
            assert max_rel_error(out[n:n + 1, 6 - length:], ref) <= TOL["float32"]
            assert np.all(out[n, :6 - length] == 0.0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_bidirectional_mask_matches_keras_bidirectional(keras_backend, name, mask_name, path):
    x, mask = MASKS[mask_name]()
    theirs, _ = _keras_layer(lambda units, **c: keras.layers.Bidirectional(
        RECURRENT[name]()(units, **c)), seed=6)
    spec, weights = unirnn.from_keras(theirs)
    assert spec.bidirectional
    layer = unirnn.build(spec, backend="keras", weights=weights, path=path, return_state=True)
    _assert_like_keras(layer(x, mask=mask), theirs(x, mask=mask))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mask_name", ["prefix", *MASKS])
@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_go_backwards_matches_keras_layer(keras_backend, name, mask_name, path):
    if mask_name == "prefix":
        lengths = np.array([6, 3, 4])
        x, mask = _padded(CASES["lstm-bidir"], lengths), np.arange(6) < lengths[:, None]
    else:
        x, mask = MASKS[mask_name]()
    theirs, twin = _keras_layer(RECURRENT[name](), seed=7, go_backwards=True,
                                zero_output_for_mask=True)
    spec, weights = unirnn.from_keras(twin)
    layer = unirnn.build(spec, backend="keras", weights=weights, path=path, return_state=True,
                         go_backwards=True)
    ours = layer(x, mask=mask)
    _assert_like_keras(ours, theirs(x, mask=mask))
    if mask_name == "prefix":  # 3 valid steps of 6: [0, 0, 0, y2, y1, y0]
        assert np.all(keras.ops.convert_to_numpy(ours[0])[1, :3] == 0.0)


@pytest.mark.parametrize("path", PATHS)
def test_call_rejects_bad_input(keras_backend, path):
    spec = unirnn.lstm(3, 4, num_layers=2)
    layer, _ = _layer(spec, path)
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected a rank-3 array \(N, T, I\) with I=3; "
                                         r"received shape \(2, 5\)"):
        layer(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"expected 3 features .* received shape \(2, 5, 4\)"):
        layer(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"mask: expected shape \(N, T\) = \(2, 5\)"):
        layer(x, mask=np.ones((2, 4), bool))
    state = [np.zeros((2, 4), np.float32) for _ in range(4)]
    layer(x, initial_state=state)  # the right shapes run
    bad = state[:3] + [np.zeros((2, 5), np.float32)]
    with pytest.raises(ValueError, match=r"initial_state\[3\] \(layer 1, forward, c\): "
                                         r"expected shape \(N, 4\) with N=2; received \(2, 5\)"):
        layer(x, initial_state=bad)
    with pytest.raises(ValueError, match=r"initial_state\[0\].*received \(3, 4\)"):
        layer(x, initial_state=[np.zeros((3, 4), np.float32)] + state[1:])


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


FILE_CASES = {
    "lstm-bidir": (CASES["lstm-bidir"], {}),
    "gru-gelu-z-bidir": (CASES["gru-gelu-z-bidir"], {"return_state": True}),
    "lstm-proj-2layer-dropout": (unirnn.lstm(3, 5, proj_size=2, num_layers=2, dropout=0.3),
                                 {"go_backwards": True, "return_state": True}),
    "gru-2layer-bidir-dropout": (unirnn.gru(3, 4, num_layers=2, bidirectional=True,
                                            dropout=0.2),
                                 {"go_backwards": True, "return_sequences": False}),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(FILE_CASES))
def test_keras_file_round_trip(keras_backend, name, path, tmp_path):
    spec, options = FILE_CASES[name]
    layer, weights = _layer(spec, path, **options)
    config = layer.get_config()
    assert unirnn.Spec.from_dict(config["spec"]) == spec
    assert config["path"] == layer.resolved_path == (
        "native" if layer.kernel != "unirnn.keras-cell" else "custom")
    clone = type(layer).from_config(config)
    assert clone.spec == spec and clone.kernel == layer.kernel
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, layer(keras.layers.Masking(0.0)(inputs)))
    lengths = np.array([6, 3])
    x = _padded(spec, lengths)
    expected = [keras.ops.convert_to_numpy(r) for r in keras.tree.flatten(model(x))]
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    restored = loaded.layers[-1]
    assert restored.spec == spec and restored.kernel == layer.kernel
    for option in ("return_sequences", "return_state", "go_backwards"):
        assert getattr(restored, option) == getattr(layer, option)
    for got, want in zip(keras.tree.flatten(loaded(x)), expected, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)
    for key, value in restored.canonical_weights().items():
        np.testing.assert_array_equal(value, layer.canonical_weights()[key])
    # the numbers are the spec's: the oracle on the reversed valid steps for go_backwards
    inputs = reverse_padded(x, lengths) if layer.go_backwards else x
    ref, _ = oracle.run(spec, weights, inputs, None, lengths)
    out = expected[0]
    if not layer.return_sequences:
        return
    if layer.go_backwards:  # outputs in processing order, padding first
        out = np.stack([np.roll(out[n], -(6 - n_len), axis=0)
                        for n, n_len in enumerate(lengths)])
    assert max_rel_error(out, ref) <= TOL["float32"]


def test_keras_file_loads_in_a_fresh_process(keras_backend, tmp_path):
    """keras.saving.load_model needs unirnn's Keras classes registered: `import unirnn`
    alone stays framework-free, so the error names the module to import; importing it, or
    unirnn.from_keras(path), loads the file."""
    spec = unirnn.gru(3, 4, activations={"z": "gelu"})
    layer, weights = _layer(spec, "auto")
    keras.Sequential([keras.Input((None, 3)), layer]).save(tmp_path / "m.keras")
    code = (
        "import sys, numpy as np, unirnn, keras\n"
        "assert 'unirnn.backends.keras' not in sys.modules\n"
        "try:\n"
        "    keras.saving.load_model('m.keras')\n"
        "    print('PLAIN loaded')\n"
        "except Exception as err:\n"
        "    print('PLAIN', 'unirnn.backends.keras' in str(err))\n"
        "spec, weights = unirnn.from_keras('m.keras')\n"
        "print('FROM_KERAS', spec.to_json())\n"
        "model = keras.saving.load_model('m.keras')\n"
        "print('LOADED', model.layers[-1].kernel)\n"
    )
    out = run_keras_python(code, keras_backend, tmp_path)
    assert "PLAIN loaded" in out or "PLAIN True" in out, out
    assert f"FROM_KERAS {spec.to_json()}" in out
    assert "LOADED unirnn.keras-cell" in out


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


def test_native_gru_takes_the_faster_loop_on_jax_cpu():
    """Keras' jax GRU "fused" path is a hoisted lax.scan, slower on CPU than its generic
    loop: there the native GRU is built with use_cudnn=False; elsewhere Keras decides."""
    spec = unirnn.gru(3, 4, bidirectional=True)
    layer = unirnn.build(spec, backend="keras", weights=nonzero_weights(spec))
    assert layer.kernel == "keras.layers.GRU"
    inner = layer.native_layers[0].forward_layer
    on_jax_cpu = keras.backend.backend() == "jax" and all(
        d.platform == "cpu" for d in __import__("jax").devices())
    assert inner.use_cudnn == (False if on_jax_cpu else "auto")
    x, _, _ = example_inputs(spec, with_state=False, with_lengths=False)
    expected, _ = oracle.run(spec, nonzero_weights(spec), x)
    got = keras.ops.convert_to_numpy(layer(x.astype("float32")))
    assert max_rel_error(got, expected) <= TOL["float32"]


SAVED_PATHS = {
    "native-bidir-2layer": (
        unirnn.lstm(3, 4, num_layers=2, bidirectional=True),
        [f"layers/uni_rnn/native_layers/{layer}/{direction}/cell/vars/{i}"
         for layer in ("bidirectional", "bidirectional_1")
         for direction in ("backward_layer", "forward_layer") for i in range(3)]),
    "custom-bidir": (
        unirnn.gru(3, 4, activations={"z": "gelu"}, bidirectional=True),
        [f"layers/uni_rnn/cells/{cell}/vars/{i}"
         for cell in ("uni_rnn_cell", "uni_rnn_cell_1") for i in range(4)]),
}


@pytest.mark.parametrize("name", list(SAVED_PATHS))
def test_keras_file_keeps_its_variable_paths(keras_backend, name, tmp_path):
    """Keras saves variables under the attribute path that tracks them: these paths are
    what .keras files written by earlier unirnn versions hold, so they must not change."""
    import zipfile

    import h5py

    spec, expected = SAVED_PATHS[name]
    layer = unirnn.build(spec, backend="keras", weights=nonzero_weights(spec))
    keras.Sequential([keras.Input((None, 3)), layer]).save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        archive.extract("model.weights.h5", tmp_path)
    found = []
    with h5py.File(tmp_path / "model.weights.h5", "r") as f:
        f.visititems(lambda path, item: found.append(path)
                     if isinstance(item, h5py.Dataset) else None)
    assert found == expected
