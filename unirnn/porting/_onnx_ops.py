"""The nodes of unirnn's ONNX graphs: a small graph builder (what an ``onnx=`` activation
receives) and every built-in activation as ONNX operators, exact in float32 and float64.

onnxruntime has no float64 kernel of ``Softplus``, ``Softsign``, ``Elu`` and
``HardSigmoid``, and ``LeakyRelu``'s slope is a float32 attribute, so float64 graphs spell
those out in elementary operators; exact GELU is ``Erf`` (onnxruntime: float32 only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .._activations import get_activation_def, parse_activation
from .._errors import SpecError
from .._spec import Spec

__all__ = ["ELEM", "Graph", "activation", "check_activations"]

ELEM: dict[np.dtype[Any], int] = {np.dtype(np.float32): TensorProto.FLOAT,
                                   np.dtype(np.float64): TensorProto.DOUBLE}


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
    "min_g": lambda g, x: g.op("Where", g.op("Less", x, g.const(0.0)), g.op("Sigmoid", x),
                               g.op("Add", x, g.const(0.5))),
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
