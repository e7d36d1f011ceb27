"""ONNX files written by others, read by unirnn with their source's outputs; and a round
trip through every framework and ONNX.

What each exporter writes is pinned (torch 2.13's TorchScript and dynamo exporters, tf2onnx
1.17 on Keras 3): a change in an exporter fails here first. Each file is judged three ways:
onnxruntime running it, the source framework, and the oracle running what unirnn read.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import oracle
import pytest
from support import TOL, framework, max_rel_error

import unirnn


def _onnx_porting():
    framework("onnx")
    from unirnn.porting import onnx

    return onnx


def _attrs(node):
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _recurrent(model):
    return [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]


def _run(model, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _torch_export(module, x, dynamo):
    torch = framework("torch")
    onnx = framework("onnx")
    if dynamo:
        framework("onnxscript")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {} if dynamo else {"dynamic_axes": {"x": {0: "batch", 1: "time"}}}
        torch.onnx.export(module, (torch.from_numpy(x),), buffer, dynamo=dynamo,
                          input_names=["x"], verbose=False, **kwargs)
    return onnx.load_from_string(buffer.getvalue())


def _torch_modules():
    torch = framework("torch")
    torch.manual_seed(0)
    return {
        "lstm-2layer-bidir": torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True,
                                           batch_first=True),
        "gru": torch.nn.GRU(3, 4, batch_first=True),
        "rnn-relu-nobias": torch.nn.RNN(3, 4, nonlinearity="relu", bias=False,
                                        batch_first=True),
    }


# what torch 2.13's TorchScript exporter writes (opset 20 by default)
TORCHSCRIPT_PINS = {
    "lstm-2layer-bidir": ("LSTM", 2, {"direction": b"bidirectional", "hidden_size": 4}),
    "gru": ("GRU", 1, {"hidden_size": 4, "linear_before_reset": 1}),
    "rnn-relu-nobias": ("RNN", 1, {"activations": [b"Relu"], "hidden_size": 4}),
}


@pytest.mark.parametrize("name", list(TORCHSCRIPT_PINS))
def test_torchscript_export_reads_with_torch_outputs(name):
    torch = framework("torch")
    module = _torch_modules()[name]
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    model = _torch_export(module, x, dynamo=False)
    op, count, pinned = TORCHSCRIPT_PINS[name]
    nodes = _recurrent(model)
    assert [n.op_type for n in nodes] == [op] * count
    assert all(_attrs(n) == pinned for n in nodes)  # no layout attribute: layout 0
    spec, weights = unirnn.from_onnx(model)
    torch_spec, torch_weights = unirnn.from_torch(module)
    assert spec == torch_spec.replace(dropout=0.0)
    for key, value in torch_weights.items():  # B splits back into torch's two biases
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    with torch.no_grad():
        want_torch = module(torch.from_numpy(x))[0].numpy()
    want = oracle.run(spec, weights, x)[0]
    assert max_rel_error(want_torch, want) <= TOL["float32"]
    assert max_rel_error(_run(model, {"x": x})[0], want) <= TOL["float32"]


# what torch 2.13's dynamo exporter (onnxscript 0.7) writes
DYNAMO_PINS = {
    "lstm": ("LSTM", {"direction": b"bidirectional", "hidden_size": 4, "input_forget": 0,
                      "layout": 0}),
    "gru": ("GRU", {"direction": b"forward", "hidden_size": 4, "layout": 0,
                    "linear_before_reset": 1}),
}


@pytest.mark.parametrize("name", list(DYNAMO_PINS))
def test_dynamo_export_reads_with_torch_outputs(name):
    torch = framework("torch")
    torch.manual_seed(2)
    module = torch.nn.LSTM(3, 4, bidirectional=True, batch_first=True) if name == "lstm" \
        else torch.nn.GRU(3, 4, batch_first=True)
    x = np.random.default_rng(2).standard_normal((2, 5, 3)).astype(np.float32)
    model = _torch_export(module, x, dynamo=True)
    op, pinned = DYNAMO_PINS[name]
    nodes = _recurrent(model)
    assert [n.op_type for n in nodes] == [op] and _attrs(nodes[0]) == pinned
    spec, weights = unirnn.from_onnx(model)
    assert spec == unirnn.from_torch(module)[0]
    with torch.no_grad():
        want_torch = module(torch.from_numpy(x))[0].numpy()
    want = oracle.run(spec, weights, x)[0]
    assert max_rel_error(want_torch, want) <= TOL["float32"]
    assert max_rel_error(_run(model, {"x": x})[0], want) <= TOL["float32"]


def test_dynamo_export_of_rnn_is_unrolled_and_refused_clearly():
    """Pinned: the dynamo exporter unrolls nn.RNN into MatMuls, no RNN node."""
    module = _torch_modules()["rnn-relu-nobias"]
    model = _torch_export(module, np.zeros((2, 5, 3), np.float32), dynamo=True)
    assert not _recurrent(model) and "MatMul" in {n.op_type for n in model.graph.node}
    with pytest.raises(unirnn.SpecError, match="no LSTM, GRU or RNN node"):
        unirnn.from_onnx(model)


def test_torch_projected_lstm_exports_through_unirnn():
    """torch's TorchScript exporter refuses nn.LSTM(proj_size=...); unirnn writes its Scan
    graph, and onnxruntime gives torch's outputs."""
    torch = framework("torch")
    framework("onnxruntime")
    torch.manual_seed(4)
    module = torch.nn.LSTM(3, 5, proj_size=2, batch_first=True)
    x = np.random.default_rng(4).standard_normal((2, 6, 3)).astype(np.float32)
    with pytest.raises(Exception, match="proj"):
        _torch_export(module, x, dynamo=False)
    model = unirnn.port(module, to="onnx")
    y, (h_n, c_n) = _onnx_porting().run(model, x)
    with torch.no_grad():
        want_y, (want_h, want_c) = module(torch.from_numpy(x))
    assert max_rel_error(y, want_y.numpy()) <= TOL["float32"]
    assert max_rel_error(h_n, want_h.numpy()) <= TOL["float32"]
    assert max_rel_error(c_n, want_c.numpy()) <= TOL["float32"]


