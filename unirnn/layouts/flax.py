"""Flax's recurrent layouts, numpy only: Flax's own cells and unirnn's Flax layer tree.

Flax's cells (verified against flax/linen/recurrent.py and flax/nnx/nn/recurrent.py;
kernels ``(in, out)``, ``H`` the hidden size, gate blocks in canonical order)::

    LSTMCell           linen  ii if ig io: kernel (I, H)       hi hf hg ho: kernel (H, H) + bias (H)
                       nnx    the same, with ``if_`` for ``if``
    OptimizedLSTMCell  linen  the names and shapes of LSTMCell
                       nnx    dense_i: kernel (I, 4H)          dense_h: kernel (H, 4H) + bias (4H)
    GRUCell            linen  ir iz in: kernel (I, H) + bias   hr hz: kernel (H, H)
                                                               hn: kernel (H, H) + bias (= b_hn)
                       nnx    dense_i: kernel (I, 3H) + bias   dense_h: kernel (H, 3H)
    SimpleCell         linen  i: kernel (I, H) + bias          h: kernel (H, H)
                       nnx    dense_i: kernel + bias           dense_h: kernel

The carry is ``h``, lstm ``(c, h)``; GRUCell computes ``h' = (1-z)*n + z*h``, reset after.
Flax's cells have one bias per gate where unirnn keeps two: the rows of ``b_h`` that may
fold (:func:`unirnn._cells.folded_bias_rows`) are added into the cell's bias, the others
(GRU's ``b_hn``) go to a recurrent bias (linen's ``hn``), and a cell without one (nnx's
GRUCell) refuses non-zero values. Reading puts the folded sum in ``b_x``.

unirnn's own Flax layer (:class:`unirnn.backends.flax.UniRNN` and its nnx twin) holds one
subtree per layer and direction, ``layer{k}_{direction}`` (:func:`cell_name`), in
:mod:`unirnn.layouts.kernels`' layout. A tree written by unirnn carries its spec in the
entry :data:`SPEC_ENTRY` beside ``"params"``: ``{"spec": <the spec's UTF-8 JSON as a
uint8 array>}`` (an array leaf, so the tree still goes through ``jax.jit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from .._cells import folded_bias_rows
from .._errors import WeightsError
from .._spec import Spec
from . import GATES, family_from_gates, family_problem
from .kernels import KERNEL_LAYOUT, from_kernel_layout, to_kernel_layout

__all__ = [
    "CELL_FAMILY",
    "FLAX_CELLS",
    "SPEC_ENTRY",
    "Entry",
    "carried_spec",
    "cell_activations",
    "cell_entries",
    "cell_name",
    "cell_tree_shapes",
    "detect_cell",
    "from_cell_tree",
    "from_layer_tree",
    "infer_cell_spec",
    "infer_layer_spec",
    "layer_weights",
    "native_problem",
    "spec_entry",
    "to_cell_tree",
    "to_layer_tree",
    "tree_api",
    "unknown_cell",
]

FLAX_CELLS = ("LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell")

CELL_FAMILY: Mapping[str, str] = {"LSTMCell": "lstm", "OptimizedLSTMCell": "lstm",
                                  "GRUCell": "gru", "SimpleCell": "rnn"}

_GATE_NAMES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn": ("",)}

SPEC_ENTRY = "unirnn"
"""The entry of a Flax tree (and ``.msgpack`` file) that carries the spec, beside ``"params"``."""


# -- Flax's cells ----------------------------------------------------------------------


class Entry(NamedTuple):
    """One Dense of a Flax cell: its name, which side it multiplies (``"x"`` the input,
    ``"h"`` the state), its gate (``None``: all gates, columns in canonical order) and its
    bias: ``"sum"`` (``b_x`` plus the folded rows of ``b_h``), ``"recurrent"`` (the rows
    of ``b_h`` that may not fold) or ``None``."""

    name: str
    side: str
    gate: int | None
    bias: str | None


def cell_entries(cell: str, api: str = "linen") -> tuple[Entry, ...]:
    """The Dense entries of Flax's ``cell`` under ``api`` (``"linen"`` or ``"nnx"``)."""
    family = CELL_FAMILY[cell]
    fused = api == "nnx" and cell != "LSTMCell"
    if fused:
        x_bias = None if family == "lstm" else "sum"
        return (Entry("dense_i", "x", None, x_bias),
                Entry("dense_h", "h", None, "sum" if family == "lstm" else None))
    entries = []
    for k, gate in enumerate(_GATE_NAMES[family]):
        name = "if_" if api == "nnx" and gate == "f" else f"i{gate}"
        entries.append(Entry(name, "x", k, None if family == "lstm" else "sum"))
    for k, gate in enumerate(_GATE_NAMES[family]):
        bias = "sum" if family == "lstm" else "recurrent" if gate == "n" else None
        entries.append(Entry(f"h{gate}", "h", k, bias))
    return tuple(entries)


