"""Which graph each spec becomes: ONNX's own LSTM/GRU/RNN op for every spec it computes
(asserted by the node types), a Scan graph otherwise, and the attributes written."""

from __future__ import annotations

import re

import numpy as np
import oracle
import pytest
from cases import SPECS
from support import TOL, framework, max_rel_error, nonzero_weights

framework("onnx")
framework("onnxruntime")

import unirnn  # noqa: E402
from unirnn.layouts import onnx as onnx_layout  # noqa: E402
from unirnn.porting import onnx as onnx_porting  # noqa: E402

NATIVE = {
    **{name: spec for name, spec in SPECS.items() if onnx_layout.native_problem(spec) is None},
    "rnn-hardsig": unirnn.rnn(3, 4, activation="hard_sigmoid(0.2, 0.5)"),
    "lstm-peepholes-elu": unirnn.lstm(3, 4, peepholes=True, activation="elu"),
    "lstm-softsign-bidir-2layer": unirnn.lstm(3, 4, recurrent_activation="hard_sigmoid",
                                              activation="softsign", num_layers=2,
                                              bidirectional=True),
    "gru-before-leaky-nobias": unirnn.gru(3, 4, reset="before", bias=False,
                                          activations={"n": "leaky_relu(0.3)"}),
    "gru-softplus-identity": unirnn.gru(3, 4, recurrent_activation="softplus",
                                        activation="identity"),
}


def _ops(model):
    return [n.op_type for n in model.graph.node]


def test_native_set_is_what_the_layout_says():
    assert set(NATIVE) >= {"rnn-tanh", "rnn-relu-nobias", "rnn-2layer-bidir", "lstm",
                           "lstm-relu", "lstm-nobias-hardsig", "gru", "gru-before"}
    assert {n for n in SPECS if n not in NATIVE} == {
        "rnn-gelu-bidir-2layer", "lstm-peephole-clip", "lstm-proj-bidir-2layer",
        "lstm-relu-proj-peephole", "lstm-roles", "gru-gelu-z", "gru-before-new-nobias",
        "gru-new-bidir-2layer", "gru-leaky-softplus"}


@pytest.mark.parametrize("spec", NATIVE.values(), ids=list(NATIVE))
def test_native_op_for_every_expressible_spec(spec):
    """One native node per layer, no Scan, and onnxruntime's outputs equal the oracle's."""
    weights = nonzero_weights(spec, seed=3).astype(np.float32)
    model = onnx_porting.to_onnx(spec, weights)
    ops = _ops(model)
    assert ops.count(onnx_layout.OP_TYPES[spec.family]) == spec.num_layers
    assert "Scan" not in ops
    assert onnx_porting.kernel(model) == f"onnx.{onnx_layout.OP_TYPES[spec.family]}"
    x = np.random.default_rng(0).standard_normal((2, 5, spec.input_size))
    lengths = np.array([5, 3])
    y, state = onnx_porting.run(model, x, lengths=lengths)
    want, want_state = oracle.run(spec, weights, x, None, lengths)
    want_state = want_state if isinstance(want_state, tuple) else (want_state,)
    for got, expected in zip((y, *state), (want, *want_state)):
        assert max_rel_error(got, expected) <= TOL["float32"]


@pytest.mark.parametrize("name", [n for n in SPECS if n not in NATIVE])
def test_scan_graph_otherwise(name):
    spec = SPECS[name]
    model = onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float32))
    assert _ops(model).count("Scan") == spec.num_layers * spec.num_directions
    assert not set(_ops(model)) & {"LSTM", "GRU", "RNN"}
    with pytest.raises(unirnn.SpecError, match="native=True"):
        onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float32), native=True)


@pytest.mark.parametrize(("spec", "reason"), [
    (unirnn.lstm(3, 4, proj_size=2), "no projection"),
    (unirnn.lstm(3, 4, cell_clip=1.0), "pre-activation, not the cell state"),
    (unirnn.lstm(3, 4, activations={"i": "relu"}), "one activation .f. for i, f, o"),
    (unirnn.gru(3, 4, activations={"z": "relu"}), "one activation .f. for r, z"),
    (unirnn.gru(3, 4, update="new"), "h = .1-z.\\*n \\+ z\\*h"),
    (unirnn.gru(3, 4, activations={"n": "gelu"}), "not one of ONNX's RNN activations"),
    (unirnn.rnn(3, 4, activation="silu"), "not one of ONNX's RNN activations"),
])
def test_native_problem_names_the_reason(spec, reason):
    problem = onnx_layout.native_problem(spec)
    assert problem is not None
    assert re.search(reason, problem), problem


