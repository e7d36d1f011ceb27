"""``from_onnx``: ONNX LSTM/GRU/RNN nodes with every attribute, chained stacks, unirnn's own
graphs, and clear errors for what unirnn cannot read.

A node is judged by onnxruntime running it and by the oracle running the spec and weights
unirnn reads from it: the two must agree.
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from cases import SPECS
from support import TOL, framework, max_rel_error, nonzero_weights

onnx = framework("onnx")
framework("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import unirnn  # noqa: E402
from unirnn.porting import onnx as onnx_porting  # noqa: E402

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def node_model(op, attrs, *, I=3, H=4, D=1, bias=True, peepholes=False, layout=0, seed=0,
               shapes=None):
    """A model of one ``op`` node with random weights (shapes overridable), inputs ``x``
    and ``sequence_lens``, output ``Y`` and ``Y_h``."""
    rng = np.random.default_rng(seed)
    G = GATES[op]
    shapes = {"W": (D, G * H, I), "R": (D, G * H, H), "B": (D, 2 * G * H), "P": (D, 3 * H),
              **(shapes or {})}
    tensors = {"W": rng.uniform(-0.8, 0.8, shapes["W"]), "R": rng.uniform(-0.8, 0.8, shapes["R"])}
    if bias:
        tensors["B"] = rng.uniform(-0.8, 0.8, shapes["B"])
    if peepholes:
        tensors["P"] = rng.uniform(-0.8, 0.8, shapes["P"])
    inputs = ["x", "W", "R", "B" if bias else "", "sequence_lens"]
    if peepholes:
        inputs += ["", "", "P"]
    x_dims = ["T", "N", I] if layout == 0 else ["N", "T", I]
    node = helper.make_node(op, inputs, ["Y", "Y_h"], name=f"my_{op.lower()}", hidden_size=H,
                            **({"layout": layout} if layout else {}), **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims),
         helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["N"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in tensors.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run_node(model, x, lengths):
    """onnxruntime's outputs of a ``node_model``: ``Y`` as ``(N, T, D*H)``, ``Y_h``."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y, y_h = session.run(None, {"x": x.transpose(1, 0, 2).astype(np.float32),
                                "sequence_lens": lengths.astype(np.int32)})
    T, D, N, H = y.shape
    return y.transpose(2, 0, 1, 3).reshape(N, T, D * H), y_h


NODES = {
    "lstm-default": ("LSTM", {}, {}),
    "lstm-bidir-peepholes": ("LSTM", {"direction": "bidirectional"}, {"D": 2, "peepholes": True}),
    "lstm-hardsigmoid-default-alpha": ("LSTM", {"activations": ["HardSigmoid", "Tanh", "Tanh"]},
                                       {}),
    "lstm-leaky-elu": ("LSTM", {"activations": ["Sigmoid", "LeakyRelu", "Elu"],
                                "activation_alpha": [0.1, 0.7]}, {}),
    "lstm-scaledtanh-thresholded": ("LSTM", {"activations": ["Sigmoid", "ScaledTanh",
                                                             "ThresholdedRelu"],
                                             "activation_alpha": [1.0, 0.0],
                                             "activation_beta": [1.0]}, {}),
    "gru-before": ("GRU", {}, {}),
    "gru-after-bidir": ("GRU", {"linear_before_reset": 1, "direction": "bidirectional"},
                        {"D": 2}),
    "gru-softsign-softplus": ("GRU", {"activations": ["Softsign", "Softplus"],
                                      "linear_before_reset": 1}, {}),
    "gru-nobias": ("GRU", {"linear_before_reset": 1}, {"bias": False}),
    "rnn-relu-bidir": ("RNN", {"activations": ["Relu", "Relu"], "direction": "bidirectional"},
                       {"D": 2}),
    "rnn-affine-identity": ("RNN", {"activations": ["Affine"], "activation_alpha": [1.0],
                                    "activation_beta": [0.0]}, {}),
}


