"""The torch backend's one-step module, :class:`TorchRNNCell`, shaped like ``nn.LSTMCell``.

``unirnn.build(spec, backend="torch", module="cell")`` gives one, so a tutorial's own step
loop (``for x_t in x: h, c = cell(x_t, (h, c))``) keeps working with any spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._cells import Cell, make_cell
from .._errors import InputError, SpecError
from .._spec import Spec
from .._weights import check_weights, weight_shapes
from ..layouts import SPEC_KEY
from ..layouts import torch as torch_layout
from ._torch_kernels import TorchOps
from ._torch_module import SpecModule, torch_dtype

__all__ = ["CELL_KERNEL", "CELL_KERNELS", "TorchRNNCell"]

CELL_KERNEL = "unirnn.torch-cell"

CELL_KERNELS = ("torch._VF.lstm_cell", "torch._VF.gru_cell", "torch._VF.rnn_tanh_cell",
                "torch._VF.rnn_relu_cell", CELL_KERNEL)
"""The paths a :class:`TorchRNNCell` runs (its ``.kernel``)."""


class TorchRNNCell(SpecModule):
    """One step of a unirnn spec, shaped like ``nn.LSTMCell``/``nn.GRUCell``/``nn.RNNCell``.

    Example:
        >>> import torch, unirnn
        >>> cell = unirnn.build(unirnn.lstm(3, 5, activation="relu"), backend="torch",
        ...                     module="cell")
        >>> h, c = cell(torch.zeros(2, 3))                        # (N, I); hx=None: zeros
        >>> h, c = cell(torch.zeros(2, 3), (h, c))
        >>> h.shape, cell.weight_ih.shape, cell.kernel
        (torch.Size([2, 5]), torch.Size([20, 3]), 'unirnn.torch-cell')

    ``forward(input, hx=None)``: ``input`` ``(N, I)`` or unbatched ``(I,)``; ``hx`` ``h``
    ``(N, P)`` or, for lstm, ``(h, c)`` with ``c`` ``(N, H)`` (unbatched: 1-D); ``None``:
    zeros. Returns ``h'`` or, for lstm, ``(h', c')``, as torch's cells do.

    Parameters (torch's cell names, so ``load_state_dict`` takes a native cell's state
    dict and the reverse): ``weight_ih`` ``(G*H, I)``, ``weight_hh`` ``(G*H, P)``,
    ``bias_ih``, ``bias_hh`` ``(G*H,)``; unirnn's ``weight_peephole`` ``(3H,)`` and
    ``weight_hr`` ``(P, H)`` where the spec has them. Rows in the spec's gate order
    (lstm i, f, g, o; gru r, z, n), as torch's.

    Attributes:
        spec: the spec (one layer, one direction).
        kernel: ``"torch._VF.lstm_cell"`` (``gru_cell``, ``rnn_tanh_cell``, ``rnn_relu_cell``,
            torch's own cell kernels, for the standard cells) or ``"unirnn.torch-cell"``
            (the shared cell math, :mod:`unirnn._cells`, on torch ops).
        input_size, hidden_size, bias: as on ``nn.LSTMCell`` (rnn: also ``nonlinearity``).
    """

    def __init__(self, spec: Spec, weights: Mapping[str, Any] | None = None, *,
                 dtype: Any = None, device: Any = None, path: str = "auto") -> None:
        super().__init__()
        if not isinstance(spec, Spec):
            raise SpecError(f"spec: expected a unirnn.Spec; received {type(spec).__name__}")
        if path not in ("auto", "native", "custom"):
            raise SpecError(f"path: expected 'auto', 'native' or 'custom'; received {path!r}")
        try:
            names = torch_layout.cell_tensor_names(spec)
        except ValueError as err:
            raise SpecError(f"module='cell': {err}") from None
        problem = torch_layout.cell_native_problem(spec)
        if path == "native" and problem is not None:
            raise SpecError(f"path='native': torch has no cell kernel for this spec "
                            f"({problem}); use path='auto' or 'custom'")
        self.spec = spec
        self.input_size = spec.input_size
        self.hidden_size = spec.hidden_size
        self.bias = spec.bias
        if spec.family == "rnn":
            self.nonlinearity = spec.activations["h"]
        self._vf_name = torch_layout.cell_vf_kernel(spec) if path != "custom" else None
        self.kernel = f"torch._VF.{self._vf_name}" if self._vf_name else CELL_KERNEL
        self._param_names = names
        factory = {"dtype": None if dtype is None else torch_dtype(dtype), "device": device}
        for cname, shape in weight_shapes(spec).items():
            self.register_parameter(names[cname], nn.Parameter(torch.empty(shape, **factory)))
        self._ops = TorchOps()
        self._cell: Cell = make_cell(spec, self._ops)
        if weights is None:
            self.reset_parameters()
        else:
            self.load_canonical(weights)
        self.register_state_dict_post_hook(_carry_spec)

    def load_canonical(self, weights: Mapping[str, Any]) -> None:
        """Copy canonical weights (``layer0.forward.*``) into the parameters."""
        checked = check_weights(self.spec, weights)
        with torch.no_grad():
            for cname, tname in self._param_names.items():
                param = getattr(self, tname)
                # to the parameter's dtype first: float32 weights in a float64 cell upcast
                # before any arithmetic
                param.copy_(torch.from_numpy(np.array(checked[cname])).to(param.dtype))

    def canonical_names(self) -> dict[str, str]:
        """Canonical name -> parameter name."""
        return dict(self._param_names)

    def extra_repr(self) -> str:
        return f"{self.spec.to_json()}, kernel={self.kernel!r}"

    def forward(self, input: Tensor, hx: Any = None) -> Any:
        spec = self.spec
        if not isinstance(input, Tensor):
            raise InputError(f"input: expected a torch.Tensor (N, I) or (I,); received "
                             f"{type(input).__name__}")
        if input.dim() not in (1, 2) or input.shape[-1] != spec.input_size:
            raise InputError(f"input: expected (N, {spec.input_size}) or ({spec.input_size},); "
                             f"received shape {tuple(input.shape)}")
        expected = self.weight_ih.dtype
        if input.dtype != expected:
            raise InputError(f"input: expected dtype {expected} (the parameters'); received "
                             f"{input.dtype}; convert one with .to()")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        states = self._states(hx, x, batched)
        if self._vf_name is not None:
            fn = getattr(torch._VF, self._vf_name)
            biases = (self.bias_ih, self.bias_hh) if spec.bias else (None, None)
            hx_in: Any = states if spec.has_cell_state else states[0]
            result = fn(x, hx_in, self.weight_ih, self.weight_hh, *biases)
            new = tuple(result) if spec.has_cell_state else (result,)
        else:
            params = {cname.split(".")[2]: getattr(self, tname)
                      for cname, tname in self._param_names.items()}
            prepared = self._cell.prepare(params)
            xp = self._cell.project(params, x)
            new, _ = self._cell.step(prepared, xp, states)
        if not batched:
            new = tuple(s.squeeze(0) for s in new)
        return new if spec.has_cell_state else new[0]

    def _states(self, hx: Any, x: Tensor, batched: bool) -> tuple[Tensor, ...]:
        spec = self.spec
        sizes = (spec.output_size, spec.hidden_size) if spec.has_cell_state \
            else (spec.output_size,)
        if hx is None:
            return tuple(torch.zeros(x.shape[0], s, dtype=x.dtype, device=x.device)
                         for s in sizes)
        given = tuple(hx) if spec.has_cell_state and isinstance(hx, (tuple, list)) else (hx,)
        names = ("h", "c")[:len(sizes)]
        if len(given) != len(sizes):
            raise InputError(f"hx: expected {'(h, c)' if len(sizes) == 2 else 'h'}; received "
                             f"{len(given)} tensor(s)")
        states = []
        for name, size, state in zip(names, sizes, given):
            if not isinstance(state, Tensor):
                raise InputError(f"hx: {name}: expected a torch.Tensor; received "
                                 f"{type(state).__name__}")
            want = (x.shape[0], size) if batched else (size,)
            if tuple(state.shape) != want:
                raise InputError(f"hx: {name}: expected shape {want}; received "
                                 f"{tuple(state.shape)}")
            states.append((state if batched else state.unsqueeze(0)).to(x.dtype))
        return tuple(states)


def _carry_spec(module: TorchRNNCell, state_dict: Any, prefix: str,
                local_metadata: dict[str, Any]) -> None:
    """``state_dict()`` records the spec in ``_metadata[prefix]``, as :class:`TorchRNN` does."""
    local_metadata[SPEC_KEY] = module.spec.to_json()


TorchRNNCell.__module__ = "unirnn.backends.torch"
