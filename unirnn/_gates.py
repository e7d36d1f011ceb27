"""Per-gate weights in and out: the tensors a hand-written cell keeps, as canonical weights.

Tutorial cells keep one matrix per gate and side (``W_xz``, ``W_hz``, ``b_z``; or one
``nn.Linear`` per gate and side, ``x2z``, ``h2z``), in ``W @ x`` (``(out, in)``, torch's
``nn.Linear.weight``) or ``x @ W`` (``(in, out)``, d2l, Keras' ``Dense.kernel``) layout.
:func:`from_gates` stacks them into the canonical rows (:mod:`unirnn._weights`) and
:func:`to_gates` splits canonical weights back, so no gate order is written by hand.

A gate's entry is a mapping of its parts:

- ``w_x`` (alias ``x``): the input weight ``(H, I_k)`` (``layout="in_out"``: ``(I_k, H)``);
- ``w_h`` (alias ``h``): the recurrent weight ``(H, P)`` (``in_out``: ``(P, H)``);
- ``b_x``, ``b_h``: the input- and recurrent-side biases ``(H,)``; or ``b`` (alias
  ``bias``): one bias per gate, read as ``b_x`` with ``b_h = 0`` (the outputs are the same:
  ``a_k = W_xk x + W_hk h + b_k``); GRU's candidate under reset "after" keeps ``b_hn``
  apart, since it is multiplied by ``r``;
- ``p``: LSTM's peephole weight ``(H,)`` of gates ``i``, ``f`` and ``o``.

``w_x`` and ``w_h`` may be an object standing for a gate's input or hidden part: a torch
``nn.Linear`` (anything with ``.weight``, in ``(out, in)`` layout whatever ``layout`` says,
and ``.bias``: ``None`` or that side's bias) or a Keras ``Dense`` (``.kernel``, in
``(in, out)`` layout, and ``.bias``). Values may be numpy, torch (``.detach().cpu()``),
jax or Keras arrays, or ``nnx.Param``-like wrappers (``.value``); no framework is imported.

Gate names (canonical first, then accepted aliases):

- ``lstm``: ``i``, ``f``, ``g`` (``c``, ``c_tilde``), ``o``;
- ``gru``: ``r``, ``z``, ``n`` (``h``, ``h_tilde``: d2l's and Keras' name for the candidate);
- ``rnn``: ``h``.

A stack (several layers or directions) is a mapping keyed by ``(layer, direction)``
(``(0, "forward")``, ``(0, "backward")``...), each value a mapping of gates as above. An
LSTM with projection takes ``"w_r"`` (``(P, H)``, ``in_out``: ``(H, P)``, or an
``nn.Linear`` without bias) beside its gates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._errors import SpecError, WeightsError
from ._spec import GATE_ORDER, Spec
from ._weights import Weights, check_weights, weight_name

__all__ = ["GATE_ALIASES", "from_gates", "to_gates"]

LAYOUTS = ("out_in", "in_out")

GATE_ALIASES: Mapping[str, Mapping[str, str]] = {
    "lstm": {"i": "i", "f": "f", "g": "g", "c": "g", "c_tilde": "g", "o": "o"},
    "gru": {"r": "r", "z": "z", "n": "n", "h": "n", "h_tilde": "n"},
    "rnn": {"h": "h"},
}
"""Per family, every accepted gate name -> the canonical gate."""

_PART_ALIASES = {"w_x": "w_x", "x": "w_x", "w_h": "w_h", "h": "w_h", "b_x": "b_x",
                 "b_h": "b_h", "b": "b", "bias": "b", "p": "p"}
_PEEPHOLE_GATES = ("i", "f", "o")  # the order of the canonical ``p`` (3H,)


def _array(value: Any, what: str) -> np.ndarray:
    """A numpy array from numpy, torch, jax or Keras values, without importing any of them."""
    if hasattr(value, "value") and not isinstance(value, np.ndarray) and \
            not hasattr(value, "detach"):
        value = value.value  # nnx.Param, keras.Variable
    if hasattr(value, "detach"):  # torch.Tensor (also a Keras variable's value on torch)
        tensor = value.detach().cpu()
        if str(tensor.dtype) in ("torch.bfloat16", "torch.float16"):
            tensor = tensor.float()
        value = tensor.numpy()
    try:
        array = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - any framework's conversion error
        raise WeightsError(f"{what}: expected an array (numpy, torch, jax or Keras); received "
                           f"{type(value).__name__} ({err})") from None
    if array.dtype.kind == "V" and array.dtype.name.startswith(("bfloat16", "float8")):
        array = array.astype(np.float32)  # ml_dtypes' narrow floats hold exactly in float32
    if array.dtype.kind != "f":
        raise WeightsError(f"{what}: expected a floating-point array; received "
                           f"{type(value).__name__} of dtype {array.dtype}")
    return array


def _part(value: Any, layout: str, what: str) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """``(matrix in (out, in) layout, the bias it carries or None, was a module)``."""
    if hasattr(value, "weight") and not isinstance(value, np.ndarray):  # nn.Linear
        bias = getattr(value, "bias", None)
        return (_array(value.weight, f"{what}.weight"),
                None if bias is None else _array(bias, f"{what}.bias"), True)
    if hasattr(value, "kernel") and not isinstance(value, np.ndarray):  # keras Dense
        bias = getattr(value, "bias", None)
        return (_array(value.kernel, f"{what}.kernel").T,
                None if bias is None else _array(bias, f"{what}.bias"), True)
    array = _array(value, what)
    return (array.T if layout == "in_out" and array.ndim == 2 else array), None, False


def _expect(array: np.ndarray, shape: tuple[int, ...], what: str, layout: str,
            from_module: bool = False) -> np.ndarray:
    if array.shape == shape:
        return array
    if from_module:
        given, wanted = array.shape, shape
        hint = ""
    else:
        given = array.shape[::-1] if layout == "in_out" and array.ndim == 2 else array.shape
        wanted = shape[::-1] if layout == "in_out" and len(shape) == 2 else shape
        other = "out_in" if layout == "in_out" else "in_out"
        hint = (f"; it is the transpose: pass layout={other!r}"
                if len(shape) == 2 and given == wanted[::-1] and shape[0] != shape[1] else "")
    raise WeightsError(f"{what}: expected shape {wanted}" +
                       (f" (layout={layout!r})" if len(shape) == 2 and not from_module else "")
                       + f"; received {given}{hint}")


def _gate_names(family: str) -> str:
    """``"'r', 'z', 'n' (or 'h', 'h_tilde')"``: the gates of ``family`` and their aliases."""
    aliases = GATE_ALIASES[family]
    words = []
    for gate in GATE_ORDER[family]:
        others = [repr(a) for a, c in aliases.items() if c == gate and a != gate]
        words.append(repr(gate) + (f" (or {', '.join(others)})" if others else ""))
    return ", ".join(words)


def _canonical_gates(spec: Spec, gates: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Gate entries under canonical names; ``w_r`` kept as is."""
    if not isinstance(gates, Mapping):
        raise WeightsError(f"{where}: expected a mapping of gate name to its tensors; "
                           f"received {type(gates).__name__}")
    aliases = GATE_ALIASES[spec.family]
    out: dict[str, Any] = {}
    named: dict[str, str] = {}
    for name, entry in gates.items():
        if name == "w_r":
            out["w_r"] = entry
            continue
        gate = aliases.get(str(name))
        if gate is None:
            raise WeightsError(f"{where}: gate {name!r} is not a {spec.family} gate; "
                               f"expected {_gate_names(spec.family)}")
        if gate in out:
            raise WeightsError(f"{where}: gate {gate!r} given twice (as {named[gate]!r} and "
                               f"{name!r}); give it once")
        out[gate], named[gate] = entry, str(name)
    missing = [g for g in GATE_ORDER[spec.family] if g not in out]
    if missing:
        raise WeightsError(
            f"{where}: missing gate {missing[0]!r} of the {spec.family} "
            f"({', '.join(GATE_ORDER[spec.family])}); received gates "
            f"{', '.join(repr(n) for n in named.values()) or 'none'}"
        )
    return out