@pytest.mark.parametrize("case", NODES.values(), ids=list(NODES))
def test_node_reads_as_onnxruntime_computes(case):
    op, attrs, options = case
    model = node_model(op, attrs, **options)
    spec, weights = unirnn.from_onnx(model)
    x = np.random.default_rng(1).standard_normal((3, 5, 3))
    lengths = np.array([5, 2, 4])
    y, y_h = run_node(model, x, lengths)
    want, want_state = oracle.run(spec, weights, x, None, lengths)
    h_n = want_state[0] if isinstance(want_state, tuple) else want_state
    assert max_rel_error(y, want) <= TOL["float32"]
    assert max_rel_error(y_h, h_n) <= TOL["float32"]


def test_attributes_become_the_spec():
    spec, _ = unirnn.from_onnx(node_model(*NODES["lstm-hardsigmoid-default-alpha"][:2]))
    assert spec.activations["i"] == "hard_sigmoid(0.2, 0.5)"  # ONNX's default, read exactly
    spec, _ = unirnn.from_onnx(node_model(*NODES["lstm-leaky-elu"][:2]))
    assert dict(spec.activations) == {"i": "sigmoid", "f": "sigmoid", "o": "sigmoid",
                                      "g": "leaky_relu(0.1)", "c": "elu(0.7)"}
    spec, _ = unirnn.from_onnx(node_model(*NODES["lstm-scaledtanh-thresholded"][:2]))
    assert (spec.activations["g"], spec.activations["c"]) == ("tanh", "relu")
    assert unirnn.from_onnx(node_model("GRU", {}))[0].reset == "before"
    assert unirnn.from_onnx(node_model("GRU", {"linear_before_reset": 1}))[0].reset == "after"
    assert unirnn.from_onnx(node_model("GRU", {}, bias=False))[0].bias is False
    spec = unirnn.from_onnx(node_model("LSTM", {}, peepholes=True))[0]
    assert spec.peepholes and spec.update is None


def test_bias_splits_bit_exactly():
    model = node_model("LSTM", {}, peepholes=True)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    _, weights = unirnn.from_onnx(model)
    H = 4
    order = [0, 2, 3, 1]  # canonical i, f, g, o in ONNX's rows i, o, f, c
    blocks = lambda a: np.concatenate([a[k * H:(k + 1) * H] for k in order])  # noqa: E731
    np.testing.assert_array_equal(weights["layer0.forward.b_x"], blocks(init["B"][0, :16]))
    np.testing.assert_array_equal(weights["layer0.forward.b_h"], blocks(init["B"][0, 16:]))
    np.testing.assert_array_equal(weights["layer0.forward.w_x"], blocks(init["W"][0]))
    np.testing.assert_array_equal(weights["layer0.forward.p"],
                                  np.concatenate([init["P"][0][:4], init["P"][0][8:],
                                                  init["P"][0][4:8]]))


@pytest.mark.parametrize("native", [True, False], ids=["native", "scan"])
@pytest.mark.parametrize("name", ["lstm", "gru-before", "rnn-2layer-bidir", "lstm-nobias-hardsig"])
def test_round_trip_is_bit_exact(name, native):
    spec = SPECS[name]
    weights = nonzero_weights(spec).astype(np.float32)
    model = onnx_porting.to_onnx(spec, weights, native=native)
    spec2, weights2 = unirnn.from_onnx(model)
    assert spec2 == spec
    for key, value in weights.items():
        np.testing.assert_array_equal(weights2[key], value, err_msg=key)
    del model.metadata_props[:]  # the nodes alone, without the carried spec
    if native:
        assert unirnn.from_onnx(model)[0] == spec


def test_layout_1_reads_the_same_weights():
    """onnxruntime runs layout 0 only; layout 1 changes X and Y, never W, R, B."""
    a = unirnn.from_onnx(node_model("GRU", {"linear_before_reset": 1}, seed=3))
    b = unirnn.from_onnx(node_model("GRU", {"linear_before_reset": 1}, seed=3, layout=1))
    assert a[0] == b[0]
    for key in a[1]:
        np.testing.assert_array_equal(a[1][key], b[1][key])


