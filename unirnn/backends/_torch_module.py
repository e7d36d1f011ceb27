"""The torch backend's module class, :class:`TorchRNN` (see :mod:`unirnn.backends.torch`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .._cells import Cell, make_cell
from .._errors import InputError, SpecError
from .._inputs import check_input_shape, check_lengths, check_stacked_state, state_shapes
from .._spec import Spec
from .._stack import run_stack, stack_rows, unstack_rows
from .._weights import check_weights, weight_shapes
from ..layouts import SPEC_KEY
from ..layouts import torch as torch_layout
from ._torch_kernels import TorchOps, scan
from ._torch_scans import parallel_here

__all__ = ["CUSTOM_KERNEL", "PARALLEL_KERNEL", "TorchRNN", "torch_dtype"]

CUSTOM_KERNEL = "unirnn.torch-loop"
PARALLEL_KERNEL = "unirnn.torch-parallel-scan"
"""minGRU, minLSTM: the gates of every step at once, then the linear recurrence as a scan
(log space, ``cumsum``/``logcumsumexp``, on CUDA; one multiply-add per step on the CPU:
:data:`unirnn.backends._torch_kernels.LOG_SPACE_DEVICES`)."""


def torch_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point or dtype.itemsize < 2:
            raise SpecError(f"dtype: expected float32, float64, bfloat16 or float16; "
                            f"received {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype == "bfloat16":
        return torch.bfloat16
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    table = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}
    if name not in table:
        raise SpecError(
            f"dtype: expected float32, float64, bfloat16 or float16; received {dtype!r}"
        )
    return table[name]


# -- the module --------------------------------------------------------------------------


class SpecModule(nn.Module):
    """What unirnn's torch layer and cell share: pickling without the cell (it holds
    activation functions: lambdas, partials) and torch's initialisation."""

    spec: Spec
    hidden_size: int
    _ops: TorchOps
    _cell: Cell

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_cell", None)  # rebuilt from the spec
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cell = make_cell(self.spec, self._ops)

    def reset_parameters(self) -> None:
        """Uniform in ``±1/sqrt(hidden_size)``, as torch initialises its recurrent modules."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)


class TorchRNN(SpecModule):
    """A recurrent stack built from a :class:`unirnn.Spec`, shaped like ``nn.LSTM``.

    Example:
        >>> import torch, unirnn
        >>> model = unirnn.build(unirnn.gru(3, 5, reset="before"), backend="torch")
        >>> y, h = model(torch.zeros(7, 2, 3))          # (T, N, I): batch_first=False
        >>> y.shape, h.shape, model.kernel
        (torch.Size([7, 2, 5]), torch.Size([1, 2, 5]), 'unirnn.torch-loop')

    ``forward(input, hx=None, lengths=None)``:

    - ``input``: ``(T, N, I)`` (``(N, T, I)`` with ``batch_first=True``), ``(T, I)``
      unbatched, or a ``PackedSequence``.
    - ``hx``: ``h0`` ``(L*D, N, P)``; lstm ``(h0, c0)`` with ``c0`` ``(L*D, N, H)``; rows
      layer 0 forward, layer 0 backward, layer 1 ...; ``None``: zeros.
    - ``lengths``: ``(N,)`` valid steps per sequence (padded input only), each in ``[1, T]``:
      outputs past a length are zero, the final state is the one after the last valid
      step and the backward direction runs over the valid steps reversed.

    Returns ``(output, h_n)`` or, for lstm, ``(output, (h_n, c_n))``, as the native modules
    do; ``output`` is ``(T, N, D*P)`` (or batch-first, or a ``PackedSequence``).

    Attributes:
        spec: the spec it computes.
        kernel: the path it runs: a ``torch._VF.*`` name or ``"unirnn.torch-loop"``.
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        proj_size: as on ``nn.LSTM`` (rnn: also ``nonlinearity``).
    """

    def __init__(
        self,
        spec: Spec,
        weights: Mapping[str, Any] | None = None,
        *,
        batch_first: bool = False,
        dtype: Any = None,
        device: Any = None,
        path: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(spec, Spec):
            raise SpecError(f"spec: expected a unirnn.Spec; received {type(spec).__name__}")
        if path not in ("auto", "native", "custom"):
            raise SpecError(f"path: expected 'auto', 'native' or 'custom'; received {path!r}")
        self.spec = spec
        self.input_size = spec.input_size
        self.hidden_size = spec.hidden_size
        self.num_layers = spec.num_layers
        self.bias = spec.bias
        self.batch_first = bool(batch_first)
        self.dropout = spec.dropout
        self.bidirectional = spec.bidirectional
        self.proj_size = spec.proj_size
        if spec.family == "rnn":
            self.nonlinearity = spec.activations["h"]

        problem = torch_layout.native_problem(spec)
        if path == "native" and problem is not None:
            raise SpecError(
                f"path='native': torch has no fused kernel for this spec "
                f"({problem}); use path='auto' or 'custom'"
            )
        self._vf_name = torch_layout.vf_kernel(spec) if path != "custom" else None
        self.mode = torch_layout.mode(spec)
        self._ops = TorchOps()
        self._cell: Cell = make_cell(spec, self._ops)
        names = torch_layout.tensor_names(spec)
        self._param_names: list[tuple[str, str]] = list(names.items())  # (canonical, torch)
        factory = {"dtype": None if dtype is None else torch_dtype(dtype), "device": device}
        for cname, shape in weight_shapes(spec).items():
            self.register_parameter(names[cname], nn.Parameter(torch.empty(shape, **factory)))
        self._flat_names = torch_layout.flat_weight_names(spec)
        if weights is None:
            self.reset_parameters()
        else:
            self.load_canonical(weights)
        self.flatten_parameters()
        self._set_kernel()
        self.register_state_dict_post_hook(_carry_spec)

    def _set_kernel(self) -> None:
        """``kernel`` for the parameters' device: minGRU and minLSTM run their parallel
        form where it is the faster one (:data:`unirnn.backends._torch_scans.PARALLEL_DEVICES`)."""
        device = getattr(self, self._param_names[0][1]).device.type
        self.kernel = f"torch._VF.{self._vf_name}" if self._vf_name else \
            PARALLEL_KERNEL if parallel_here(self._cell, device) else CUSTOM_KERNEL

    def flatten_parameters(self) -> None:
        """As ``nn.RNNBase.flatten_parameters``: on CUDA with cuDNN, put the fused kernel's
        weights in one buffer so that cuDNN does not copy them at every call. A no-op on
        CPU and on the custom path."""
        if self._vf_name is None:
            return
        # torch's own implementation reads these two lists and the size attributes
        self._flat_weights = [getattr(self, name) for name in self._flat_names]
        self._flat_weights_names = list(self._flat_names)
        nn.RNNBase.flatten_parameters(self)  # type: ignore[arg-type]

    def _apply(self, fn: Any, recurse: bool = True) -> TorchRNN:
        result = super()._apply(fn, recurse)
        self.flatten_parameters()  # new tensors after .to()/.cuda(): lay them out again
        self._set_kernel()
        return result

    # -- parameters ------------------------------------------------------------------

    def load_canonical(self, weights: Mapping[str, Any]) -> None:
        """Copy canonical weights (names ``layer{k}.{direction}.{tensor}``) into the parameters."""
        checked = check_weights(self.spec, weights)
        with torch.no_grad():
            for cname, tname in self._param_names:
                param = getattr(self, tname)
                param.copy_(torch.from_numpy(np.array(checked[cname])).to(param.dtype))

    def canonical_names(self) -> dict[str, str]:
        """Canonical name -> torch parameter name."""
        return dict(self._param_names)

    def extra_repr(self) -> str:
        s = f"{self.spec.to_json()}, kernel={self.kernel!r}"
        return s + (", batch_first=True" if self.batch_first else "")

    def _layer_params(self, layer: int, direction: str) -> dict[str, Tensor]:
        prefix = f"layer{layer}.{direction}."
        return {cname[len(prefix):]: getattr(self, tname)
                for cname, tname in self._param_names if cname.startswith(prefix)}

    # -- forward ---------------------------------------------------------------------

    def forward(self, input: Any, hx: Any = None, lengths: Any = None) -> tuple[Any, Any]:
        spec = self.spec
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise InputError("lengths: a PackedSequence carries its own lengths; "
                                 "received lengths= as well")
            batch = int(input.batch_sizes[0])
            self._check_dtype(input.data)
            check_input_shape(spec, (batch, len(input.batch_sizes), *input.data.shape[1:]),
                              "PackedSequence data (sum of lengths, I): (N, T, I)")
            states = self._initial_state(hx, batch, input.data)
            if self._vf_name is not None:
                order, unorder = input.sorted_indices, input.unsorted_indices
                if order is not None:
                    states = tuple(s.index_select(1, order) for s in states)
                data, final = self._run_vf(input.data, states, input.batch_sizes)
                if unorder is not None:
                    final = tuple(s.index_select(1, unorder) for s in final)
                out: Any = PackedSequence(data, input.batch_sizes, input.sorted_indices,
                                          input.unsorted_indices)
            else:
                padded, packed_lengths = pad_packed_sequence(input)
                y, final = self._run_custom(padded, states, packed_lengths.to(padded.device))
                out = _repack(y, packed_lengths, input)
            return out, self._state_out(final)

        if not isinstance(input, Tensor):
            raise InputError(f"input: expected a torch.Tensor or PackedSequence; "
                             f"received {type(input).__name__}")
        self._check_dtype(input)
        unbatched = input.dim() == 2
        layout = "(N, T, I)" if self.batch_first else "(T, N, I)"
        if unbatched:
            check_input_shape(spec, (1, *input.shape), "(T, I) or " + layout)
            input = input.unsqueeze(0 if self.batch_first else 1)
            given = hx if isinstance(hx, (tuple, list)) else () if hx is None else (hx,)
            for state in given:
                if isinstance(state, Tensor) and state.dim() != 2:
                    raise InputError(
                        f"hx: unbatched (T, I) input takes 2-D states (L*D, H); received a "
                        f"{state.dim()}-D state of shape {tuple(state.shape)}"
                    )
            if hx is not None:
                hx = tuple(s.unsqueeze(1) for s in hx) if isinstance(hx, (tuple, list)) else (
                    hx.unsqueeze(1))
        else:
            check_input_shape(spec, tuple(input.shape), layout,
                              time_axis=1 if self.batch_first else 0)
        time_major = input.transpose(0, 1) if self.batch_first else input
        steps, batch = time_major.shape[:2]
        states = self._initial_state(hx, batch, input)
        lens: Tensor | None = None
        if lengths is not None and torch.compiler.is_compiling():
            # validated in eager only: the check reads the values on the host
            lens = torch.as_tensor(lengths)
        elif lengths is not None:
            lens = torch.as_tensor(
                check_lengths(
                    lengths.detach().cpu().numpy() if isinstance(lengths, Tensor) else lengths,
                    batch, steps,
                )
            )

        if self._vf_name is not None and lens is None:
            y, final = self._run_vf(input, states, None)
        elif self._vf_name is not None and lens is not None:
            packed = pack_padded_sequence(input, lens, self.batch_first, enforce_sorted=False)
            order, unorder = packed.sorted_indices, packed.unsorted_indices
            assert order is not None and unorder is not None  # enforce_sorted=False sets both
            states = tuple(s.index_select(1, order) for s in states)
            data, final = self._run_vf(packed.data, states, packed.batch_sizes)
            final = tuple(s.index_select(1, unorder) for s in final)
            y, _ = pad_packed_sequence(
                PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                               packed.unsorted_indices),
                self.batch_first, total_length=steps,
            )
        else:
            y, final = self._run_custom(
                time_major, states, None if lens is None else lens.to(input.device)
            )
            if self.batch_first:
                y = y.transpose(0, 1)
        if unbatched:
            y = y.squeeze(0 if self.batch_first else 1)
            final = tuple(s.squeeze(1) for s in final)
        return y, self._state_out(final)

    def _state_out(self, final: tuple[Tensor, ...]) -> Any:
        return final if self.spec.has_cell_state else final[0]

    def _check_dtype(self, input: Tensor) -> None:
        expected = getattr(self, self._flat_names[0]).dtype
        if input.dtype != expected:
            raise InputError(
                f"input: expected dtype {expected} (the parameters'); received "
                f"{input.dtype}; convert one with .to()"
            )

    def _initial_state(self, hx: Any, batch: int, like: Tensor) -> tuple[Tensor, ...]:
        if hx is None:
            return tuple(torch.zeros(s, dtype=like.dtype, device=like.device)
                         for s in state_shapes(self.spec, batch))
        given = check_stacked_state(self.spec, hx, batch, "hx")
        for state in given:
            if not isinstance(state, Tensor):
                raise InputError(f"hx: expected torch tensors; received "
                                 f"{type(state).__name__}; convert with torch.as_tensor")
        return tuple(s.to(dtype=like.dtype) for s in given)

    # -- the fused kernel -------------------------------------------------------------

    def _run_vf(self, input: Tensor, states: tuple[Tensor, ...], batch_sizes: Tensor | None
                ) -> tuple[Tensor, tuple[Tensor, ...]]:
        fn = getattr(torch._VF, self._vf_name)  # type: ignore[arg-type]
        flat = [getattr(self, name) for name in self._flat_names]
        hx: Any = states if self.spec.has_cell_state else states[0]
        common = (self.bias, self.num_layers, float(self.dropout), self.training,
                  self.bidirectional)
        if batch_sizes is None:
            result = fn(input, hx, flat, *common, self.batch_first)
        else:
            result = fn(input, batch_sizes, hx, flat, *common)
        return result[0], tuple(result[1:])

    # -- the custom path --------------------------------------------------------------

    def _run_custom(self, x: Tensor, states: tuple[Tensor, ...], lengths: Tensor | None
                    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """``x`` ``(T, N, F)`` time-major; ``lengths`` ``(N,)`` on ``x.device`` or ``None``."""
        dropout = None
        if self.dropout and self.training:
            def dropout(y: Tensor) -> Tensor:
                return F.dropout(y, self.dropout, True)

        def run_direction(layer: int, direction: str, x: Tensor, carry: tuple[Tensor, ...],
                          valid: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
            return scan(self.spec, self._cell, self._layer_params(layer, direction), x,
                        carry, valid)

        out, finals = run_stack(self.spec, self._ops, run_direction, x, unstack_rows(states),
                                lengths=lengths, dropout=dropout)
        return out, stack_rows(self._ops, finals)


def _carry_spec(module: TorchRNN, state_dict: Any, prefix: str, local_metadata: dict[str, Any]
                ) -> None:
    """``state_dict()`` records the spec beside torch's ``version`` in ``_metadata[prefix]``
    (``load_state_dict`` ignores it), so ``torch.save(model.state_dict())`` of a custom cell
    reads back as that cell (``unirnn.from_torch``), not as the standard one."""
    local_metadata[SPEC_KEY] = module.spec.to_json()


def _repack(y: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack ``y`` ``(T, N, F)`` (original batch order) with ``like``'s batch order."""
    if like.sorted_indices is not None:
        y = y.index_select(1, like.sorted_indices.to(y.device))
        lengths = lengths.index_select(0, like.sorted_indices.cpu())
    packed = pack_padded_sequence(y, lengths, enforce_sorted=True)
    return PackedSequence(packed.data, packed.batch_sizes, like.sorted_indices,
                          like.unsorted_indices)


# pickles and reprs name the public module, which re-exports the class
TorchRNN.__module__ = "unirnn.backends.torch"
