"""Kernels of the torch backend's custom path: activations, ops, the per-direction scan.

Private to :mod:`unirnn.backends.torch`; it imports torch. The stack around the scan
(layers, directions, lengths, dropout) is :func:`unirnn._stack.run_stack`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._activations import resolve_activation
from .._cells import Cell, make_cell
from .._spec import Spec
from . import _torch_scans
from ._torch_scans import log_space_scan, multiply_add_scan, parallel_here, parallel_scan

__all__ = ["TORCH_ACTIVATIONS", "TorchOps", "project_inputs", "scan"]

# -- activations -------------------------------------------------------------------------


def _softplus(x: Tensor) -> Tensor:
    # log(exp(x) + exp(0)) in one op: exact everywhere, unlike F.softplus' threshold at 20
    return torch.logaddexp(x, x.new_zeros(()))


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
    "min_g": lambda x: torch.where(x >= 0, x + 0.5, torch.sigmoid(x)),
}
"""torch implementations of every built-in activation (``f(x, *params)``)."""


class TorchOps:
    """The :class:`unirnn._cells.Ops` of torch: ``F.linear``, ``torch.chunk``, ``torch.clamp``."""

    backend = "torch"

    def linear(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.linear(x, w, b)

    def recurrent(self, name: str, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.linear(x, w, b)

    def split(self, x: Tensor, sections: int | Sequence[int]) -> list[Tensor]:
        if isinstance(sections, int):
            return list(torch.chunk(x, sections, dim=-1))
        return list(torch.split(x, list(sections), dim=-1))

    def lerp(self, a: Tensor, b: Tensor, w: Tensor) -> Tensor:
        return torch.lerp(a, b, w)

    def clip(self, x: Tensor, bound: float) -> Tensor:
        return torch.clamp(x, -bound, bound)

    def activation(self, name: str) -> Callable[[Tensor], Tensor]:
        return resolve_activation(name, "torch", TORCH_ACTIVATIONS)

    def layer_norm(self, x: Tensor, scale: Tensor, offset: Tensor | None,
                   eps: float = 1e-5) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), scale, offset, eps)

    def log(self, x: Tensor) -> Tensor:
        return torch.log(x)

    def prefers_log_space(self, x: Tensor) -> bool:
        return x.device.type in _torch_scans.LOG_SPACE_DEVICES

    def linear_scan(self, log_a: Tensor, b: Tensor, log_b: Tensor | None, h0: Tensor
                    ) -> Tensor:
        if log_a.device.type in _torch_scans.LOG_SPACE_DEVICES:
            return log_space_scan(log_a, b, log_b, h0)
        return multiply_add_scan(torch.exp(log_a), b, h0)

    # the stack runner's ops (unirnn._stack.StackOps), time axis 0
    def concat(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, dim=-1)

    def stack(self, xs: list[Tensor]) -> Tensor:
        return torch.stack(xs)

    def flip_time(self, x: Tensor) -> Tensor:
        return x.flip(0)

    def take_time(self, x: Tensor, index: Tensor) -> Tensor:
        return x.gather(0, index.reshape(*index.shape, *(1,) * (x.dim() - 2)).expand_as(x))

    def positions(self, steps: int, like: Tensor) -> Tensor:
        return torch.arange(steps, device=like.device)[:, None]

    def where(self, condition: Tensor, a: Any, b: Any) -> Tensor:
        return torch.where(condition, a, b)


def _onednn_pack(w: Tensor, batch: int, steps: int) -> Tensor | None:
    """``w`` ``(out, in)`` reordered into oneDNN's blocked GEMM layout, or ``None``.

    A recurrent GEMM multiplies the same weight by a small ``(N, in)`` state at every step.
    oneDNN's pre-packed GEMM (the one ``nn.LSTM`` uses on CPU) runs it 10-20% faster than
    ``addmm`` once the inner dimension is wide (measured on a 2-core AVX-512 CPU: N=32 or
    64, in=384 or 512), but no faster, and up to 1.5x slower, at in <= 256; packing costs
    about two step GEMMs, once per scan. So the weight is packed only when ``in`` and the
    number of steps reach ``_ONEDNN``'s bounds (``min_inner``, ``min_steps``), in float32
    on a CPU build with oneDNN; ``None`` (plain ``addmm``) elsewhere, including builds
    where these private ops are missing or refuse the weight.
    """
    if w.device.type != "cpu" or w.dtype != torch.float32 or not _ONEDNN["available"] \
            or w.shape[1] < _ONEDNN["min_inner"] or steps < _ONEDNN["min_steps"]:
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(w, batch)
    except (AttributeError, RuntimeError, NotImplementedError):
        _ONEDNN["available"] = False
        return None


_ONEDNN: dict[str, Any] = {
    "available": torch.backends.mkldnn.is_available(),
    "min_inner": 384,  # narrowest state (in) whose step GEMM is packed
    "min_steps": 16,  # fewest steps over which packing pays for itself
}


def _onednn_linear(x: Tensor, packed: Tensor, add: Tensor | None) -> Tensor:
    """``x @ w.T (+ add)`` on a packed weight; ``add``, a bias ``(out,)`` or a per-row term
    ``(N, out)``, is fused into the GEMM."""
    if add is None or add.dim() == 1:
        return torch.ops.mkldnn._linear_pointwise(x, packed, add, "none", [], "")
    return torch.ops.mkldnn._linear_pointwise.binary(x, add, packed, None, "add")


def _first_order_only() -> None:
    """Refuse ``create_graph=True``: these backward passes are written for first-order
    gradients (the weight enters each step detached), so a second derivative through them
    would silently miss terms."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "unirnn's torch custom path computes first-order gradients only; for higher-"
            "order gradients (create_graph=True, gradient penalties, Hessians) call the "
            "module under torch.func (torch.func.grad, jacrev, hessian), where it runs "
            "plain autograd ops"
        )


