"""Kernels of the torch backend's custom path: activations, ops and the hoisted weight gradient.

Private to :mod:`unirnn.backends.torch`; it imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._activations import resolve_activation

__all__ = ["TORCH_ACTIVATIONS", "TorchOps"]

# -- activations -------------------------------------------------------------------------


def _softplus(x: Tensor) -> Tensor:
    # log1p(exp(-|x|)) + max(x, 0): exact everywhere, unlike F.softplus' threshold at 20.
    return torch.log1p(torch.exp(-x.abs())) + torch.clamp_min(x, 0.0)


def _hard_sigmoid(x: Tensor, alpha: float, beta: float) -> Tensor:
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


TORCH_ACTIVATIONS: Mapping[str, Callable[..., Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "identity": lambda x: x,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "hard_sigmoid": _hard_sigmoid,
    "softsign": F.softsign,
    "softplus": _softplus,
    "elu": lambda x, alpha: F.elu(x, alpha),
    "leaky_relu": lambda x, alpha: F.leaky_relu(x, alpha),
}
"""torch implementations of every built-in activation (``f(x, *params)``)."""


class TorchOps:
    """The :class:`unirnn._cells.Ops` of torch: ``F.linear``, ``torch.chunk``, ``torch.clamp``."""

    backend = "torch"

    def linear(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.linear(x, w, b)

    def split(self, x: Tensor, sections: int) -> list[Tensor]:
        return list(torch.chunk(x, sections, dim=-1))

    def clip(self, x: Tensor, bound: float) -> Tensor:
        return torch.clamp(x, -bound, bound)

    def activation(self, name: str) -> Callable[[Tensor], Tensor]:
        return resolve_activation(name, "torch", TORCH_ACTIVATIONS)


# recurrent weight of a prepared cell -> its bias (None: no bias)
_RECURRENT = {"w_h": "b_h", "w_hrz": "b_hrz", "w_hn": "b_hn", "w_r": None}


class _WeightGradOverSteps(torch.autograd.Function):
    """The bias of every step, ``(T, N, out)``, whose backward also gives the weight's.

    Each step computes ``x_t @ w.T + bias_t`` with ``w`` detached and ``bias_t`` this
    function's output at ``t``. Autograd then delivers ``g_t = dL/d(x_t w^T + b)`` for all
    steps at once here, and ``dL/dw = sum_t g_t^T x_t`` is ONE GEMM over ``T*N`` rows instead
    of a small GEMM and an accumulation per step. ``inputs`` is filled with the steps'
    ``x_t`` (detached) during the forward loop.
    """

    @staticmethod
    def forward(ctx: Any, w: Tensor, b: Tensor | None, shape: tuple[int, ...],
                inputs: list[Tensor]) -> Tensor:
        ctx.inputs = inputs
        ctx.has_bias = b is not None
        return w.new_zeros(shape) if b is None else b.expand(shape).clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        steps = torch.stack(ctx.inputs)
        grad_rows = grad.reshape(-1, grad.shape[-1])
        grad_w = grad_rows.t() @ steps.reshape(-1, steps.shape[-1])
        grad_b = grad_rows.sum(0) if ctx.has_bias else None
        return grad_w, grad_b, None, None


class _ScanOps(TorchOps):
    """:class:`TorchOps` for one scan: recurrent GEMMs on a pre-transposed weight.

    For each recurrent weight of ``prepared`` (``w_h``, ``w_hrz``, ``w_hn``, ``w_r``) the
    transposed weight is made contiguous once per scan (``addmm`` on it is faster on CPU
    than on the transposed view ``F.linear`` uses). With ``defer_weight_grads`` (autograd
    on), ``linear(x, w, b)`` at step ``t`` is ``addmm(bias_t, x, w.detach().T)`` with
    ``bias_t`` from :class:`_WeightGradOverSteps`, so the weight gradient is one GEMM.
    """

    def __init__(self, prepared: Mapping[str, Any], steps_batch: tuple[int, int],
                 defer_weight_grads: bool) -> None:
        self._slots: dict[int, tuple[Tensor, Any, list[Tensor] | None]] = {}
        for wkey, bkey in _RECURRENT.items():
            w = prepared.get(wkey)
            if w is None:
                continue
            b = prepared.get(bkey) if bkey else None
            if defer_weight_grads:
                inputs: list[Tensor] = []
                biases = _WeightGradOverSteps.apply(w, b, (*steps_batch, w.shape[0]), inputs)
                self._slots[id(w)] = (w.detach().t().contiguous(), iter(biases.unbind(0)),
                                      inputs)
            else:
                self._slots[id(w)] = (w.detach().t().contiguous(), b, None)

    def linear(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        slot = self._slots.get(id(w))
        if slot is None:
            return F.linear(x, w, b)
        w_t, bias, inputs = slot
        if inputs is None:
            return torch.mm(x, w_t) if bias is None else torch.addmm(bias, x, w_t)
        inputs.append(x.detach())
        return torch.addmm(next(bias), x, w_t)


def _reverse(x: Tensor, index: Tensor | None) -> Tensor:
    """Reverse ``x`` ``(T, N, F)`` in time, within each sequence's length when indexed."""
    if index is None:
        return x.flip(0)
    return x.gather(0, index.unsqueeze(-1).expand_as(x))
