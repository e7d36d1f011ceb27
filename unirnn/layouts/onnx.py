"""ONNX's ``LSTM``/``GRU``/``RNN`` operators: what they compute and their layout (numpy only).

Per node (one layer, ``D`` directions, verified against onnx/defs/rnn/defs.cc and
onnxruntime's deep CPU kernels, and pinned by tests/onnx)::

    W  [D, G*H, I]   input weights, row blocks LSTM i,o,f,c   GRU z,r,h   RNN i
    R  [D, G*H, H]   recurrent weights, the same row blocks
    B  [D, 2*G*H]    [Wb, Rb]: input then recurrent bias (absent: zeros)
    P  [D, 3*H]      LSTM peepholes i, o, f
    X  [T, N, I]     (layout=0; layout=1: [N, T, I])
    Y  [T, D, N, H]  (layout=1: [N, T, D, H]);  Y_h, Y_c  [D, N, H]

so canonical ``w_x``, ``w_h`` (row blocks i,f,g,o / r,z,n) map by a block permutation,
``b_x``/``b_h`` are the two halves of ``B`` (bit-exact both ways) and ``p`` (i,f,o) is ``P``
reordered. Activations are named per direction, ``f`` for every gate, ``g`` for the
candidate and (LSTM) ``h`` for the cell output, with ``activation_alpha``/``_beta``
consumed in order by the activations that take them. GRU ``linear_before_reset=1`` is
reset "after", ``0`` (the default) reset "before"; the update is ``h = (1-z)*n + z*h``.

ONNX's ``clip`` clamps every gate's pre-activation (onnxruntime's ``clip_add_bias``), not
the cell state, so unirnn's ``cell_clip`` is not ONNX's ``clip``. ONNX's ``input_forget``
couples ``f = 1 - i`` in onnxruntime (measured: the input gate is kept, the forget gate
derived), the mirror of unirnn's ``coupled=True`` (``i = 1 - f``, TFLite's CIFG); ONNX's text
does not say which, so a coupled LSTM is written as the exact ``Scan`` graph and a node with
``input_forget=1`` is refused. A model written by unirnn carries the
spec's JSON in ``model.metadata_props`` under :data:`unirnn.layouts.SPEC_KEY`. This module
imports no framework: the exporter, the importer and error messages share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._activations import get_activation_def, parse_activation
from .._errors import SpecError, WeightsError
from .._spec import Spec, gru, lstm, rnn
from . import SPEC_KEY, family_problem

__all__ = [
    "ACTIVATION_SLOTS",
    "FAMILIES",
    "OP_TYPES",
    "SPEC_KEY",
    "from_onnx_peepholes",
    "from_onnx_rows",
    "native_activations",
    "native_problem",
    "onnx_activation",
    "spec_from_node",
    "to_onnx_peepholes",
    "to_onnx_rows",
    "unirnn_activation",
]

OP_TYPES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
"""unirnn family -> the ONNX operator computing it."""

FAMILIES = {op: family for family, op in OP_TYPES.items()}
"""ONNX operator -> unirnn family."""

_BLOCKS = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
"""ONNX row block k holds canonical block ``_BLOCKS[family][k]`` (i,f,g,o -> i,o,f,c;
r,z,n -> z,r,h)."""

_PEEPHOLES = (0, 2, 1)  # canonical i, f, o -> ONNX i, o, f (its own inverse)

ACTIVATION_SLOTS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "rnn": (("h",),),
    "gru": (("r", "z"), ("n",)),
    "lstm": (("i", "f", "o"), ("g",), ("c",)),
}
"""Per family, the unirnn roles each ONNX activation slot (f, g[, h]) of one direction sets."""

DEFAULT_ACTIVATIONS = {"rnn": ("Tanh",), "gru": ("Sigmoid", "Tanh"),
                       "lstm": ("Sigmoid", "Tanh", "Tanh")}

# unirnn built-in -> (ONNX RNN activation name, its alpha/beta taken from the parameters)
_TO_ONNX: Mapping[str, str] = {
    "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "identity": "Affine",
    "hard_sigmoid": "HardSigmoid", "softsign": "Softsign", "softplus": "Softplus",
    "elu": "Elu", "leaky_relu": "LeakyRelu",
}

_USES = {  # ONNX activation (lower case) -> (takes alpha, takes beta); onnxruntime's table
    "affine": (True, True), "relu": (False, False), "leakyrelu": (True, False),
    "thresholdedrelu": (True, False), "tanh": (False, False), "scaledtanh": (True, True),
    "sigmoid": (False, False), "hardsigmoid": (True, True), "elu": (True, False),
    "softsign": (False, False), "softplus": (False, False),
}
_DEFAULTS = {"leakyrelu": (0.01, 0.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}
"""alpha/beta when ``activation_alpha``/``_beta`` run out, where ONNX and onnxruntime agree;
for Affine, ScaledTanh and ThresholdedRelu they do not (onnxruntime takes 0), so a model
must give them."""


def to_onnx_rows(family: str, array: np.ndarray) -> np.ndarray:
    """Canonical row blocks (``w_x``, ``w_h``, ``b_x``, ``b_h``) in ONNX's gate order."""
    blocks = np.split(np.asarray(array), len(_BLOCKS[family]), axis=0)
    return np.concatenate([blocks[k] for k in _BLOCKS[family]], axis=0)