class _OneDNNProjection(torch.autograd.Function):
    """``x @ w.T + b`` for ``x`` ``(rows, in)`` through oneDNN, with the usual gradients."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, w)
        return _onednn_linear(x, w, b)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        _first_order_only()
        x, w = ctx.saved_tensors
        grad_x = grad.mm(w) if ctx.needs_input_grad[0] else None
        grad_w = grad.t().mm(x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def project_inputs(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """The input projection of all steps at once: ``x @ w.T + b`` for ``x`` ``(T, N, in)``.

    One GEMM over ``T*N`` rows; in float32 on CPU through oneDNN with the bias fused into
    it (about 15% faster than ``F.linear``, which first copies the broadcast bias into its
    output), elsewhere ``F.linear``.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32 \
            or not _ONEDNN["available"] or torch.compiler.is_compiling() \
            or torch._C._are_functorch_transforms_active():
        return F.linear(x, w, b)
    rows = x.reshape(-1, x.shape[-1])
    try:
        if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                        or b is not None and b.requires_grad):
            out = _OneDNNProjection.apply(rows, w, b)
        else:
            out = _onednn_linear(rows, w, b)
    except (AttributeError, RuntimeError, NotImplementedError):
        _ONEDNN["available"] = False
        return F.linear(x, w, b)
    return out.view(*x.shape[:-1], w.shape[0])


