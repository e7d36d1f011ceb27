"""PyTorch's recurrent layout: ``nn.RNN``/``nn.LSTM``/``nn.GRU`` names, shapes, eligibility.

torch's layout is the canonical one renamed (same gate rows i, f, g, o / r, z, n, two
biases), so conversions are bit-exact in both directions::

    layer{k}.{forward|backward}.w_x  <->  weight_ih_l{k}[_reverse]
                               .w_h  <->  weight_hh_l{k}[_reverse]
                               .b_x  <->  bias_ih_l{k}[_reverse]
                               .b_h  <->  bias_hh_l{k}[_reverse]
                               .w_r  <->  weight_hr_l{k}[_reverse]        (proj_size > 0)
                               .p    <->  weight_peephole_l{k}[_reverse]  (unirnn only)

A state dict carries the spec's JSON in ``state_dict._metadata[""][SPEC_KEY]``, beside
the ``version`` that ``nn.Module.state_dict`` writes there; ``torch.save`` and
``torch.load(weights_only=True)`` keep it and ``load_state_dict`` ignores it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .._errors import WeightsError
from .._spec import Spec, gru, lstm, rnn
from .._weights import weight_shapes
from . import SPEC_KEY, family_from_gates, family_problem

__all__ = [
    "FLAT_ORDER",
    "SPEC_KEY",
    "TORCH_STEMS",
    "canonical_name",
    "carried_spec_text",
    "infer_spec",
    "native_problem",
    "tensor_names",
    "torch_name",
    "vf_kernel",
]

TORCH_STEMS: Mapping[str, str] = {
    "w_x": "weight_ih",
    "w_h": "weight_hh",
    "b_x": "bias_ih",
    "b_h": "bias_hh",
    "w_r": "weight_hr",
    "p": "weight_peephole",
}
"""Canonical tensor -> torch parameter stem; ``weight_peephole`` is unirnn's own."""

FLAT_ORDER = ("w_x", "w_h", "b_x", "b_h", "w_r")
"""torch's flat-weight order within one layer and direction (``nn.RNNBase._flat_weights``)."""

_NAME = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr|weight_peephole)"
                   r"_l(\d+)(_reverse)?$")
_EXTRA_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*?)_l(\d+)(_reverse)?$")


def torch_name(layer: int, direction: str, tensor: str) -> str:
    """``(0, "backward", "w_x")`` -> ``"weight_ih_l0_reverse"``."""
    suffix = "_reverse" if direction == "backward" else ""
    # a family's extra parameter keeps its own name: ln_x_l0, u_l0_reverse
    return f"{TORCH_STEMS.get(tensor, tensor)}_l{layer}{suffix}"


def canonical_name(name: str) -> str | None:
    """``"weight_ih_l0_reverse"`` -> ``"layer0.backward.w_x"``; ``None`` for other names."""
    match = _NAME.match(name) or _EXTRA_NAME.match(name)
    if match is None:
        return None
    stem, layer, reverse = match.groups()
    short = next((k for k, v in TORCH_STEMS.items() if v == stem), stem)
    return f"layer{int(layer)}.{'backward' if reverse else 'forward'}.{short}"


def tensor_names(spec: Spec) -> dict[str, str]:
    """Canonical name -> torch name for every tensor of ``spec``, in canonical order."""
    names = {}
    for name in weight_shapes(spec):
        layer, direction, tensor = name.split(".")
        names[name] = torch_name(int(layer[5:]), direction, tensor)
    return names


def flat_weight_names(spec: Spec) -> list[str]:
    """The torch names of the fused kernel's weights in ``_flat_weights`` order."""
    names = tensor_names(spec)
    return [
        names[f"layer{layer}.{direction}.{tensor}"]
        for layer in range(spec.num_layers)
        for direction in spec.directions
        for tensor in FLAT_ORDER
        if f"layer{layer}.{direction}.{tensor}" in names
    ]


