"""Any registered family's step as ONNX nodes: the ops protocol over graph values.

The ``Scan`` graphs of rnn, lstm and gru have hand-written bodies (:mod:`._onnx_graph`). Every
other family (``unirnn.register_family``: ln_lstm, ln_gru, indrnn, mingru, minlstm, the user's)
and the structural options without one (a GRU with ``reset="none"``, coupled LSTM gates) run
their own :class:`unirnn._cells.Cell` code here: :class:`OnnxOps` gives the cell values that
add nodes when the step computes with them (``a + b`` is an ``Add``), so the body is exactly
the family's step, written once. A user family exports when its activations have ONNX forms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from .._cells import make_cell
from .._spec import Spec
from ._onnx_ops import ELEM, Graph, activation

__all__ = ["OnnxOps", "Value", "generic_scan_direction", "needs_generic_step", "scan_node"]


def needs_generic_step(spec: Spec) -> bool:
    """Whether ``spec``'s Scan body comes from its cell's own step (no hand-written one)."""
    return not spec.native_family or spec.reset == "none" or spec.coupled


class Value:
    """A value of the graph under construction: ``name``, and the size of its last axis
    where known (what ``split`` into equal parts needs)."""

    def __init__(self, g: Graph, name: str, width: int | None) -> None:
        self.g, self.name, self.width = g, name, width

    def _binary(self, op: str, other: Any, swap: bool = False) -> Value:
        if isinstance(other, Value):
            other_name, width = other.name, _width(self.width, other.width)
        else:
            other_name, width = self.g.const(float(other)), self.width
        a, b = (other_name, self.name) if swap else (self.name, other_name)
        return Value(self.g, self.g.op(op, a, b), width)

    def __add__(self, other: Any) -> Value:
        return self._binary("Add", other)

    def __radd__(self, other: Any) -> Value:
        return self._binary("Add", other, swap=True)

    def __sub__(self, other: Any) -> Value:
        return self._binary("Sub", other)

    def __rsub__(self, other: Any) -> Value:
        return self._binary("Sub", other, swap=True)

    def __mul__(self, other: Any) -> Value:
        return self._binary("Mul", other)

    def __rmul__(self, other: Any) -> Value:
        return self._binary("Mul", other, swap=True)

    def __truediv__(self, other: Any) -> Value:
        return self._binary("Div", other)

    def __rtruediv__(self, other: Any) -> Value:
        return self._binary("Div", other, swap=True)

    def __neg__(self) -> Value:
        return Value(self.g, self.g.op("Neg", self.name), self.width)

    def __ge__(self, other: Any) -> Value:  # type: ignore[override]
        return self._binary("GreaterOrEqual", other)


def _width(a: int | None, b: int | None) -> int | None:
    return a if b is None or (a is not None and a >= b) else b


class OnnxOps:
    """:class:`unirnn._cells.Ops` whose arrays are :class:`Value` s of one graph."""

    backend = "onnx"

    def __init__(self, g: Graph) -> None:
        self.g = g

    def _value(self, name: str, width: int | None) -> Value:
        return Value(self.g, name, width)

    def linear(self, x: Value, w: Value, b: Value | None) -> Value:
        # w is (out, in); a weight's width is its row count (see weight_value)
        y = self._value(self.g.op("MatMul", x.name, self.g.op("Transpose", w.name, perm=[1, 0])),
                        w.width)
        return y if b is None else y + b

    def recurrent(self, name: str, x: Value, w: Value, b: Value | None) -> Value:
        return self.linear(x, w, b)

    def split(self, x: Value, sections: int | Sequence[int]) -> list[Value]:
        if isinstance(sections, int):
            if x.width is None or x.width % sections:
                raise ValueError(f"split: cannot split a value of width {x.width} into "
                                 f"{sections} equal parts")
            sizes = [x.width // sections] * sections
        else:
            sizes = list(sections)
        names = self.g.op("Split", x.name, self.g.const(np.array(sizes, np.int64)), axis=-1,
                          outputs=len(sizes))
        return [self._value(n, s) for n, s in zip(names, sizes)]

    def lerp(self, a: Value, b: Value, w: Value) -> Value:
        return a + w * (b - a)

    def clip(self, x: Value, bound: float) -> Value:
        g = self.g
        return self._value(g.op("Clip", x.name, g.const(-bound), g.const(bound)), x.width)

    def activation(self, name: str) -> Callable[[Value], Value]:
        return lambda x: self._value(activation(self.g, name, x.name), x.width)

    def layer_norm(self, x: Value, scale: Value, offset: Value | None,
                   eps: float = 1e-5) -> Value:
        # means as MatMuls by a column of 1/width: the same nodes in every opset
        if x.width is None:
            raise ValueError("layer_norm: the normalised axis' size is not known")
        column = self._value(self.g.const(np.full((x.width, 1), 1.0 / x.width)), 1)
        centred = x - self._mean(x, column)
        var = self._mean(centred * centred, column)
        std = self._value(self.g.op("Sqrt", (var + eps).name), 1)
        y = centred / std * scale
        return y if offset is None else y + offset

    def _mean(self, x: Value, column: Value) -> Value:
        return self._value(self.g.op("MatMul", x.name, column.name), 1)

    def log(self, x: Value) -> Value:
        return self._value(self.g.op("Log", x.name), x.width)

    def where(self, condition: Value, a: Any, b: Any) -> Value:
        names = [v.name if isinstance(v, Value) else self.g.const(float(v)) for v in (a, b)]
        width = _width(*(v.width if isinstance(v, Value) else None for v in (a, b)))
        return self._value(self.g.op("Where", condition.name, *names), width)

    def linear_scan(self, log_a: Value, b: Value, log_b: Value | None, h0: Value) -> Value:
        raise NotImplementedError("the ONNX graph steps every family in a Scan")


def weight_value(g: Graph, name: str, shape: tuple[int, ...]) -> Value:
    """An initializer (outer scope of the Scan body) as a :class:`Value`: a matrix's width
    is its row count, what :meth:`OnnxOps.linear` gives its output."""
    return Value(g, name, shape[0])


def generic_scan_direction(g: Graph, spec: Spec, layer: int, direction: str, x: str,
                           state: list[str], mask: str | None,
                           shapes: dict[str, tuple[int, ...]]) -> tuple[list[str], str]:
    """A ``Scan`` over time-major ``x`` for one layer and direction whose body is the
    family's own step: (final state names, y)."""
    prefix = f"layer{layer}.{direction}."
    params = {short: weight_value(g, prefix + short, shape) for short, shape in shapes.items()}
    outer = make_cell(spec, OnnxOps(g))  # type: ignore[arg-type]
    xp = outer.project(params, Value(g, x, spec.layer_input_size(layer)))
    body = g.sub(f"{prefix}step.")
    cell = make_cell(spec, OnnxOps(body))  # type: ignore[arg-type]
    prepared = cell.prepare({k: Value(body, v.name, v.width) for k, v in params.items()})
    widths = (spec.output_size, spec.hidden_size)
    state_in = [body.fresh(n) for n in ("h", "c")[: len(state)]]
    xp_t, mask_t = body.fresh("xp_t"), body.fresh("mask_t")
    carry = tuple(Value(body, n, w) for n, w in zip(state_in, widths))
    new_carry, y = cell.step(prepared, Value(body, xp_t, xp.width), carry)
    return scan_node(g, body, f"{prefix}step", direction, state, state_in,
                     [v.name for v in new_carry], y.name, (xp.name, xp_t), (mask, mask_t))