def from_onnx_rows(family: str, array: np.ndarray) -> np.ndarray:
    """ONNX row blocks (one direction of ``W``, ``R``, or a half of ``B``) in canonical order."""
    order = _BLOCKS[family]
    blocks = np.split(np.asarray(array), len(order), axis=0)
    return np.concatenate([blocks[order.index(k)] for k in range(len(order))], axis=0)


def to_onnx_peepholes(p: np.ndarray) -> np.ndarray:
    """Canonical ``p`` (i, f, o) as one direction of ONNX's ``P`` (i, o, f)."""
    blocks = np.split(np.asarray(p), 3)
    return np.concatenate([blocks[k] for k in _PEEPHOLES])


from_onnx_peepholes = to_onnx_peepholes  # the permutation is its own inverse


def _float32(value: float) -> float:
    """An attribute value (ONNX attributes are float32) as the shortest decimal it rounds from."""
    return float(str(np.float32(value)))


def onnx_activation(name: str) -> tuple[str, float | None, float | None] | None:
    """``(ONNX activation, alpha, beta)`` computing unirnn's ``name`` exactly, or ``None``.

    ``alpha``/``beta`` are ``None`` where the ONNX activation takes none. identity is
    ``Affine(1, 0)``; unirnn's hard_sigmoid default (1/6, 1/2) is HardSigmoid(1/6, 1/2),
    never ONNX's own default (0.2, 0.5).
    """
    act = parse_activation(name)
    onnx_name = _TO_ONNX.get(act.name)
    if onnx_name is None or not get_activation_def(act.name).builtin:
        return None
    takes_alpha, takes_beta = _USES[onnx_name.lower()]
    if onnx_name == "Affine":
        return onnx_name, 1.0, 0.0
    args = list(act.args)
    alpha = float(args[0]) if takes_alpha else None
    beta = float(args[1]) if takes_beta else None
    return onnx_name, alpha, beta


def unirnn_activation(onnx_name: str, alpha: float | None, beta: float | None) -> str:
    """The unirnn activation of an ONNX RNN activation with its alpha/beta.

    Raises:
        SpecError: an ONNX activation no unirnn built-in computes (Affine other than (1, 0),
            ScaledTanh other than (1, 1), ThresholdedRelu other than 0), or an unknown name.
    """
    key = onnx_name.lower()
    if key not in _USES:
        raise SpecError(f"ONNX activation {onnx_name!r} is not one of ONNX's RNN activations "
                        f"({', '.join(sorted(_USES))})")
    a = None if alpha is None else _float32(alpha)
    b = None if beta is None else _float32(beta)
    simple = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softsign": "softsign",
              "softplus": "softplus"}
    if key in simple:
        return simple[key]
    if key == "affine" and (a, b) == (1.0, 0.0):
        return "identity"
    if key == "scaledtanh" and (a, b) == (1.0, 1.0):
        return "tanh"
    if key == "thresholdedrelu" and a == 0.0:
        return "relu"
    named = {"leakyrelu": "leaky_relu", "elu": "elu", "hardsigmoid": "hard_sigmoid"}
    if key not in named:
        raise SpecError(
            f"ONNX activation {onnx_name}(alpha={a}, beta={b}) has no identical unirnn "
            "activation (Affine(1, 0), ScaledTanh(1, 1) and ThresholdedRelu(0) do: identity, "
            "tanh, relu)"
        )
    definition = get_activation_def(named[key])
    values = [a, b][: len(definition.params)]
    # a float32 attribute equal to the float32 of unirnn's default is that default (1/6)
    params = [default if v is None or np.float32(v) == np.float32(default) else v
              for v, (_, default) in zip(values, definition.params)]
    text = f"{named[key]}({', '.join(repr(float(p)) for p in params)})"
    return str(parse_activation(text))


