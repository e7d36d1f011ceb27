"""unirnn's own cell-kernel layout: ``(in, out)`` kernels, gate column blocks in canonical order.

The layout of unirnn's Keras cell (:class:`unirnn.backends.keras.UniRNNCell`) and Flax
cells (``UniCell``, ``UniCellNNX``), one layer and direction::

    input_kernel       (I_k, G*H)  = w_x.T
    recurrent_kernel   (P, G*H)    = w_h.T
    input_bias         (G*H,)      = b_x         (bias=True)
    recurrent_bias     (G*H,)      = b_h         (bias=True)
    peepholes          (3*H,)      = p (i, f, o) (lstm, peepholes=True)
    projection_kernel  (H, P)      = w_r.T       (lstm, proj_size>0)

A family's extra parameters (:func:`unirnn.register_family`: ``ln_x``, ``u``...) keep their
canonical names and shapes; families without recurrent weights have no
``recurrent_kernel``/``recurrent_bias``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .._spec import Spec
from .._weights import layer_shapes

__all__ = [
    "KERNEL_LAYOUT",
    "from_kernel_layout",
    "kernel_layout_shapes",
    "to_canonical_array",
    "to_kernel_layout",
]

KERNEL_LAYOUT: Mapping[str, tuple[str, bool]] = MappingProxyType({
    "w_x": ("input_kernel", True),
    "w_h": ("recurrent_kernel", True),
    "b_x": ("input_bias", False),
    "b_h": ("recurrent_bias", False),
    "p": ("peepholes", False),
    "w_r": ("projection_kernel", True),
})
"""Canonical short name -> (parameter name, stored transposed)."""


def _entry(short: str) -> tuple[str, bool]:
    """(parameter name, transposed) of a canonical short name; a family's extra parameter
    keeps its name, untransposed."""
    return KERNEL_LAYOUT.get(short, (short, False))


_CANONICAL_OF = {name: short for short, (name, _) in KERNEL_LAYOUT.items()}


def kernel_layout_shapes(spec: Spec, input_size: int) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape in :data:`KERNEL_LAYOUT` for one layer and direction."""
    return {
        _entry(short)[0]: shape[::-1] if _entry(short)[1] else shape
        for short, shape in layer_shapes(spec, input_size).items()
    }


def to_kernel_layout(layer_weights: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical short names -> :data:`KERNEL_LAYOUT` (any array type with ``.T``)."""
    out = {}
    for short, value in layer_weights.items():
        name, transposed = _entry(short)
        out[name] = value.T if transposed else value
    return out


def from_kernel_layout(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`to_kernel_layout`."""
    out = {}
    for name, value in tensors.items():
        short = _CANONICAL_OF.get(name, name)
        out[short] = value.T if _entry(short)[1] else value
    return out


def to_canonical_array(short: str, array: Any) -> Any:
    """One kernel-layout value (or its gradient) in the canonical layout."""
    return array.T if _entry(short)[1] else array
