"""The linen modules of the Flax backend: :class:`UniCell` and :class:`UniRNN`.

Parameters, carries and call options are described in :mod:`unirnn.backends.flax`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from .._cells import make_cell
from .._spec import Spec
from ..layouts.flax import cell_name, layer_weights
from ..layouts.kernels import kernel_layout_shapes, to_kernel_layout
from ._flax_scan import (
    KERNEL,
    Array,
    JaxOps,
    _constant,
    apply_cell,
    apply_stack,
    kernel_name,
    param_inits,
    processing_order,
    zero_carry,
)

__all__ = ["UniCell", "UniRNN"]


class UniCell(nn.RNNCellBase):
    """A unirnn cell as a Flax cell: ``(carry, x) -> (carry, y)``, one step.

    ``x`` is ``(*batch, in_features)``; the carry is ``h`` ``(*batch, P)``, ``(c, h)`` for
    lstm and ln_lstm (Flax's order). Parameters as in the module docstring. Usable
    alone or under ``nn.RNN``; :class:`UniRNN` instead hoists the input projection.

    Example:
        >>> import jax, jax.numpy as jnp, unirnn
        >>> from unirnn.backends.flax import UniCell
        >>> cell = UniCell(spec=unirnn.gru(3, 4, activations={"z": "gelu"}), in_features=3)
        >>> x = jnp.ones((2, 3))
        >>> carry = cell.initialize_carry(jax.random.key(0), x.shape)
        >>> (carry, y), params = cell.init_with_output(jax.random.key(1), carry, x)
        >>> y.shape
        (2, 4)

    Attributes:
        spec: the cell's spec (``num_layers``/``bidirectional`` are ignored).
        in_features: input features ``I_k``.
        dtype: computation dtype (``None``: promote inputs and parameters).
        param_dtype: parameter dtype (float32).
        initial: canonical tensors of this layer-direction (``w_x``...) to initialise
            the parameters with; ``None``: Flax's initialisers (lecun normal input
            kernel, orthogonal recurrent blocks, zero biases and peepholes; a family's
            extra parameters as :func:`unirnn._weights.layer_inits` says).
    """

    spec: Spec
    in_features: int
    dtype: Any = None
    param_dtype: Any = jnp.float32
    initial: Mapping[str, Any] | None = None

    kernel = KERNEL

    def setup(self) -> None:
        spec = self.spec
        shapes = kernel_layout_shapes(spec, self.in_features)
        inits = param_inits(spec, self.in_features)
        if self.initial is not None:
            given = to_kernel_layout(self.initial)
            inits = {name: _constant(given[name]) for name in shapes}
        self.tensors = {
            name: self.param(name, inits[name], shape, self.param_dtype)
            for name, shape in shapes.items()
        }
        self.cell = make_cell(spec, JaxOps())

    def __call__(self, carry: Any, inputs: Array) -> tuple[Any, Array]:
        return apply_cell(self.cell, self.tensors, self.dtype, carry, inputs)

    @nn.nowrap
    def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Any:
        """Zeros: ``h`` ``(*batch, P)``, lstm ``(c, h)``, in ``param_dtype``."""
        return zero_carry(self.spec, tuple(input_shape[:-1]), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class UniRNN(nn.Module):
    """A unirnn layer stack as a linen module, scanned with ``lax.scan``.

    The parameters are read once, outside the scan, and the time loop is a plain
    ``jax.lax.scan`` over arrays (not ``nn.scan``): the same pure function runs the nnx
    twin, and dropout acts only between layers, so no variables or rngs need lifting
    into the loop. ``model.kernel`` names the path: ``"unirnn-scan"`` (input GEMM hoisted
    before the scan), ``"unirnn-scan(input-per-step)"``, or ``"unirnn.flax-parallel-scan"``
    (minGRU, minLSTM: no step loop, :data:`unirnn.backends.flax.PARALLEL_KERNEL`).

    Example:
        >>> import jax, jax.numpy as jnp, unirnn
        >>> model = unirnn.build(unirnn.lstm(3, 5, num_layers=2), backend="flax")
        >>> x = jnp.ones((2, 7, 3))  # (batch, time, features)
        >>> variables = model.init(jax.random.key(0), x)
        >>> y = model.apply(variables, x)
        >>> y.shape
        (2, 7, 5)

    Call: ``model.apply(variables, inputs, initial_carry=None, seq_lengths=None,
    deterministic=None, return_carry=None, time_major=None, reverse=None,
    rngs={"dropout": key})``.

    - ``inputs``: ``(N, T, I)``, or ``(T, N, I)`` with ``time_major=True``.
    - ``initial_carry``: a tuple of ``L*D`` cell carries in torch's row order, each
      ``h`` ``(N, P)`` or lstm ``(c (N, H), h (N, P))``; ``None``: zeros.
    - ``seq_lengths``: ``(N,)`` valid steps per sequence, each in ``[1, T]``: outputs past
      a sequence's length are zero, its final carry is the one after its last valid step,
      and backward directions run over the valid steps reversed.
    - ``deterministic``: ``False`` applies dropout (rate ``spec.dropout``, rng stream
      ``"dropout"``) to every layer's output but the last.
    - ``reverse``: run a unidirectional stack right to left (outputs in input order).

    Returns outputs ``(N, T, D*P)`` (``(T, N, D*P)`` time-major) or, with
    ``return_carry=True``, ``(carry, outputs)`` like ``nn.RNN``.

    Attributes:
        spec: what to run.
        weights: canonical weights to initialise the parameters with (``None``: Flax's
            initialisers, see :class:`UniCell`).
        time_major, return_carry, reverse, deterministic: defaults of the call options.
        keep_order: with ``reverse``, outputs in input order (``True``, the default) or in
            processing order (``False``: Flax ``nn.RNN``'s default, Keras' ``go_backwards``).
        dtype: computation dtype (``None``: promoted from inputs and parameters);
            param_dtype: parameter dtype (float32). ``dtype=jnp.bfloat16`` computes in
            bfloat16.
        unroll: ``lax.scan`` unroll (1 on CPU).
        hoist_input: ``True`` projects every step's input in one GEMM before the scan;
            ``False`` projects inside each step; ``None`` (default): ``False`` on XLA:CPU,
            whose runtime runs a step's input and recurrent GEMMs side by side, ``True``
            elsewhere (``jax.default_backend()``).
    """

    spec: Spec
    weights: Mapping[str, Any] | None = None
    time_major: bool = False
    return_carry: bool = False
    reverse: bool = False
    keep_order: bool = True
    deterministic: bool | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    unroll: int = 1
    hoist_input: bool | None = None

    @property
    def kernel(self) -> str:
        """The path it runs: ``"unirnn-scan"``, ``"unirnn-scan(input-per-step)"`` or
        ``"unirnn.flax-parallel-scan"``."""
        return kernel_name(self.hoist_input, self.spec)

    @nn.compact
    def __call__(
        self,
        inputs: Array,
        *,
        initial_carry: Any = None,
        seq_lengths: Array | None = None,
        deterministic: bool | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
    ) -> Any:
        spec = self.spec
        time_major = self.time_major if time_major is None else time_major
        return_carry = self.return_carry if return_carry is None else return_carry
        reverse = self.reverse if reverse is None else reverse
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic) \
            if spec.dropout > 0 else True
        cells = {
            (layer, direction): UniCell(
                spec, spec.layer_input_size(layer), self.dtype, self.param_dtype,
                None if self.weights is None else layer_weights(self.weights, layer, direction),
                name=cell_name(layer, direction),
            )
            for layer in range(spec.num_layers)
            for direction in spec.directions
        }
        dropout = None
        if spec.dropout > 0 and not deterministic:
            dropout = nn.Dropout(rate=spec.dropout, deterministic=False)
        finals, outputs = apply_stack(
            spec, cells[0, "forward"].cell, {k: c.tensors for k, c in cells.items()}, inputs,
            initial_carry, seq_lengths, dropout, self.dtype, time_major, reverse, self.unroll,
            self.hoist_input,
        )
        if reverse and not self.keep_order:
            outputs = processing_order(outputs, seq_lengths, time_major)
        return (finals, outputs) if return_carry else outputs