def _layer_from_gates(spec: Spec, gates: Mapping[str, Any], layer: int, layout: str,
                      where: str) -> dict[str, np.ndarray]:
    H, P, I_k = spec.hidden_size, spec.output_size, spec.layer_input_size(layer)
    entries = _canonical_gates(spec, gates, where)
    w_x: list[np.ndarray] = []
    w_h: list[np.ndarray] = []
    b_x: list[np.ndarray | None] = []
    b_h: list[np.ndarray | None] = []
    peep: dict[str, np.ndarray] = {}
    any_bias = False
    for gate in GATE_ORDER[spec.family]:
        entry = entries[gate]
        what = f"{where}[{gate!r}]"
        if not isinstance(entry, Mapping):
            raise WeightsError(f"{what}: expected a mapping of its parts (w_x, w_h, b_x, b_h "
                               f"or b); received {type(entry).__name__}")
        parts: dict[str, Any] = {}
        for key, value in entry.items():
            part = _PART_ALIASES.get(str(key))
            if part is None:
                raise WeightsError(f"{what}: unknown part {key!r}; expected w_x (x), w_h (h), "
                                   "b_x, b_h, b (bias) or p")
            if part in parts:
                raise WeightsError(f"{what}: part {part!r} given twice; give it once")
            parts[part] = value
        for side in ("w_x", "w_h"):
            if side not in parts:
                kind = "input" if side == "w_x" else "recurrent"
                raise WeightsError(f"{what}: missing {side!r} (the {kind} weight); received "
                                   f"parts {', '.join(map(repr, entry)) or 'none'}")
        biases: dict[str, np.ndarray] = {}
        for side, bias_name, cols, store in (("w_x", "b_x", I_k, w_x), ("w_h", "b_h", P, w_h)):
            matrix, carried, module = _part(parts[side], layout, f"{what} {side}")
            store.append(_expect(matrix, (H, cols), f"{what} {side}", layout, module))
            if carried is not None:
                biases[bias_name] = carried
        for name in ("b_x", "b_h"):
            if name in parts:
                if name in biases:
                    raise WeightsError(f"{what}: {name!r} given twice (apart and as the "
                                       f"bias of its {'w_x' if name == 'b_x' else 'w_h'} "
                                       "module); give it once")
                biases[name] = _array(parts[name], f"{what} {name}")
        if "b" in parts:
            if "b_x" in biases:
                raise WeightsError(f"{what}: one bias 'b' and 'b_x' both given; give 'b' "
                                   "(one bias per gate) or 'b_x' and 'b_h'")
            biases["b_x"] = _array(parts["b"], f"{what} b")
        for name in ("b_x", "b_h"):
            if name in biases:
                any_bias = True
                biases[name] = _expect(biases[name].reshape(-1) if biases[name].ndim == 2 and
                                       1 in biases[name].shape else biases[name], (H,),
                                       f"{what} {name}", layout)
        b_x.append(biases.get("b_x"))
        b_h.append(biases.get("b_h"))
        if "p" in parts:
            if not spec.peepholes or gate not in _PEEPHOLE_GATES:
                raise WeightsError(f"{what}: a peephole 'p' is for LSTM gates i, f, o with "
                                   f"peepholes=True; received one for gate {gate!r} of the "
                                   f"spec {spec.describe()}")
            peep[gate] = _expect(_array(parts["p"], f"{what} p").reshape(-1), (H,),
                                 f"{what} p", layout)
    dtype = np.result_type(*w_x, *w_h, *(b for b in b_x + b_h if b is not None),
                           *peep.values())
    dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)

    def stack(blocks: list[np.ndarray | None]) -> np.ndarray:
        return np.concatenate([np.zeros(H, dtype) if b is None else b.astype(dtype)
                               for b in blocks])

    out = {"w_x": np.concatenate([w.astype(dtype) for w in w_x]),
           "w_h": np.concatenate([w.astype(dtype) for w in w_h])}
    if spec.bias:
        if not any_bias:
            raise WeightsError(f"{where}: no gate has a bias (b_x, b_h or b), but the spec has "
                               "bias=True; pass a spec with bias=False")
        out["b_x"], out["b_h"] = stack(b_x), stack(b_h)
    elif any_bias:
        given = [g for g, bx, bh in zip(GATE_ORDER[spec.family], b_x, b_h)
                 if (bx is not None and np.any(bx != 0)) or (bh is not None and np.any(bh != 0))]
        if given:
            raise WeightsError(f"{where}[{given[0]!r}] has a non-zero bias, but the spec "
                               "has bias=False; pass a spec with bias=True")
    if spec.peepholes:
        missing = [g for g in _PEEPHOLE_GATES if g not in peep]
        if missing:
            raise WeightsError(f"{where}[{missing[0]!r}]: missing its peephole 'p' "
                               f"(shape ({H},)), required by peepholes=True")
        out["p"] = np.concatenate([peep[g].astype(dtype) for g in _PEEPHOLE_GATES])
    if spec.proj_size:
        if "w_r" not in entries:
            raise WeightsError(f"{where}: missing 'w_r' (the projection ({P}, {H}) beside the "
                               f"gates), required by proj_size={P}")
        matrix, carried, module = _part(entries["w_r"], layout, f"{where}['w_r']")
        if carried is not None and np.any(carried != 0):
            raise WeightsError(f"{where}['w_r']: the projection has no bias; received a module "
                               "with a non-zero bias")
        out["w_r"] = _expect(matrix, (P, H), f"{where}['w_r']", layout, module).astype(dtype)
    elif "w_r" in entries:
        raise WeightsError(f"{where}: 'w_r' (a projection) given, but the spec has proj_size=0")
    return out


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise WeightsError(f"layout: expected 'out_in' (W @ x, torch's nn.Linear.weight) or "
                           f"'in_out' (x @ W, d2l, Keras kernels); received {layout!r}")


