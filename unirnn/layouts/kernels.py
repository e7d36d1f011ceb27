"""unirnn's own cell-kernel layout: ``(in, out)`` kernels, gate column blocks in canonical order.

The layout of unirnn's Keras cell (:class:`unirnn.backends.keras.UniRNNCell`) and Flax
cells (``UniCell``, ``UniCellNNX``), one layer and direction::

    input_kernel       (I_k, G*H)  = w_x.T
    recurrent_kernel   (P, G*H)    = w_h.T
    input_bias         (G*H,)      = b_x         (bias=True)
    recurrent_bias     (G*H,)      = b_h         (bias=True)
    peepholes          (3*H,)      = p (i, f, o) (lstm, peepholes=True)
    projection_kernel  (H, P)      = w_r.T       (lstm, proj_size>0)
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


def kernel_layout_shapes(spec: Spec, input_size: int) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape in :data:`KERNEL_LAYOUT` for one layer and direction."""
    return {
        KERNEL_LAYOUT[short][0]: shape[::-1] if KERNEL_LAYOUT[short][1] else shape
        for short, shape in layer_shapes(spec, input_size).items()
    }


def to_kernel_layout(layer_weights: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical short names -> :data:`KERNEL_LAYOUT` (any array type with ``.T``)."""
    return {
        name: layer_weights[short].T if transposed else layer_weights[short]
        for short, (name, transposed) in KERNEL_LAYOUT.items()
        if short in layer_weights
    }


def from_kernel_layout(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`to_kernel_layout`."""
    return {
        short: tensors[name].T if transposed else tensors[name]
        for short, (name, transposed) in KERNEL_LAYOUT.items()
        if name in tensors
    }


def to_canonical_array(short: str, array: Any) -> Any:
    """One kernel-layout value (or its gradient) in the canonical layout."""
    return array.T if KERNEL_LAYOUT[short][1] else array
