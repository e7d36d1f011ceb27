"""Reading ONNX models: ``LSTM``/``GRU``/``RNN`` nodes (alone or chained into a stack) and
unirnn's own graphs (through the spec they carry) into a spec and canonical weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from .._errors import FileFormatError, SpecError, WeightsError
from .._spec import Spec
from .._weights import Weights, check_weights, weight_shapes
from ..layouts import SPEC_KEY
from ..layouts import onnx as onnx_layout

__all__ = ["carried_spec", "describe", "load_model", "read_model", "recurrent_nodes"]

_PASS_THROUGH = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout",
                 "Cast", "Flatten"}
"""Shape-only operators exporters put between stacked recurrent layers."""

_ATTRIBUTES = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
               "hidden_size", "input_forget", "layout", "linear_before_reset"}


def load_model(source: Any) -> onnx.ModelProto:
    """An ``onnx.ModelProto`` from a model, a path or serialized bytes.

    Raises:
        FileFormatError: not a readable ONNX model (a truncated or foreign file).
        FileNotFoundError: no file at the path.
    """
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        data, where = bytes(source), "the bytes"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX file at {str(path)!r}")
        data, where = path.read_bytes(), repr(str(path))
    else:
        raise FileFormatError(f"from_onnx: expected an onnx.ModelProto, a path or bytes; "
                              f"received {type(source).__name__}")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise FileFormatError(f"{where} is not a readable ONNX model (truncated or another "
                              f"format): protobuf could not parse it ({err})") from None
    if not model.HasField("graph") or not model.opset_import:
        raise FileFormatError(f"{where} is not an ONNX model: it has no graph or no opset "
                              "(a truncated file, or another format)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        if not isinstance(source, (str, os.PathLike)):
            raise FileFormatError("from_onnx: the model keeps tensors in external data; "
                                  "pass its path")
        onnx.load_external_data_for_model(model, str(Path(source).parent))
    return model


def carried_spec(model: onnx.ModelProto) -> Spec | None:
    """The spec a model written by unirnn carries in ``metadata_props``, or ``None``."""
    text = next((p.value for p in model.metadata_props if p.key == SPEC_KEY), None)
    if text is None:
        return None
    try:
        return Spec.from_json(text)
    except ValueError as err:
        raise SpecError(f"from_onnx: metadata_props[{SPEC_KEY!r}] is not a unirnn spec "
                        f"({err})") from None


def recurrent_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The top-level ``LSTM``/``GRU``/``RNN`` nodes, in graph order."""
    return [n for n in model.graph.node
            if n.op_type in onnx_layout.FAMILIES and n.domain in ("", "ai.onnx")]


def _label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.op_type} node {node.name or '#' + str(index)!r}"


class _Constants:
    """Constant tensors by name: initializers, ``Constant`` nodes, and ``Identity`` of them."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._tensors = {t.name: t for t in graph.initializer}
        self._nodes = {out: n for n in graph.node for out in n.output}

    def get(self, name: str, what: str) -> np.ndarray:
        seen = 0
        while name not in self._tensors and seen < 16:
            node = self._nodes.get(name)
            if node is None or node.op_type not in ("Constant", "Identity"):
                raise FileFormatError(f"{what} ({name!r}) is computed when the graph runs, not "
                                      "a constant; unirnn reads initializers and Constant nodes")
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is None:
                    raise FileFormatError(f"{what}: Constant {name!r} has no tensor value")
                return numpy_helper.to_array(value.t)
            name, seen = node.input[0], seen + 1
        return numpy_helper.to_array(self._tensors[name])


def _attrs(node: onnx.NodeProto, where: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for attribute in node.attribute:
        if attribute.name not in _ATTRIBUTES:
            raise SpecError(f"{where}: unknown attribute {attribute.name!r}; expected "
                            f"{', '.join(sorted(_ATTRIBUTES))}")
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        attrs[attribute.name] = value
    if int(attrs.get("layout", 0)) not in (0, 1):
        raise SpecError(f"{where}: layout={attrs['layout']}; expected 0 or 1")
    return attrs


def _input(node: onnx.NodeProto, k: int) -> str:
    return node.input[k] if len(node.input) > k else ""


def _node_layer(node: onnx.NodeProto, index: int, constants: _Constants
                ) -> tuple[Spec, list[dict[str, np.ndarray]]]:
    """One node's one-layer spec and canonical tensors per direction."""
    where = _label(node, index)
    attrs = _attrs(node, where)
    W = constants.get(_input(node, 1), f"{where}: W")
    R = constants.get(_input(node, 2), f"{where}: R")
    B = constants.get(_input(node, 3), f"{where}: B") if _input(node, 3) else None
    P = constants.get(_input(node, 7), f"{where}: P") \
        if node.op_type == "LSTM" and _input(node, 7) else None
    spec = onnx_layout.spec_from_node(node.op_type, attrs, W.shape, R.shape,
                                      has_bias=B is not None, has_peepholes=P is not None,
                                      where=where)
    G, H, D = spec.num_gates, spec.hidden_size, spec.num_directions
    for name, array, shape in (("B", B, (D, 2 * G * H)), ("P", P, (D, 3 * H))):
        if array is not None and array.shape != shape:
            raise WeightsError(f"{where}: {name} has shape {array.shape}; expected {shape}")
    family = spec.family
    per_direction = []
    for d in range(D):
        tensors = {"w_x": onnx_layout.from_onnx_rows(family, W[d]),
                   "w_h": onnx_layout.from_onnx_rows(family, R[d])}
        if B is not None:
            tensors["b_x"] = onnx_layout.from_onnx_rows(family, B[d, : G * H])
            tensors["b_h"] = onnx_layout.from_onnx_rows(family, B[d, G * H:])
        if P is not None:
            tensors["p"] = onnx_layout.from_onnx_peepholes(P[d])
        per_direction.append(tensors)
    return spec, per_direction