def cell_tree_shapes(spec: Spec, cell: str, api: str = "linen"
                     ) -> dict[str, dict[str, tuple[int, ...]]]:
    """Entry -> ``{"kernel": shape, "bias": shape}`` of Flax's ``cell`` for ``spec``."""
    H, G = spec.hidden_size, spec.num_gates
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for entry in cell_entries(cell, api):
        width = H if entry.gate is not None else G * H
        rows = spec.input_size if entry.side == "x" else H
        shapes[entry.name] = {"kernel": (rows, width)}
        if entry.bias is not None:
            shapes[entry.name]["bias"] = (width,)
    return shapes


def unknown_cell(cell: str) -> str | None:
    """Why ``cell`` names none of :data:`FLAX_CELLS`, or ``None``."""
    if cell in FLAX_CELLS:
        return None
    return (f"cell: expected None (unirnn's layer) or one of {', '.join(FLAX_CELLS)}; "
            f"received {cell!r}")


def native_problem(spec: Spec, cell: str) -> str | None:
    """Why Flax's ``cell`` (with some ``gate_fn``/``activation_fn``) cannot compute
    ``spec``, or ``None`` when it computes exactly ``spec``."""
    problem = unknown_cell(cell)
    if problem is not None:
        return problem
    family = CELL_FAMILY[cell]

    def refuse(field: str, value: Any, why: str) -> str:
        return (f"{field}={value!r}: Flax's {cell} cannot express it ({why}); use unirnn's "
                f"own Flax layer (to_flax(spec, weights) with cell=None), which computes "
                f"every spec")

    if spec.family != family:
        return refuse("family", spec.family, f"it is a {family} cell")
    problem = family_problem(spec, f"Flax's {cell}")
    if problem is not None:
        return problem
    if spec.num_layers != 1 or spec.bidirectional:
        return refuse("num_layers/bidirectional", (spec.num_layers, spec.bidirectional),
                      "it is one layer in one direction; convert each layer separately")
    acts = spec.activations
    if family == "lstm":
        for field in ("peepholes", "proj_size", "cell_clip"):
            if getattr(spec, field) not in (False, 0, None):
                return refuse(field, getattr(spec, field), "it has no such option")
        if not acts["i"] == acts["f"] == acts["o"]:
            return refuse("activations", dict(acts), "one gate_fn for i, f and o")
        if acts["g"] != acts["c"]:
            return refuse("activations", dict(acts), "one activation_fn for g and c")
    elif family == "gru":
        if spec.reset != "after":
            return refuse("reset", spec.reset, "it resets after: n = act(W_in x + b_in + "
                          "r*(W_hn h + b_hn))")
        if spec.update != "old":
            return refuse("update", spec.update, "h' = (1-z)*n + z*h")
        if acts["r"] != acts["z"]:
            return refuse("activations", dict(acts), "one gate_fn for r and z")
    return None