def _tf2onnx_model(layer, input_size=3):
    keras = framework("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf2onnx converts Keras on its TensorFlow backend")
    tf = framework("tensorflow")
    tf2onnx = framework("tf2onnx")
    inputs = keras.Input((None, input_size))
    model = keras.Model(inputs, layer(inputs))
    signature = (tf.TensorSpec((None, None, input_size), tf.float32, name="x"),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_model, _ = tf2onnx.convert.from_function(tf.function(lambda x: model(x)),
                                                      input_signature=signature, opset=17)
    return onnx_model


def test_tf2onnx_lstm_reads_with_source_outputs():
    """tf2onnx 1.17 writes Keras 3's LSTM as the LSTM op (activations spelled out, Keras'
    one bias in Wb and zeros in Rb)."""
    keras = framework("keras")
    keras.utils.set_random_seed(5)
    layer = keras.layers.LSTM(4, return_sequences=True, bias_initializer="random_normal")
    model = _tf2onnx_model(layer)
    nodes = _recurrent(model)
    assert [n.op_type for n in nodes] == ["LSTM"]
    assert _attrs(nodes[0]) == {"activations": [b"Sigmoid", b"Tanh", b"Tanh"],
                                "direction": b"forward", "hidden_size": 4}
    spec, weights = unirnn.from_onnx(model)
    keras_spec, keras_weights = unirnn.from_keras(layer)
    assert spec == keras_spec
    np.testing.assert_array_equal(weights["layer0.forward.b_h"], 0)
    for key, value in keras_weights.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    x = np.random.default_rng(5).standard_normal((2, 5, 3)).astype(np.float32)
    want = oracle.run(spec, weights, x)[0]
    assert max_rel_error(np.asarray(layer(x)), want) <= TOL["float32"]
    assert max_rel_error(_run(model, {"x": x})[0], want) <= TOL["float32"]


TF2ONNX_LOOPS = {
    "gru-reset-after": ({"reset_after": True}, 3),
    "gru-reset-before-last-step": ({"reset_after": False, "return_sequences": False}, 4),
    "simple-rnn-relu": ({"activation": "relu"}, 3),
}


@pytest.mark.parametrize("name", list(TF2ONNX_LOOPS))
def test_tf2onnx_loop_graphs_are_recognised(name):
    """Pinned: tf2onnx 1.17 writes Keras 3's GRU and SimpleRNN as a Loop graph; unirnn
    recognises the layer's arrays and accepts a reading only when onnxruntime reproduces it."""
    keras = framework("keras")
    keras.utils.set_random_seed(7)
    options, input_size = TF2ONNX_LOOPS[name]
    options = {"return_sequences": True, "bias_initializer": "random_normal", **options}
    cls = keras.layers.SimpleRNN if name.startswith("simple") else keras.layers.GRU
    layer = cls(4, **options)
    model = _tf2onnx_model(layer, input_size)
    assert not _recurrent(model) and "Loop" in {n.op_type for n in model.graph.node}
    spec, weights = unirnn.from_onnx(model)
    keras_spec, keras_weights = unirnn.from_keras(layer)
    assert spec == keras_spec
    for key, value in keras_weights.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    x = np.random.default_rng(7).standard_normal((2, 5, input_size)).astype(np.float32)
    want = oracle.run(spec, weights, x)[0]
    if not options["return_sequences"]:
        want = want[:, -1]
    assert max_rel_error(np.asarray(layer(x)), want) <= TOL["float32"]
    assert max_rel_error(_run(model, {"x": x})[0], want) <= TOL["float32"]


def test_tf2onnx_loop_of_a_custom_cell_is_refused_clearly():
    keras = framework("keras")
    model = _tf2onnx_model(keras.layers.GRU(4, return_sequences=True, activation="gelu"))
    with pytest.raises(unirnn.SpecError, match="not recognised as tf2onnx's Loop"):
        unirnn.from_onnx(model)


def test_round_trip_torch_onnx_through_frameworks_to_flax(tmp_path):
    """nn.GRU -> ONNX (GRU op) -> Keras -> ONNX file -> Flax, judged by the oracle."""
    torch = framework("torch")
    framework("keras")
    jax = framework("jax")
    torch.manual_seed(6)
    native = torch.nn.GRU(3, 4, num_layers=2, batch_first=True)
    x = np.random.default_rng(6).standard_normal((2, 5, 3)).astype(np.float32)
    first = _torch_export(native, x, dynamo=False)
    keras_layer = unirnn.port(first, to="keras")
    path = tmp_path / "from_keras.onnx"
    unirnn.to_onnx(*unirnn.from_keras(keras_layer), path)
    flax_module = unirnn.port(str(path), to="flax")
    variables = flax_module.init(jax.random.key(0), x)
    spec, weights = unirnn.from_torch(native)
    want = oracle.run(spec, weights, x)[0]
    with torch.no_grad():
        assert max_rel_error(native(torch.from_numpy(x))[0].numpy(), want) <= TOL["float32"]
    assert max_rel_error(np.asarray(keras_layer(x)), want) <= TOL["float32"]
    assert max_rel_error(_onnx_porting().run(path, x)[0], want) <= TOL["float32"]
    assert max_rel_error(np.asarray(flax_module.apply(variables, x)), want) <= TOL["float32"]
    assert os.path.getsize(path) > 0
