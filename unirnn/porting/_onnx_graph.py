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

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .._cells import folded_bias_rows
from .._spec import Spec
from .._weights import Weights, layer_shapes
from ..layouts import onnx as onnx_layout
from ._onnx_cells import generic_scan_direction, needs_generic_step, scan_node
from ._onnx_ops import ELEM, Graph, activation

__all__ = ["DTYPES", "build_model"]

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

    # xw holds x W_x^T + b_x + the foldable rows of b_h (unirnn._cells.folded_bias_rows),
    # and rides in as the recurrent Gemm's C: one node per step for a_k
    if spec.family == "rnn":
        h_new = activation(body, acts["h"], _gemm(body, h, w["w_h"], xw))
        return [h_new], h_new
    if spec.family == "gru":
        if spec.reset == "after":  # b_hn stays inside r * (W_hn h + b_hn)
            x_r, x_z, x_n = split(xw, 3)
            h_r, h_z, h_n = split(_gemm(body, h, w["w_h"], w.get("b_h_n0")), 3)
            r = activation(body, acts["r"], body.op("Add", x_r, h_r))
            z = activation(body, acts["z"], body.op("Add", x_z, h_z))
            n = activation(body, acts["n"], body.op("Add", x_n, body.op("Mul", r, h_n)))
        else:
            sizes = body.const(np.array([2 * H, H], np.int64))
            x_rz, x_n = body.op("Split", xw, sizes, axis=1, outputs=2)
            a_r, a_z = split(_gemm(body, h, w["w_h_rz"], x_rz), 2)
            r = activation(body, acts["r"], a_r)
            z = activation(body, acts["z"], a_z)
            n = activation(body, acts["n"], _gemm(body, body.op("Mul", r, h), w["w_h_n"], x_n))
        keep, take = (z, body.op("Sub", body.const(1.0), z))
        if spec.update == "new":
            keep, take = take, keep
        h_new = body.op("Add", body.op("Mul", keep, h), body.op("Mul", take, n))
        return [h_new], h_new
    c = state[1]
    a_i, a_f, a_g, a_o = split(_gemm(body, h, w["w_h"], xw), G)
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
    if spec.bias:  # b_h's foldable rows join b_x (folded once by onnxruntime at load)
        rows, GH = folded_bias_rows(spec), spec.num_gates * H
        if rows == GH:
            xw = g.op("Add", xw, g.op("Add", w["b_x"], w["b_h"]))
        else:
            zeros = g.const(np.zeros(GH - rows))
            xw = g.op("Add", xw, g.op("Add", w["b_x"], g.op("Concat", _rows(g, w["b_h"], 0, rows),
                                                            zeros, axis=0)))
            w["b_h_n0"] = g.op("Concat", g.const(np.zeros(rows)), _rows(g, w["b_h"], rows, GH),
                               axis=0)
    if spec.family == "gru" and spec.reset == "before":
        w["w_h_rz"], w["w_h_n"] = _rows(g, w["w_h"], 0, 2 * H), _rows(g, w["w_h"], 2 * H, 3 * H)
    if spec.peepholes:
        w["p_i"], w["p_f"], w["p_o"] = (_rows(g, w["p"], k * H, (k + 1) * H) for k in range(3))
    body = g.sub(f"{prefix}step.")
    state_in = [body.fresh(n) for n in ("h", "c")[: len(state)]]
    xw_t, mask_t = body.fresh("xw_t"), body.fresh("mask_t")
    new_state, h_out = _step(body, spec, w, xw_t, state_in)
    return scan_node(g, body, f"{prefix}step", direction, state, state_in, new_state, h_out,
                     (xw, xw_t), (mask, mask_t))


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
    g.nodes[-1].name = f"layer{layer}.{onnx_layout.OP_TYPES[family]}"
    y = g.op("Reshape", g.op("Transpose", outs[0], perm=[0, 2, 1, 3]),
             g.const(np.array([0, 0, -1], np.int64)))
    return y, list(outs[1:])


# -- the model ------------------------------------------------------------------------------


def build_model(spec: Spec, weights: Weights, *, native: bool, opset: int, batch_first: bool,
                lengths: bool, initial_state: bool) -> onnx.ModelProto:
    """The ONNX model of ``spec`` (see :func:`unirnn.porting.onnx.to_onnx`)."""
    dtype = weights.dtype
    elem = ELEM[dtype]
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
    state_names = ["h0", "c0"][: 2 if spec.has_cell_state else 1]
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
            rows = (np.array([layer * D]), np.array([(layer + 1) * D]))
            slices: list[str | None] = [g.op("Slice", n, *map(g.const, rows)) if initial_state
                                        else None for n in state_names]
            x, layer_finals = _native_layer(g, spec, weights, layer, x, seq_lens, slices)
            for n, final in zip(state_names, layer_finals):
                finals[n].append(final)
            continue
        directions: list[str] = []
        for d, direction in enumerate(spec.directions):
            state = [g.op("Gather", n, g.const(np.array(layer * D + d)), axis=0)
                     if initial_state else zeros[n] for n in state_names]
            if needs_generic_step(spec):
                last, y = generic_scan_direction(g, spec, layer, direction, x, state, mask,
                                                 layer_shapes(spec, spec.layer_input_size(layer)))
            else:
                last, y = _scan_direction(g, spec, layer, direction, x, state, mask)
            directions.append(y)
            for n, s in zip(state_names, last):
                finals[n].append(g.op("Unsqueeze", s, g.const(np.array([0]))))
        x = directions[0] if D == 1 else g.op("Concat", *directions, axis=-1)
    if batch_first:
        g.nodes.append(helper.make_node("Transpose", [x], ["y"], perm=[1, 0, 2]))
    else:
        g.nodes.append(helper.make_node("Identity", [x], ["y"]))
    output_names = {"h0": "h_n", "c0": "c_n"}
    for n in state_names:
        parts = finals[n]
        if len(parts) > 1:
            g.nodes.append(helper.make_node("Concat", parts, [output_names[n]], axis=0))
        else:
            g.nodes.append(helper.make_node("Identity", parts, [output_names[n]]))
    outputs = [helper.make_tensor_value_info("y", elem, [*batch_dims, D * P])]
    outputs += [helper.make_tensor_value_info(output_names[n], elem, [L * D, "batch", sizes[n]])
                for n in state_names]
    graph = helper.make_graph(g.nodes, "unirnn", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="unirnn",
                              ir_version=helper.find_min_ir_version_for(opsets))
    return model


DTYPES: Sequence[np.dtype[Any]] = (np.dtype(np.float32), np.dtype(np.float64))
"""The float dtypes a graph can have."""