def cell_activations(cell: str, gate_fn: str | None, activation_fn: str) -> dict[str, str]:
    """The spec's activations of Flax's ``cell`` from the names of its ``gate_fn``
    (``None`` for SimpleCell, which has none) and ``activation_fn``."""
    family = CELL_FAMILY[cell]
    gate_fn = gate_fn or ""
    if family == "lstm":
        return {"i": gate_fn, "f": gate_fn, "o": gate_fn, "g": activation_fn,
                "c": activation_fn}
    if family == "gru":
        return {"r": gate_fn, "z": gate_fn, "n": activation_fn}
    return {"h": activation_fn}


def _gate_rows(array: np.ndarray, gate: int | None, H: int) -> np.ndarray:
    return array if gate is None else array[gate * H:(gate + 1) * H]


def to_cell_tree(spec: Spec, layer: Mapping[str, np.ndarray], cell: str, api: str = "linen"
                 ) -> dict[str, dict[str, np.ndarray]]:
    """One layer-direction's canonical tensors (``w_x``...) as Flax's ``cell`` tree.

    Raises:
        ValueError: ``spec`` is not what ``cell`` computes (:func:`native_problem`), or
            rows of ``b_h`` that may not fold are non-zero and the cell has no recurrent
            bias to hold them (nnx's GRUCell).
    """
    problem = native_problem(spec, cell)
    if problem is not None:
        raise WeightsError(problem)
    H, G = spec.hidden_size, spec.num_gates
    w_x, w_h = layer["w_x"], layer["w_h"]
    zero = np.zeros(G * H, w_x.dtype)
    b_x, b_h = layer.get("b_x", zero), layer.get("b_h", zero)
    folded = folded_bias_rows(spec)
    total = b_x.copy()
    total[:folded] += b_h[:folded]
    recurrent = b_h.copy()
    recurrent[:folded] = 0
    entries = cell_entries(cell, api)
    if np.any(recurrent != 0) and not any(e.bias == "recurrent" for e in entries):
        raise WeightsError(
            f"b_hn (layer0.forward.b_h[{folded}:]): flax.{api}.{cell} has no recurrent bias, "
            "and b_hn cannot fold into the input bias (it is multiplied by r); received "
            "non-zero values. Use flax.linen.GRUCell (its 'hn' has a bias) or unirnn's own "
            "Flax layer (cell=None)"
        )
    tree = {}
    for entry in entries:
        kernel = w_x if entry.side == "x" else w_h
        tree[entry.name] = {"kernel": _gate_rows(kernel, entry.gate, H).T.copy()}
        if entry.bias is not None:
            bias = total if entry.bias == "sum" else recurrent
            tree[entry.name]["bias"] = _gate_rows(bias, entry.gate, H).copy()
    return tree


def tree_api(tree: Mapping[str, Any]) -> str:
    """``"nnx"`` or ``"linen"``: which API's names a tree of Flax's cell has."""
    return "nnx" if "dense_i" in tree or "if_" in tree else "linen"


