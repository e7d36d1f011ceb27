"""Porting: trained models move between frameworks with their outputs, files convert.

Sources are each framework's own layers (nn.LSTM, keras.layers.GRU, flax's cells); every
ported model is run natively in its target framework and compared with the source's
outputs, and with the independent oracle.
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from support import framework, max_rel_error, nonzero_weights

import unirnn

TARGETS = ["numpy", "torch", "keras", "flax"]


def _run_native(obj, target, x):
    """Outputs (N, T, F) of a module built for ``target``, called as its framework does."""
    if target == "numpy":
        return obj(x)[0]
    if target == "torch":
        torch = framework("torch")
        with torch.no_grad():
            out = obj(torch.from_numpy(x).to(next(obj.parameters()).dtype).transpose(0, 1))[0]
        return out.transpose(0, 1).double().numpy()
    if target == "keras":
        keras = framework("keras")
        return np.asarray(keras.ops.convert_to_numpy(obj(x.astype("float32"))), np.float64)
    jax = framework("jax")
    variables = obj.init(jax.random.PRNGKey(0), x.astype(np.float32))
    return np.asarray(obj.apply(variables, x.astype(np.float32)), np.float64)


def _x(spec, seed=0):
    return np.random.default_rng(seed).standard_normal((2, 6, spec.input_size))


def _torch_sources():
    torch = framework("torch")
    torch.manual_seed(0)
    return {
        "nn.LSTM-2layer-bidir": torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True),
        "nn.GRU": torch.nn.GRU(3, 5),
        "nn.RNN-relu": torch.nn.RNN(3, 5, nonlinearity="relu"),
        "nn.LSTM-proj": torch.nn.LSTM(3, 5, proj_size=2),
    }


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", ["nn.LSTM-2layer-bidir", "nn.GRU", "nn.RNN-relu",
                                    "nn.LSTM-proj"])
def test_port_from_torch(source, target):
    torch = framework("torch")
    native = _torch_sources()[source]
    spec, weights = unirnn.from_torch(native)
    x = _x(spec)
    with torch.no_grad():
        want = native(torch.from_numpy(x).float().transpose(0, 1))[0].transpose(0, 1).numpy()
    ported = unirnn.port(native, to=target)
    got = _run_native(ported, target, x)
    assert max_rel_error(got, want) <= 1e-5
    assert max_rel_error(got, oracle.run(spec, weights, x)[0]) <= 1e-5


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_port_from_keras_gru(reset_after, target):
    keras = framework("keras")
    layer = keras.layers.GRU(5, reset_after=reset_after, return_sequences=True)
    x = _x(unirnn.gru(3, 5))
    want = np.asarray(keras.ops.convert_to_numpy(layer(x.astype("float32"))))
    layer.set_weights([0.4 * w + 0.1 for w in layer.get_weights()])  # non-zero biases
    want = np.asarray(keras.ops.convert_to_numpy(layer(x.astype("float32"))))
    spec, weights = unirnn.from_keras(layer)
    assert spec.reset == ("after" if reset_after else "before")
    got = _run_native(unirnn.port(layer, to=target), target, x)
    assert max_rel_error(got, want) <= 1e-5


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("cell", ["OptimizedLSTMCell", "GRUCell"])
def test_port_from_flax_cells(cell, target):
    jax = framework("jax")
    from flax import linen as nn

    module = nn.RNN(getattr(nn, cell)(features=5))
    x = _x(unirnn.lstm(3, 5))
    variables = module.init(jax.random.PRNGKey(1), x.astype(np.float32))
    params = jax.tree_util.tree_map(lambda a: a + 0.05, variables["params"]["cell"])
    want = np.asarray(module.apply({"params": {"cell": params}}, x.astype(np.float32)))
    spec, weights = unirnn.from_flax({"params": params}, cell=cell)
    got = _run_native(unirnn.port(({"params": params}), to=target, cell=cell), target, x)
    assert max_rel_error(got, want) <= 1e-5


def test_custom_cell_ports_to_custom_layers():
    """A GELU update gate fits no framework's own GRU: each target runs unirnn's own path."""
    spec = unirnn.gru(3, 4, activations={"z": "gelu"}, bidirectional=True)
    weights = unirnn.init_weights(spec, seed=4)
    x = _x(spec)
    want = oracle.run(spec, weights, x)[0]
    kernels = {}
    for target in TARGETS:
        ported = unirnn.port((spec, weights), to=target)
        kernels[target] = ported.kernel
        assert max_rel_error(_run_native(ported, target, x), want) <= 1e-5, target
    assert kernels["torch"] != "torch._VF.gru"
    assert kernels["keras"] == "unirnn.keras-cell"


def test_round_trip_torch_keras_flax_torch():
    """nn.GRU -> Keras GRU -> Flax GRUCell -> nn.GRU: kernels bit-identical; biases fold.

    Keras' reset-after GRU keeps both biases; Flax's GRUCell has no bias on hr, hz, so
    b_hr, b_hz are folded into the input biases there: outputs stay within tolerance.
    """
    torch = framework("torch")
    framework("keras")
    framework("flax")
    torch.manual_seed(3)
    native = torch.nn.GRU(3, 4)
    spec, w0 = unirnn.from_torch(native)
    keras_layer = unirnn.to_keras(spec, w0)
    assert keras_layer.__class__.__name__ == "GRU"
    spec_k, w_k = unirnn.from_keras(keras_layer)
    for name in w0:  # Keras' (2, 3H) bias keeps the split: everything bit-identical
        np.testing.assert_array_equal(w_k[name], w0[name])
    params = unirnn.to_flax(spec_k, w_k, cell="GRUCell")
    spec_f, w_f = unirnn.from_flax(params, cell="GRUCell")
    for name in ("layer0.forward.w_x", "layer0.forward.w_h"):
        np.testing.assert_array_equal(w_f[name], w0[name])
    folded = w0["layer0.forward.b_x"] + w0["layer0.forward.b_h"] * np.r_[np.ones(8), np.zeros(4)]
    np.testing.assert_allclose(w_f["layer0.forward.b_x"], folded, rtol=0, atol=1e-6)
    back = torch.nn.GRU(3, 4)
    back.load_state_dict(unirnn.to_torch(spec_f, w_f))
    x = torch.from_numpy(_x(spec)).float().transpose(0, 1)
    with torch.no_grad():
        assert max_rel_error(back(x)[0].numpy(), native(x)[0].numpy()) <= 1e-6


def test_round_trip_lstm_keeps_kernels_and_outputs():
    torch = framework("torch")
    torch.manual_seed(5)
    native = torch.nn.LSTM(3, 4)
    spec, w0 = unirnn.from_torch(native)
    spec_k, w_k = unirnn.from_keras(unirnn.to_keras(spec, w0))
    spec_f, w_f = unirnn.from_flax(unirnn.to_flax(spec_k, w_k, cell="OptimizedLSTMCell"),
                                   cell="OptimizedLSTMCell")
    for name in ("layer0.forward.w_x", "layer0.forward.w_h"):
        np.testing.assert_array_equal(w_f[name], w0[name])
    x = _x(spec)
    assert max_rel_error(oracle.run(spec_f, w_f, x)[0], oracle.run(spec, w0, x)[0]) <= 1e-6


def test_unreadable_source_is_named():
    with pytest.raises(ValueError, match="cannot read a builtins.int"):
        unirnn.port(42, to="torch")
    with pytest.raises(ValueError, match="unknown target 'caffe'"):
        unirnn.port((unirnn.gru(2, 3), unirnn.init_weights(unirnn.gru(2, 3))), to="caffe")


@pytest.mark.parametrize(
    "spec",
    [unirnn.gru(3, 4, activations={"z": "gelu"}, bidirectional=True),
     unirnn.lstm(3, 4, bias=False, num_layers=2)],
    ids=["gru-gelu-z-bidir", "lstm-nobias-2layer"],
)
def test_chained_port_torch_keras_flax_torch_is_bit_identical(spec):
    """port() objects chain: torch -> keras -> flax -> torch gives back the very tensors
    (no bias folding happens for these specs)."""
    torch = framework("torch")
    start = unirnn.build(spec, backend="torch", weights=nonzero_weights(spec))
    back = unirnn.port(unirnn.port(unirnn.port(start, to="keras"), to="flax"), to="torch")
    assert back.spec == spec
    want, got = start.state_dict(), back.state_dict()
    assert set(want) == set(got)
    for name in want:
        assert torch.equal(got[name], want[name]), name
