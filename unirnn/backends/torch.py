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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .._cells import Cell, make_cell
from .._checks import check_input_shape, check_lengths, check_state_shape, state_shapes
from .._evaluation import Evaluation
from .._spec import Spec
from .._weights import Weights, check_weights, weight_shapes
from ._torch_kernels import TORCH_ACTIVATIONS, TorchOps, _reverse, _ScanOps, project_inputs

__all__ = [
    "CUSTOM_KERNEL",
    "TORCH_ACTIVATIONS",
    "TorchOps",
    "TorchRNN",
    "build",
    "canonical_weights",
    "evaluate",
    "native_kernel",
    "torch_name",
]

CUSTOM_KERNEL = "unirnn.torch-loop"
SPEC_METADATA_KEY = "unirnn.spec"
"""Where a state dict's ``_metadata[prefix]`` holds the spec's JSON."""

# canonical tensor -> torch parameter stem; "weight_peephole" is unirnn's own (torch has none)
TORCH_STEMS: Mapping[str, str] = {
    "w_x": "weight_ih",
    "w_h": "weight_hh",
    "b_x": "bias_ih",
    "b_h": "bias_hh",
    "w_r": "weight_hr",
    "p": "weight_peephole",
}

_MODES = {"lstm": "LSTM", "gru": "GRU"}


# -- names and dispatch ------------------------------------------------------------------


def torch_name(layer: int, direction: str, tensor: str) -> str:
    """The torch parameter name of a canonical tensor, e.g. ``(0, "backward", "w_x")`` ->
    ``"weight_ih_l0_reverse"``."""
    suffix = "_reverse" if direction == "backward" else ""
    return f"{TORCH_STEMS[tensor]}_l{layer}{suffix}"


def native_kernel(spec: Spec) -> str | None:
    """The ``torch._VF`` function that computes ``spec`` exactly, or ``None``.

    Fused: Elman with tanh or relu; LSTM with sigmoid gates, tanh ``g`` and ``c``, no
    peepholes, no clip (projection allowed); GRU with sigmoid ``r, z``, tanh ``n``, reset
    "after" and update "old".
    """
    acts = dict(spec.activations)
    if spec.family == "rnn":
        return {"tanh": "rnn_tanh", "relu": "rnn_relu"}.get(acts["h"])
    if spec.family == "lstm":
        standard = acts == {"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid",
                            "c": "tanh"}
        return "lstm" if standard and not spec.peepholes and spec.cell_clip is None else None
    standard = acts == {"r": "sigmoid", "z": "sigmoid", "n": "tanh"}
    return "gru" if standard and spec.reset == "after" and spec.update == "old" else None


def _torch_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype == "bfloat16":
        return torch.bfloat16
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    table = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}
    if name not in table:
        raise ValueError(
            f"dtype: expected float32, float64, bfloat16 or float16; received {dtype!r}"
        )
    return table[name]


# -- the module --------------------------------------------------------------------------