def _two_nodes():
    """Two independent LSTM nodes reading the same input."""
    model = node_model("LSTM", {})
    second = helper.make_node("LSTM", ["x", "W", "R"], ["Y2", "Y_h2"], name="other",
                              hidden_size=4)
    model.graph.node.append(second)
    return model


def test_several_nodes_need_node_and_the_error_lists_them():
    model = _two_nodes()
    with pytest.raises(unirnn.SpecError, match="'my_lstm' \\(LSTM\\); 'other' \\(LSTM\\)"):
        unirnn.from_onnx(model)
    assert unirnn.from_onnx(model, node="other")[0].bias is False
    assert unirnn.from_onnx(model, node=0)[0].bias is True
    with pytest.raises(unirnn.SpecError, match="no recurrent node named 'nope'"):
        unirnn.from_onnx(model, node="nope")


@pytest.mark.parametrize(("attrs", "message"), [
    ({"clip": 1.0}, "clip=1.0: ONNX clips every gate's pre-activation"),
    ({"input_forget": 1}, "input_forget=1"),
    ({"direction": "reverse"}, "direction='reverse'"),
    ({"activations": ["Gelu", "Tanh", "Tanh"]}, "'Gelu' is not one of ONNX's RNN activations"),
    ({"activations": ["Sigmoid", "Affine", "Tanh"], "activation_alpha": [2.0],
      "activation_beta": [0.0]}, "Affine\\(alpha=2.0, beta=0.0\\) has no identical"),
    ({"activations": ["Sigmoid", "ScaledTanh", "Tanh"]}, "needs activation_alpha"),
    ({"activations": ["Sigmoid", "Tanh"]}, "lists 2 names"),
    ({"foo": 1}, "unknown attribute 'foo'"),
])
def test_unsupported_attributes_are_refused(attrs, message):
    with pytest.raises(unirnn.SpecError, match=message):
        unirnn.from_onnx(node_model("LSTM", attrs))


def test_different_activations_per_direction_are_refused():
    model = node_model("GRU", {"direction": "bidirectional",
                               "activations": ["Sigmoid", "Tanh", "Sigmoid", "Relu"]}, D=2)
    with pytest.raises(unirnn.SpecError, match="differ from the backward ones"):
        unirnn.from_onnx(model)


@pytest.mark.parametrize(("shapes", "message"), [
    ({"B": (1, 20)}, "B has shape \\(1, 20\\); expected \\(1, 32\\)"),
    ({"R": (1, 16, 5)}, "do not fit a LSTM with hidden_size=4"),
    ({"W": (2, 16, 3)}, "do not fit a LSTM"),
    ({"P": (1, 4)}, "P has shape"),
])
def test_mis_shaped_initializers(shapes, message):
    with pytest.raises(unirnn.WeightsError, match=message):
        unirnn.from_onnx(node_model("LSTM", {}, peepholes=True, shapes=shapes))


def test_no_recurrent_node():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(unirnn.SpecError, match="no LSTM, GRU or RNN node .its operators: Relu"):
        unirnn.from_onnx(helper.make_model(graph))


def test_truncated_and_foreign_files(tmp_path):
    spec = SPECS["lstm"]
    path = tmp_path / "m.onnx"
    onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float32), path)
    data = path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(unirnn.FileFormatError, match="not a readable ONNX model"):
        unirnn.from_onnx(tmp_path / "cut.onnx")
    (tmp_path / "text.onnx").write_text("hello")
    with pytest.raises(unirnn.FileFormatError, match="ONNX"):
        unirnn.from_onnx(tmp_path / "text.onnx")
    with pytest.raises(FileNotFoundError):
        unirnn.from_onnx(tmp_path / "missing.onnx")
    with pytest.raises(unirnn.FileFormatError, match="expected an onnx.ModelProto"):
        unirnn.from_onnx(42)


def test_carried_spec_disagreeing_with_the_nodes():
    spec = SPECS["gru"]
    model = onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float32))
    model.metadata_props[0].value = unirnn.gru(3, 4, reset="before").to_json()
    with pytest.raises(unirnn.SpecError, match="nodes compute .* but its metadata_props"):
        unirnn.from_onnx(model)
