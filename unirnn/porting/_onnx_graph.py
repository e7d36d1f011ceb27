"""Building ONNX graphs of a spec: the native ``LSTM``/``GRU``/``RNN`` op per layer, or a
``Scan`` per layer and direction whose body is DESIGN.md's cell step.

Internally the graph is time-major ``[T, N, ·]``. A ``Scan`` layer projects the whole input
sequence at once (one ``MatMul`` for every step), and its body does one recurrent ``Gemm``
per step; with ``lengths`` a boolean mask ``[T, N, 1]`` holds the state at padded steps and
zeroes their outputs, and a backward ``Scan`` (``scan_input_directions=[1]``) then runs over
each sequence's valid steps reversed (DESIGN's variable-length meaning). Weights are
initializers under their canonical names (``layer0.forward.w_x``...) for ``Scan`` layers,
and ``layer{k}.W``/``R``/``B``/``P`` in ONNX's layout for native ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .._activations import get_activation_def, parse_activation
from .._errors import SpecError
from .._spec import Spec
from .._weights import Weights
from ..layouts import onnx as onnx_layout

__all__ = ["Graph", "build_model"]

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


class Graph:
    """Nodes under construction: what an ``onnx=`` activation receives.

    ``op(op_type, *inputs, **attributes)`` adds a node and returns its output's name
    (``outputs=k`` returns ``k`` names); ``const(value)`` adds a constant of the graph's
    float dtype (or of ``value``'s own dtype when it is an integer or bool array) and
    returns its name. Names are unique within the model.
    """

    def __init__(self, dtype: np.dtype[Any], initializers: list[onnx.TensorProto],
                 counter: list[int], prefix: str = "") -> None:
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        self._initializers = initializers
        self._counter = counter
        self._prefix = prefix
        self._consts: dict[tuple[Any, ...], str] = {}

    def fresh(self, stem: str) -> str:
        self._counter[0] += 1
        return f"{self._prefix}{stem}_{self._counter[0]}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attributes: Any) -> Any:
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names,
                                           name=self.fresh(op_type), **attributes))
        return names[0] if outputs == 1 else names

    def const(self, value: Any, name: str | None = None) -> str:
        array = np.asarray(value)
        if array.dtype.kind == "f":
            array = array.astype(self.dtype)
        key = (array.dtype.str, array.shape, array.tobytes()) if name is None else (name,)
        if key not in self._consts:
            self._consts[key] = name or self.fresh("const")
            self._initializers.append(numpy_helper.from_array(array, self._consts[key]))
        return self._consts[key]

    def sub(self, prefix: str) -> Graph:
        """A graph for a ``Scan`` body, sharing this model's initializers and names."""
        return Graph(self.dtype, self._initializers, self._counter, prefix)


# -- activations ------------------------------------------------------------------------------


def _gelu(g: Graph, x: str) -> str:
    erf = g.op("Erf", g.op("Div", x, g.const(math.sqrt(2.0))))
    return g.op("Mul", g.op("Mul", x, g.const(0.5)), g.op("Add", g.const(1.0), erf))


def _gelu_tanh(g: Graph, x: str) -> str:
    cube = g.op("Mul", g.op("Mul", x, x), x)
    inner = g.op("Mul", g.const(math.sqrt(2.0 / math.pi)),
                 g.op("Add", x, g.op("Mul", g.const(0.044715), cube)))
    return g.op("Mul", g.op("Mul", g.const(0.5), x), g.op("Add", g.const(1.0), g.op("Tanh", inner)))


def _softplus(g: Graph, x: str) -> str:
    if g.dtype == np.float32:
        return g.op("Softplus", x)  # onnxruntime has no float64 Softplus kernel
    tail = g.op("Log", g.op("Add", g.const(1.0), g.op("Exp", g.op("Neg", g.op("Abs", x)))))
    return g.op("Add", tail, g.op("Relu", x))


def _softsign(g: Graph, x: str) -> str:
    if g.dtype == np.float32:
        return g.op("Softsign", x)
    return g.op("Div", x, g.op("Add", g.const(1.0), g.op("Abs", x)))


def _elu(g: Graph, x: str, alpha: float) -> str:
    if g.dtype == np.float32:
        return g.op("Elu", x, alpha=alpha)
    negative = g.op("Mul", g.const(alpha), g.op("Sub", g.op("Exp", g.op("Min", x, g.const(0.0))),
                                                g.const(1.0)))
    return g.op("Where", g.op("Greater", x, g.const(0.0)), x, negative)


def _leaky_relu(g: Graph, x: str, alpha: float) -> str:
    if g.dtype == np.float32:
        return g.op("LeakyRelu", x, alpha=alpha)
    # float64: the slope as a float64 constant (the attribute would round it to float32)
    return g.op("Where", g.op("Less", x, g.const(0.0)), g.op("Mul", x, g.const(alpha)), x)


def _hard_sigmoid(g: Graph, x: str, alpha: float, beta: float) -> str:
    if g.dtype == np.float32:
        return g.op("HardSigmoid", x, alpha=alpha, beta=beta)
    line = g.op("Add", g.op("Mul", x, g.const(alpha)), g.const(beta))
    return g.op("Clip", line, g.const(0.0), g.const(1.0))


_BUILTINS: dict[str, Callable[..., str]] = {
    "sigmoid": lambda g, x: g.op("Sigmoid", x),
    "tanh": lambda g, x: g.op("Tanh", x),
    "relu": lambda g, x: g.op("Relu", x),
    "identity": lambda g, x: x,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": lambda g, x: g.op("Mul", x, g.op("Sigmoid", x)),
    "hard_sigmoid": _hard_sigmoid,
    "softsign": _softsign,
    "softplus": _softplus,
    "elu": _elu,
    "leaky_relu": _leaky_relu,
}


def activation(g: Graph, text: str, x: str) -> str:
    """Nodes computing the activation ``text`` of ``x``; a user activation needs ``onnx=``."""
    act = parse_activation(text)
    definition = get_activation_def(act.name)
    if definition.builtin:
        return _BUILTINS[act.name](g, x, *act.args)
    impl = definition.implementations.get("onnx")
    if impl is None:
        raise SpecError(
            f"activation {act.name!r} has no ONNX implementation, so the graph cannot compute "
            f"it exactly; register one with unirnn.register_activation({act.name!r}, "
            "numpy=..., onnx=lambda graph, x, *params: graph.op(...), overwrite=True)"
        )
    return str(impl(g, x, *act.args))


def check_activations(spec: Spec) -> None:
    """Raise before building when an activation of ``spec`` has no ONNX form."""
    for text in spec.activations.values():
        definition = get_activation_def(parse_activation(text).name)
        if not definition.builtin and "onnx" not in definition.implementations:
            activation(Graph(np.dtype(np.float32), [], [0]), text, "x")


# -- one Scan layer direction -----------------------------------------------------------------


def _gemm(g: Graph, a: str, w: str, b: str | None) -> str:
    return g.op("Gemm", a, w, *([b] if b else []), transB=1)


def _rows(g: Graph, name: str, start: int, stop: int) -> str:
    """Rows ``start:stop`` of the initializer ``name`` (folded by onnxruntime at load)."""
    return g.op("Slice", name, g.const(np.array([start], np.int64)),
                g.const(np.array([stop], np.int64)), g.const(np.array([0], np.int64)))


def _step(body: Graph, spec: Spec, w: dict[str, str], xw: str, state: list[str]
          ) -> tuple[list[str], str]:
    """One cell step in the body: new state names and the emitted ``h``."""
    H, G = spec.hidden_size, spec.num_gates
    acts = spec.activations
    h = state[0]

    def split(name: str, parts: int) -> list[str]:
        sizes = body.const(np.array([H] * parts, np.int64))
        return list(body.op("Split", name, sizes, axis=1, outputs=parts))

    if spec.family == "rnn":
        h_new = activation(body, acts["h"], body.op("Add", xw, _gemm(body, h, w["w_h"],
                                                                   w.get("b_h"))))
        return [h_new], h_new
    if spec.family == "gru":
        x_r, x_z, x_n = split(xw, 3)
        if spec.reset == "after":
            h_r, h_z, h_n = split(_gemm(body, h, w["w_h"], w.get("b_h")), 3)
            r = activation(body, acts["r"], body.op("Add", x_r, h_r))
            z = activation(body, acts["z"], body.op("Add", x_z, h_z))
            n = activation(body, acts["n"], body.op("Add", x_n, body.op("Mul", r, h_n)))
        else:
            h_r, h_z = split(_gemm(body, h, w["w_h_rz"], w.get("b_h_rz")), 2)
            r = activation(body, acts["r"], body.op("Add", x_r, h_r))
            z = activation(body, acts["z"], body.op("Add", x_z, h_z))
            reset_h = _gemm(body, body.op("Mul", r, h), w["w_h_n"], w.get("b_h_n"))
            n = activation(body, acts["n"], body.op("Add", x_n, reset_h))
        keep, take = (z, body.op("Sub", body.const(1.0), z))
        if spec.update == "new":
            keep, take = take, keep
        h_new = body.op("Add", body.op("Mul", keep, h), body.op("Mul", take, n))
        return [h_new], h_new
    c = state[1]
    a_i, a_f, a_g, a_o = split(body.op("Add", xw, _gemm(body, h, w["w_h"], w.get("b_h"))), G)
    if spec.peepholes:
        a_i = body.op("Add", a_i, body.op("Mul", w["p_i"], c))
        a_f = body.op("Add", a_f, body.op("Mul", w["p_f"], c))
    i = activation(body, acts["i"], a_i)
    f = activation(body, acts["f"], a_f)
    cand = activation(body, acts["g"], a_g)
    c_new = body.op("Add", body.op("Mul", f, c), body.op("Mul", i, cand))
    if spec.cell_clip is not None:
        c_new = body.op("Clip", c_new, body.const(-spec.cell_clip), body.const(spec.cell_clip))
    if spec.peepholes:
        a_o = body.op("Add", a_o, body.op("Mul", w["p_o"], c_new))
    o = activation(body, acts["o"], a_o)
    h_new = body.op("Mul", o, activation(body, acts["c"], c_new))
    if spec.proj_size:
        h_new = _gemm(body, h_new, w["w_r"], None)
    return [h_new, c_new], h_new


def _scan_direction(g: Graph, spec: Spec, layer: int, direction: str, x: str,
                    state: list[str], mask: str | None) -> tuple[list[str], str]:
    """A ``Scan`` over time-major ``x`` for one layer and direction: (final state, y)."""
    H = spec.hidden_size
    prefix = f"layer{layer}.{direction}."
    w = {k: prefix + k for k in ("w_x", "w_h", "b_x", "b_h", "p", "w_r")}
    xw = g.op("MatMul", x, g.op("Transpose", w["w_x"], perm=[1, 0]))
    if spec.bias:
        xw = g.op("Add", xw, w["b_x"])
    else:
        del w["b_x"], w["b_h"]
    if spec.family == "gru" and spec.reset == "before":
        w["w_h_rz"], w["w_h_n"] = _rows(g, w["w_h"], 0, 2 * H), _rows(g, w["w_h"], 2 * H, 3 * H)
        if spec.bias:
            w["b_h_rz"], w["b_h_n"] = _rows(g, w["b_h"], 0, 2 * H), _rows(g, w["b_h"], 2 * H, 3 * H)
    if spec.peepholes:
        w["p_i"], w["p_f"], w["p_o"] = (_rows(g, w["p"], k * H, (k + 1) * H) for k in range(3))
    body = g.sub(f"{prefix}step.")
    elem = _ELEM[g.dtype]
    state_in = [body.fresh(n) for n in ("h", "c")[: len(state)]]
    xw_t, mask_t = body.fresh("xw_t"), body.fresh("mask_t")
    new_state, h_out = _step(body, spec, w, xw_t, state_in)
    if mask is not None:
        new_state = [body.op("Where", mask_t, new, old) for new, old in zip(new_state, state_in)]
        y = body.op("Where", mask_t, h_out, body.const(0.0))
    else:
        y = body.op("Identity", h_out)
    new_state = [body.op("Identity", s) for s in new_state]  # a body output is a node output
    inputs = [helper.make_tensor_value_info(n, elem, None) for n in state_in]
    inputs.append(helper.make_tensor_value_info(xw_t, elem, None))
    if mask is not None:
        inputs.append(helper.make_tensor_value_info(mask_t, TensorProto.BOOL, None))
    outputs = [helper.make_tensor_value_info(n, elem, None) for n in [*new_state, y]]
    graph = helper.make_graph(body.nodes, f"{prefix}step", inputs, outputs)
    scans = [xw] + ([mask] if mask is not None else [])
    backward = int(direction == "backward")
    results = g.op("Scan", *state, *scans, outputs=len(state) + 1, body=graph,
                   num_scan_inputs=len(scans), scan_input_directions=[backward] * len(scans),
                   scan_output_directions=[backward])
    return list(results[:-1]), results[-1]


# -- one native layer ----------------------------------------------------------------------


def _native_layer(g: Graph, spec: Spec, weights: Weights, layer: int, x: str,
                  seq_lens: str | None, state: list[str | None]) -> tuple[str, list[str]]:
    """The native op for one layer: ``(y [T, N, D*H], final states [D, N, ·])``."""
    family = spec.family
    w = [weights.layer(layer, d) for d in spec.directions]
    tensors = {
        "W": np.stack([onnx_layout.to_onnx_rows(family, t["w_x"]) for t in w]),
        "R": np.stack([onnx_layout.to_onnx_rows(family, t["w_h"]) for t in w]),
    }
    if spec.bias:
        tensors["B"] = np.stack([np.concatenate([onnx_layout.to_onnx_rows(family, t["b_x"]),
                                                 onnx_layout.to_onnx_rows(family, t["b_h"])])
                                 for t in w])
    if spec.peepholes:
        tensors["P"] = np.stack([onnx_layout.to_onnx_peepholes(t["p"]) for t in w])
    names = {k: g.const(v, f"layer{layer}.{k}") for k, v in tensors.items()}
    acts = onnx_layout.native_activations(spec)
    assert acts is not None  # native_problem said so
    attrs: dict[str, Any] = {"hidden_size": spec.hidden_size,
                             "direction": "bidirectional" if spec.bidirectional else "forward"}
    defaults = list(onnx_layout.DEFAULT_ACTIVATIONS[family]) * spec.num_directions
    if acts[0] != defaults:
        attrs["activations"] = acts[0]
        if acts[1]:
            attrs["activation_alpha"] = acts[1]
        if acts[2]:
            attrs["activation_beta"] = acts[2]
    if family == "gru":
        attrs["linear_before_reset"] = int(spec.reset == "after")
    inputs = [x, names["W"], names["R"], names.get("B", ""), seq_lens or "",
              *(s or "" for s in state)]
    if family == "lstm":
        inputs.append(names.get("P", ""))
    while inputs[-1] == "":
        inputs.pop()
    outs = g.op(onnx_layout.OP_TYPES[family], *inputs, outputs=3 if family == "lstm" else 2,
                **attrs)
    y = g.op("Reshape", g.op("Transpose", outs[0], perm=[0, 2, 1, 3]),
             g.const(np.array([0, 0, -1], np.int64)))
    return y, list(outs[1:])


# -- the model ------------------------------------------------------------------------------


def build_model(spec: Spec, weights: Weights, *, native: bool, opset: int, batch_first: bool,
                lengths: bool, initial_state: bool) -> onnx.ModelProto:
    """The ONNX model of ``spec`` (see :func:`unirnn.porting.onnx.to_onnx`)."""
    dtype = weights.dtype
    elem = _ELEM[dtype]
    initializers: list[onnx.TensorProto] = []
    g = Graph(dtype, initializers, [0])
    L, D, P, H = spec.num_layers, spec.num_directions, spec.output_size, spec.hidden_size
    batch_dims: list[Any] = ["batch", "time"] if batch_first else ["time", "batch"]
    inputs = [helper.make_tensor_value_info("x", elem, [*batch_dims, spec.input_size])]
    x = g.op("Transpose", "x", perm=[1, 0, 2]) if batch_first else "x"
    if not native:
        for name, array in weights.items():
            g.const(array, name)
    seq_lens = mask = None
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]))
        if native:
            seq_lens = g.op("Cast", "lengths", to=TensorProto.INT32)
        else:
            steps = g.op("Squeeze", g.op("Slice", g.op("Shape", x), g.const(np.array([0])),
                                         g.const(np.array([1]))), g.const(np.array([0])))
            times = g.op("Range", g.const(np.array(0)), steps, g.const(np.array(1)))
            less = g.op("Less", g.op("Unsqueeze", times, g.const(np.array([1]))),
                        g.op("Unsqueeze", "lengths", g.const(np.array([0]))))
            mask = g.op("Unsqueeze", less, g.const(np.array([2])))
    state_names = ["h0", "c0"][: 2 if spec.family == "lstm" else 1]
    sizes = {"h0": P, "c0": H}
    if initial_state:
        inputs += [helper.make_tensor_value_info(n, elem, [L * D, "batch", sizes[n]])
                   for n in state_names]
    else:
        batch = g.op("Slice", g.op("Shape", x), g.const(np.array([1])), g.const(np.array([2])))
        zeros = {n: g.op("ConstantOfShape", g.op("Concat", batch, g.const(np.array([sizes[n]])),
                                                 axis=0),
                         value=numpy_helper.from_array(np.zeros(1, dtype)))
                 for n in state_names}
    finals: dict[str, list[str]] = {n: [] for n in state_names}
    for layer in range(L):
        if native:
            start, stop = g.const(np.array([layer * D])), g.const(np.array([(layer + 1) * D]))
            state = [g.op("Slice", n, start, stop) if initial_state else None
                     for n in state_names]
            x, layer_finals = _native_layer(g, spec, weights, layer, x, seq_lens, state)
            for n, final in zip(state_names, layer_finals):
                finals[n].append(final)
            continue
        outputs = []
        for d, direction in enumerate(spec.directions):
            row = g.const(np.array(layer * D + d))
            state = [g.op("Gather", n, row, axis=0) if initial_state else zeros[n]
                     for n in state_names]
            final, y = _scan_direction(g, spec, layer, direction, x, state, mask)
            outputs.append(y)
            for n, s in zip(state_names, final):
                finals[n].append(g.op("Unsqueeze", s, g.const(np.array([0]))))
        x = outputs[0] if D == 1 else g.op("Concat", *outputs, axis=-1)
    g.nodes.append(helper.make_node("Transpose" if batch_first else "Identity", [x], ["y"],
                                    **({"perm": [1, 0, 2]} if batch_first else {})))
    output_names = {"h0": "h_n", "c0": "c_n"}
    for n in state_names:
        parts = finals[n]
        g.nodes.append(helper.make_node("Concat" if len(parts) > 1 else "Identity", parts,
                                        [output_names[n]], **({"axis": 0} if len(parts) > 1
                                                              else {})))
    outputs = [helper.make_tensor_value_info("y", elem, [*batch_dims, D * P])]
    outputs += [helper.make_tensor_value_info(output_names[n], elem, [L * D, "batch", sizes[n]])
                for n in state_names]
    graph = helper.make_graph(g.nodes, "unirnn", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="unirnn",
                              ir_version=helper.find_min_ir_version_for(opsets))
    return model


DTYPES: Sequence[np.dtype[Any]] = tuple(_ELEM)
"""The float dtypes a graph can have."""