def scan_node(g: Graph, body: Graph, name: str, direction: str, state: list[str],
              state_in: list[str], new_state: list[str], h_out: str, scanned: tuple[str, str],
              masked: tuple[str | None, str]) -> tuple[list[str], str]:
    """The ``Scan`` node of one layer direction around a built step: the body's inputs
    (``state_in``, the scanned step ``scanned[1]`` of ``scanned[0]``, the mask's step),
    with a masked step holding the state and emitting zero; (final state names, y)."""
    elem = ELEM[g.dtype]
    mask, mask_t = masked
    if mask is not None:
        new_state = [body.op("Where", mask_t, new, old) for new, old in zip(new_state, state_in)]
        y = body.op("Where", mask_t, h_out, body.const(0.0))
    else:
        y = body.op("Identity", h_out)
    new_state = [body.op("Identity", s) for s in new_state]  # a body output is a node output
    inputs = [helper.make_tensor_value_info(n, elem, None) for n in state_in]
    inputs.append(helper.make_tensor_value_info(scanned[1], elem, None))
    if mask is not None:
        inputs.append(helper.make_tensor_value_info(mask_t, TensorProto.BOOL, None))
    outputs = [helper.make_tensor_value_info(n, elem, None) for n in [*new_state, y]]
    graph = helper.make_graph(body.nodes, name, inputs, outputs)
    scans = [scanned[0]] + ([mask] if mask is not None else [])
    backward = int(direction == "backward")
    results = g.op("Scan", *state, *scans, outputs=len(state) + 1, body=graph,
                   num_scan_inputs=len(scans), scan_input_directions=[backward] * len(scans),
                   scan_output_directions=[backward])
    return list(results[:-1]), results[-1]