def native_activations(spec: Spec) -> tuple[list[str], list[float], list[float]] | None:
    """``(activations, activation_alpha, activation_beta)`` attributes for ``spec`` (both
    directions when bidirectional), or ``None`` when an ONNX slot cannot hold its roles."""
    names: list[str] = []
    alphas: list[float] = []
    betas: list[float] = []
    for roles in ACTIVATION_SLOTS[spec.family]:
        acts = {spec.activations[r] for r in roles}
        mapped = onnx_activation(next(iter(acts))) if len(acts) == 1 else None
        if mapped is None:
            return None
        name, alpha, beta = mapped
        names.append(name)
        alphas += [] if alpha is None else [alpha]
        betas += [] if beta is None else [beta]
    times = spec.num_directions
    return names * times, alphas * times, betas * times


def native_problem(spec: Spec, dtype: str | None = None) -> str | None:
    """Why ONNX's ``LSTM``/``GRU``/``RNN`` operator cannot compute ``spec`` exactly (as run by
    onnxruntime), or ``None`` when it can.

    ``dtype`` (the graph's float type) judges onnxruntime too: its CPU kernels of the three
    operators run float32 only, so float64 takes the ``Scan`` graph.
    """
    problem = family_problem(spec, "ONNX's RNN/LSTM/GRU operator")
    if problem is not None:
        return problem
    acts = spec.activations
    for roles, slot in zip(ACTIVATION_SLOTS[spec.family], "fgh"):
        names = {acts[r] for r in roles}
        if len(names) > 1:
            shown = ", ".join(f"{r}={acts[r]}" for r in roles)
            return (f"activations {shown} differ: ONNX's {OP_TYPES[spec.family]} has one "
                    f"activation ({slot}) for {', '.join(roles)}")
        for role in roles:
            if onnx_activation(acts[role]) is None:
                return (f"activations[{role!r}]={acts[role]!r} is not one of ONNX's RNN "
                        "activations (Relu, Tanh, Sigmoid, Affine, LeakyRelu, HardSigmoid, "
                        "Elu, Softsign, Softplus)")
    if spec.family == "lstm":
        if spec.proj_size:
            return "proj_size>0: ONNX's LSTM has no projection"
        if spec.cell_clip is not None:
            return ("cell_clip: ONNX's LSTM clip clamps every gate's pre-activation, not the "
                    "cell state")
    if spec.family == "gru" and spec.update != "old":
        return "update='new' (h = (1-z)*h + z*n): ONNX's GRU computes h = (1-z)*n + z*h"
    if dtype is not None and dtype != "float32":
        return (f"dtype {dtype}: onnxruntime's LSTM/GRU/RNN kernels run float32 only "
                "(the Scan graph runs float64)")
    return None


