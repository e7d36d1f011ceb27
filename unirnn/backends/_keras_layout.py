"""Keras 3 native layers: what they can express, and their weight layouts (numpy only).

Keras' ``SimpleRNN``, ``LSTM`` and ``GRU`` hold per layer and direction::

    SimpleRNN  kernel (I, H)            recurrent_kernel (H, H)    bias (H,)
    LSTM       kernel (I, 4H) i,f,c,o   recurrent_kernel (H, 4H)   bias (4H,)
    GRU        kernel (I, 3H) z,r,h     recurrent_kernel (H, 3H)   bias (2, 3H) [input; recurrent]
                                                                     (reset_after=True)
                                                                   bias (3H,) (reset_after=False)

Canonical weights (:mod:`unirnn._weights`) are ``(G*H, in)`` row blocks in the gate order
``i, f, g, o`` / ``r, z, n``. One-bias layouts fold ``b_x + b_h`` on export and import the
sum into ``b_x`` with ``b_h = 0``. This module imports no framework: the backend and the
converters share it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._activations import parse_activation
from .._spec import Spec

__all__ = [
    "FLOAT64_INEXACT_ON_TENSORFLOW",
    "KERAS_ACTIVATION_NAMES",
    "NATIVE_CLASSES",
    "from_native_arrays",
    "native_problem",
    "to_native_arrays",
    "unirnn_activation",
]

NATIVE_CLASSES = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
"""unirnn family -> the Keras layer class that computes it."""

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
on [-7, 7] against the numpy registry entries (tests/keras pin this set). In float64 on
tensorflow, specs using them run on the custom cell."""

_FROM_KERAS: dict[str | None, str] = {
    keras_name: name for name, keras_name in KERAS_ACTIVATION_NAMES.items()
}
_FROM_KERAS.update({"swish": "silu", "linear": "identity", None: "identity"})

_GRU_TO_KERAS = (1, 0, 2)  # canonical r, z, n -> Keras z, r, h


def unirnn_activation(keras_name: object) -> str:
    """The unirnn name of a Keras activation as found in a layer config.

    Raises:
        ValueError: the activation has no identical unirnn built-in.
    """
    name = keras_name
    if isinstance(name, Mapping):  # a serialised activation, e.g. {"config": "relu", ...}
        name = name.get("config", name)
    if name not in _FROM_KERAS:
        raise ValueError(
            f"Keras activation {keras_name!r} has no identical unirnn activation; expected one "
            f"of {', '.join(sorted(k for k in _FROM_KERAS if k))}"
        )
    return _FROM_KERAS[name]


def _keras_name(activation: str) -> str | None:
    act = parse_activation(activation)
    return KERAS_ACTIVATION_NAMES.get(str(act))


def native_problem(spec: Spec, dtype: str | None = None,
                   backend: str | None = None) -> str | None:
    """Why Keras' own layers cannot compute ``spec`` exactly, or ``None`` when they can.

    Without ``dtype`` only the spec is judged. With ``dtype`` (the compute dtype) and
    ``backend`` (Keras' backend name), float64 is judged too: Keras 3's type promotion
    computes float64 in float32 on jax and torch (``BIT64_TO_BIT32_DTYPE``), and on
    tensorflow the activations of :data:`FLOAT64_INEXACT_ON_TENSORFLOW` are not exact.
    The message names the field and the frameworks that can take it.
    """
    problem = _spec_problem(spec)
    if problem is not None or dtype != "float64":
        return problem
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
    acts = spec.activations
    for role, name in acts.items():
        if _keras_name(name) is None:
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
        config["activation"] = _keras_name(acts["h"])
    elif spec.family == "lstm":
        config["activation"] = _keras_name(acts["g"])
        config["recurrent_activation"] = _keras_name(acts["i"])
    else:
        config["activation"] = _keras_name(acts["n"])
        config["recurrent_activation"] = _keras_name(acts["r"])
        config["reset_after"] = spec.reset == "after"
    return config


def _gru_blocks(array: np.ndarray, hidden: int, axis: int = 0) -> np.ndarray:
    blocks = np.split(array, 3, axis=axis)
    return np.concatenate([blocks[k] for k in _GRU_TO_KERAS], axis=axis)


def to_native_arrays(spec: Spec, params: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """One layer and direction's canonical tensors -> the Keras layer's ``get_weights()``.

    ``params`` holds ``w_x``, ``w_h`` and, when ``spec.bias``, ``b_x``, ``b_h``.
    """
    H = spec.hidden_size
    w_x, w_h = np.asarray(params["w_x"]), np.asarray(params["w_h"])
    if spec.family == "gru":
        w_x, w_h = _gru_blocks(w_x, H), _gru_blocks(w_h, H)
    arrays = [np.ascontiguousarray(w_x.T), np.ascontiguousarray(w_h.T)]
    if spec.bias:
        b_x, b_h = np.asarray(params["b_x"]), np.asarray(params["b_h"])
        if spec.family == "gru":
            b_x, b_h = _gru_blocks(b_x, H), _gru_blocks(b_h, H)
            if spec.reset == "after":
                arrays.append(np.stack([b_x, b_h]))
                return arrays
        arrays.append(b_x + b_h)
    return arrays


def from_native_arrays(spec: Spec, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of :func:`to_native_arrays`: one-bias layouts give ``b_x`` = bias, ``b_h`` = 0.

    Raises:
        ValueError: the number or shapes of arrays do not match ``spec``.
    """
    H = spec.hidden_size
    expected = 3 if spec.bias else 2
    if len(arrays) != expected:
        raise ValueError(
            f"Keras {NATIVE_CLASSES[spec.family]}: expected {expected} weight arrays (kernel, "
            f"recurrent_kernel{', bias' if spec.bias else ''}); received {len(arrays)}"
        )
    kernel, recurrent = (np.asarray(a) for a in arrays[:2])
    G = spec.num_gates
    if kernel.ndim != 2 or kernel.shape[1] != G * H or recurrent.shape != (H, G * H):
        raise ValueError(
            f"Keras {NATIVE_CLASSES[spec.family]}: expected kernel (I, {G * H}) and "
            f"recurrent_kernel ({H}, {G * H}); received {kernel.shape} and {recurrent.shape}"
        )
    w_x, w_h = kernel.T, recurrent.T
    if spec.family == "gru":  # Keras z, r, h -> canonical r, z, n (the swap is its own inverse)
        w_x, w_h = _gru_blocks(w_x, H), _gru_blocks(w_h, H)
    out = {"w_x": np.ascontiguousarray(w_x), "w_h": np.ascontiguousarray(w_h)}
    if spec.bias:
        bias = np.asarray(arrays[2])
        if spec.family == "gru" and spec.reset == "after":
            if bias.shape != (2, 3 * H):
                raise ValueError(
                    f"Keras GRU(reset_after=True): expected bias (2, {3 * H}); "
                    f"received {bias.shape}"
                )
            out["b_x"], out["b_h"] = _gru_blocks(bias[0], H), _gru_blocks(bias[1], H)
        else:
            if bias.shape != (G * H,):
                raise ValueError(
                    f"Keras {NATIVE_CLASSES[spec.family]}: expected bias ({G * H},); "
                    f"received {bias.shape}"
                )
            out["b_x"] = _gru_blocks(bias, H) if spec.family == "gru" else bias.copy()
            out["b_h"] = np.zeros_like(bias)
    return out


def bias_folded(spec: Spec) -> bool:
    """Whether the native layout keeps one bias (``b_x + b_h``)."""
    return spec.bias and not (spec.family == "gru" and spec.reset == "after")
