"""Canonical weights <-> ONNX: export any spec, import any ``LSTM``/``GRU``/``RNN`` node.

The layout (gate orders, activation names, ``native_problem``) is :mod:`unirnn.layouts.onnx`;
graphs are built in :mod:`unirnn.porting._onnx_graph` and read in
:mod:`unirnn.porting._onnx_read`. onnxruntime is the judge (tests/onnx).

Example:
    >>> import numpy as np, unirnn
    >>> spec = unirnn.gru(3, 4, activations={"z": "gelu"})
    >>> model = unirnn.to_onnx(spec, unirnn.init_weights(spec))
    >>> sorted({n.op_type for n in model.graph.node} & {"GRU", "Scan"})
    ['Scan']
    >>> unirnn.from_onnx(model)[0] == spec
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .._errors import FileFormatError, SpecError, UnirnnError, WeightsError
from .._evaluation import Evaluation
from .._extras import require
from .._file import write_atomic
from .._spec import Spec, same_spec
from .._weights import Weights, check_weights
from ..layouts import SPEC_KEY
from ..layouts import onnx as onnx_layout
from ._onnx_graph import DTYPES, build_model
from ._onnx_ops import Graph, check_activations
from ._onnx_read import describe, load_model, read_model

__all__ = ["DEFAULT_OPSET", "Graph", "describe", "evaluate", "float64_problem", "from_onnx",
           "kernel", "read_file", "run", "to_onnx", "write_file"]

DEFAULT_OPSET = 17
"""The opset :func:`to_onnx` writes unless told: read by onnxruntime, TensorRT, OpenVINO and
onnx2tf alike. Opsets 14 (``LSTM``/``GRU``/``RNN`` version 14) up to onnx's newest work."""

MIN_OPSET = 14


def to_onnx(spec: Spec, weights: Mapping[str, Any], path: str | os.PathLike[str] | None = None,
            *, opset: int | None = None, batch_first: bool = True, lengths: bool = True,
            initial_state: bool = False, native: bool | None = None) -> onnx.ModelProto:
    """The ONNX model computing ``spec`` with ``weights`` (written atomically to ``path``).

    Each layer is ONNX's own ``LSTM``/``GRU``/``RNN`` op when it computes the spec exactly
    (:func:`unirnn.layouts.onnx.native_problem`), and otherwise one ``Scan`` per layer and
    direction whose body is the cell step (exact GELU through ``Erf``, per-gate activations,
    either reset, either update, projection, peepholes, cell clip). The graph's dtype is the
    weights' (float32 or float64; onnxruntime runs the native ops in float32 only, so float64
    always takes ``Scan``).

    Inputs: ``x`` ``(N, T, I)`` (``batch_first=False``: ``(T, N, I)``); ``lengths`` ``(N,)``
    int64 when ``lengths=True``; ``h0`` ``(L*D, N, P)`` and, for LSTM, ``c0`` ``(L*D, N, H)``
    when ``initial_state=True`` (zeros otherwise). Outputs: ``y`` ``(N, T, D*P)`` (or time
    major), zero past each length; ``h_n`` (and ``c_n``) ``(L*D, N, ·)`` in torch's row order,
    the state after each sequence's last valid step. Batch and time are dynamic. The spec
    travels in ``model.metadata_props["unirnn.spec"]``.

    Args:
        native: ``None`` picks the native op when it can; ``True`` requires it (a SpecError
            says why not); ``False`` always writes ``Scan`` graphs.
        opset: the ONNX opset (default :data:`DEFAULT_OPSET`; 14 or newer).

    Raises:
        SpecError: an activation without an exact ONNX form (a registered one without
            ``onnx=``), or ``native=True`` for a spec the native op cannot compute.
        WeightsError: weights that do not match the spec, or not float32/float64.
    """
    if not isinstance(spec, Spec):
        raise SpecError(f"to_onnx: expected a unirnn.Spec; received {type(spec).__name__}")
    checked = check_weights(spec, weights)
    dtype = checked.dtype
    if dtype not in DTYPES:
        raise WeightsError(f"to_onnx: weights of dtype {dtype}; expected float32 or float64 "
                           "(cast them with weights.astype(np.float32))")
    newest = onnx.defs.onnx_opset_version()
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise SpecError(f"to_onnx: opset {opset!r}; expected an integer from {MIN_OPSET} to "
                        f"{newest}")
    check_activations(spec)
    problem = onnx_layout.native_problem(spec, str(dtype))
    if native and problem is not None:
        op = onnx_layout.OP_TYPES.get(spec.family, spec.family)
        raise SpecError(f"to_onnx: native=True, but ONNX's {op} "
                        f"op cannot compute this spec: {problem}")
    use_native = problem is None if native is None else bool(native)
    model = build_model(spec, checked, native=use_native, opset=opset, batch_first=batch_first,
                        lengths=lengths, initial_state=initial_state)
    onnx.helper.set_model_props(model, {SPEC_KEY: spec.to_json()})
    onnx.checker.check_model(model)
    if path is not None:
        write_atomic(path, model.SerializeToString())
    return model