def _activation_attrs(family: str, attrs: Mapping[str, Any], directions: int,
                      where: str) -> dict[str, str]:
    """unirnn activations from a node's ``activations``/``activation_alpha``/``_beta``."""
    slots = ACTIVATION_SLOTS[family]
    names = [str(n) for n in attrs.get("activations", ())] or \
        list(DEFAULT_ACTIVATIONS[family]) * directions
    if len(names) == len(slots) and directions == 2:
        names = names * 2  # one direction's list given for both
    if len(names) != len(slots) * directions:
        raise SpecError(f"{where}: activations lists {len(names)} names {names}; expected "
                        f"{len(slots) * directions} ({len(slots)} per direction)")
    alphas = list(attrs.get("activation_alpha", ()))
    betas = list(attrs.get("activation_beta", ()))
    resolved = []
    for name in names:
        key = name.lower()
        if key not in _USES:
            raise SpecError(f"{where}: activation {name!r} is not one of ONNX's RNN "
                            f"activations ({', '.join(sorted(_USES))})")
        takes = _USES[key]
        values: list[float | None] = []
        for k, (needed, given) in enumerate(zip(takes, (alphas, betas))):
            if not needed:
                values.append(None)
            elif given:
                values.append(float(given.pop(0)))
            elif key in _DEFAULTS:
                values.append(_DEFAULTS[key][k])
            else:
                raise SpecError(
                    f"{where}: activation {name} needs activation_{('alpha', 'beta')[k]}, "
                    "which the node does not give (ONNX says the operator's default, "
                    "onnxruntime takes 0); write it explicitly"
                )
        resolved.append(unirnn_activation(name, values[0], values[1]))
    per_direction = [resolved[d * len(slots):(d + 1) * len(slots)] for d in range(directions)]
    if directions == 2 and per_direction[0] != per_direction[1]:
        raise SpecError(f"{where}: the forward activations {per_direction[0]} differ from the "
                        f"backward ones {per_direction[1]}; a unirnn spec has one set")
    roles: dict[str, str] = {}
    for slot_roles, name in zip(slots, per_direction[0]):
        roles.update(dict.fromkeys(slot_roles, name))
    return roles


def spec_from_node(op_type: str, attrs: Mapping[str, Any], w_shape: Sequence[int],
                   r_shape: Sequence[int], *, has_bias: bool, has_peepholes: bool,
                   where: str) -> Spec:
    """The one-layer spec an ONNX ``LSTM``/``GRU``/``RNN`` node computes.

    ``attrs`` are the node's attributes as Python values. ``where`` names the node in errors.

    Raises:
        SpecError: an attribute unirnn cannot compute exactly (``clip``, ``input_forget=1``,
            an activation without a unirnn equal, different activations per direction).
        WeightsError: ``W``/``R`` shapes that disagree with ``hidden_size`` and ``direction``.
    """
    family = FAMILIES.get(op_type)
    if family is None:
        raise SpecError(f"{where}: expected an LSTM, GRU or RNN node; received {op_type!r}")
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise SpecError(f"{where}: direction {direction!r}; expected forward, reverse or "
                        "bidirectional")
    if direction == "reverse":
        raise SpecError(f"{where}: direction='reverse' (a backward direction alone) is not a "
                        "unirnn spec; unirnn has forward and bidirectional layers")
    directions = 2 if direction == "bidirectional" else 1
    if "clip" in attrs:
        raise SpecError(f"{where}: clip={attrs['clip']}: ONNX clips every gate's "
                        "pre-activation, which no unirnn spec computes (unirnn's cell_clip "
                        "clamps the cell state)")
    if int(attrs.get("input_forget", 0)):
        raise SpecError(f"{where}: input_forget=1 couples the forget gate to the input gate "
                        "(f = 1 - i in onnxruntime; unirnn's coupled=True is i = 1 - f), "
                        "which no unirnn spec computes")
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[family]
    if len(w_shape) != 3 or len(r_shape) != 3:
        raise WeightsError(f"{where}: W and R must be 3-D [D, G*H, ·]; received shapes "
                        f"{tuple(w_shape)} and {tuple(r_shape)}")
    hidden = int(attrs.get("hidden_size", r_shape[2]))
    expected_w = (directions, gates * hidden)
    if tuple(w_shape[:2]) != expected_w or tuple(r_shape) != (*expected_w, hidden):
        raise WeightsError(
            f"{where}: W {tuple(w_shape)} and R {tuple(r_shape)} do not fit a {op_type} with "
            f"hidden_size={hidden} and {directions} direction(s): expected W "
            f"[{directions}, {gates * hidden}, I] and R [{directions}, {gates * hidden}, {hidden}]"
        )
    common: dict[str, Any] = {"bias": has_bias, "bidirectional": directions == 2,
                              "activations": _activation_attrs(family, attrs, directions, where)}
    input_size = int(w_shape[2])
    if family == "lstm":
        return lstm(input_size, hidden, peepholes=has_peepholes, **common)
    if family == "gru":
        reset = "after" if int(attrs.get("linear_before_reset", 0)) else "before"
        return gru(input_size, hidden, reset=reset, **common)
    return rnn(input_size, hidden, **common)
