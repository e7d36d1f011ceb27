"""The PyTorch backend: a ``torch.nn.Module`` that drops in where ``nn.RNN``/``LSTM``/``GRU`` was.

``build(spec)`` returns a :class:`TorchRNN`. Its parameters carry torch's own names and
layouts (``weight_ih_l0``, ``weight_hh_l0_reverse``, ``bias_ih_l0``, ``weight_hr_l0``), so
``load_state_dict`` works both ways with the native layers. Canonical weights use the same
row order as torch (lstm ``i, f, g, o``; gru ``r, z, n``), so converting is a renaming::

    layer{k}.forward.w_x  <->  weight_ih_l{k}          layer{k}.backward.w_x <-> ..._reverse
    layer{k}.forward.w_h  <->  weight_hh_l{k}          b_x <-> bias_ih_l{k}, b_h <-> bias_hh_l{k}
    layer{k}.forward.w_r  <->  weight_hr_l{k}          p   <-> weight_peephole_l{k} (unirnn only)

Two paths, chosen once at construction and named by ``module.kernel``:

- ``"torch._VF.lstm"``, ``"torch._VF.gru"``, ``"torch._VF.rnn_tanh"``, ``"torch._VF.rnn_relu"``:
  the spec is one torch's fused kernels compute (cuDNN on CUDA, ATen/oneDNN on CPU), and
  the module calls that kernel exactly as ``nn.RNNBase.forward`` does.
- ``"unirnn.torch-loop"``: any other spec (custom activations, reset "before", update "new",
  peepholes, cell clip). The input projection of all steps is one GEMM, each step one
  fused ``(G*H)``-wide recurrent GEMM plus the shared cell math of :mod:`unirnn._cells`;
  time slices come from ``unbind``. In float32 on CPU both GEMMs run through oneDNN, the
  recurrent one on a weight packed once per call (as ``nn.LSTM``'s CPU kernel does);
  elsewhere ``F.linear``/``addmm``. Variable lengths mask the carry with
  ``torch.where``; the backward direction reverses each sequence within its length through
  a gather index computed once per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._errors import SpecError, WeightsError
from .._evaluation import Evaluation
from .._inputs import check_cotangent, check_input_shape, check_stacked_state
from .._spec import Spec
from .._weights import Weights
from ._torch_cell import CELL_KERNELS, TorchRNNCell
from ._torch_kernels import TORCH_ACTIVATIONS, TorchOps
from ._torch_module import CUSTOM_KERNEL, PARALLEL_KERNEL, TorchRNN, torch_dtype

__all__ = [
    "CUSTOM_KERNEL",
    "KERNELS",
    "TORCH_ACTIVATIONS",
    "TorchOps",
    "TorchRNN",
    "TorchRNNCell",
    "build",
    "canonical_weights",
    "evaluate",
    "tensor_to_numpy",
]

KERNELS = ("torch._VF.lstm", "torch._VF.gru", "torch._VF.rnn_tanh", "torch._VF.rnn_relu",
           CUSTOM_KERNEL, PARALLEL_KERNEL, *CELL_KERNELS)
"""The paths a :class:`TorchRNN` or :class:`TorchRNNCell` runs (its ``.kernel``)."""


def tensor_to_numpy(tensor: Tensor, name: str) -> np.ndarray:
    """A tensor's values as numpy (bfloat16 and float16 as float32).

    A ``DTensor`` (sharded by FSDP2's ``fully_shard`` or tensor parallelism) holds only
    this rank's shard, and gathering it is a collective every rank must join, so it is
    refused with a :class:`~unirnn.WeightsError` that says how to gather it.
    """
    tensor = tensor.detach()
    if _is_dtensor(tensor):
        raise WeightsError(
            f"{name}: expected a plain tensor; received a DTensor (sharded by FSDP2's "
            "fully_shard or tensor parallelism), which holds only this rank's shard. "
            "Gather the full state dict on every rank, e.g. torch.distributed.checkpoint."
            "state_dict.get_model_state_dict(module, options=StateDictOptions("
            "full_state_dict=True)), and pass it to from_torch with spec=module.spec"
        )
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.cpu().numpy()


def _is_dtensor(tensor: Tensor) -> bool:
    if type(tensor) is Tensor or not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def canonical_weights(module: TorchRNN | TorchRNNCell, dtype: Any = None) -> Weights:
    """The module's parameters as canonical :class:`unirnn.Weights` (bfloat16 -> float32)."""
    arrays = {}
    for cname, tname in module.canonical_names().items():
        array = tensor_to_numpy(getattr(module, tname), f"from_torch: parameter {tname!r}")
        arrays[cname] = array if dtype is None else array.astype(dtype)
    return Weights(arrays)


# -- entry points ------------------------------------------------------------------------


def build(spec: Spec, weights: Mapping[str, Any] | None = None, *, batch_first: bool = False,
          dtype: Any = None, device: Any = None, path: str = "auto",
          module: str = "layer") -> TorchRNN | TorchRNNCell:
    """``unirnn.build(spec, backend="torch", weights=None, batch_first=False, dtype=None,
    device=None, path="auto", module="layer")``.

    Args:
        spec: what to build.
        weights: canonical weights; ``None`` initialises like torch (uniform ``±1/sqrt(H)``).
        batch_first: input and output ``(N, T, ·)`` instead of ``(T, N, ·)``.
        dtype: parameter dtype (``torch.float32`` default, ``float64``, ``bfloat16``).
        device: parameter device.
        path: ``"auto"`` (torch's fused kernel when the spec is one, else unirnn's loop),
            ``"native"`` (fused kernel or ``ValueError``), ``"custom"`` (always unirnn's loop).
        module: ``"layer"`` (:class:`TorchRNN`, like ``nn.LSTM``) or ``"cell"``
            (:class:`TorchRNNCell`, one step like ``nn.LSTMCell``; a single-layer
            unidirectional spec, and no ``batch_first``).
    """
    if module == "cell":
        if batch_first:
            raise SpecError("batch_first: a cell module takes one step (N, I), which has no "
                            "time axis; received batch_first=True with module='cell'")
        return TorchRNNCell(spec, weights, dtype=dtype, device=device, path=path)
    if module != "layer":
        raise SpecError(f"module: expected 'layer' or 'cell'; received {module!r}")
    return TorchRNN(spec, weights, batch_first=batch_first, dtype=dtype, device=device,
                    path=path)


def evaluate(
    spec: Spec,
    weights: Mapping[str, Any],
    x: Any,
    *,
    initial_state: Any = None,
    lengths: Any = None,
    dtype: Any = "float64",
    cotangent: Any = None,
    device: Any = None,
    path: str = "auto",
) -> Evaluation:
    """Run ``spec`` on numpy inputs (see :mod:`unirnn._evaluation`).

    ``x`` is ``(N, T, I)``; ``initial_state`` torch-ordered numpy ``h0`` or ``(h0, c0)``;
    with ``cotangent`` ``(N, T, D*P)`` the gradients of ``sum(outputs * cotangent)`` with
    respect to ``"x"`` and every canonical weight are returned in the canonical layout.
    ``device`` and ``path`` are :func:`build`'s.
    """
    tdtype = torch_dtype(dtype)
    model = TorchRNN(spec, weights, batch_first=True, dtype=tdtype, device=device, path=path)
    xt = torch.tensor(np.asarray(x), dtype=tdtype, device=device)
    check_input_shape(spec, tuple(xt.shape))
    hx: Any = None
    if initial_state is not None:
        given = check_stacked_state(spec, initial_state, xt.shape[0])
        states = tuple(torch.tensor(np.asarray(s), dtype=tdtype, device=device) for s in given)
        hx = states if spec.has_cell_state else states[0]
    grads = None
    if cotangent is None:
        with torch.no_grad():
            out, state = model(xt, hx, lengths=lengths)
    else:
        xt.requires_grad_(True)
        out, state = model(xt, hx, lengths=lengths)
        cot = torch.tensor(np.asarray(cotangent), dtype=tdtype, device=device)
        check_cotangent(tuple(cot.shape), tuple(out.shape))
        params = [getattr(model, t) for t in model.canonical_names().values()]
        found = torch.autograd.grad((out * cot).sum(), [xt, *params], allow_unused=True)
        names = ["x", *model.canonical_names()]
        grads = {
            n: _to_numpy(torch.zeros_like(p) if g is None else g)
            for n, g, p in zip(names, found, [xt, *params])
        }
    state = state if isinstance(state, tuple) else (state,)
    return Evaluation(_to_numpy(out), tuple(_to_numpy(s) for s in state), model.kernel, grads)


def _to_numpy(t: Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy()