def from_onnx(model_or_path: Any, *, node: str | int | None = None) -> tuple[Spec, Weights]:
    """``(spec, weights)`` from an ONNX model: its ``LSTM``/``GRU``/``RNN`` nodes, or a graph
    written by :func:`to_onnx` (through the spec it carries).

    Every attribute is read: ``direction`` (forward, bidirectional), ``activations`` with
    ``activation_alpha``/``_beta``, ``linear_before_reset`` (1: reset "after", 0: "before"),
    ``layout`` 0 and 1, peepholes ``P``; ``B`` splits bit-exactly into ``b_x``/``b_h`` (no
    ``B``: ``bias=False``). Nodes that feed each other through shape-only ops (the pattern
    torch's exporters write for ``num_layers>1``) read as one stack. tf2onnx's ``Loop`` graph
    of one Keras GRU/SimpleRNN layer is recognised from the layer's arrays and accepted only
    when onnxruntime reproduces the reading (:mod:`unirnn.porting._onnx_loop`).

    Args:
        model_or_path: an ``onnx.ModelProto``, a path of a ``.onnx`` file, or its bytes.
        node: the name (or index among the recurrent nodes) of one node to read as a one-layer
            spec; needed when the model's recurrent nodes do not chain into one stack.

    Raises:
        SpecError: no recurrent node, several that need ``node=`` (the message lists them), or
            an attribute no unirnn spec computes (``clip``, ``input_forget=1``, an activation
            without a unirnn equal, ``direction="reverse"``).
        WeightsError: mis-shaped initializers (named, with the expected shape).
        FileFormatError: a truncated file, or not an ONNX model.
    """
    return read_model(load_model(model_or_path), node)


def float64_problem(spec: Spec) -> str | None:
    """Why onnxruntime cannot run ``spec``'s float64 graph, or ``None``: it has no float64
    ``Erf`` kernel, which exact GELU needs (the float32 graph runs)."""
    uses = [role for role, name in spec.activations.items() if name == "gelu"]
    if uses:
        return (f"activations {', '.join(uses)} = gelu: onnxruntime has no float64 Erf kernel "
                "(the graph is valid ONNX; onnxruntime runs its float32 version)")
    return None


def kernel(model: onnx.ModelProto) -> str:
    """``"onnx.LSTM"`` (``GRU``, ``RNN``) when every layer is the native op, ``"onnx.Scan"``
    when the graph scans the cell, as :func:`to_onnx` wrote it."""
    ops = {n.op_type for n in model.graph.node}
    native = sorted(ops & set(onnx_layout.FAMILIES))
    if native and "Scan" not in ops:
        return f"onnx.{native[0]}"
    return "onnx.Scan" if "Scan" in ops else "onnx"