def from_cell_tree(tree: Mapping[str, Any], cell: str) -> dict[str, np.ndarray]:
    """The inverse of :func:`to_cell_tree`: ``w_x``, ``w_h``, ``b_x`` (the cell's bias),
    ``b_h`` (zeros, GRU's ``b_hn`` where the cell has it)."""
    family = CELL_FAMILY[cell]
    if cell == "LSTMCell" and "dense_i" in tree:
        cell = "OptimizedLSTMCell"  # nnx's fused names; linen's LSTM cells share one layout
    entries = cell_entries(cell, tree_api(tree))
    needed = {entry.name: ("kernel", "bias") if entry.bias is not None else ("kernel",)
              for entry in entries}
    wrong = [name for name, keys in needed.items()
             if not isinstance(tree.get(name), Mapping) or not set(keys) <= set(tree[name])]
    if wrong:
        guess = None
        try:
            guess = detect_cell(tree)
        except WeightsError:
            pass
        expected = ", ".join(f"{name}/{'+'.join(keys)}" for name, keys in needed.items())
        raise WeightsError(
            f"{cell}: expected params {expected}; received keys {sorted(map(str, tree))}"
            + (f" (these are {'unirnn' if guess is None else 'a ' + guess}'s params: pass "
               f"cell={guess!r})" if guess != cell else "")
        )
    parts: dict[tuple[str, str], list[np.ndarray]] = {}
    hidden = None
    for entry in entries:
        kernel = np.asarray(tree[entry.name]["kernel"])
        if entry.side == "h":
            hidden = kernel.shape[0]
        parts.setdefault((entry.side, "kernel"), []).append(kernel)
    assert hidden is not None
    width = GATES[family] * hidden
    w_x = np.concatenate(parts["x", "kernel"], axis=1).T
    w_h = np.concatenate(parts["h", "kernel"], axis=1).T
    biases = {"sum": np.zeros(width, w_x.dtype), "recurrent": np.zeros(width, w_x.dtype)}
    for entry in entries:
        if entry.bias is not None:
            rows = slice(None) if entry.gate is None else \
                slice(entry.gate * hidden, (entry.gate + 1) * hidden)
            biases[entry.bias][rows] = np.asarray(tree[entry.name]["bias"])
    return {"w_x": w_x, "w_h": w_h, "b_x": biases["sum"], "b_h": biases["recurrent"]}


def infer_cell_spec(layer: Mapping[str, np.ndarray], cell: str,
                    activations: Mapping[str, str] | None = None) -> Spec:
    """The spec of Flax's ``cell`` holding canonical ``layer`` (from :func:`from_cell_tree`)."""
    rows, hidden = layer["w_h"].shape
    family = family_from_gates(rows, hidden, f"{cell} recurrent kernel")
    if family != CELL_FAMILY[cell]:
        raise WeightsError(f"{cell}: expected a {CELL_FAMILY[cell]} cell's kernels; the "
                         f"recurrent kernels have {rows // hidden} gates")
    return Spec(family, layer["w_x"].shape[1], hidden, dict(activations or {}))


def detect_cell(tree: Mapping[str, Any]) -> str | None:
    """Which Flax cell a params tree belongs to; ``None``: unirnn's layer (or one cell of it)."""
    keys = set(tree)
    if keys and all(k.startswith("layer") and "_" in k for k in keys):
        return None
    if "input_kernel" in keys:
        return None
    if {"ii", "hi"} <= keys:
        return "LSTMCell"
    if {"ir", "hn"} <= keys:
        return "GRUCell"
    if keys == {"i", "h"}:
        return "SimpleCell"
    if keys == {"dense_i", "dense_h"}:
        rows, cols = np.shape(tree["dense_h"]["kernel"])
        family = family_from_gates(cols, rows, "dense_h.kernel columns")
        return {"lstm": "OptimizedLSTMCell", "gru": "GRUCell", "rnn": "SimpleCell"}[family]
    raise WeightsError(f"from_flax: cannot tell which cell these params belong to (keys "
                     f"{sorted(keys)}); pass cell= (None for unirnn's layer, or one of "
                     f"{', '.join(FLAX_CELLS)})")


# -- unirnn's Flax layer -----------------------------------------------------------------


def cell_name(layer: int, direction: str) -> str:
    """The subtree (submodule) of one layer and direction: ``layer{k}_{direction}``."""
    return f"layer{layer}_{direction}"


