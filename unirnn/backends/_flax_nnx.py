"""The :mod:`flax.nnx` twins of :class:`~unirnn.backends.flax.UniCell` and ``UniRNN``.

Same parameters under the same names (``nnx.state(model, nnx.Param)`` has the tree of
the linen module's ``params``), same carries, same time loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.recurrent import RNNCellBase

from .._cells import make_cell
from .._errors import InputError, SpecError
from .._spec import Spec
from ..layouts.flax import cell_name, layer_weights
from ..layouts.kernels import kernel_layout_shapes, to_kernel_layout
from ._flax_scan import (
    KERNEL,
    JaxOps,
    apply_cell,
    apply_stack,
    kernel_name,
    param_inits,
    processing_order,
    zero_carry,
)

__all__ = ["UniCellNNX", "UniRNNNNX"]


_ATTRIBUTES = ("spec", "in_features", "dtype", "param_dtype", "cell", "_names")
"""Instance attributes of :class:`UniCellNNX` (beside its class's) a family's extra
parameter may not be named."""


class UniCellNNX(RNNCellBase):
    """A unirnn cell as an nnx cell: ``cell(carry, x) -> (carry, y)``.

    Carry ``h`` ``(*batch, P)``, lstm and ln_lstm ``(c, h)`` (Flax's order). Parameters are
    ``nnx.Param`` attributes ``input_kernel`` ``(I, G*H)``, ``recurrent_kernel``
    ``(P, G*H)``, ``input_bias``, ``recurrent_bias``, ``peepholes``, ``projection_kernel``
    and a family's extra parameters under their names, as in :mod:`unirnn.backends.flax`.

    Args:
        spec: the cell's spec (``num_layers``/``bidirectional`` ignored).
        in_features: input features ``I``.
        weights: canonical weights of a single-layer spec (``layer0.forward.*``) or one
            layer-direction's short names (``w_x``...); ``None``: Flax's initialisers.
        dtype: computation dtype (``None``: promoted); param_dtype: float32 by default.
        rngs: ``nnx.Rngs`` for the initialisers (needed when ``weights`` is ``None``).
    """

    kernel = KERNEL

    def __init__(self, spec: Spec, in_features: int, *, weights: Mapping[str, Any] | None = None,
                 dtype: Any = None, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs | None = None) -> None:
        self.spec = spec
        self.in_features = in_features
        self.dtype = dtype
        self.param_dtype = param_dtype
        shapes = kernel_layout_shapes(spec, in_features)
        taken = [name for name in shapes if name in _ATTRIBUTES or hasattr(type(self), name)]
        if taken:
            raise SpecError(f"family {spec.family!r}: parameter {taken[0]!r} clashes with an "
                            f"attribute of UniCellNNX; rename it in the family's params")
        inits = param_inits(spec, in_features)
        if weights is not None:
            layer = weights if "w_x" in weights else layer_weights(weights, 0, "forward")
            given = to_kernel_layout(layer)
            for name in shapes:
                setattr(self, name, nnx.Param(jnp.asarray(given[name], param_dtype)))
        else:
            if rngs is None:
                raise SpecError("rngs: expected nnx.Rngs to initialise the parameters "
                                 "(or pass weights); received None")
            for name, shape in shapes.items():
                setattr(self, name, nnx.Param(inits[name](rngs.params(), shape, param_dtype)))
        self._names = nnx.static(tuple(shapes))
        self.cell = nnx.static(make_cell(spec, JaxOps()))

    @property
    def tensors(self) -> dict[str, Any]:
        """The parameter arrays by name."""
        return {name: getattr(self, name)[...] for name in self._names}

    def __call__(self, carry: Any, inputs: Any) -> tuple[Any, Any]:  # type: ignore[override]
        return apply_cell(self.cell, self.tensors, self.dtype, carry, inputs)

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None,
                         carry_init: Any = None) -> Any:
        """Zeros: ``h`` ``(*batch, P)``, lstm ``(c, h)``, in ``param_dtype``."""
        return zero_carry(self.spec, tuple(input_shape[:-1]), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class UniRNNNNX(nnx.Module):
    """A unirnn layer stack as an nnx module (the twin of :class:`~unirnn.backends.flax.UniRNN`).

    ``model(inputs, initial_carry=None, seq_lengths=None, deterministic=None,
    return_carry=None, time_major=None, reverse=None)``, with the meanings of
    ``UniRNN``. Dropout between layers is an ``nnx.Dropout`` (``model.train()`` /
    ``model.eval()`` or ``deterministic=`` switch it); its rng stream is ``rngs.dropout``.

    Example:
        >>> import jax.numpy as jnp, unirnn
        >>> from flax import nnx
        >>> model = unirnn.build(unirnn.gru(3, 4, bidirectional=True), backend="flax",
        ...                      api="nnx", rngs=nnx.Rngs(0))
        >>> model(jnp.ones((2, 5, 3))).shape
        (2, 5, 8)

    Args: ``spec``; ``weights`` (canonical; ``None``: Flax's initialisers); ``rngs``:
    ``nnx.Rngs``, its ``params`` stream for the initialisers (without ``weights``) and
    its ``dropout`` stream for dropout in training mode (``spec.dropout > 0``, also with
    ``weights``); the other options as :class:`~unirnn.backends.flax.UniRNN`'s attributes.

    Attributes:
        spec: what it runs; ``layer{k}_{direction}``: a :class:`UniCellNNX` per layer and
        direction; kernel: ``"unirnn.flax-parallel-scan"`` (minGRU, minLSTM),
        ``"unirnn-scan"``, or ``"unirnn-scan(input-per-step)"`` when
        the input GEMM runs inside each step (``hoist_input=False``, or the default on
        XLA:CPU).
    """

    @property
    def kernel(self) -> str:
        return kernel_name(self.hoist_input, self.spec)

    def __init__(self, spec: Spec, *, weights: Mapping[str, Any] | None = None,
                 time_major: bool = False, return_carry: bool = False, reverse: bool = False,
                 dtype: Any = None, param_dtype: Any = jnp.float32, unroll: int = 1,
                 hoist_input: bool | None = None, rngs: nnx.Rngs | None = None,
                 keep_order: bool = True) -> None:
        self.spec = spec
        self.keep_order = keep_order
        self.hoist_input = hoist_input
        self.time_major = time_major
        self.return_carry = return_carry
        self.reverse = reverse
        self.dtype = dtype
        self.unroll = unroll
        for layer in range(spec.num_layers):
            for direction in spec.directions:
                initial = None if weights is None else layer_weights(weights, layer, direction)
                setattr(self, cell_name(layer, direction), UniCellNNX(
                    spec, spec.layer_input_size(layer), weights=initial, dtype=dtype,
                    param_dtype=param_dtype, rngs=rngs,
                ))
        self.dropout = nnx.Dropout(spec.dropout, rngs=rngs) if spec.dropout > 0 else None

    def __call__(self, inputs: Any, *, initial_carry: Any = None, seq_lengths: Any = None,
                 deterministic: bool | None = None, return_carry: bool | None = None,
                 time_major: bool | None = None, reverse: bool | None = None) -> Any:
        spec = self.spec
        cells = {
            (layer, direction): getattr(self, cell_name(layer, direction))
            for layer in range(spec.num_layers)
            for direction in spec.directions
        }
        dropout = None
        if self.dropout is not None:
            module = self.dropout
            training = not (module.deterministic if deterministic is None else deterministic)
            if training and getattr(module, "rngs", None) is None:
                raise InputError(
                    f"dropout={spec.dropout} in training mode: expected a random stream for "
                    "the dropout masks; the model was built without rngs. Build it with "
                    "rngs=nnx.Rngs(dropout=0) (also when passing weights=), or run it "
                    "deterministically (model.eval() or deterministic=True)"
                )

            def dropout(x: Any) -> Any:
                return module(x, deterministic=deterministic)

        time_major = self.time_major if time_major is None else time_major
        reverse = self.reverse if reverse is None else reverse
        finals, outputs = apply_stack(
            spec, cells[0, "forward"].cell, {k: c.tensors for k, c in cells.items()}, inputs,
            initial_carry, seq_lengths, dropout, self.dtype, time_major, reverse, self.unroll,
            self.hoist_input,
        )
        if reverse and not self.keep_order:
            outputs = processing_order(outputs, seq_lengths, time_major)
        return_carry = self.return_carry if return_carry is None else return_carry
        return (finals, outputs) if return_carry else outputs