def _source_node(graph: onnx.GraphProto, name: str) -> tuple[onnx.NodeProto | None, list[str]]:
    """The recurrent node whose ``Y`` reaches ``name`` through shape-only ops, and those ops."""
    producers = {out: n for n in graph.node for out in n.output}
    path: list[str] = []
    node = producers.get(name)
    while node is not None and node.op_type in _PASS_THROUGH and len(path) < 16:
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        path.append(f"{node.op_type}{perm if perm is not None else ''}")
        name = node.input[0]
        node = producers.get(name)
    if node is not None and node.op_type in onnx_layout.FAMILIES and node.output[0] == name:
        return node, path
    return None, path


def _chain(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto] | None:
    """The nodes as one stack, bottom layer first, when each feeds the next; else ``None``."""
    if len(nodes) == 1:
        return nodes
    below: dict[int, int] = {}
    for k, node in enumerate(nodes):
        source, path = _source_node(model.graph, node.input[0])
        if source is None:
            continue
        j = next(i for i, n in enumerate(nodes) if n is source)
        directions = next((helper.get_attribute_value(a) for a in source.attribute
                           if a.name == "direction"), b"forward")
        layout = next((helper.get_attribute_value(a) for a in source.attribute
                       if a.name == "layout"), 0)
        if directions == b"bidirectional" and layout == 0 and "Transpose[0, 2, 1, 3]" not in path:
            raise FileFormatError(
                f"{_label(node, k)} reads {_label(source, j)}'s bidirectional output through "
                f"{' -> '.join(reversed(path)) or 'nothing'}; expected Transpose(perm=[0, 2, 1, "
                "3]) then Reshape (forward then backward features), so read each with node="
            )
        below[k] = j
    bottoms = [k for k in range(len(nodes)) if k not in below]
    if len(bottoms) != 1 or len(set(below.values())) != len(below):
        return None
    order = [bottoms[0]]
    above = {j: k for k, j in below.items()}
    while order[-1] in above:
        order.append(above[order[-1]])
    return [nodes[k] for k in order] if len(order) == len(nodes) else None


def _listing(nodes: list[onnx.NodeProto]) -> str:
    return "; ".join(f"{n.name or '#' + str(k)!r} ({n.op_type})" for k, n in enumerate(nodes))


def _select(nodes: list[onnx.NodeProto], node: str | int) -> onnx.NodeProto:
    if isinstance(node, int) and not isinstance(node, bool):
        if not 0 <= node < len(nodes):
            raise SpecError(f"from_onnx: node={node} is out of range; the model's recurrent "
                            f"nodes are {_listing(nodes)}")
        return nodes[node]
    match = [n for n in nodes if n.name == node]
    if not match:
        raise SpecError(f"from_onnx: no recurrent node named {node!r}; the model's recurrent "
                        f"nodes are {_listing(nodes)} (pass a name or an index)")
    return match[0]


