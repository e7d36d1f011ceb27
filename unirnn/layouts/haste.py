"""haste's layer-normalised LSTM and GRU (``haste_pytorch.LayerNormLSTM``,
``LayerNormGRU``): their parameters to and from unirnn's ``ln_lstm``/``ln_gru``, numpy only.

haste's documented layout (one layer, one direction; kernels are ``(in, out)``):

- ``LayerNormGRU``: ``kernel`` ``(I, 3H)`` and ``recurrent_kernel`` ``(H, 3H)``, columns in
  gate order **z, r, h**; ``bias`` and ``recurrent_bias`` ``(3H)``; ``gamma`` ``(2, 3H)``,
  ``gamma[0]`` the input's layer-norm gain and ``gamma[1]`` the recurrent one. Reset after,
  ``h = z h + (1 - z) g``: unirnn's ``ln_gru``.
- ``LayerNormLSTM``: ``kernel`` ``(I, 4H)`` and ``recurrent_kernel`` ``(H, 4H)``, columns in
  gate order **i, g, f, o** (its forget bias initialises ``bias[2H:3H]``); one ``bias``
  ``(4H)``; ``gamma`` ``(2, 4H)``; ``gamma_h``, ``beta_h`` ``(H)``, the cell state's
  layer-norm gain and offset: unirnn's ``ln_lstm``.

A layer norm is over all ``G*H`` features of a step, so reordering gate blocks (with their
gains) does not change it. haste's one LSTM bias is the sum of unirnn's ``b_x`` and ``b_h``:
reading puts it in ``b_x`` and zeros in ``b_h``, writing sums them (outputs unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._errors import SpecError, WeightsError
from .._spec import Spec
from .._weights import Weights, check_weights

__all__ = ["HASTE_GATES", "from_haste", "to_haste"]

HASTE_GATES = {"ln_gru": ("z", "r", "n"), "ln_lstm": ("i", "g", "f", "o")}
"""haste's gate order per unirnn family (its GRU candidate ``h`` is unirnn's ``n``)."""

_TENSORS = {"ln_gru": ("kernel", "recurrent_kernel", "bias", "recurrent_bias", "gamma"),
            "ln_lstm": ("kernel", "recurrent_kernel", "bias", "gamma", "gamma_h", "beta_h")}


def _reorder(blocks: np.ndarray, source: tuple[str, ...], target: tuple[str, ...],
             axis: int) -> np.ndarray:
    parts = dict(zip(source, np.split(blocks, len(source), axis=axis)))
    return np.concatenate([parts[g] for g in target], axis=axis)


def _family(tensors: Mapping[str, Any]) -> str:
    if "gamma_h" in tensors or "beta_h" in tensors:
        return "ln_lstm"
    if "recurrent_bias" in tensors:
        return "ln_gru"
    raise WeightsError("haste: expected LayerNormLSTM's tensors (kernel, recurrent_kernel, "
                       "bias, gamma, gamma_h, beta_h) or LayerNormGRU's (kernel, "
                       "recurrent_kernel, bias, recurrent_bias, gamma); received "
                       f"{', '.join(sorted(tensors))}")


def from_haste(tensors: Mapping[str, Any]) -> tuple[Spec, Weights]:
    """``(spec, weights)`` of a haste ``LayerNormLSTM``/``LayerNormGRU``'s parameters (its
    ``state_dict()``, or numpy arrays under the same names).

    Raises:
        WeightsError: missing, unexpected or mis-shaped tensors, each named.
    """
    family = _family(tensors)
    names = _TENSORS[family]
    missing = [n for n in names if n not in tensors]
    extra = sorted(set(tensors) - set(names))
    if missing or extra:
        raise WeightsError(f"haste {family}: expected tensors {', '.join(names)}; "
                           + (f"missing {', '.join(missing)}" if missing else "")
                           + ("; " if missing and extra else "")
                           + (f"unexpected {', '.join(extra)}" if extra else ""))
    t = {n: np.asarray(tensors[n].detach().cpu().numpy() if hasattr(tensors[n], "detach")
                       else tensors[n], dtype=np.float64) for n in names}
    I, GH = t["kernel"].shape if t["kernel"].ndim == 2 else (0, 0)
    G = len(HASTE_GATES[family])
    if t["kernel"].ndim != 2 or GH % G or t["recurrent_kernel"].shape != (GH // G, GH):
        raise WeightsError(f"haste {family}: expected kernel (I, {G}H) and recurrent_kernel "
                           f"(H, {G}H); received {t['kernel'].shape} and "
                           f"{t['recurrent_kernel'].shape}")
    H = GH // G
    if t["gamma"].shape != (2, GH):
        raise WeightsError(f"haste {family}: expected gamma (2, {GH}); received "
                           f"{t['gamma'].shape}")
    spec = Spec(family, int(I), int(H))
    src, dst = HASTE_GATES[family], spec.gate_order
    w = {"w_x": _reorder(t["kernel"], src, dst, 1).T,
         "w_h": _reorder(t["recurrent_kernel"], src, dst, 1).T,
         "b_x": _reorder(t["bias"], src, dst, 0),
         "b_h": (_reorder(t["recurrent_bias"], src, dst, 0) if family == "ln_gru"
                 else np.zeros(GH)),
         "ln_x": _reorder(t["gamma"][0], src, dst, 0),
         "ln_h": _reorder(t["gamma"][1], src, dst, 0)}
    if family == "ln_lstm":
        w["ln_c"], w["ln_c_offset"] = t["gamma_h"], t["beta_h"]
    weights = check_weights(spec, {f"layer0.forward.{k}": np.ascontiguousarray(v)
                                   for k, v in w.items()})
    return spec, weights


def to_haste(spec: Spec, weights: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """haste's parameters (names and layout above) of a one-layer, one-direction
    ``ln_lstm``/``ln_gru`` spec with bias, as numpy arrays in the weights' dtype.

    Raises:
        SpecError: another family, several layers or directions, or ``bias=False`` (haste
            always has biases).
    """
    if spec.family not in HASTE_GATES:
        raise SpecError(f"to_haste: expected family 'ln_lstm' or 'ln_gru' (haste's "
                        f"LayerNormLSTM, LayerNormGRU); received {spec.family!r}")
    if spec.num_layers != 1 or spec.bidirectional or not spec.bias:
        raise SpecError("to_haste: a haste layer is one layer, one direction, with biases; "
                        f"received num_layers={spec.num_layers}, bidirectional="
                        f"{spec.bidirectional}, bias={spec.bias}")
    w = check_weights(spec, weights).layer(0, "forward")
    src, dst = spec.gate_order, HASTE_GATES[spec.family]
    out = {"kernel": _reorder(np.asarray(w["w_x"]).T, src, dst, 1),
           "recurrent_kernel": _reorder(np.asarray(w["w_h"]).T, src, dst, 1),
           "gamma": np.stack([_reorder(np.asarray(w["ln_x"]), src, dst, 0),
                              _reorder(np.asarray(w["ln_h"]), src, dst, 0)])}
    if spec.family == "ln_gru":
        out["bias"] = _reorder(np.asarray(w["b_x"]), src, dst, 0)
        out["recurrent_bias"] = _reorder(np.asarray(w["b_h"]), src, dst, 0)
    else:
        out["bias"] = _reorder(np.asarray(w["b_x"]) + np.asarray(w["b_h"]), src, dst, 0)
        out["gamma_h"], out["beta_h"] = np.asarray(w["ln_c"]), np.asarray(w["ln_c_offset"])
    return {k: np.ascontiguousarray(v) for k, v in out.items()}