def native_problem(spec: Spec) -> str | None:
    """Why torch's fused kernels (``nn.RNN``/``nn.LSTM``/``nn.GRU``) cannot compute ``spec``.

    ``None`` when they can: Elman with tanh or relu; LSTM with sigmoid gates, tanh ``g``
    and ``c``, no peepholes, no clip (projection allowed); GRU with sigmoid ``r, z``, tanh
    ``n``, reset "after" and update "old".
    """
    problem = family_problem(spec, "torch's nn.RNN/LSTM/GRU")
    if problem is not None:
        return problem
    acts = dict(spec.activations)
    if spec.family == "rnn":
        if acts["h"] in ("tanh", "relu"):
            return None
        return f"activation {acts['h']!r}: torch's RNN takes tanh or relu"
    if spec.family == "lstm":
        if spec.peepholes:
            return "peepholes=True"
        if spec.cell_clip is not None:
            return f"cell_clip={spec.cell_clip}"
        if acts != {"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid", "c": "tanh"}:
            return f"activations {acts}: torch's LSTM has sigmoid gates and tanh g, c"
        return None
    if spec.reset != "after":
        return f"reset={spec.reset!r}: torch's GRU resets after"
    if spec.update != "old":
        return f"update={spec.update!r}: torch's GRU computes h = z*h + (1-z)*n"
    if acts != {"r": "sigmoid", "z": "sigmoid", "n": "tanh"}:
        return f"activations {acts}: torch's GRU has sigmoid r, z and tanh n"
    return None


def vf_kernel(spec: Spec) -> str | None:
    """The ``torch._VF`` function computing ``spec`` (``"lstm"``, ``"gru"``,
    ``"rnn_tanh"``, ``"rnn_relu"``), or ``None`` when :func:`native_problem` says why not."""
    if native_problem(spec) is not None:
        return None
    if spec.family == "rnn":
        return f"rnn_{spec.activations['h']}"
    return spec.family


def mode(spec: Spec) -> str:
    """``nn.RNNBase.mode`` for ``spec``: ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``..."""
    if spec.family == "rnn":
        return f"RNN_{spec.activations['h'].upper()}"
    return spec.family.upper()


def carried_spec_text(metadata: Any) -> str | None:
    """The spec's JSON a state dict's ``_metadata`` carries at the root, or ``None``."""
    root = metadata.get("", None) if isinstance(metadata, Mapping) else None
    text = root.get(SPEC_KEY) if isinstance(root, Mapping) else None
    return text if isinstance(text, str) else None


def infer_spec(shapes: Mapping[str, tuple[int, ...]]) -> Spec:
    """The ``nn.RNN``/``nn.LSTM``/``nn.GRU`` spec that a state dict's names and shapes describe.

    Sizes, layers, directions, bias and projection come from the entries; activations are
    torch's defaults (an Elman RNN is taken as tanh).

    Raises:
        ValueError: the entries are not those of a torch recurrent layer; the message
            names the entry and what was expected.
    """
    if "weight_ih_l0" not in shapes or "weight_hh_l0" not in shapes:
        raise WeightsError(
            "from_torch: expected a state dict of nn.RNN/LSTM/GRU (entries weight_ih_l0, "
            f"weight_hh_l0, ...); received entries {', '.join(list(shapes)[:6]) or 'none'}"
        )
    unknown = [k for k in shapes if canonical_name(k) is None]
    if unknown:
        raise WeightsError(
            f"from_torch: state dict entry {unknown[0]!r} is not a torch recurrent weight; "
            "expected names like weight_ih_l0, bias_hh_l1_reverse, weight_hr_l0"
        )
    if any(k.startswith("weight_peephole") for k in shapes):
        raise WeightsError("from_torch: this state dict has peepholes, which only a unirnn "
                         "spec can say: pass spec=")
    for key in ("weight_ih_l0", "weight_hh_l0"):
        if len(shapes[key]) != 2 or 0 in shapes[key]:
            raise WeightsError(f"from_torch: {key}: expected a non-empty 2-D tensor (G*H, ·); "
                             f"received shape {tuple(shapes[key])}")
    rows, input_size = shapes["weight_ih_l0"]
    projected = "weight_hr_l0" in shapes
    if projected and len(shapes["weight_hr_l0"]) != 2:
        raise WeightsError(f"from_torch: weight_hr_l0: expected a 2-D tensor (P, H); received "
                         f"shape {tuple(shapes['weight_hr_l0'])}")
    hidden = shapes["weight_hr_l0"][1] if projected else shapes["weight_hh_l0"][1]
    family = family_from_gates(rows, hidden, "from_torch: weight_ih_l0 rows")
    layers = 1 + max(int(_NAME.match(k).group(2)) for k in shapes  # type: ignore[union-attr]
                     if k.startswith("weight_ih_l"))
    common: dict[str, Any] = {
        "bias": "bias_ih_l0" in shapes,
        "num_layers": layers,
        "bidirectional": "weight_ih_l0_reverse" in shapes,
    }
    if family == "lstm":
        return lstm(input_size, hidden, proj_size=shapes["weight_hr_l0"][0] if projected
                    else 0, **common)
    return (gru if family == "gru" else rnn)(input_size, hidden, **common)