def _stack(model: onnx.ModelProto, chain: list[onnx.NodeProto]) -> tuple[Spec, Weights]:
    constants = _Constants(model.graph)
    indices = {id(n): k for k, n in enumerate(recurrent_nodes(model))}
    layers = [_node_layer(n, indices.get(id(n), 0), constants) for n in chain]
    first = layers[0][0]
    spec = first.replace(num_layers=len(layers))
    arrays: dict[str, np.ndarray] = {}
    for k, (layer_spec, per_direction) in enumerate(layers):
        expected = first.replace(input_size=spec.layer_input_size(k)) if k else first
        if layer_spec != expected:
            raise SpecError(
                f"from_onnx: the recurrent nodes chain into a stack, but layer {k} "
                f"({_label(chain[k], k)}) is {layer_spec.describe()} where layer 0 makes it "
                f"{expected.describe()}; read one node with node="
            )
        for direction, tensors in zip(spec.directions, per_direction):
            arrays.update({f"layer{k}.{direction}.{t}": v for t, v in tensors.items()})
    return spec, check_weights(spec, arrays)


def read_model(model: onnx.ModelProto, node: str | int | None = None) -> tuple[Spec, Weights]:
    """``(spec, weights)`` of ``model``: see :func:`unirnn.porting.onnx.from_onnx`."""
    carried = carried_spec(model)
    nodes = recurrent_nodes(model)
    if carried is not None and node is None:
        initializers = {t.name: t for t in model.graph.initializer}
        names = list(weight_shapes(carried))
        if all(name in initializers for name in names):  # unirnn's Scan graph
            return carried, check_weights(carried, {
                name: numpy_helper.to_array(initializers[name]) for name in names})
    if not nodes:
        ops = sorted({n.op_type for n in model.graph.node})
        hint = ""
        if "Loop" in ops:
            from ._onnx_loop import read_keras_loop

            try:
                return read_keras_loop(model)
            except SpecError as err:
                hint = (f"; its recurrence is a Loop graph, not recognised as tf2onnx's Loop "
                        f"of a Keras layer ({err}): port the framework's layer instead "
                        "(unirnn.port(layer, to='onnx'))")
        raise SpecError("from_onnx: the model has no LSTM, GRU or RNN node (its operators: "
                        f"{', '.join(ops) or 'none'}); unirnn reads those, and graphs it wrote"
                        + hint)
    if node is not None:
        return _stack(model, [_select(nodes, node)])
    chain = _chain(model, nodes)
    if chain is None:
        raise SpecError(f"from_onnx: the model has {len(nodes)} recurrent nodes that do not "
                        f"chain into one stack: {_listing(nodes)}; pick one with node=")
    spec, weights = _stack(model, chain)
    if carried is not None:
        if carried.replace(dropout=0.0) != spec:
            raise SpecError(f"from_onnx: the model's nodes compute {spec.describe()}, but its "
                            f"metadata_props[{SPEC_KEY!r}] carries {carried.describe()}")
        return carried, check_weights(carried, dict(weights))
    return spec, weights


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(model: onnx.ModelProto) -> list[str]:
    """Lines for people: each recurrent node and what it maps to, and what the model reads as."""
    lines = []
    constants = _Constants(model.graph)
    if not recurrent_nodes(model):
        scans = sum(n.op_type == "Scan" for n in model.graph.node)
        lines.append(f"  no LSTM, GRU or RNN node; {scans} Scan node(s)")
    for k, node in enumerate(recurrent_nodes(model)):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        shown = ", ".join(f"{key}={_shown(value)}" for key, value in sorted(attrs.items()))
        try:
            mapped = _node_layer(node, k, constants)[0].describe()
        except Exception as err:  # shown, not raised: info lists every node
            mapped = f"not readable: {type(err).__name__}: {err}"
        lines.append(f"  {_label(node, k)}: {shown}")
        lines.append(f"    maps to: {mapped}")
    try:
        spec, _ = read_model(model)
        lines.append(f"reads as: {spec.describe()}")
    except ValueError as err:
        lines.append(f"reads as: needs node= ({err})" if "node=" in str(err)
                     else f"reads as: nothing; from_onnx fails ({err})")
    except Exception as err:  # a tampered graph
        lines.append(f"reads as: nothing; from_onnx fails ({type(err).__name__}: {err})")
    return lines