def _units(spec: Spec, gates: Mapping[Any, Any]) -> dict[tuple[int, str], Any]:
    """``(layer, direction) -> gates`` for every layer and direction of ``spec``."""
    keyed = [k for k in gates if isinstance(k, (tuple, int)) and not isinstance(k, bool)]
    if not keyed:
        if spec.num_layers > 1 or spec.bidirectional:
            raise WeightsError(
                f"gates: the spec has {spec.num_layers} layer(s) x {spec.num_directions} "
                "direction(s); key the gates by (layer, direction), e.g. "
                "{(0, 'forward'): {...}, (0, 'backward'): {...}}"
            )
        return {(0, "forward"): gates}
    if len(keyed) != len(gates):
        raise WeightsError("gates: mix of (layer, direction) keys and gate names; key every "
                           "entry by (layer, direction)")
    units: dict[tuple[int, str], Any] = {}
    for key, value in gates.items():
        layer, direction = (key, "forward") if isinstance(key, int) else \
            (*tuple(key), "forward")[:2]
        if direction not in spec.directions or not isinstance(layer, int) or \
                not 0 <= layer < spec.num_layers:
            raise WeightsError(f"gates: key {key!r} names no layer and direction of the spec; "
                               f"expected layer 0..{spec.num_layers - 1} and direction "
                               f"{' or '.join(map(repr, spec.directions))}")
        units[layer, direction] = value
    missing = [(k, d) for k in range(spec.num_layers) for d in spec.directions
               if (k, d) not in units]
    if missing:
        raise WeightsError(f"gates: missing layer {missing[0][0]} direction {missing[0][1]!r}, "
                           "required by the spec")
    return units