def layer_weights(weights: Mapping[str, Any], layer: int, direction: str) -> dict[str, Any]:
    """One layer-direction's canonical tensors by short name (any array type)."""
    prefix = f"layer{layer}.{direction}."
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def to_layer_tree(spec: Spec, weights: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Canonical weights as unirnn's layer tree ``{layer{k}_{direction}: {param: array}}``
    (any array type with ``.T``; traceable with jax arrays)."""
    return {
        cell_name(layer, direction): to_kernel_layout(layer_weights(weights, layer, direction))
        for layer in range(spec.num_layers)
        for direction in spec.directions
    }


def from_layer_tree(spec: Spec, tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The inverse of :func:`to_layer_tree`, as canonical numpy arrays.

    A tree of one cell's parameters (``input_kernel``... at the top) is read as
    ``layer0_forward``.
    """
    if "input_kernel" in tree:
        tree = {cell_name(0, "forward"): tree}
    arrays: dict[str, np.ndarray] = {}
    for layer in range(spec.num_layers):
        for direction in spec.directions:
            key = cell_name(layer, direction)
            if key not in tree:
                raise WeightsError(f"params: missing {key!r} required by the spec "
                                 f"(num_layers={spec.num_layers}, "
                                 f"bidirectional={spec.bidirectional})")
            for name, value in from_kernel_layout(tree[key]).items():
                arrays[f"layer{layer}.{direction}.{name}"] = np.asarray(value)
    return arrays


def infer_layer_spec(tree: Mapping[str, Any]) -> Spec:
    """Sizes and options of unirnn's layer tree (activations default: pass spec= otherwise)."""
    if "input_kernel" in tree:
        tree = {cell_name(0, "forward"): tree}
    first = tree[cell_name(0, "forward")]
    known = {name for name, _ in KERNEL_LAYOUT.values()}
    unknown = sorted(set(map(str, first)) - known)
    if unknown or "recurrent_kernel" not in first:
        why = (f"it holds {', '.join(unknown)}, parameters of a family beyond rnn, lstm and gru"
               if unknown else "it has no recurrent_kernel (a family without recurrent "
               "weights: indrnn, mingru, minlstm...)")
        raise WeightsError(f"params: cannot infer the spec of this unirnn layer tree ({why}); "
                           f"pass spec= (the tree does not carry one)")
    P, GH = np.shape(first["recurrent_kernel"])
    H = np.shape(first["projection_kernel"])[0] if "projection_kernel" in first else P
    family = family_from_gates(GH, H, "layer0_forward.recurrent_kernel columns")
    options: dict[str, Any] = {
        "bias": "input_bias" in first,
        "num_layers": sum(1 for k in tree if k.endswith("_forward")),
        "bidirectional": cell_name(0, "backward") in tree,
    }
    if family == "lstm":
        options.update(peepholes="peepholes" in first, proj_size=P if P != H else 0)
    return Spec(family, np.shape(first["input_kernel"])[0], H, **options)


# -- the spec a tree carries -------------------------------------------------------------


def spec_entry(spec: Spec) -> dict[str, np.ndarray]:
    """The :data:`SPEC_ENTRY` value carrying ``spec``: its JSON as a uint8 array."""
    return {"spec": np.frombuffer(spec.to_json().encode(), np.uint8).copy()}


def _spec_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    return np.asarray(value).astype(np.uint8).tobytes().decode()


def carried_spec(tree: Mapping[str, Any]) -> tuple[Mapping[str, Any], Spec | None]:
    """``(tree without the SPEC_ENTRY entry, the spec it carried or None)``."""
    if SPEC_ENTRY not in tree or not isinstance(tree[SPEC_ENTRY], Mapping):
        return tree, None
    entry = tree[SPEC_ENTRY]
    if "spec" not in entry:
        raise WeightsError(f"Flax tree: the {SPEC_ENTRY!r} entry holds no 'spec'; expected "
                         f"{{'spec': <the spec's JSON>}} as written by unirnn")
    try:
        spec = Spec.from_json(_spec_text(entry["spec"]))
    except (ValueError, UnicodeDecodeError) as err:
        raise WeightsError(f"Flax tree: the {SPEC_ENTRY!r} entry's spec is not a unirnn spec "
                         f"({err})") from None
    return {k: v for k, v in tree.items() if k != SPEC_ENTRY}, spec