class TorchRNN(nn.Module):
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
            raise ValueError(f"spec: expected a unirnn.Spec; received {type(spec).__name__}")
        if path not in ("auto", "native", "custom"):
            raise ValueError(f"path: expected 'auto', 'native' or 'custom'; received {path!r}")
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

        fused = native_kernel(spec)
        if path == "native" and fused is None:
            raise ValueError(
                f"path='native': torch has no fused kernel for this spec "
                f"({_why_not_native(spec)}); use path='auto' or 'custom'"
            )
        self._vf_name = fused if path != "custom" else None
        self.kernel = f"torch._VF.{self._vf_name}" if self._vf_name else CUSTOM_KERNEL
        self.mode = _MODES.get(spec.family) or f"RNN_{spec.activations['h'].upper()}"
        self._cell: Cell = make_cell(spec, TorchOps())
        self._param_names: list[tuple[str, str]] = []  # (canonical, torch), flat-weight order

        factory = {"dtype": None if dtype is None else _torch_dtype(dtype), "device": device}
        for name, shape in weight_shapes(spec).items():
            layer_text, direction, tensor = name.split(".")
            tname = torch_name(int(layer_text[5:]), direction, tensor)
            self.register_parameter(tname, nn.Parameter(torch.empty(shape, **factory)))
            self._param_names.append((name, tname))
        # torch's flat-weight order per layer and direction: w_ih, w_hh, b_ih, b_hh, w_hr
        order = {"w_x": 0, "w_h": 1, "b_x": 2, "b_h": 3, "w_r": 4}
        self._flat_names = [
            t for c, t in sorted(
                ((c, t) for c, t in self._param_names if c.split(".")[2] in order),
                key=lambda ct: (int(ct[0].split(".")[0][5:]), ct[0].split(".")[1] == "backward",
                                order[ct[0].split(".")[2]]),
            )
        ]
        if weights is None:
            self.reset_parameters()
        else:
            self.load_canonical(weights)
        self.flatten_parameters()
        self.register_state_dict_post_hook(_carry_spec)

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
        return result

    def __getstate__(self) -> dict[str, Any]:
        # the cell holds activation functions (lambdas, partials); it is rebuilt from the spec
        state = self.__dict__.copy()
        state.pop("_cell", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cell = make_cell(self.spec, TorchOps())

    # -- parameters ------------------------------------------------------------------

    def reset_parameters(self) -> None:
        """Uniform in ``±1/sqrt(hidden_size)``, as torch initialises its recurrent layers."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

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
        return {
            tensor: getattr(self, torch_name(layer, direction, tensor))
            for tensor in ("w_x", "w_h", "b_x", "b_h", "p", "w_r")
            if hasattr(self, torch_name(layer, direction, tensor))
        }

    # -- forward ---------------------------------------------------------------------

    def forward(self, input: Any, hx: Any = None, lengths: Any = None) -> tuple[Any, Any]:
        spec = self.spec
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths: a PackedSequence carries its own lengths; "
                                 "received lengths= as well")
            batch = int(input.batch_sizes[0])
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
            raise ValueError(f"input: expected a torch.Tensor or PackedSequence; "
                             f"received {type(input).__name__}")
        expected_dtype = getattr(self, self._flat_names[0]).dtype
        if input.dtype != expected_dtype:
            raise ValueError(
                f"input: expected dtype {expected_dtype} (the parameters'); received "
                f"{input.dtype}; convert one with .to()"
            )
        unbatched = input.dim() == 2
        layout = "(N, T, I)" if self.batch_first else "(T, N, I)"
        if unbatched:
            check_input_shape(spec, (1, *input.shape), "(T, I) or " + layout)
            input = input.unsqueeze(0 if self.batch_first else 1)
            given = hx if isinstance(hx, (tuple, list)) else () if hx is None else (hx,)
            for state in given:
                if isinstance(state, Tensor) and state.dim() != 2:
                    raise ValueError(
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
        return final if self.spec.family == "lstm" else final[0]

    def _initial_state(self, hx: Any, batch: int, like: Tensor) -> tuple[Tensor, ...]:
        shapes = state_shapes(self.spec, batch)
        if hx is None:
            return tuple(torch.zeros(s, dtype=like.dtype, device=like.device) for s in shapes)
        if self.spec.family == "lstm":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError(
                    f"hx: an lstm takes a pair (h0, c0); received {type(hx).__name__}"
                )
            given = tuple(hx)
        else:
            if not isinstance(hx, Tensor):
                raise ValueError(f"hx: expected a tensor h0; received {type(hx).__name__}")
            given = (hx,)
        for name, state, shape in zip(("h0", "c0"), given, shapes):
            check_state_shape(self.spec, name, tuple(state.shape), shape)
        return tuple(s.to(dtype=like.dtype) for s in given)

    # -- the fused kernel -------------------------------------------------------------

    def _run_vf(self, input: Tensor, states: tuple[Tensor, ...], batch_sizes: Tensor | None
                ) -> tuple[Tensor, tuple[Tensor, ...]]:
        fn = getattr(torch._VF, self._vf_name)  # type: ignore[arg-type]
        flat = [getattr(self, name) for name in self._flat_names]
        hx: Any = states if self.spec.family == "lstm" else states[0]
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
        spec = self.spec
        steps = x.shape[0]
        valid: Tensor | None = None
        reverse_index: Tensor | None = None
        if lengths is not None:
            t = torch.arange(steps, device=x.device)[:, None]
            valid = t < lengths[None, :]  # (T, N)
            reverse_index = torch.where(valid, lengths[None, :] - 1 - t, t)
        finals: list[tuple[Tensor, ...]] = []
        layer_input = x
        for layer in range(spec.num_layers):
            if layer and self.dropout and self.training:
                layer_input = F.dropout(layer_input, self.dropout, True)
            outputs = []
            for d, direction in enumerate(spec.directions):
                row = layer * spec.num_directions + d
                params = self._layer_params(layer, direction)
                inp = layer_input
                if direction == "backward":
                    inp = _reverse(inp, reverse_index)
                out, carry = self._scan(params, inp, tuple(s[row] for s in states), valid)
                if direction == "backward":
                    out = _reverse(out, reverse_index)
                outputs.append(out)
                finals.append(carry)
            layer_input = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
        final = tuple(torch.stack([f[i] for f in finals]) for i in range(len(states)))
        return layer_input, final

    def _scan(self, params: dict[str, Tensor], x: Tensor, carry: tuple[Tensor, ...],
              valid: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        cell = self._cell
        prepared = cell.prepare(params)
        xp = project_inputs(x, params["w_x"], params.get("b_x"))  # all steps: one GEMM
        # torch.compile traces the plain ops; torch.func transforms (grad, jacrev, hessian)
        # need them too: the scan ops' autograd Functions are first-order only.
        if not (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()):
            defer = torch.is_grad_enabled() and any(p.requires_grad for p in params.values())
            cell = make_cell(self.spec, _ScanOps(prepared, (xp.shape[0], xp.shape[1]), defer))
        outputs = []
        if valid is None:
            for xp_t in xp.unbind(0):
                carry, y = cell.step(prepared, xp_t, carry)
                outputs.append(y)
            return torch.stack(outputs), carry
        for xp_t, valid_t in zip(xp.unbind(0), valid.unsqueeze(-1).unbind(0)):
            new_carry, y = cell.step(prepared, xp_t, carry)
            carry = tuple(torch.where(valid_t, n, o) for n, o in zip(new_carry, carry))
            outputs.append(y)
        return torch.where(valid.unsqueeze(-1), torch.stack(outputs), 0.0), carry


def _carry_spec(module: TorchRNN, state_dict: Any, prefix: str, local_metadata: dict[str, Any]
                ) -> None:
    """``state_dict()`` records the spec beside torch's ``version`` in ``_metadata[prefix]``
    (``load_state_dict`` ignores it), so ``torch.save(model.state_dict())`` of a custom cell
    reads back as that cell (``unirnn.from_torch``), not as the standard one."""
    local_metadata[SPEC_METADATA_KEY] = module.spec.to_json()


def _repack(y: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack ``y`` ``(T, N, F)`` (original batch order) with ``like``'s batch order."""
    if like.sorted_indices is not None:
        y = y.index_select(1, like.sorted_indices.to(y.device))
        lengths = lengths.index_select(0, like.sorted_indices.cpu())
    packed = pack_padded_sequence(y, lengths, enforce_sorted=True)
    return PackedSequence(packed.data, packed.batch_sizes, like.sorted_indices,
                          like.unsorted_indices)


def _why_not_native(spec: Spec) -> str:
    acts = dict(spec.activations)
    if spec.family == "rnn":
        return f"activation {acts['h']!r}: torch's RNN takes tanh or relu"
    if spec.family == "lstm":
        if spec.peepholes:
            return "peepholes=True"
        if spec.cell_clip is not None:
            return f"cell_clip={spec.cell_clip}"
        return f"activations {acts}: torch's LSTM has sigmoid gates and tanh g, c"
    if spec.reset != "after":
        return f"reset={spec.reset!r}: torch's GRU resets after"
    if spec.update != "old":
        return f"update={spec.update!r}: torch's GRU computes h = z*h + (1-z)*n"
    return f"activations {acts}: torch's GRU has sigmoid r, z and tanh n"


def canonical_weights(module: TorchRNN, dtype: Any = None) -> Weights:
    """The module's parameters as canonical :class:`unirnn.Weights` (bfloat16 -> float32)."""
    arrays = {}
    for cname, tname in module.canonical_names().items():
        tensor = getattr(module, tname).detach()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        array = tensor.cpu().numpy()
        arrays[cname] = array if dtype is None else array.astype(dtype)
    return Weights(arrays)


# -- entry points ------------------------------------------------------------------------


def build(spec: Spec, weights: Mapping[str, Any] | None = None, *, batch_first: bool = False,
          dtype: Any = None, device: Any = None, path: str = "auto") -> TorchRNN:
    """``unirnn.build(spec, backend="torch", weights=None, batch_first=False, dtype=None,
    device=None, path="auto")``.

    Args:
        spec: what to build.
        weights: canonical weights; ``None`` initialises like torch (uniform ``±1/sqrt(H)``).
        batch_first: input and output ``(N, T, ·)`` instead of ``(T, N, ·)``.
        dtype: parameter dtype (``torch.float32`` default, ``float64``, ``bfloat16``).
        device: parameter device.
        path: ``"auto"`` (torch's fused kernel when the spec is one, else unirnn's loop),
            ``"native"`` (fused kernel or ``ValueError``), ``"custom"`` (always unirnn's loop).
    """
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
    tdtype = _torch_dtype(dtype)
    model = build(spec, weights, batch_first=True, dtype=tdtype, device=device, path=path)
    xt = torch.tensor(np.asarray(x), dtype=tdtype, device=device)
    check_input_shape(spec, tuple(xt.shape))
    hx: Any = None
    if initial_state is not None:
        given: Sequence[Any] = initial_state if spec.family == "lstm" else (initial_state,)
        if spec.family == "lstm" and (not isinstance(given, (tuple, list)) or len(given) != 2):
            raise ValueError(f"initial_state: an lstm takes a pair (h0, c0); received "
                             f"{type(initial_state).__name__}")
        states = tuple(torch.tensor(np.asarray(s), dtype=tdtype, device=device) for s in given)
        hx = states if spec.family == "lstm" else states[0]
    grads = None
    if cotangent is None:
        with torch.no_grad():
            out, state = model(xt, hx, lengths=lengths)
    else:
        xt.requires_grad_(True)
        out, state = model(xt, hx, lengths=lengths)
        cot = torch.tensor(np.asarray(cotangent), dtype=tdtype, device=device)
        if cot.shape != out.shape:
            raise ValueError(f"cotangent: expected shape {tuple(out.shape)} (N, T, D*P); "
                             f"received {tuple(cot.shape)}")
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