def from_gates(spec: Spec, gates: Mapping[Any, Any], *, layout: str = "out_in") -> Weights:
    """Canonical :class:`~unirnn.Weights` from per-gate tensors (module docstring).

    Args:
        spec: the cell the tensors belong to (``unirnn.preset("d2l_gru", I, H)`` for d2l's).
        gates: gate name -> ``{"w_x": ..., "w_h": ..., "b_x": ..., "b_h": ...}`` (or
            ``"b"``: one bias), ``w_x``/``w_h`` arrays or ``nn.Linear``/``Dense`` modules;
            for a stack, ``(layer, direction)`` -> such a mapping.
        layout: ``"out_in"`` (``W @ x``: torch's ``nn.Linear.weight``, the default) or
            ``"in_out"`` (``x @ W``: d2l's ``W_xz``, Keras kernels). Modules say their own
            layout.

    Returns:
        The weights, checked against ``spec``, in the inputs' common float dtype (missing
        biases are zeros).

    Raises:
        WeightsError: a missing, unknown or repeated gate or part, or a mis-shaped tensor;
            the message names the gate and both shapes.

    Example (d2l's ``get_params``: ``H = sigmoid(X @ W_xz + H @ W_hz + b_z)``):
        >>> import numpy as np, unirnn
        >>> rng = np.random.default_rng(0)
        >>> I, H = 3, 4
        >>> d2l = {g: {"w_x": rng.normal(size=(I, H)), "w_h": rng.normal(size=(H, H)),
        ...            "b": np.zeros(H)} for g in ("z", "r", "h")}
        >>> spec = unirnn.preset("d2l_gru", I, H)
        >>> w = unirnn.from_gates(spec, d2l, layout="in_out")
        >>> bool((w["layer0.forward.w_x"][:H] == d2l["r"]["w_x"].T).all())   # r first
        True
    """
    if not isinstance(spec, Spec):
        raise SpecError(f"from_gates: expected a unirnn.Spec; received {type(spec).__name__}")
    _check_layout(layout)
    if not isinstance(gates, Mapping):
        raise WeightsError(f"gates: expected a mapping of gate name to its tensors; received "
                           f"{type(gates).__name__}")
    arrays: dict[str, np.ndarray] = {}
    units = _units(spec, gates)
    for (layer, direction), unit in units.items():
        keyed = any(isinstance(k, (tuple, int)) for k in gates)
        where = f"gates[{(layer, direction)!r}]" if keyed else "gates"
        for tensor, array in _layer_from_gates(spec, unit, layer, layout, where).items():
            arrays[weight_name(layer, direction, tensor)] = array
    dtypes = {a.dtype for a in arrays.values()}
    if len(dtypes) > 1:
        common = np.result_type(*dtypes)
        arrays = {k: v.astype(common) for k, v in arrays.items()}
    return check_weights(spec, arrays)


