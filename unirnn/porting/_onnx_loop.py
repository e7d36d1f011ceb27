"""Recognising tf2onnx's ``Loop`` graph of one Keras ``GRU``/``SimpleRNN``/``LSTM`` layer.

tf2onnx 1.17 writes Keras 3's GRU (either reset) and SimpleRNN as a ``Loop`` whose inputs
include the layer's ``kernel`` ``(I, G*H)``, ``recurrent_kernel`` ``(H, G*H)`` and ``bias``
(``(G*H,)``, or ``(2, 3H)`` for a reset-after GRU) as initializers. The body is a while-loop
of TensorFlow's ops, which unirnn does not parse; instead each reading of those arrays as a
Keras layer (:mod:`unirnn.layouts.keras`: which array is which, the family from the gate
count, the reset from the bias, Keras' default activations or the body's) is a candidate,
and a candidate is accepted only when onnxruntime running the model gives the outputs of
unirnn's numpy backend on it (float32 tolerance, random probe input). Nothing is guessed:
no candidate that reproduces the model is an error.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .._errors import SpecError
from .._extras import require
from .._spec import Spec, gru, lstm, rnn
from .._weights import Weights, check_weights
from ..backends import numpy as numpy_backend
from ..layouts import keras as keras_layout

__all__ = ["read_keras_loop"]

_TOLERANCE = 1e-5  # float32 against float64, relative to the output scale (DESIGN.md)


def _body_ops(graph: onnx.GraphProto) -> set[str]:
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                ops |= _body_ops(attribute.g)
    return ops


def _candidates(arrays: list[np.ndarray], ops: set[str]) -> Iterator[tuple[Spec, list[Any]]]:
    """Every (spec, [kernel, recurrent_kernel(, bias)]) reading of ``arrays``."""
    for count in (3, 2):
        for chosen in itertools.permutations(arrays, count):
            kernel, recurrent = chosen[0], chosen[1]
            if kernel.ndim != 2 or recurrent.ndim != 2 or recurrent.shape[0] == 0:
                continue
            H, GH = recurrent.shape
            family = {H: "rnn", 3 * H: "gru", 4 * H: "lstm"}.get(GH)
            if family is None or kernel.shape[1] != GH:
                continue
            bias = chosen[2] if count == 3 else None
            I = kernel.shape[0]
            for activation in ["tanh"] + (["relu"] if "Relu" in ops else []):
                common: dict[str, Any] = {"bias": bias is not None, "activation": activation}
                if family == "gru":
                    resets = ["after"] if bias is not None and bias.shape == (2, GH) else \
                        ["before"] if bias is not None else ["after", "before"]
                    if bias is not None and bias.shape not in ((2, GH), (GH,)):
                        continue
                    for reset in resets:
                        yield gru(I, H, reset=reset, **common), list(chosen)
                elif bias is None or bias.shape == (GH,):
                    yield (lstm if family == "lstm" else rnn)(I, H, **common), list(chosen)


def _model_outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    ort = require("onnxruntime", "recognising a Loop graph (unirnn runs it to check)")

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def read_keras_loop(model: onnx.ModelProto) -> tuple[Spec, Weights]:
    """The Keras layer whose tf2onnx ``Loop`` graph ``model`` is, verified by onnxruntime.

    Raises:
        SpecError: the model is not one such Loop, or no reading of its arrays as a Keras
            layer reproduces its outputs; the message says which.
    """
    graph = model.graph
    loops = [n for n in graph.node if n.op_type == "Loop"]
    initializers = {t.name: t for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(loops) != 1 or len(inputs) != 1:
        raise SpecError(f"{len(loops)} Loop node(s) and {len(inputs)} graph input(s); "
                        "unirnn recognises one Keras layer's Loop with one input x (N, T, I)")
    arrays = [numpy_helper.to_array(initializers[name]) for name in loops[0].input
              if name in initializers and initializers[name].data_type == onnx.TensorProto.FLOAT
              and len(initializers[name].dims) in (1, 2)]
    ops = _body_ops(graph)
    rng = np.random.default_rng(0)
    tried = 0
    for spec, native in _candidates(arrays, ops):
        tried += 1
        x = rng.standard_normal((2, 5, spec.input_size)).astype(np.float32)
        try:
            got = _model_outputs(model, x)
        except Exception:  # the model does not take this input size: not this candidate
            continue
        weights = check_weights(spec, {f"layer0.forward.{k}": v for k, v in
                                       keras_layout.from_native_arrays(spec, native).items()})
        want = numpy_backend.evaluate(spec, weights.astype(np.float64), x.astype(np.float64),
                                      dtype="float64").outputs
        if got.ndim == 2:  # return_sequences=False: the last step
            want = want[:, -1]
        scale = max(1.0, float(np.abs(want).max()))
        if got.shape == want.shape and float(np.abs(got - want).max()) <= _TOLERANCE * scale:
            return spec, weights
    raise SpecError(f"no reading of the Loop's {len(arrays)} float arrays as a Keras GRU, "
                    f"SimpleRNN or LSTM with Keras' activations reproduces the model's outputs "
                    f"({tried} tried)")