def _session(model: Any, provider: str) -> Any:
    ort = require("onnxruntime", "running an ONNX model")

    data = model if isinstance(model, (str, os.PathLike)) else load_model(model).SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(data) if isinstance(data, (str, os.PathLike)) else data,
                                options, providers=[provider])


def run(model: Any, x: Any, *, lengths: Any = None, initial_state: Any = None,
        provider: str = "CPUExecutionProvider") -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Run a model from :func:`to_onnx` with onnxruntime: ``(y, (h_n[, c_n]))``.

    ``model`` is a ``ModelProto``, a path or bytes; feed ``lengths`` and ``initial_state``
    (``h0`` or ``(h0, c0)``) when the model has those inputs.
    """
    session = _session(model, provider)
    declared = {i.name: i for i in session.get_inputs()}
    x_info = declared["x"]
    dtype = np.float64 if x_info.type == "tensor(double)" else np.float32
    feed: dict[str, np.ndarray] = {"x": np.asarray(x, dtype)}
    batch_axis = 0 if x_info.shape[0] == "batch" else 1
    if "lengths" in declared:
        full = np.full(feed["x"].shape[batch_axis], feed["x"].shape[1 - batch_axis])
        feed["lengths"] = np.asarray(full if lengths is None else lengths, np.int64)
    if "h0" in declared:
        if initial_state is None:
            raise ValueError("run: the model has initial-state inputs; pass initial_state")
        states = initial_state if isinstance(initial_state, tuple) else (initial_state,)
        for name, value in zip(("h0", "c0"), states):
            feed[name] = np.asarray(value, dtype)
    outputs = session.run(None, feed)
    return outputs[0], tuple(outputs[1:])


def evaluate(spec: Spec, weights: Mapping[str, Any], x: Any, *, initial_state: Any = None,
             lengths: Any = None, dtype: Any = "float32", cotangent: Any = None,
             provider: str = "CPUExecutionProvider", native: bool | None = None,
             **options: Any) -> Evaluation:
    """Export ``spec`` with :func:`to_onnx` and run it with onnxruntime on batch-major
    numpy inputs (the backends' ``evaluate``; no gradients: ``grads`` is ``None``)."""
    weights = check_weights(spec, weights).astype(np.dtype(dtype))
    model = to_onnx(spec, weights, lengths=lengths is not None,
                    initial_state=initial_state is not None, native=native, **options)
    if initial_state is not None and not spec.has_cell_state:
        initial_state = (initial_state,)
    y, state = run(model, x, lengths=lengths, initial_state=initial_state, provider=provider)
    return Evaluation(y, state, kernel(model))


# -- files --------------------------------------------------------------------------------


def read_file(path: Path, spec: Spec | None = None) -> tuple[Spec, Weights]:
    """``(spec, weights)`` of a ``.onnx`` file (:func:`from_onnx`), checked against ``spec``."""
    read_spec, weights = from_onnx(path)
    return same_spec(spec, read_spec, repr(str(path))), weights


def write_file(path: Path, spec: Spec, weights: Mapping[str, Any]) -> str:
    """Write :func:`to_onnx`'s float32 model (inputs ``x`` and ``lengths``); returns where
    the spec travels."""
    to_onnx(spec, check_weights(spec, weights).astype(np.float32), path)
    return f"the model's metadata_props[{SPEC_KEY!r}]"


def describe_file(path: Any) -> list[str]:
    """``unirnn info``'s lines for an ONNX model: every recurrent node, even one that does
    not read (its line says why).

    Raises:
        FileFormatError: not a readable ONNX model, whatever the reason.
    """
    model = load_model(path)
    try:
        return describe(model)
    except UnirnnError:
        raise
    except Exception as err:  # a tampered graph: any reader error is the file's
        raise FileFormatError(f"{str(path)!r} is not a readable ONNX model "
                              f"({type(err).__name__}: {str(err)[:300]})") from err