def to_gates(spec: Spec, weights: Mapping[str, Any], *, layout: str = "out_in",
             bias: str = "two", names: Mapping[str, str] | None = None) -> dict[Any, Any]:
    """Per-gate numpy tensors of canonical ``weights``: the inverse of :func:`from_gates`.

    Args:
        spec, weights: the cell and its canonical weights (checked).
        layout: ``"out_in"`` (``(H, I)`` matrices, for ``nn.Linear.weight``) or ``"in_out"``
            (``(I, H)``, for ``x @ W`` code).
        bias: ``"two"``: ``b_x`` and ``b_h`` per gate; ``"one"``: one ``b`` = ``b_x + b_h``
            per gate (d2l's ``b_z``), refused for a reset-after GRU with a non-zero ``b_hn``
            (it is multiplied by ``r`` and cannot fold).
        names: canonical gate -> the key to use, e.g. ``{"n": "h"}`` for d2l and Keras.

    Returns:
        Gate -> ``{"w_x", "w_h", "b_x", "b_h"}`` (or ``"b"``; ``"p"`` for peepholes) and
        ``"w_r"`` beside the gates for a projection; for a stack (several layers or
        directions), ``(layer, direction)`` -> such a mapping.
    """
    if not isinstance(spec, Spec):
        raise SpecError(f"to_gates: expected a unirnn.Spec; received {type(spec).__name__}")
    _check_layout(layout)
    if bias not in ("one", "two"):
        raise WeightsError(f"bias: expected 'two' (b_x and b_h) or 'one' (b = b_x + b_h); "
                           f"received {bias!r}")
    names = dict(names or {})
    unknown = [g for g in names if g not in GATE_ORDER[spec.family]]
    if unknown:
        raise WeightsError(f"names: {unknown[0]!r} is not a canonical {spec.family} gate; "
                           f"expected keys among {', '.join(GATE_ORDER[spec.family])}")
    checked = check_weights(spec, weights)
    H = spec.hidden_size

    def side(matrix: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(matrix.T if layout == "in_out" else matrix)

    units: dict[tuple[int, str], dict[str, Any]] = {}
    for layer in range(spec.num_layers):
        for direction in spec.directions:
            w = checked.layer(layer, direction)
            unit: dict[str, Any] = {}
            for k, gate in enumerate(GATE_ORDER[spec.family]):
                rows = slice(k * H, (k + 1) * H)
                entry: dict[str, np.ndarray] = {"w_x": side(w["w_x"][rows]),
                                                "w_h": side(w["w_h"][rows])}
                if spec.bias and bias == "two":
                    entry["b_x"], entry["b_h"] = w["b_x"][rows].copy(), w["b_h"][rows].copy()
                elif spec.bias:
                    if spec.family == "gru" and spec.reset == "after" and gate == "n" and \
                            np.any(w["b_h"][rows] != 0):
                        raise WeightsError(
                            f"bias='one': layer {layer} {direction} b_hn is non-zero and, "
                            "under reset='after', multiplied by r, so it cannot fold into one "
                            "bias; use bias='two'"
                        )
                    entry["b"] = w["b_x"][rows] + w["b_h"][rows]
                if spec.peepholes and gate in _PEEPHOLE_GATES:
                    j = _PEEPHOLE_GATES.index(gate)
                    entry["p"] = w["p"][j * H:(j + 1) * H].copy()
                unit[names.get(gate, gate)] = entry
            if spec.proj_size:
                unit["w_r"] = side(w["w_r"])
            units[layer, direction] = unit
    if spec.num_layers == 1 and not spec.bidirectional:
        return units[0, "forward"]
    return dict(units)