class _StepLinear(torch.autograd.Function):
    """One step's recurrent GEMM ``x @ w.T + add``, differentiable in ``x`` and ``add`` only.

    ``w`` is the detached weight: its gradient comes from :class:`_WeightGradOverSteps`
    (or is not wanted), so backward needs only ``dx = g @ w`` and ``d(add) = g``. That
    backward is first-order (:func:`_first_order_only`).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, add: Tensor | None, recurrent: _Recurrent) -> Tensor:
        ctx.save_for_backward(recurrent.w)
        ctx.add_dim = None if add is None else add.dim()
        return recurrent.gemm(x, add)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        _first_order_only()
        (w,) = ctx.saved_tensors
        grad_x = grad.mm(w) if ctx.needs_input_grad[0] else None
        grad_add = None
        if ctx.needs_input_grad[1]:
            grad_add = grad.sum(0) if ctx.add_dim == 1 else grad
        return grad_x, grad_add, None


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
        _first_order_only()
        steps = torch.stack(ctx.inputs)
        grad_rows = grad.reshape(-1, grad.shape[-1])
        grad_w = grad_rows.t() @ steps.reshape(-1, steps.shape[-1])
        grad_b = grad_rows.sum(0) if ctx.has_bias else None
        return grad_w, grad_b, None, None


class _Recurrent:
    """One recurrent weight of a scan, prepared once: ``x @ w.T + b`` at every step."""

    def __init__(self, w: Tensor, b: Tensor | None, steps_batch: tuple[int, int],
                 defer_weight_grad: bool) -> None:
        self.w = w.detach()
        self.packed = _onednn_pack(self.w, steps_batch[1], steps_batch[0])
        # without oneDNN: addmm on a contiguous transposed weight beats F.linear's view
        self.w_t = self.w.t().contiguous() if self.packed is None else self.w
        self.inputs: list[Tensor] | None = None
        self.biases: Any = b  # a tensor, None, or an iterator over the steps' biases
        if defer_weight_grad:
            self.inputs = []
            biases = _WeightGradOverSteps.apply(w, b, (*steps_batch, w.shape[0]), self.inputs)
            self.biases = iter(biases.unbind(0))

    def gemm(self, x: Tensor, add: Tensor | None) -> Tensor:
        """``x @ w.T + add`` (``add``: a bias ``(out,)``, a step's ``(N, out)`` or None)."""
        if self.packed is not None:
            return _onednn_linear(x, self.packed, add)
        return torch.mm(x, self.w_t) if add is None else torch.addmm(add, x, self.w_t)

    def __call__(self, x: Tensor) -> Tensor:
        if self.inputs is None:
            bias = self.biases
        else:
            self.inputs.append(x.detach())
            bias = next(self.biases)
        if torch.is_grad_enabled() and (x.requires_grad or bias is not None
                                        and bias.requires_grad):
            return _StepLinear.apply(x, bias, self)
        return self.gemm(x, bias)


class _ScanOps(TorchOps):
    """:class:`TorchOps` for one scan: each recurrent weight prepared once per scan.

    For each recurrent weight the cell declares (:meth:`unirnn._cells.Cell.recurrent_weights`:
    ``w_h``, or ``w_hrz`` and ``w_hn``, and ``w_r``) the weight is detached and laid out
    for the step GEMM once (oneDNN-packed in float32 on CPU, else transposed contiguous
    for ``addmm``). With ``defer_weight_grads`` (autograd on), ``recurrent(name, x, ...)``
    at step ``t`` is ``x @ w.T + bias_t`` with ``bias_t`` from
    :class:`_WeightGradOverSteps`, so the weight gradient is one GEMM.
    """

    def __init__(self, cell: Cell, prepared: Mapping[str, Any], steps_batch: tuple[int, int],
                 defer_weight_grads: bool) -> None:
        self._recurrent = {
            name: _Recurrent(prepared[name], None if bias is None else prepared[bias],
                             steps_batch, defer_weight_grads)
            for name, bias in cell.recurrent_weights().items()
        }

    def recurrent(self, name: str, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return self._recurrent[name](x)


def _plain_ops_only() -> bool:
    """torch.compile traces the plain ops; torch.func transforms (grad, jacrev, hessian)
    need them too: the scan ops' autograd Functions are first-order only."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


def scan(spec: Spec, cell: Cell, params: Mapping[str, Tensor], x: Tensor,
         carry: tuple[Tensor, ...], valid: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer and direction over time-major ``x`` ``(T, N, I_k)`` (:class:`unirnn._stack.Scan`).

    The input projection of all steps is one GEMM; each step one fused recurrent GEMM
    (:class:`_ScanOps`) plus the cell's math; time slices come from ``unbind`` (indexing
    ``x[t]`` makes torch's backward quadratic).
    """
    prepared = cell.prepare(params)
    if type(cell).project is Cell.project:
        xp = project_inputs(x, params["w_x"], params.get("b_x"))  # all steps: one GEMM
    else:
        xp = cell.project(params, x)
    if parallel_here(cell, xp.device.type):  # minGRU, minLSTM: many steps' gates at once
        return parallel_scan(cell, prepared, xp, carry, valid)
    if not _plain_ops_only():
        defer = torch.is_grad_enabled() and any(p.requires_grad for p in params.values())
        cell = make_cell(spec, _ScanOps(cell, prepared, (xp.shape[0], xp.shape[1]), defer))
    outputs = []
    if valid is None:
        for xp_t in xp.unbind(0):
            carry, y = cell.step(prepared, xp_t, carry)
            outputs.append(y)
        return torch.stack(outputs), carry
    for xp_t, valid_t in zip(xp.unbind(0), valid.unbind(0)):
        new_carry, y = cell.step(prepared, xp_t, carry)
        carry = tuple(torch.where(valid_t, n, o) for n, o in zip(new_carry, carry))
        outputs.append(y)
    return torch.where(valid, torch.stack(outputs), 0.0), carry
