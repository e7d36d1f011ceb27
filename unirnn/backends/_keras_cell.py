"""unirnn's custom Keras cell: the shared cell math (:mod:`unirnn._cells`) on ``keras.ops``.

It runs on every Keras backend (tensorflow, jax, torch). The equations are those of
:class:`unirnn.Spec`; this module provides only the :class:`~unirnn._cells.Ops` over
``keras.ops``, every built-in activation, and a Keras layer holding one layer and
direction's weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from .._activations import resolve_activation
from .._cells import Cell, folded_bias_rows, make_cell, split_points
from .._errors import SpecError
from .._spec import Spec
from .._weights import check_weights, layer_inits
from ..layouts.kernels import KERNEL_LAYOUT, kernel_layout_shapes, to_kernel_layout
from ._keras_scans import associative_scan, computes_on_cpu, sequential_scan, static_steps

__all__ = ["KERAS_ACTIVATIONS", "KerasOps", "UniRNNCell", "as_spec"]

_CANONICAL_OF = {name: short for short, (name, _) in KERNEL_LAYOUT.items()}
"""Kernel-layout parameter name -> canonical short name (a family's extras keep theirs)."""


def _layout_name(short: str) -> str:
    """The kernel-layout name of canonical ``short`` (``w_x`` -> ``input_kernel``)."""
    return KERNEL_LAYOUT.get(short, (short, False))[0]


def _hard_sigmoid(x: Any, alpha: float, beta: float) -> Any:
    return ops.clip(x * alpha + beta, 0.0, 1.0)


def _gelu(x: Any) -> Any:
    # The formula, not ops.gelu: tf.nn.gelu loses float64 precision (~5e-9).
    return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def _gelu_tanh(x: Any) -> Any:
    return 0.5 * x * (1.0 + _tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _leaky_relu(x: Any, alpha: float) -> Any:
    # tf.nn.leaky_relu rounds alpha to float32; this form is exact in float64.
    return ops.where(x >= 0, x, x * alpha)


def _backend_exact() -> tuple[Callable[[Any, Any], Any], Callable[[Any], Any]]:
    """``matmul`` and ``tanh`` that keep float64.

    Keras 3's type promotion maps float64 to float32 on the jax and torch backends
    (``keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE``), so ``ops.matmul`` (torch)
    and ``ops.tanh`` (jax) compute float64 inputs in float32. The framework's own
    functions take float32 and float64 alike and are what ``keras.ops`` calls inside.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.matmul, ops.tanh
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.matmul, jnp.tanh
    return ops.matmul, ops.tanh


_matmul, _tanh = _backend_exact()


KERAS_ACTIVATIONS: Mapping[str, Callable[..., Any]] = {
    "sigmoid": ops.sigmoid,
    "tanh": _tanh,
    "relu": ops.relu,
    "identity": lambda x: x,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": ops.silu,
    "hard_sigmoid": _hard_sigmoid,
    "softsign": ops.softsign,
    "softplus": ops.softplus,
    "elu": lambda x, alpha: ops.elu(x, alpha=alpha),
    "leaky_relu": _leaky_relu,
    "min_g": lambda x: ops.where(x >= 0, x + 0.5, ops.sigmoid(x)),
}
"""Every built-in activation of :mod:`unirnn._activations` on ``keras.ops`` (backend key
``"keras"``), each the formula of its registry entry."""


class Transposed:
    """A canonical ``(out, in)`` matrix held as its transpose ``t`` ``(in, out)``.

    Keras keeps kernels as ``(in, out)``; the shared cells slice canonical rows
    (``w_h[: 2 * H]``), which here are columns of ``t``, so no transpose runs per step.
    """

    __slots__ = ("t",)

    def __init__(self, t: Any) -> None:
        self.t = t

    def __getitem__(self, rows: Any) -> Transposed:
        return Transposed(self.t[:, rows])


class KerasOps:
    """:class:`unirnn._cells.Ops` and :class:`unirnn._stack.StackOps` over ``keras.ops``."""

    backend = "keras"

    def linear(self, x: Any, w: Any, b: Any | None) -> Any:
        y = _matmul(x, w.t if isinstance(w, Transposed) else ops.transpose(w))
        return y if b is None else y + b

    def recurrent(self, name: str, x: Any, w: Any, b: Any | None) -> Any:
        return self.linear(x, w, b)

    def split(self, x: Any, sections: int | Sequence[int]) -> list[Any]:
        parts = sections if isinstance(sections, int) else split_points(sections)
        return ops.split(x, parts, axis=-1)

    def lerp(self, a: Any, b: Any, w: Any) -> Any:
        return a + w * (b - a)

    def clip(self, x: Any, bound: float) -> Any:
        # Not ops.clip: on torch it computes float64 in float32 (Keras' type promotion).
        return x - ops.relu(x - bound) + ops.relu(-bound - x)

    def activation(self, name: str) -> Callable[[Any], Any]:
        return resolve_activation(name, "keras", KERAS_ACTIVATIONS)

    # -- the stack runner's ops (time axis 0) ------------------------------------------

    def concat(self, xs: Sequence[Any]) -> Any:
        return ops.concatenate(list(xs), axis=-1)

    def stack(self, xs: Sequence[Any]) -> Any:
        return ops.stack(list(xs))

    def flip_time(self, x: Any) -> Any:
        return ops.flip(x, axis=0)

    def take_time(self, x: Any, index: Any) -> Any:
        index = ops.reshape(index, tuple(index.shape) + (1,) * (len(x.shape) - 2))
        return ops.take_along_axis(x, ops.broadcast_to(index, ops.shape(x)), axis=0)

    def positions(self, steps: int, like: Any) -> Any:
        return ops.expand_dims(ops.arange(steps, dtype=like.dtype), -1)

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        return ops.where(condition, a, b)

    # -- the cell families' ops (layer norm, the parallel scan) ------------------------

    def layer_norm(self, x: Any, scale: Any, offset: Any | None, eps: float = 1e-5) -> Any:
        # sums, not ops.mean: on jax and torch it computes float64 in float32
        features = 1.0 / x.shape[-1]
        centred = x - ops.sum(x, axis=-1, keepdims=True) * features
        var = ops.sum(centred * centred, axis=-1, keepdims=True) * features
        y = centred / ops.sqrt(var + eps) * scale
        return y if offset is None else y + offset

    def log(self, x: Any) -> Any:
        return ops.log(x)

    def linear_scan(self, log_a: Any, b: Any, log_b: Any | None, h0: Any) -> Any:
        """``h_t = a_t h_{t-1} + b_t`` for all ``t`` at once, in linear space (``a_t =
        exp(log_a_t)``; ``log_b`` is not needed). The gates of every step are already
        computed at once; what is left is an elementwise recurrence, run where Keras
        computes: on an accelerator as an associative scan over time
        (:func:`associative_scan`, ``h0`` folded into the first step as ``b_0 + a_0 h0``),
        on the CPU as one multiply-add per step (:func:`sequential_scan`), which is faster
        there (``T=512, N=32, H=256``: jax 13 ms against 41 ms, tensorflow 28 against
        277 ms in a ``tf.function``, torch 21 against 750 ms)."""
        a = ops.exp(log_a)
        if computes_on_cpu(a) or not static_steps(a):
            return sequential_scan(a, b, h0)
        b = ops.concatenate([ops.expand_dims(b[0] + a[0] * h0, 0), b[1:]], axis=0)
        return associative_scan(a, b)


def as_spec(spec: Spec | Mapping[str, Any] | str) -> Spec:
    """A :class:`Spec` from a spec, its ``to_dict()`` or its JSON (as Keras configs hold it)."""
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, str):
        return Spec.from_json(spec)
    if isinstance(spec, Mapping):
        return Spec.from_dict(spec)
    raise SpecError(f"spec: expected a unirnn.Spec, dict or JSON; received {type(spec).__name__}")


@keras.saving.register_keras_serializable(package="unirnn")
class UniRNNCell(keras.layers.Layer):
    """One layer and direction of a unirnn spec as a Keras RNN cell.

    Usable on its own inside ``keras.layers.RNN(UniRNNCell(spec))``: ``call(x_t, states)``
    takes ``x_t`` ``(N, I_k)`` and ``states`` ``[h]`` or, for lstm, ``[h, c]`` (``h``
    ``(N, P)``, ``c`` ``(N, H)``) and returns ``(h_t, new_states)``. unirnn's
    :class:`~unirnn.backends.keras.UniRNN` instead projects all steps at once with
    :meth:`project` and loops over :meth:`recurrent_step` only.

    Variables: unirnn's kernel layout (:mod:`unirnn.layouts.kernels`), ``input_kernel``
    ``(I_k, G*H)`` = ``w_x.T``, ``recurrent_kernel``, ``input_bias``, ``recurrent_bias``,
    ``peepholes``, ``projection_kernel``, as the spec has them, and a family's extra
    parameters under their own names (``ln_x``, ``u``...); a family without recurrent
    weights (indrnn, mingru, minlstm) has no ``recurrent_kernel``/``recurrent_bias``.

    Initialisation: as :func:`unirnn.init_weights`: uniform in ``±1/sqrt(H)`` (torch's),
    a family's layer-norm scales ones and offsets zeros
    (:func:`unirnn._weights.layer_inits`).
    """

    def __init__(self, spec: Spec | Mapping[str, Any] | str, layer: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        spec = as_spec(spec)
        if not (isinstance(layer, int) and 0 <= layer < spec.num_layers):
            raise SpecError(f"layer: expected 0..{spec.num_layers - 1}; received {layer!r}")
        self.spec = spec
        self.layer_index = layer
        P, H = spec.output_size, spec.hidden_size
        self.state_size = [P, H] if spec.has_cell_state else [P]
        self.output_size = P
        self.cell: Cell = make_cell(spec, KerasOps())
        self.build()

    def build(self, input_shape: Any = None) -> None:
        spec = self.spec
        bound = 1.0 / math.sqrt(spec.hidden_size)
        initializers = {"uniform": keras.initializers.RandomUniform(-bound, bound),
                        "ones": keras.initializers.Ones(), "zeros": keras.initializers.Zeros()}
        input_size = spec.layer_input_size(self.layer_index)
        shapes = kernel_layout_shapes(spec, input_size)
        inits = {_layout_name(short): init for short, init in
                 layer_inits(spec, input_size).items()}
        self.canonical_variables = {
            name: self.add_weight(shape=shape, initializer=initializers[inits[name]], name=name)
            for name, shape in shapes.items()
        }
        self.built = True

    def variables_by_canonical_name(self) -> dict[str, Any]:
        """``{"w_x": variable, ...}`` for this layer and direction, a family's extra
        parameters (``ln_x``, ``u``...) by their own names."""
        return {_CANONICAL_OF.get(name, name): variable
                for name, variable in self.canonical_variables.items()}

    def set_canonical(self, params: Mapping[str, np.ndarray]) -> None:
        """Assign this layer and direction's canonical tensors (short names ``w_x`` ...)."""
        values = to_kernel_layout({k: np.asarray(v) for k, v in params.items()})
        for name, variable in self.canonical_variables.items():
            variable.assign(values[name].astype(variable.dtype))

    def _values(self) -> dict[str, Any]:
        """The variables' values by canonical short name, kernels as :class:`Transposed`
        (``w_x``, ``w_h``, ``w_r``: canonical ``(out, in)`` rows are their columns)."""
        out: dict[str, Any] = {}
        for name, variable in self.canonical_variables.items():
            short = _CANONICAL_OF.get(name, name)
            transposed = KERNEL_LAYOUT.get(short, (name, False))[1]
            out[short] = Transposed(variable.value) if transposed else variable.value
        return out

    def step_params(self) -> dict[str, Any]:
        """The step's parameters, read once per call (outside the time loop): every
        canonical tensor but the input's (``w_h`` where the family has it, ``b_h`` unless
        :meth:`project` folds it, peepholes, projection, a family's extras), through the
        cell's ``prepare``."""
        params = self._values()
        params.pop("w_x")
        params.pop("b_x", None)
        if self._folds_b_h():
            params["b_h"] = None
        return self.cell.prepare(params)

    def _custom_projection(self) -> bool:
        """Whether the family transforms the input projection (a layer norm on ``W_x x``
        before ``b_x``): :meth:`project` then runs the cell's own ``project``."""
        return type(self.cell).project is not Cell.project

    def _folds_b_h(self) -> bool:
        """Whether :meth:`project` adds all of ``b_h`` (:func:`~unirnn._cells.folded_bias_rows`
        covers every row: rnn, lstm, reset-before gru), saving one add per step. Where only
        some rows fold (reset-after gru: ``b_hn`` sits inside the reset product) the step
        adds a bias vector anyway, so nothing is folded; nor for a family without ``b_h``
        or whose own projection transforms ``W_x x + b_x`` (the layer-norm families)."""
        spec = self.spec
        return spec.bias and "recurrent_bias" in self.canonical_variables \
            and not self._custom_projection() \
            and folded_bias_rows(spec) == spec.num_gates * spec.hidden_size

    def project(self, x: Any) -> Any:
        """``x @ w_x.T + b_x`` (plus ``b_h`` where it folds) for every step at once:
        ``(..., I_k) -> (..., G*H)``; for a family that overrides
        :meth:`unirnn._cells.Cell.project` (a layer norm on ``W_x x``), that."""
        v = self.canonical_variables
        if self._custom_projection():
            return self.cell.project(self._values(), x)
        y = _matmul(x, v["input_kernel"].value)
        if "input_bias" not in v:
            return y
        if self._folds_b_h():
            return y + (v["input_bias"].value + v["recurrent_bias"].value)
        return y + v["input_bias"].value

    def recurrent_step(self, prepared: Mapping[str, Any], xp_t: Any,
                       states: Any) -> tuple[Any, list[Any]]:
        """One step from the projected input ``xp_t`` ``(N, G*H)``: ``(h_t, new_states)``."""
        carry, y = self.cell.step(prepared, xp_t, tuple(states))
        return y, list(carry)

    def call(self, inputs: Any, states: Any, training: Any = None) -> tuple[Any, list[Any]]:
        return self.recurrent_step(self.step_params(), self.project(inputs), states)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "spec": self.spec.to_dict(), "layer": self.layer_index}


def build_cell(spec: Spec, weights: Mapping[str, Any] | None, dtype: str,
               name: str | None = None) -> UniRNNCell:
    """``unirnn.build(spec, backend="keras", module="cell")``: a :class:`UniRNNCell` of a
    single-layer unidirectional spec, holding ``weights`` (checked) when given."""
    if spec.num_layers != 1 or spec.bidirectional:
        raise SpecError(f"module='cell': expected a single-layer unidirectional spec; received "
                        f"num_layers={spec.num_layers}, bidirectional={spec.bidirectional}")
    cell = UniRNNCell(spec, dtype=dtype, name=name)
    if weights is not None:
        cell.set_canonical(check_weights(spec, weights).layer(0, "forward"))
    return cell