def test_float64_takes_the_scan_graph():
    """onnxruntime's LSTM/GRU/RNN kernels run float32 only: float64 exports Scan."""
    spec = unirnn.lstm(3, 4)
    assert "float32 only" in onnx_layout.native_problem(spec, "float64")
    model = onnx_porting.to_onnx(spec, nonzero_weights(spec))
    assert onnx_porting.kernel(model) == "onnx.Scan"


def test_float64_gelu_is_not_run_by_onnxruntime():
    """Pinned: onnxruntime has no float64 Erf kernel (exact GELU); the model is valid ONNX."""
    spec = unirnn.gru(3, 4, activations={"z": "gelu"})
    assert "Erf" in onnx_porting.float64_problem(spec)
    model = onnx_porting.to_onnx(spec, nonzero_weights(spec))
    with pytest.raises(Exception, match="Erf"):
        onnx_porting.run(model, np.zeros((1, 2, 3)))
    assert onnx_porting.float64_problem(unirnn.gru(3, 4)) is None


def _node(model, op):
    return next(n for n in model.graph.node if n.op_type == op)


def _attrs(node):
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize(("reset", "value"), [("after", 1), ("before", 0)])
def test_gru_linear_before_reset(reset, value):
    spec = unirnn.gru(3, 4, reset=reset)
    node = _node(onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float32)), "GRU")
    assert _attrs(node)["linear_before_reset"] == value


def test_activation_attributes_written():
    spec = unirnn.lstm(3, 4, recurrent_activation="hard_sigmoid", activation="elu",
                       bidirectional=True)
    node = _node(onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float32)), "LSTM")
    attrs = _attrs(node)
    assert attrs["activations"] == [b"HardSigmoid", b"Elu", b"Elu"] * 2
    # unirnn's hard_sigmoid is torch's/Keras 3's (1/6, 1/2), never ONNX's default (0.2, 0.5)
    np.testing.assert_allclose(attrs["activation_alpha"], [1 / 6, 1.0, 1.0] * 2, rtol=1e-7)
    np.testing.assert_allclose(attrs["activation_beta"], [0.5, 0.5], rtol=0)
    assert attrs["direction"] == b"bidirectional" and attrs["hidden_size"] == 4
    assert "layout" not in attrs and "clip" not in attrs  # layout 0: onnxruntime's only one
    assert "activations" not in _attrs(_node(onnx_porting.to_onnx(
        unirnn.lstm(3, 4), nonzero_weights(unirnn.lstm(3, 4)).astype(np.float32)), "LSTM"))


def test_spec_travels_in_metadata_and_opset():
    spec = SPECS["gru-gelu-z"]
    model = onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float32), opset=21)
    props = {p.key: p.value for p in model.metadata_props}
    assert unirnn.Spec.from_json(props["unirnn.spec"]) == spec
    assert model.opset_import[0].version == 21
    assert [i.name for i in model.graph.input] == ["x", "lengths"]
    assert [o.name for o in model.graph.output] == ["y", "h_n"]
    for bad in (13, 10_000, "17"):
        with pytest.raises(unirnn.SpecError, match="opset"):
            onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float32), opset=bad)


def test_inputs_and_outputs_are_chosen():
    spec = SPECS["lstm"]
    weights = nonzero_weights(spec).astype(np.float32)
    model = onnx_porting.to_onnx(spec, weights, lengths=False, initial_state=True)
    assert [i.name for i in model.graph.input] == ["x", "h0", "c0"]
    assert [o.name for o in model.graph.output] == ["y", "h_n", "c_n"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "time", 3]


def test_user_activation_needs_onnx_implementation():
    unirnn.register_activation("tanh_again", numpy=np.tanh, overwrite=True)
    spec = unirnn.gru(3, 4, activations={"n": "tanh_again"})
    with pytest.raises(unirnn.SpecError, match="'tanh_again' has no ONNX implementation"):
        onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float32))
    # with onnx=, it exports exactly: judged by the oracle on the same cell with tanh
    unirnn.register_activation("tanh_again", numpy=np.tanh, overwrite=True,
                               onnx=lambda graph, x: graph.op("Tanh", x))
    x = np.random.default_rng(0).standard_normal((2, 3, 3))
    weights = nonzero_weights(spec)
    got = onnx_porting.evaluate(spec, weights, x, dtype="float64")
    want, _ = oracle.run(unirnn.gru(3, 4), weights, x)
    assert max_rel_error(got.outputs, want) <= TOL["float64"]
    assert got.kernel == "onnx.Scan"
