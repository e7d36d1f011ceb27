"""The Flax/JAX backend: a Flax cell (``nn.RNNCellBase``) and a layer stack run by ``lax.scan``.

``unirnn.build(spec, backend="flax")`` gives a :class:`UniRNN` linen module (``api="nnx"``
gives the :mod:`flax.nnx` twin, :class:`unirnn.backends._flax_nnx.UniRNNNNX`).

Parameters, per layer and direction (a submodule named ``layer{k}_{direction}``), with
``G`` gates, hidden size ``H``, emitted size ``P`` (``proj_size`` or ``H``) and layer input
size ``I_k``; kernels are in Flax's ``(in, out)`` layout, gate column blocks in the
canonical order (lstm i, f, g, o; gru r, z, n)::

    input_kernel       (I_k, G*H)   = w_x.T
    recurrent_kernel   (P, G*H)     = w_h.T
    input_bias         (G*H,)       = b_x      (bias=True)
    recurrent_bias     (G*H,)       = b_h      (bias=True)
    peepholes          (3*H,)       = p        (peepholes=True; i, f, o)
    projection_kernel  (H, P)       = w_r.T    (proj_size > 0)

A family's extra parameters (``ln_x``, ``u``...: :func:`unirnn.register_family`) keep their
canonical names and shapes; families without recurrent weights (indrnn, mingru, minlstm)
have no ``recurrent_kernel``/``recurrent_bias`` (:mod:`unirnn.layouts.kernels`).

Carry: the cell's carry is Flax's: ``h``, or ``(c, h)`` for lstm and the families with a
cell state (ln_lstm) (the order of ``nn.LSTMCell``; torch and unirnn's ``evaluate`` use
``(h, c)``). The layer's carry is a
tuple of cell carries, one per layer and direction, in torch's row order (layer 0
forward, layer 0 backward, layer 1 forward, ...).

Speed: each step runs one fused ``(P, G*H)`` recurrent GEMM and the shared cell math
(:mod:`unirnn._cells`), which XLA fuses under ``jax.jit``. The input projection of all
steps is one GEMM ahead of the scan (``hoist_input=True``; the default off XLA:CPU) or one
GEMM inside each step (``False``; the default on XLA:CPU, where it runs beside the
recurrent GEMM). Each step reads its inputs from the carry, and the backward pass
recomputes the gate math from the saved GEMM outputs (docs/flax.md, Speed). A family with
a parallel form (minGRU, minLSTM) runs the gate math of the whole sequence at once and its
linear recurrence as one ``lax.associative_scan`` (one multiply-add per step on XLA:CPU),
``kernel`` ``"unirnn.flax-parallel-scan"``; its Flax cell steps the same recurrence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import SpecError
from .._evaluation import Evaluation
from .._inputs import check_cotangent, check_input_shape, check_lengths, check_stacked_state
from .._spec import Spec
from .._stack import stack_rows, unstack_rows
from .._weights import check_weights, weight_shapes
from ..layouts.flax import layer_weights, to_layer_tree
from ._flax_linen import UniCell, UniRNN
from ._flax_scan import (
    JAX_ACTIVATIONS,
    KERNEL,
    KERNELS,
    PARALLEL_KERNEL,
    Array,
    JaxOps,
    Kernel,
    kernel_name,
    to_flax_carry,
    to_internal_carry,
)

__all__ = [
    "JAX_ACTIVATIONS",
    "KERNEL",
    "KERNELS",
    "PARALLEL_KERNEL",
    "JaxOps",
    "Kernel",
    "UniCell",
    "UniRNN",
    "build",
    "evaluate",
    "variables_from_weights",
]


# -- build and evaluate ------------------------------------------------------------------


def build(spec: Spec, weights: Mapping[str, Any] | None = None, *, api: str = "linen",
          module: str = "layer", **options: Any) -> Any:
    """``unirnn.build(spec, backend="flax", weights=None, api="linen", module="layer", ...)``.

    Args:
        spec: what to build.
        weights: canonical weights; the module's ``init`` returns them (cast to
            ``param_dtype``). ``None``: Flax's initialisers.
        api: ``"linen"`` (:class:`UniRNN`, :class:`UniCell`) or ``"nnx"``
            (:class:`~unirnn.backends._flax_nnx.UniRNNNNX`, ``UniCellNNX``; pass
            ``rngs=nnx.Rngs(0)``).
        module: ``"layer"`` (the scanned stack) or ``"cell"`` (one step; the spec must be
            single-layer and unidirectional).
        options: the module's attributes (``dtype``, ``param_dtype``, ``time_major``,
            ``unroll``...; nnx: ``rngs``).
    """
    if weights is not None:
        weights = check_weights(spec, weights)
    _check_api(api)
    for option in ("dtype", "param_dtype"):
        value = options.get(option)
        if value is not None and not jnp.issubdtype(value, jnp.floating):
            raise SpecError(f"{option}: expected a floating-point dtype (float32, float64, "
                            f"bfloat16, float16); received {value!r}")
    if module not in ("layer", "cell"):
        raise SpecError(f"module: expected 'layer' or 'cell'; received {module!r}")
    if module == "cell" and (spec.num_layers != 1 or spec.bidirectional):
        raise SpecError(
            f"module='cell': expected a single-layer unidirectional spec; received "
            f"num_layers={spec.num_layers}, bidirectional={spec.bidirectional}"
        )
    if api == "nnx":
        from . import _flax_nnx

        if module == "cell":
            return _flax_nnx.UniCellNNX(spec, spec.input_size, weights=weights, **options)
        return _flax_nnx.UniRNNNNX(spec, weights=weights, **options)
    if module == "cell":
        initial = None if weights is None else layer_weights(weights, 0, "forward")
        return UniCell(spec, spec.input_size, initial=initial, **options)
    return UniRNN(spec, weights, **options)


def _check_api(api: str) -> None:
    if api not in ("linen", "nnx"):
        raise SpecError(f"api: expected 'linen' or 'nnx'; received {api!r}")


def variables_from_weights(spec: Spec, weights: Mapping[str, Any], dtype: Any = None
                           ) -> dict[str, Any]:
    """``{"params": {layer{k}_{direction}: cell tensors}}`` from canonical weights.

    Traceable: with jax arrays in ``weights`` it is a pure jax function.
    """
    params = to_layer_tree(spec, weights)
    if dtype is not None:
        params = {cell: {k: jnp.asarray(v, dtype) for k, v in tensors.items()}
                  for cell, tensors in params.items()}
    return {"params": params}


def evaluate(
    spec: Spec,
    weights: Mapping[str, Any],
    x: Any,
    *,
    initial_state: Any = None,
    lengths: Any = None,
    dtype: Any = "float64",
    cotangent: Any = None,
    **options: Any,
) -> Evaluation:
    """Run :class:`UniRNN` on numpy inputs (see :mod:`unirnn._evaluation`).

    ``x`` ``(N, T, I)``; ``initial_state`` torch-ordered ``h0`` ``(L*D, N, P)`` or lstm
    ``(h0, c0)``; ``dtype`` ``"float64"`` needs ``jax_enable_x64``. With ``cotangent``
    ``(N, T, D*P)``, ``grads`` holds ``d sum(outputs * cotangent)`` for ``"x"`` and every
    canonical weight (computed with ``jax.vjp``). ``options``: ``api="linen"`` (default,
    :class:`UniRNN`) or ``"nnx"`` (``UniRNNNNX``), and the module's attributes
    (``hoist_input``, ``unroll``...).
    """
    np_dtype = np.dtype(dtype)
    if np_dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        raise SpecError("dtype float64: expected jax_enable_x64 to be on; it is off "
                         "(jax.config.update('jax_enable_x64', True))")
    weights = check_weights(spec, weights)
    x = np.asarray(x)
    check_input_shape(spec, tuple(x.shape))
    batch, steps = x.shape[:2]
    if lengths is not None:
        lengths = check_lengths(lengths, batch, steps)
    carry = None
    if initial_state is not None:
        given = check_stacked_state(spec, initial_state, batch)
        rows = unstack_rows([jnp.asarray(np.asarray(s, np_dtype)) for s in given])
        carry = tuple(to_flax_carry(spec, row) for row in rows)
    api = options.pop("api", "linen")
    _check_api(api)
    kernel = kernel_name(options.get("hoist_input"), spec)
    names = list(weight_shapes(spec))

    def run(x_in: Array, canonical: dict[str, Array]) -> tuple[Array, Any]:
        if api == "nnx":
            from ._flax_nnx import UniRNNNNX

            nnx_model = UniRNNNNX(spec, weights=canonical, dtype=np_dtype, param_dtype=np_dtype,
                                  return_carry=True, **options)
            finals, out = nnx_model(x_in, initial_carry=carry, seq_lengths=lengths)
            return out, finals
        model = UniRNN(spec, dtype=np_dtype, param_dtype=np_dtype, return_carry=True, **options)
        variables = variables_from_weights(spec, canonical, np_dtype)
        finals, out = model.apply(variables, x_in, initial_carry=carry, seq_lengths=lengths)
        return out, finals

    x_j = jnp.asarray(x, np_dtype)
    canonical = {n: jnp.asarray(weights[n], np_dtype) for n in names}
    grads = None
    if cotangent is None:
        outputs, finals = jax.jit(run)(x_j, canonical)
    else:
        (outputs, finals), vjp = jax.vjp(jax.jit(run), x_j, canonical)
        cot = np.asarray(cotangent)
        check_cotangent(tuple(cot.shape), tuple(outputs.shape))
        zero_finals = jax.tree_util.tree_map(jnp.zeros_like, finals)
        g_x, g_w = vjp((jnp.asarray(cot, np_dtype), zero_finals))
        grads = {"x": np.asarray(g_x), **{n: np.asarray(g_w[n]) for n in names}}
    state = stack_rows(JaxOps(), [to_internal_carry(spec, f) for f in finals])
    return Evaluation(np.asarray(outputs), tuple(np.asarray(s) for s in state), kernel, grads)
