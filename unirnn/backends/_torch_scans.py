"""The torch backend's linear scans: ``h_t = a_t h_{t-1} + b_t`` over a whole sequence, the
recurrence of minGRU and minLSTM (:meth:`unirnn._cells.Cell.linear_recurrence`).

Private to :mod:`unirnn.backends.torch`; it imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._cells import Cell

__all__ = ["LOG_SPACE_DEVICES", "PARALLEL_CHUNK", "PARALLEL_DEVICES", "log_space_scan",
           "multiply_add_scan", "parallel_here", "parallel_scan"]

PARALLEL_DEVICES = {"cuda"}
"""Devices on which minGRU and minLSTM run their parallel form (the gates of many steps at
once, then a scan); elsewhere the layer steps the cell as any other. On the 2-core CPU the
stepped cell measured as fast forward (N=32, T=512, I=H=256: 119 against 115 ms) and twice
as fast forward+backward (303 against 604 ms): the input GEMM dominates both, and stepping
keeps each step's gate math in cache."""


def parallel_here(cell: Cell, device: str) -> bool:
    """Whether ``cell`` runs its parallel form on ``device`` (a ``torch.device.type``)."""
    return cell.has_parallel_form() and device in PARALLEL_DEVICES


_NEG = -1e30  # log of "no contribution": finite, so logcumsumexp's gradient stays finite


LOG_SPACE_DEVICES = {"cuda"}
"""Devices on which the linear recurrence of minGRU/minLSTM runs as the log-space scan
(:func:`log_space_scan`: a few whole-sequence kernels instead of ``T`` launches). On the
CPU one fused multiply-add per step (:func:`multiply_add_scan`) is faster: at T=512,
N=32, H=256 on the 2-core development machine 19 ms against the log-space scan's 147 ms
forward (63 against 373 ms forward+backward), and exact to float32 rounding."""


def multiply_add_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """Every ``h_t = a_t h_{t-1} + b_t`` over time-major ``(T, N, H)``: one ``addcmul``
    per step (all the gate math is already done for every step at once)."""
    outputs, h = [], h0
    for a_t, b_t in zip(a.unbind(0), b.unbind(0)):
        h = torch.addcmul(b_t, a_t, h)
        outputs.append(h)
    return torch.stack(outputs)


SCAN_CHUNK = 32
"""Steps per chunk of :func:`log_space_scan`: within a chunk ``|log A|`` stays small enough
for float32 (at T=512 in one piece, ``log A`` reaches hundreds and the difference of two
such logs loses about 5e-5 of relative precision; chunks of 32 keep it near 1e-6)."""


def log_space_scan(log_a: Tensor, b: Tensor, log_b: Tensor | None, h0: Tensor) -> Tensor:
    """Every ``h_t = a_t h_{t-1} + b_t`` over time-major ``(T, N, H)`` at once, in log space
    (Feng et al. 2024, "Were RNNs All We Needed?", appendix), chunk by chunk: within a chunk
    of :data:`SCAN_CHUNK` steps, with ``A_t = a_1 ... a_t``, ``h_t = A_t h_0 + sum_{s<=t}
    (A_t / A_s) b_s``, where ``log A`` is a ``cumsum`` and the sum a ``logcumsumexp`` of
    ``log b_s - log A_s``, all chunks at once; then each chunk's ``h_0`` is the previous
    chunk's last state, ``T / SCAN_CHUNK`` elementwise steps. ``log_b`` (all ``b > 0``, as
    minGRU's ``g`` gives) is used directly; otherwise ``b``'s positive and negative parts
    are summed apart. ``h_0`` may have any sign: its term is ``A_t h_0``."""
    steps = log_a.shape[0]
    chunk = min(SCAN_CHUNK, steps)
    pad = -steps % chunk
    if pad:  # a = 1, b = 0 past the end: the state is held
        log_a = F.pad(log_a, (0, 0, 0, 0, 0, pad))
        b = F.pad(b, (0, 0, 0, 0, 0, pad))
        log_b = None if log_b is None else F.pad(log_b, (0, 0, 0, 0, 0, pad), value=_NEG)
    shape = (-1, chunk, *log_a.shape[1:])
    decay, local = _scan_from_zero(log_a.reshape(shape), b.reshape(shape),
                                   None if log_b is None else log_b.reshape(shape))
    # decay[k, j] = A over chunk k up to j; local[k, j] = the state from h = 0 at chunk k
    outputs, h = [], h0
    for decay_k, local_k in zip(decay.unbind(0), local.unbind(0)):
        states = decay_k * h + local_k
        outputs.append(states)
        h = states[-1]
    return torch.cat(outputs)[:steps]


def _scan_from_zero(log_a: Tensor, b: Tensor, log_b: Tensor | None) -> tuple[Tensor, Tensor]:
    """Over axis 1 of ``(K, C, N, H)``: ``exp(log A)`` and the states from ``h_0 = 0``."""
    log_A = torch.cumsum(log_a, dim=1)
    decay = torch.exp(log_A)
    if log_b is not None:
        return decay, torch.exp(log_A + torch.logcumsumexp(log_b - log_A, dim=1))
    out = torch.zeros_like(b)
    for sign, part in ((1.0, b), (-1.0, -b)):
        positive = part > 0
        log_part = torch.where(positive, torch.log(torch.where(positive, part, 1.0)), _NEG)
        term = torch.exp(log_A + torch.logcumsumexp(log_part - log_A, dim=1))
        out = out + term if sign > 0 else out - term
    return decay, out


PARALLEL_CHUNK: dict[str, int | None] = {"cpu": 32}
"""Steps per piece of the parallel form by device (``None`` or absent: the whole sequence).
On the CPU a piece of 32 steps keeps the gate arrays in cache; over the whole sequence each
elementwise op streams ``T*N*G*H`` values through memory and runs slower than stepping."""


def parallel_scan(cell: Cell, prepared: Mapping[str, Any], xp: Tensor,
                   carry: tuple[Tensor, ...], valid: Tensor | None
                   ) -> tuple[Tensor, tuple[Tensor, ...]]:
    """:meth:`unirnn._cells.Cell.parallel` over the sequence, in pieces of
    :data:`PARALLEL_CHUNK` steps, each piece's final state the next one's initial."""
    chunk = PARALLEL_CHUNK.get(xp.device.type) or xp.shape[0]
    outputs = []
    for start in range(0, xp.shape[0], chunk):
        part = cell.parallel(prepared, xp[start:start + chunk], carry,
                             None if valid is None else valid[start:start + chunk])
        assert part is not None
        y, carry = part
        outputs.append(y)
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs)), carry
