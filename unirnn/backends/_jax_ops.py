"""The jax ops of the shared cells (:class:`unirnn._cells.Ops`): activations, the
``(in, out)`` :class:`Kernel` stand-in, layer norm and the linear scans of minGRU/minLSTM.

Part of the Flax backend (:mod:`unirnn.backends._flax_scan` runs the time loop over them);
pure jax, no Flax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .._activations import BUILTIN_NAMES, resolve_activation
from .._cells import split_points

__all__ = ["JAX_ACTIVATIONS", "JaxOps", "Kernel", "associative_linear_scan",
           "multiply_add_scan", "parallel_here", "uses_associative_scan"]

Array = Any


def _hard_sigmoid(x: Array, alpha: float, beta: float) -> Array:
    return jnp.clip(alpha * x + beta, 0.0, 1.0)


def _elu(x: Array, alpha: float) -> Array:
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0)))


JAX_ACTIVATIONS: Mapping[str, Callable[..., Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "identity": lambda x: x,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "hard_sigmoid": _hard_sigmoid,
    "softsign": lambda x: x / (1.0 + jnp.abs(x)),
    "softplus": jax.nn.softplus,
    "elu": _elu,
    "leaky_relu": lambda x, alpha: jnp.where(x >= 0, x, alpha * x),
    "min_g": lambda x: jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x)),
}
"""jax implementations of every built-in activation (formulas in :mod:`unirnn._activations`)."""

assert set(JAX_ACTIVATIONS) == set(BUILTIN_NAMES), "every built-in activation needs a jax form"


class Kernel:
    """A Flax ``(in, out)`` kernel standing in for the canonical ``(out, in)`` weight ``w``.

    The shared cells slice canonical rows (``w_h[:2*H]``) and call ``linear(x, w, b)``;
    with a ``Kernel`` those become column slices and a plain ``x @ kernel``, so no
    transpose is left inside the scanned step (XLA cannot fold one across the loop).
    """

    __slots__ = ("kernel",)

    def __init__(self, kernel: Array) -> None:
        self.kernel = kernel

    def __getitem__(self, rows: slice) -> Kernel:
        return Kernel(self.kernel[:, rows])


class JaxOps:
    """The :class:`unirnn._cells.Ops` and :class:`unirnn._stack.StackOps` of jax.

    ``linear`` is ``x @ w.T (+ b)`` with ``w`` a canonical ``(out, in)`` array or a
    :class:`Kernel` (``x @ kernel``).
    """

    backend = "jax"

    def linear(self, x: Array, w: Array | Kernel, b: Array | None) -> Array:
        y = x @ w.kernel if isinstance(w, Kernel) else x @ w.T
        return y if b is None else y + b

    def recurrent(self, name: str, x: Array, w: Array | Kernel, b: Array | None) -> Array:
        return self.linear(x, w, b)

    def split(self, x: Array, sections: int | Sequence[int]) -> list[Array]:
        parts = sections if isinstance(sections, int) else split_points(sections)
        return jnp.split(x, parts, axis=-1)

    def lerp(self, a: Array, b: Array, w: Array) -> Array:
        return a + w * (b - a)

    def clip(self, x: Array, bound: float) -> Array:
        return jnp.clip(x, -bound, bound)

    def activation(self, name: str) -> Callable[[Array], Array]:
        return resolve_activation(name, "jax", JAX_ACTIVATIONS)

    # the stack runner's ops (unirnn._stack.StackOps), time axis 0
    def concat(self, xs: Sequence[Array]) -> Array:
        return jnp.concatenate(xs, axis=-1)

    def stack(self, xs: Sequence[Array]) -> Array:
        return jnp.stack(xs)

    def flip_time(self, x: Array) -> Array:
        return x[::-1]

    def take_time(self, x: Array, index: Array) -> Array:
        return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=0)

    def positions(self, steps: int, like: Array) -> Array:
        return jnp.arange(steps)[:, None]

    def where(self, condition: Array, a: Array, b: Array) -> Array:
        return jnp.where(condition, a, b)

    def layer_norm(self, x: Array, scale: Array, offset: Array | None,
                   eps: float = 1e-5) -> Array:
        mean = jnp.mean(x, axis=-1, keepdims=True)
        centred = x - mean
        variance = jnp.mean(centred * centred, axis=-1, keepdims=True)  # biased, as torch
        y = centred * jax.lax.rsqrt(variance + eps) * scale
        return y if offset is None else y + offset

    def log(self, x: Array) -> Array:
        return jnp.log(x)

    def linear_scan(self, log_a: Array, b: Array, log_b: Array | None, h0: Array) -> Array:
        # log_b (log-space scans only) is not needed: these scans run on a = exp(log a)
        a = jnp.exp(log_a)
        if uses_associative_scan():
            return associative_linear_scan(a, b, h0)
        return multiply_add_scan(a, b, h0)


PARALLEL_ON_CPU = False
"""Whether minGRU and minLSTM run their parallel form on XLA:CPU too (tests set it). Off
by default: at N=32, T=512, I=H=256 on the 2-core development CPU, jitted, the stepped
cell took 70 ms forward and 191 ms forward+backward against the parallel form's 81 and
259 ms (XLA fuses each step's gate math into the loop body; the parallel form streams
whole ``(T, N, H)`` arrays through memory)."""


def parallel_here() -> bool:
    """Whether minGRU and minLSTM layers run their parallel form: off XLA:CPU (GPU, TPU),
    or with :data:`PARALLEL_ON_CPU`. Decided when the module is traced."""
    return jax.default_backend() != "cpu" or PARALLEL_ON_CPU


def uses_associative_scan() -> bool:
    """Whether :meth:`JaxOps.linear_scan` runs ``lax.associative_scan`` (off XLA:CPU) or one
    multiply-add per step in ``lax.scan`` (XLA:CPU, where that is faster: at T=512, N=32,
    H=256 on the 2-core development machine the recurrence alone takes 19 ms as a
    ``lax.scan`` against the associative scan's 79 ms, whose ``log2 T`` levels of strided
    slices and interleaves run memory-bound). Decided by ``jax.default_backend()`` when
    the module is traced, as :func:`hoists_input`."""
    return jax.default_backend() != "cpu"


def associative_linear_scan(a: Array, b: Array, h0: Array) -> Array:
    """Every ``h_t = a_t h_{t-1} + b_t`` over time-major ``(T, N, H)`` at once: ``(A_t, B_t)``
    with ``h_t = A_t h_0 + B_t`` by composing the affine maps ``h -> a h + b`` with
    ``lax.associative_scan`` over time axis 0 (``(a1, b1)`` then ``(a2, b2)`` is
    ``(a1 a2, a2 b1 + b2)``): ``log2 T`` levels, no step loop."""

    def combine(first: tuple[Array, Array], second: tuple[Array, Array]
                ) -> tuple[Array, Array]:
        a1, b1 = first
        a2, b2 = second
        return a1 * a2, a2 * b1 + b2

    decay, offset = jax.lax.associative_scan(combine, (a, b), axis=0)
    return decay * h0 + offset


def multiply_add_scan(a: Array, b: Array, h0: Array) -> Array:
    """Every ``h_t = a_t h_{t-1} + b_t`` over time-major ``(T, N, H)``: one multiply-add per
    step in ``lax.scan`` (all the gate math is already done for every step at once)."""

    def step(h: Array, coefficients: tuple[Array, Array]) -> tuple[Array, Array]:
        a_t, b_t = coefficients
        h = a_t * h + b_t
        return h, h

    return jax.lax.scan(step, h0, (a, b))[1]
