"""unirnn's custom Keras cell: the shared cell math (:mod:`unirnn._cells`) on ``keras.ops``.

It runs on every Keras backend (tensorflow, jax, torch). The equations are those of
:class:`unirnn.Spec`; this module provides only the :class:`~unirnn._cells.Ops` over
``keras.ops``, every built-in activation, and a Keras layer holding one layer and
direction's weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from .._activations import resolve_activation
from .._cells import Cell, make_cell
from .._spec import Spec
from .._weights import KERNEL_LAYOUT, kernel_layout_shapes

__all__ = ["KERAS_ACTIVATIONS", "KerasOps", "UniRNNCell", "as_spec"]


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
    """:class:`unirnn._cells.Ops` over ``keras.ops``."""

    backend = "keras"

    def linear(self, x: Any, w: Any, b: Any | None) -> Any:
        y = _matmul(x, w.t if isinstance(w, Transposed) else ops.transpose(w))
        return y if b is None else y + b

    def split(self, x: Any, sections: int) -> list[Any]:
        return ops.split(x, sections, axis=-1)

    def clip(self, x: Any, bound: float) -> Any:
        # Not ops.clip: on torch it computes float64 in float32 (Keras' type promotion).
        return x - ops.relu(x - bound) + ops.relu(-bound - x)

    def activation(self, name: str) -> Callable[[Any], Any]:
        return resolve_activation(name, "keras", KERAS_ACTIVATIONS)


def as_spec(spec: Spec | Mapping[str, Any] | str) -> Spec:
    """A :class:`Spec` from a spec, its ``to_dict()`` or its JSON (as Keras configs hold it)."""
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, str):
        return Spec.from_json(spec)
    if isinstance(spec, Mapping):
        return Spec.from_dict(spec)
    raise ValueError(f"spec: expected a unirnn.Spec, dict or JSON; received {type(spec).__name__}")


@keras.saving.register_keras_serializable(package="unirnn")
class UniRNNCell(keras.layers.Layer):
    """One layer and direction of a unirnn spec as a Keras RNN cell.

    Usable on its own inside ``keras.layers.RNN(UniRNNCell(spec))``: ``call(x_t, states)``
    takes ``x_t`` ``(N, I_k)`` and ``states`` ``[h]`` or, for lstm, ``[h, c]`` (``h``
    ``(N, P)``, ``c`` ``(N, H)``) and returns ``(h_t, new_states)``. unirnn's
    :class:`~unirnn.backends.keras.UniRNN` instead projects all steps at once with
    :meth:`project` and loops over :meth:`recurrent_step` only.

    Variables (Keras ``(in, out)`` layout; ``G*H`` columns in canonical gate order)::

        input_kernel       (I_k, G*H)  = w_x.T
        recurrent_kernel   (P, G*H)    = w_h.T
        input_bias         (G*H,)      = b_x         (bias=True)
        recurrent_bias     (G*H,)      = b_h         (bias=True)
        peepholes          (3*H,)      = p (i, f, o) (lstm, peepholes=True)
        projection_kernel  (H, P)      = w_r.T       (lstm, proj_size>0)

    Initialisation: uniform in ``±1/sqrt(H)`` (torch's and :func:`unirnn.init_weights`).
    """

    def __init__(self, spec: Spec | Mapping[str, Any] | str, layer: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        spec = as_spec(spec)
        if not (isinstance(layer, int) and 0 <= layer < spec.num_layers):
            raise ValueError(f"layer: expected 0..{spec.num_layers - 1}; received {layer!r}")
        self.spec = spec
        self.layer_index = layer
        P, H = spec.output_size, spec.hidden_size
        self.state_size = [P, H] if spec.family == "lstm" else [P]
        self.output_size = P
        self.cell: Cell = make_cell(spec, KerasOps())
        self.build()

    def build(self, input_shape: Any = None) -> None:
        spec = self.spec
        bound = 1.0 / math.sqrt(spec.hidden_size)
        init = keras.initializers.RandomUniform(-bound, bound)
        shapes = kernel_layout_shapes(spec, spec.layer_input_size(self.layer_index))
        self.canonical_variables = {
            name: self.add_weight(shape=shape, initializer=init, name=name)
            for name, shape in shapes.items()
        }
        self.built = True

    def variables_by_canonical_name(self) -> dict[str, Any]:
        """``{"w_x": variable, ...}`` for this layer and direction."""
        out = {}
        for canonical, (name, _) in KERNEL_LAYOUT.items():
            if name in self.canonical_variables:
                out[canonical] = self.canonical_variables[name]
        return out

    @classmethod
    def to_canonical(cls, canonical: str, array: np.ndarray) -> np.ndarray:
        """A variable's (or its gradient's) value in the canonical layout."""
        return np.ascontiguousarray(array.T) if KERNEL_LAYOUT[canonical][1] else array

    def set_canonical(self, params: Mapping[str, np.ndarray]) -> None:
        """Assign this layer and direction's canonical tensors (short names ``w_x`` ...)."""
        for canonical, variable in self.variables_by_canonical_name().items():
            value = np.asarray(params[canonical])
            value = value.T if KERNEL_LAYOUT[canonical][1] else value
            variable.assign(value.astype(variable.dtype))

    def get_canonical(self) -> dict[str, np.ndarray]:
        return {
            canonical: self.to_canonical(canonical, ops.convert_to_numpy(variable))
            for canonical, variable in self.variables_by_canonical_name().items()
        }

    def step_params(self) -> dict[str, Any]:
        """The step's parameters, read once per call (outside the time loop)."""
        v = {name: var.value for name, var in self.canonical_variables.items()}
        params: dict[str, Any] = {
            "w_h": Transposed(v["recurrent_kernel"]),
            # rnn and lstm add b_h outside any gate product: it is folded into project().
            "b_h": v.get("recurrent_bias") if self.spec.family == "gru" else None,
        }
        if "peepholes" in v:
            params["p"] = v["peepholes"]
        if "projection_kernel" in v:
            params["w_r"] = Transposed(v["projection_kernel"])
        return self.cell.prepare(params)

    def project(self, x: Any) -> Any:
        """``x @ w_x.T + b_x`` for every step at once: ``(N, T, I_k) -> (N, T, G*H)``.

        For rnn and lstm, ``b_h`` is added here too (it sums with the gates' pre-activation
        unchanged), which saves one add per step; GRU keeps ``b_h`` in the step because
        ``b_hn`` sits inside the reset product.
        """
        v = self.canonical_variables
        y = _matmul(x, v["input_kernel"].value)
        if "input_bias" not in v:
            return y
        if self.spec.family == "gru":
            return y + v["input_bias"].value
        return y + (v["input_bias"].value + v["recurrent_bias"].value)

    def recurrent_step(self, prepared: Mapping[str, Any], xp_t: Any,
                       states: Any) -> tuple[Any, list[Any]]:
        """One step from the projected input ``xp_t`` ``(N, G*H)``: ``(h_t, new_states)``."""
        carry, y = self.cell.step(prepared, xp_t, tuple(states))
        return y, list(carry)

    def call(self, inputs: Any, states: Any, training: Any = None) -> tuple[Any, list[Any]]:
        return self.recurrent_step(self.step_params(), self.project(inputs), states)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "spec": self.spec.to_dict(), "layer": self.layer_index}
