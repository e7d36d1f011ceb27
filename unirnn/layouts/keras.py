"""Keras 3's ``SimpleRNN``, ``LSTM`` and ``GRU``: what they compute and their layouts (numpy only).

Keras' layers hold per layer and direction::

    SimpleRNN  kernel (I, H)            recurrent_kernel (H, H)    bias (H,)
    LSTM       kernel (I, 4H) i,f,c,o   recurrent_kernel (H, 4H)   bias (4H,)
    GRU        kernel (I, 3H) z,r,h     recurrent_kernel (H, 3H)   bias (2, 3H) [input; recurrent]
                                                                     (reset_after=True)
                                                                   bias (3H,) (reset_after=False)

Canonical weights (:mod:`unirnn._weights`) are ``(G*H, in)`` row blocks in the gate order
``i, f, g, o`` / ``r, z, n``. Keras keeps one bias exactly where every row of ``b_h`` folds
into ``b_x`` (:func:`unirnn._cells.folded_bias_rows`): there the export writes
``b_x + b_h`` and the import puts the sum into ``b_x`` with ``b_h = 0``; a reset-after GRU,
whose ``b_hn`` does not fold, keeps both. A ``.weights.h5`` file written by unirnn carries
the spec in the root attribute :data:`unirnn.layouts.SPEC_KEY` and the path its layers took
in :data:`KERAS_PATH_KEY`. This module imports no framework: the backend, the converters
and error messages share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._activations import parse_activation
from .._cells import folded_bias_rows
from .._errors import SpecError, WeightsError
from .._spec import Spec
from . import family_from_gates, family_problem

__all__ = [
    "CELL_VARS",
    "FAMILIES",
    "FLOAT64_INEXACT_ON_TENSORFLOW",
    "KERAS_ACTIVATION_NAMES",
    "KERAS_PATH_KEY",
    "NATIVE_CLASSES",
    "from_native_arrays",
    "keras_activation",
    "layer_keywords",
    "native_config",
    "native_problem",
    "native_shapes",
    "one_bias",
    "spec_from_arrays",
    "to_native_arrays",
    "unirnn_activation",
]

KERAS_PATH_KEY = "unirnn.keras_path"
"""The ``.weights.h5`` root attribute naming the path the file's layers took: ``"native"``
(Keras' own layers) or ``"custom"`` (unirnn's ``UniRNN``), so the model is rebuilt alike."""

CELL_VARS = "cell/vars"
"""How the HDF5 group of one recurrent layer direction's arrays ends in a Keras weights
file (``.../lstm/cell/vars/0``, ``1``, ``2``: kernel, recurrent_kernel, bias). h5py lists
groups alphabetically, so a ``Bidirectional``'s ``backward_layer`` comes before its
``forward_layer``."""

NATIVE_CLASSES = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
"""unirnn family -> the Keras layer class that computes it."""

FAMILIES = {cls: family for family, cls in NATIVE_CLASSES.items()}
"""Keras layer class name -> unirnn family."""

KERAS_ACTIVATION_NAMES = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "identity": "linear",
    "gelu": "gelu",  # keras.activations.gelu(approximate=False): the exact erf form
    "silu": "silu",
    "hard_sigmoid": "hard_sigmoid",  # Keras 3: clip(x/6 + 1/2, 0, 1) = unirnn's default
    "softsign": "softsign",
    "softplus": "softplus",
    "elu": "elu",  # alpha=1
    "leaky_relu(0.2)": "leaky_relu",  # Keras' default negative_slope is 0.2
}
"""unirnn activation (canonical spelling) -> the Keras 3 activation string computing exactly
the same function. Only identical functions are mapped; anything else needs the custom cell."""

FLOAT64_INEXACT_ON_TENSORFLOW = frozenset({"gelu", "leaky_relu(0.2)"})
"""Mapped activations whose TensorFlow kernels are not float64-exact: ``tf.nn.gelu`` misses
the erf form by 5e-9 and ``tf.nn.leaky_relu`` rounds its slope to float32 (2e-8), measured
on [-7, 7] against the float64 oracle (tests/keras pin this set). In float64 on
tensorflow, specs using them run on the custom cell."""

_FROM_KERAS: dict[str | None, str] = {
    keras_name: name for name, keras_name in KERAS_ACTIVATION_NAMES.items()
}
_FROM_KERAS.update({"swish": "silu", "linear": "identity", None: "identity"})

_GRU_TO_KERAS = (1, 0, 2)  # canonical r, z, n -> Keras z, r, h (its own inverse)


def unirnn_activation(keras_name: object) -> str:
    """The unirnn name of a Keras activation as found in a layer config.

    Raises:
        ValueError: the activation has no identical unirnn built-in.
    """
    name = keras_name
    if isinstance(name, Mapping):  # a serialised activation, e.g. {"config": "relu", ...}
        name = name.get("config", name)
    if not isinstance(name, (str, type(None))) or name not in _FROM_KERAS:
        shown = repr(name) if isinstance(name, str) else "(a lambda or a function of your own)"
        raise SpecError(
            f"Keras activation {shown} has no identical unirnn activation; expected one "
            f"of {', '.join(sorted(k for k in _FROM_KERAS if k))}, or register the function "
            "with unirnn.register_activation and pass spec="
        )
    return _FROM_KERAS[name]


def keras_activation(activation: str) -> str | None:
    """The Keras activation string computing ``activation`` exactly, or ``None``."""
    return KERAS_ACTIVATION_NAMES.get(str(parse_activation(activation)))


def native_problem(spec: Spec, dtype: str | None = None, backend: str | None = None, *,
                   jax_x64: bool = False) -> str | None:
    """Why Keras' own layers cannot compute ``spec`` exactly, or ``None`` when they can.

    Without ``dtype`` only the spec is judged. With ``dtype`` (the compute dtype) and
    ``backend`` (Keras' backend name), float64 is judged too: Keras 3's type promotion
    computes float64 in float32 on jax and torch (``BIT64_TO_BIT32_DTYPE``), and on
    tensorflow the activations of :data:`FLOAT64_INEXACT_ON_TENSORFLOW` are not exact.
    ``jax_x64`` (jax's x64 switched on, with ``backend="jax"``) adds a Keras defect: there
    Keras' fused GRU kernel without bias adds a float64 zero bias to float32 and fails.
    The message names the field and the frameworks that can take it.
    """
    problem = _spec_problem(spec)
    if problem is not None:
        return problem
    if backend == "jax" and jax_x64 and spec.family == "gru" and not spec.bias \
            and spec.reset == "after":
        return ("bias=False with reset='after' on Keras' jax backend with x64: Keras' "
                "GRU kernel fails there (its zero bias is float64)")
    if dtype != "float64":
        return None
    if backend != "tensorflow":
        return (f"dtype float64: Keras' own layers compute float64 in float32 on Keras' "
                f"{backend} backend (Keras 3's BIT64_TO_BIT32_DTYPE type promotion); "
                "unirnn's custom Keras cell keeps float64")
    for role, name in spec.activations.items():
        if str(parse_activation(name)) in FLOAT64_INEXACT_ON_TENSORFLOW:
            return (f"activations[{role!r}]={name!r} in float64: TensorFlow's kernel for it "
                    "is not float64-exact (tf.nn.gelu, tf.nn.leaky_relu: errors 5e-9, 2e-8); "
                    "unirnn's custom Keras cell computes it exactly")
    return None


def _spec_problem(spec: Spec) -> str | None:
    problem = family_problem(spec, "Keras' SimpleRNN/LSTM/GRU")
    if problem is not None:
        return problem
    acts = spec.activations
    for role, name in acts.items():
        if keras_activation(name) is None:
            return (
                f"activations[{role!r}]={name!r} is not a Keras built-in activation string "
                f"(Keras names: {', '.join(sorted(set(KERAS_ACTIVATION_NAMES)))}); "
                "unirnn's custom Keras cell, torch and Flax custom cells take it"
            )
    if spec.family == "lstm":
        if not acts["i"] == acts["f"] == acts["o"]:
            return (
                "activations i, f, o differ; Keras' LSTM has one recurrent_activation for all "
                "three gates (the custom Keras cell, torch and Flax custom cells take it)"
            )
        if acts["g"] != acts["c"]:
            return (
                "activations g and c differ; Keras' LSTM `activation` sets both "
                "(the custom Keras cell, torch and Flax custom cells take it)"
            )
        if spec.peepholes:
            return "peepholes=True: Keras' LSTM has no peepholes (ONNX and unirnn custom cells do)"
        if spec.proj_size:
            return "proj_size>0: Keras' LSTM has no projection (torch nn.LSTM and custom cells do)"
        if spec.cell_clip is not None:
            return "cell_clip: Keras' LSTM has no cell clip (ONNX and unirnn custom cells do)"
    if spec.family == "gru":
        if acts["r"] != acts["z"]:
            return (
                "activations r and z differ; Keras' GRU has one recurrent_activation for both "
                "(the custom Keras cell, torch and Flax custom cells take it)"
            )
        if spec.update != "old":
            return (
                "update='new' (h = (1-z)*h + z*n): Keras' GRU computes update='old' "
                "(custom cells of every backend take it)"
            )
    return None


def native_config(spec: Spec) -> dict[str, object]:
    """Keyword arguments of the Keras layer (``units``, activations, ``use_bias``...)."""
    acts = spec.activations
    config: dict[str, object] = {"units": spec.hidden_size, "use_bias": spec.bias}
    if spec.family == "rnn":
        config["activation"] = keras_activation(acts["h"])
    elif spec.family == "lstm":
        config["activation"] = keras_activation(acts["g"])
        config["recurrent_activation"] = keras_activation(acts["i"])
    else:
        config["activation"] = keras_activation(acts["n"])
        config["recurrent_activation"] = keras_activation(acts["r"])
        config["reset_after"] = spec.reset == "after"
    return config


def layer_keywords(class_name: str, config: Mapping[str, Any], input_size: int,
                   bidirectional: bool) -> dict[str, Any]:
    """The :class:`Spec` keywords a Keras ``SimpleRNN``/``LSTM``/``GRU`` computes, from its
    class name, its ``get_config()`` and its input size.

    Raises:
        ValueError: an activation without an identical unirnn one.
    """
    family = FAMILIES[class_name]
    keywords: dict[str, Any] = {
        "family": family,
        "input_size": int(input_size),
        "hidden_size": int(config["units"]),
        "bias": bool(config.get("use_bias", True)),
        "bidirectional": bidirectional,
    }
    act = unirnn_activation(config.get("activation"))
    if family == "rnn":
        keywords["activations"] = {"h": act}
    else:
        gate = unirnn_activation(config.get("recurrent_activation"))
        if family == "lstm":
            keywords["activations"] = {"i": gate, "f": gate, "o": gate, "g": act, "c": act}
        else:
            keywords["activations"] = {"r": gate, "z": gate, "n": act}
            keywords["reset"] = "after" if config.get("reset_after", True) else "before"
    return keywords


def one_bias(spec: Spec) -> bool:
    """Whether Keras keeps one bias ``b_x + b_h`` (every row of ``b_h`` folds), not two."""
    return spec.bias and folded_bias_rows(spec) == spec.num_gates * spec.hidden_size


def native_shapes(spec: Spec, input_size: int) -> dict[str, tuple[int, ...]]:
    """Keras' tensor name -> shape for one layer and direction, in ``get_weights()`` order."""
    GH = spec.num_gates * spec.hidden_size
    shapes: dict[str, tuple[int, ...]] = {
        "kernel": (input_size, GH), "recurrent_kernel": (spec.hidden_size, GH)}
    if spec.bias:
        shapes["bias"] = (GH,) if one_bias(spec) else (2, GH)
    return shapes


def _gru_blocks(array: np.ndarray, axis: int = 0) -> np.ndarray:
    blocks = np.split(array, 3, axis=axis)
    return np.concatenate([blocks[k] for k in _GRU_TO_KERAS], axis=axis)


def to_native_arrays(spec: Spec, params: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """One layer and direction's canonical tensors -> the Keras layer's ``get_weights()``.

    ``params`` holds ``w_x``, ``w_h`` and, when ``spec.bias``, ``b_x``, ``b_h``.
    """
    w_x, w_h = np.asarray(params["w_x"]), np.asarray(params["w_h"])
    if spec.family == "gru":
        w_x, w_h = _gru_blocks(w_x), _gru_blocks(w_h)
    arrays = [np.ascontiguousarray(w_x.T), np.ascontiguousarray(w_h.T)]
    if spec.bias:
        b_x, b_h = np.asarray(params["b_x"]), np.asarray(params["b_h"])
        if spec.family == "gru":
            b_x, b_h = _gru_blocks(b_x), _gru_blocks(b_h)
        arrays.append(b_x + b_h if one_bias(spec) else np.stack([b_x, b_h]))
    return arrays


def from_native_arrays(spec: Spec, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of :func:`to_native_arrays`: one-bias layouts give ``b_x`` = bias, ``b_h`` = 0.

    Raises:
        ValueError: the number or shapes of arrays do not match ``spec``.
    """
    H = spec.hidden_size
    cls = NATIVE_CLASSES[spec.family]
    expected = 3 if spec.bias else 2
    if len(arrays) != expected:
        raise WeightsError(
            f"Keras {cls}: expected {expected} weight arrays (kernel, "
            f"recurrent_kernel{', bias' if spec.bias else ''}); received {len(arrays)}"
        )
    kernel, recurrent = (np.asarray(a) for a in arrays[:2])
    GH = spec.num_gates * H
    if kernel.ndim != 2 or kernel.shape[1] != GH or recurrent.shape != (H, GH):
        raise WeightsError(
            f"Keras {cls}: expected kernel (I, {GH}) and recurrent_kernel ({H}, {GH}); "
            f"received {kernel.shape} and {recurrent.shape}"
        )
    w_x, w_h = kernel.T, recurrent.T
    if spec.family == "gru":
        w_x, w_h = _gru_blocks(w_x), _gru_blocks(w_h)
    out = {"w_x": np.ascontiguousarray(w_x), "w_h": np.ascontiguousarray(w_h)}
    if spec.bias:
        bias = np.asarray(arrays[2])
        shape = native_shapes(spec, kernel.shape[0])["bias"]
        if bias.shape != shape:
            what = f"GRU(reset_after={spec.reset == 'after'})" if spec.family == "gru" else cls
            raise WeightsError(f"Keras {what}: expected bias {shape}; received {bias.shape}")
        if one_bias(spec):
            out["b_x"] = _gru_blocks(bias) if spec.family == "gru" else bias.copy()
            out["b_h"] = np.zeros_like(bias)
        else:
            out["b_x"], out["b_h"] = _gru_blocks(bias[0]), _gru_blocks(bias[1])
    return out


def spec_from_arrays(groups: Sequence[Sequence[np.ndarray]], where: str) -> Spec:
    """The spec of one Keras layer (or one ``Bidirectional``) from its arrays alone, as a
    weights file holds them (one list per direction: kernel, recurrent_kernel, bias?), with
    Keras' default activations, since a weights file stores none.

    Raises:
        ValueError: not one or two directions; shapes of no Keras layer; a GRU without bias
            (its arrays do not record ``reset_after``). ``where`` names the source.
    """
    if len(groups) not in (1, 2):
        raise WeightsError(
            f"{where}: holds {len(groups)} recurrent layer directions; only one layer (or one "
            "Bidirectional) can be inferred from a weights file. Pass model= or spec="
        )
    arrays = groups[0]
    kernel, recurrent = np.shape(arrays[0]), np.shape(arrays[1])
    if len(kernel) != 2 or len(recurrent) != 2:
        raise WeightsError(f"{where}: expected a kernel (I, G*H) and a recurrent_kernel "
                         f"(H, G*H); received {kernel} and {recurrent}")
    hidden = recurrent[0]
    family = family_from_gates(recurrent[1], hidden, f"{where}: recurrent_kernel {recurrent}")
    keywords: dict[str, Any] = {"bias": len(arrays) == 3, "bidirectional": len(groups) == 2}
    if family == "gru":
        if len(arrays) == 2:
            raise WeightsError(f"{where}: a GRU without bias does not record reset_after; "
                             "pass model= or spec=")
        keywords["reset"] = "after" if np.ndim(arrays[2]) == 2 else "before"
    return Spec(family, int(kernel[0]), int(hidden), **keywords)