# -- nn.LSTMCell / nn.GRUCell / nn.RNNCell ---------------------------------------------

CELL_CLASSES: Mapping[str, str] = {"lstm": "LSTMCell", "gru": "GRUCell", "rnn": "RNNCell"}
"""unirnn family -> torch's one-step module computing the standard cell of that family."""


def cell_tensor_names(spec: Spec) -> dict[str, str]:
    """Canonical name -> the name of a one-step module's parameter (``weight_ih``,
    ``weight_hh``, ``bias_ih``, ``bias_hh``; unirnn's ``weight_hr``, ``weight_peephole``),
    as ``nn.LSTMCell``/``nn.GRUCell``/``nn.RNNCell`` name theirs (no ``_l0`` suffix).

    Raises:
        ValueError: ``spec`` has several layers or directions (a cell is one of each).
    """
    if spec.num_layers != 1 or spec.bidirectional:
        raise ValueError(
            f"a torch cell module is one layer in one direction; received num_layers="
            f"{spec.num_layers}, bidirectional={spec.bidirectional}. Build the layer instead "
            "(module='layer')"
        )
    return {name: TORCH_STEMS.get(name.split(".")[2], name.split(".")[2])
            for name in weight_shapes(spec)}


def cell_native_problem(spec: Spec) -> str | None:
    """Why torch's one-step kernels (``_VF.lstm_cell``, ``gru_cell``, ``rnn_*_cell``, those
    of ``nn.LSTMCell``...) cannot compute ``spec``, or ``None``."""
    if spec.proj_size:
        return f"proj_size={spec.proj_size}: nn.LSTMCell has no projection"
    return native_problem(spec)


def cell_vf_kernel(spec: Spec) -> str | None:
    """The ``torch._VF`` one-step function computing ``spec`` (``"lstm_cell"``,
    ``"gru_cell"``, ``"rnn_tanh_cell"``, ``"rnn_relu_cell"``) or ``None``."""
    if cell_native_problem(spec) is not None:
        return None
    return f"{vf_kernel(spec)}_cell"


CELL_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_peephole")
"""The entries of a one-step module's state dict."""


def is_cell_state(names: Any) -> bool:
    """Whether state dict entries are a one-step module's (``weight_ih``... without ``_l0``)."""
    names = set(names)
    return "weight_ih" in names and names <= set(CELL_NAMES)


def infer_cell_spec(shapes: Mapping[str, tuple[int, ...]]) -> Spec:
    """The ``nn.LSTMCell``/``nn.GRUCell``/``nn.RNNCell`` spec of a cell state dict's shapes
    (activations torch's: an Elman cell is taken as tanh).

    Raises:
        ValueError: the entries are not those of a torch cell.
    """
    for key in ("weight_ih", "weight_hh"):
        if key not in shapes or len(shapes[key]) != 2 or 0 in shapes[key]:
            raise ValueError(f"from_torch: {key}: expected a non-empty 2-D tensor (G*H, ·) of "
                             f"a torch cell; received {shapes.get(key)}")
    if "weight_peephole" in shapes or "weight_hr" in shapes:
        raise ValueError("from_torch: this cell state dict has peepholes or a projection, "
                         "which only a unirnn spec can say: pass spec=")
    rows, input_size = shapes["weight_ih"]
    hidden = shapes["weight_hh"][1]
    family = family_from_gates(rows, hidden, "from_torch: weight_ih rows")
    return (lstm if family == "lstm" else gru if family == "gru" else rnn)(
        input_size, hidden, bias="bias_ih" in shapes)
