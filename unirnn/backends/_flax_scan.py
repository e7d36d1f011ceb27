"""The jax half of the Flax backend, shared by its linen and nnx modules.

The one Flax step (:func:`cell_step`, :func:`apply_cell`), carry conversions and the
per-direction ``lax.scan`` (:func:`run_direction`) as pure functions over arrays; the
layers, directions and lengths around it are :func:`unirnn._stack.run_stack`. Layouts and
carries are described in :mod:`unirnn.backends.flax`; the jax ops of the cells are
:mod:`unirnn.backends._jax_ops`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._cells import Cell, make_cell
from .._errors import InputError
from .._inputs import check_input_shape, check_lengths, check_state_list
from .._spec import Spec
from .._stack import Carry, run_stack
from .._weights import layer_inits
from ..layouts.kernels import KERNEL_LAYOUT, kernel_layout_shapes
from ._jax_ops import JAX_ACTIVATIONS, JaxOps, Kernel, parallel_here

__all__ = ["JAX_ACTIVATIONS", "KERNEL", "KERNELS", "PARALLEL_KERNEL", "JaxOps", "Kernel",
           "apply_cell", "apply_stack", "cell_step", "kernel_name", "param_inits",
           "processing_order", "run_direction", "step_tensors", "to_flax_carry",
           "to_internal_carry", "zero_carry"]

KERNEL = "unirnn-scan"
"""The path every Flax module runs: ``lax.scan`` of the fused cell (``"unirnn-scan"`` with
the input GEMM hoisted out of the scan, ``"unirnn-scan(input-per-step)"`` with it inside)."""

PARALLEL_KERNEL = "unirnn.flax-parallel-scan"
"""The path of a layer whose cell has a parallel form (minGRU, minLSTM with their default
gates, :meth:`unirnn._cells.Cell.has_parallel_form`): the gate math of the whole sequence
of each layer and direction at once, then its linear recurrence as one
``lax.associative_scan``; the cell is not stepped. Off XLA:CPU only
(:func:`unirnn.backends._jax_ops.parallel_here`): there the stepped cell is faster."""

KERNELS = (KERNEL, f"{KERNEL}(input-per-step)", PARALLEL_KERNEL)
"""Every path a Flax module's ``.kernel`` may name."""

Array = Any


# -- the one Flax step -------------------------------------------------------------------


_CANONICAL = {name: (short, transposed) for short, (name, transposed) in KERNEL_LAYOUT.items()}


def step_tensors(spec: Spec, tensors: Mapping[str, Any]) -> dict[str, Any]:
    """One layer-direction's parameters under their canonical short names (``w_x``, ``w_h``,
    ``b_h``, a family's ``ln_h`` or ``u``...), what :meth:`unirnn._cells.Cell.prepare` and
    :meth:`unirnn._cells.Cell.project` take; kernels as :class:`Kernel`. ``b_x``/``b_h``
    are ``None`` when absent."""
    canonical: dict[str, Any] = {"b_x": None, "b_h": None}
    for name, value in tensors.items():
        short, transposed = _CANONICAL.get(name, (name, False))
        canonical[short] = Kernel(value) if transposed else value
    return canonical


def own_projection(cell: Cell) -> bool:
    """Whether the cell's input projection is not the plain ``W_x x + b_x``
    (:meth:`unirnn._cells.Cell.project` overridden: the layer-norm families)."""
    return type(cell).project is not Cell.project


def cell_step(cell: Cell, tensors: Mapping[str, Array], project: bool
              ) -> Callable[[Carry, Array], tuple[Carry, Array]]:
    """One layer-direction's step on the cells' carry ``(h,)`` / ``(h, c)``: ``x_t`` is the
    raw input (``project=True``: ``x_t @ input_kernel`` runs here) or already projected;
    ``input_bias`` is added here, where XLA fuses it into the gate math. A cell with its
    own projection (:func:`own_projection`) gets ``cell.project`` (bias included) here
    with ``project=True``, and ``x_t`` as it is otherwise."""
    params = step_tensors(cell.spec, tensors)
    prepared = cell.prepare(params)
    if own_projection(cell):

        def own_step(carry: Carry, x_t: Array) -> tuple[Carry, Array]:
            return cell.step(prepared, cell.project(params, x_t) if project else x_t, carry)

        return own_step
    kernel, bias = tensors["input_kernel"], tensors.get("input_bias")

    def step(carry: Carry, x_t: Array) -> tuple[Carry, Array]:
        xp = x_t @ kernel if project else x_t
        return cell.step(prepared, xp if bias is None else xp + bias, carry)

    return step


def apply_cell(cell: Cell, tensors: Mapping[str, Array], dtype: Any, carry: Any,
               inputs: Array) -> tuple[Any, Array]:
    """A Flax cell's call ``(carry, x) -> (carry, y)`` on Flax's carry (``h``, lstm
    ``(c, h)``), in the computation ``dtype`` (``None``: promoted, Flax's way)."""
    dtype = compute_dtype(dtype, inputs, tensors["input_kernel"])
    tensors = {name: jnp.asarray(t, dtype) for name, t in tensors.items()}
    internal = tuple(jnp.asarray(s, dtype) for s in to_internal_carry(cell.spec, carry))
    new, y = cell_step(cell, tensors, project=True)(internal, jnp.asarray(inputs, dtype))
    return to_flax_carry(cell.spec, new), y


# -- carries -----------------------------------------------------------------------------


def to_internal_carry(spec: Spec, carry: Any) -> Carry:
    """Flax carry (``h`` or lstm ``(c, h)``) to the shared cells' ``(h,)`` / ``(h, c)``."""
    if spec.has_cell_state:
        c, h = carry
        return (h, c)
    return (carry,)


def to_flax_carry(spec: Spec, carry: Carry) -> Any:
    """The shared cells' ``(h,)`` / ``(h, c)`` to Flax's ``h`` / ``(c, h)``."""
    if spec.has_cell_state:
        h, c = carry
        return (c, h)
    return carry[0]


def zero_carry(spec: Spec, batch_dims: tuple[int, ...], dtype: Any) -> Any:
    """Flax-ordered zero carry: ``h`` ``(*batch, P)``; lstm ``(c (*batch, H), h)``."""
    h = jnp.zeros((*batch_dims, spec.output_size), dtype)
    if spec.has_cell_state:
        return (jnp.zeros((*batch_dims, spec.hidden_size), dtype), h)
    return h


# -- the time loop (pure functions shared by linen and nnx) ----------------------------


def hoists_input(hoist_input: bool | None) -> bool:
    """Resolve ``hoist_input``; ``None`` hoists the input GEMM except on XLA:CPU.

    On XLA:CPU a GEMM inside a scanned step runs on one core, and the runtime runs the
    step's independent input and recurrent GEMMs side by side, so the input GEMM per step
    costs less than one hoisted GEMM run before the scan (docs/flax.md, Speed). Decided
    by ``jax.default_backend()`` when the module is traced.
    """
    if hoist_input is None:
        return jax.default_backend() != "cpu"
    return hoist_input


def runs_parallel(spec: Spec) -> bool:
    """Whether a layer of ``spec`` runs as parallel scans (:data:`PARALLEL_KERNEL`): its
    cell has a parallel form (:meth:`unirnn._cells.Cell.has_parallel_form`) and jax runs
    off the CPU (:func:`unirnn.backends._jax_ops.parallel_here`)."""
    return make_cell(spec, JaxOps()).has_parallel_form() and parallel_here()


def kernel_name(hoist_input: bool | None, spec: Spec | None = None) -> str:
    """``"unirnn-scan"``, or ``"unirnn-scan(input-per-step)"`` when the input GEMM is per step;
    :data:`PARALLEL_KERNEL` for a ``spec`` whose layer runs as parallel scans."""
    if spec is not None and runs_parallel(spec):
        return PARALLEL_KERNEL
    return KERNELS[0] if hoists_input(hoist_input) else KERNELS[1]


def compute_dtype(dtype: Any, *arrays: Array) -> Any:
    """``dtype`` if given, else the promoted dtype of ``arrays`` (Flax's ``promote_dtype``)."""
    return jnp.dtype(dtype) if dtype is not None else jnp.result_type(*arrays)


def run_direction(
    cell: Cell,
    tensors: Mapping[str, Array],
    x: Array,
    carry: Carry,
    valid: Array | None,
    unroll: int = 1,
    hoist_input: bool = True,
) -> tuple[Array, Carry]:
    """Scan one layer-direction over time-major ``x`` ``(T, N, I_k)``, in time order.

    The :class:`unirnn._stack.Scan` of the Flax backend (the stack runner reverses
    backward directions). Returns outputs ``(T, N, P)``, zero where ``valid``
    (``(T, N, 1)`` or ``None``) is false, and the carry after each sequence's last valid
    step. ``hoist_input``: project every step's input in one GEMM ahead of the scan;
    ``False`` projects inside each step instead. A cell with a parallel form (minGRU,
    minLSTM) runs as one associative scan instead (:meth:`unirnn._cells.Cell.parallel`)
    off XLA:CPU (:func:`unirnn.backends._jax_ops.parallel_here`).
    """
    if cell.has_parallel_form() and parallel_here():
        params = step_tensors(cell.spec, tensors)
        parallel = cell.parallel(cell.prepare(params), cell.project(params, x), carry, valid)
        if parallel is not None:
            return parallel
    # Step t reads step t+1's inputs into the carry (its inputs are rolled one step ahead).
    # A scanned input is a dynamic-slice inside the step; XLA:CPU fuses it into the gate
    # math, and that fusion runs unvectorised (a 256-wide GRU scan ~1.6x slower). Carried,
    # the gate fusion reads plain buffers; the slice feeds only the next carry.
    x = jnp.roll(x, -1, axis=0)
    # every step's input projection in one GEMM; b_x is added in the step, where it fuses
    # (a cell's own projection, a layer norm, takes b_x here)
    if not hoist_input:
        xs = x
    elif own_projection(cell):
        xs = cell.project(step_tensors(cell.spec, tensors), x)
    else:
        xs = x @ tensors["input_kernel"]
    inputs = xs if valid is None else (xs, jnp.roll(valid, -1, axis=0))
    first = jax.tree_util.tree_map(lambda a: a[-1], inputs)  # step 0's, rolled to the end
    one_step = cell_step(cell, tensors, project=not hoist_input)

    def masked_step(carry: Carry, current: Any) -> tuple[Carry, Array]:
        x_t, valid_t = current if valid is not None else (current, None)
        new, y = one_step(carry, x_t)
        if valid_t is not None:
            new = tuple(jnp.where(valid_t, n, o) for n, o in zip(new, carry))
            y = jnp.where(valid_t, y, jnp.zeros_like(y))
        return new, y

    # For the backward pass keep only each step's GEMM outputs and recompute its gate math
    # (on XLA:CPU 15-20% faster forward+backward for a GRU, the same for an LSTM).
    masked_step = jax.checkpoint(masked_step, policy=jax.checkpoint_policies.dots_saveable,
                                 prevent_cse=False)

    def step(state: tuple[Carry, Any], following: Any) -> tuple[tuple[Carry, Any], Array]:
        carry, y = masked_step(*state)
        return (carry, following), y

    (carry, _), out = jax.lax.scan(step, (carry, first), inputs, unroll=unroll)
    return out, carry


def _concrete_lengths(seq_lengths: Any, batch: int, steps: int) -> Array | None:
    """Validate ``seq_lengths`` when its values are known (not under ``jit``)."""
    if seq_lengths is None:
        return None
    if not isinstance(seq_lengths, jax.core.Tracer):
        check_lengths(np.asarray(seq_lengths), batch, steps)
    return jnp.asarray(seq_lengths, jnp.int32)


def apply_stack(
    spec: Spec,
    cell: Cell,
    params: Mapping[tuple[int, str], Mapping[str, Array]],
    inputs: Array,
    initial_carry: Any,
    seq_lengths: Array | None,
    dropout: Callable[[Array], Array] | None,
    dtype: Any,
    time_major: bool,
    reverse: bool,
    unroll: int,
    hoist_input: bool | None = None,
) -> tuple[tuple[Any, ...], Array]:
    """Check the call, cast to the computation dtype and run :func:`unirnn._stack.run_stack`
    with :func:`run_direction` as its scan.

    Shared by the linen and nnx layers; returns ``(final Flax carries, outputs)`` in the
    input's layout. ``hoist_input=None``: see :func:`hoists_input`.
    """
    if reverse and spec.bidirectional:
        raise InputError("reverse: expected a unidirectional spec; received bidirectional=True")
    check_input_shape(spec, tuple(inputs.shape), "(T, N, I)" if time_major else "(N, T, I)",
                      time_axis=0 if time_major else 1, dtype=inputs.dtype)
    x = inputs if time_major else jnp.swapaxes(inputs, 0, 1)
    steps, batch = x.shape[:2]
    lengths = _concrete_lengths(seq_lengths, batch, steps)
    dtype = compute_dtype(dtype, x, params[0, "forward"]["input_kernel"])
    tensors = {
        key: {name: jnp.asarray(t, dtype) for name, t in p.items()} for key, p in params.items()
    }
    carries = [to_internal_carry(spec, c) for c in _carries(spec, initial_carry, batch, dtype)]
    hoisted = hoists_input(hoist_input)

    def scan(layer: int, direction: str, x_k: Array, carry: Carry, valid: Array | None
             ) -> tuple[Array, Carry]:
        return run_direction(cell, tensors[layer, direction], x_k, carry, valid, unroll,
                             hoisted)

    outputs, finals = run_stack(spec, JaxOps(), scan, jnp.asarray(x, dtype), carries,
                                lengths=lengths, dropout=dropout, reverse=reverse)
    flax_finals = tuple(to_flax_carry(spec, c) for c in finals)
    return flax_finals, (outputs if time_major else jnp.swapaxes(outputs, 0, 1))


def _carries(spec: Spec, initial_carry: Any, batch: int, dtype: Any) -> list[Any]:
    """The layer carry as a list of Flax-ordered cell carries, checked and cast."""
    rows = spec.num_layers * spec.num_directions
    if initial_carry is None:
        return [zero_carry(spec, (batch,), dtype) for _ in range(rows)]
    if not isinstance(initial_carry, (tuple, list)) or len(initial_carry) != rows:
        raise InputError(
            f"initial_carry: expected a tuple of {rows} cell carries (one per layer and "
            f"direction); received {type(initial_carry).__name__}"
            + (f" of length {len(initial_carry)}" if isinstance(initial_carry, (tuple, list))
               else "")
        )
    flat = [leaf for carry in initial_carry for leaf in jax.tree_util.tree_leaves(carry)]
    check_state_list(spec, flat, batch, "initial_carry",
                     ("c", "h") if spec.has_cell_state else ("h",))
    return [jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), c) for c in initial_carry]


# -- initialisers ------------------------------------------------------------------------


def _constant(value: Any) -> Callable[..., Array]:
    return lambda key, shape, dtype: jnp.asarray(value, dtype)


def _recurrent_init(gates: int) -> Callable[..., Array]:
    """Flax cells' orthogonal recurrent init, one ``(P, H)`` block per gate."""
    orthogonal = jax.nn.initializers.orthogonal()

    def init(key: Array, shape: tuple[int, int], dtype: Any) -> Array:
        rows, cols = shape
        keys = jax.random.split(key, gates)
        return jnp.concatenate([orthogonal(k, (rows, cols // gates), dtype) for k in keys], -1)

    return init


def _drawn_in_float32(init: Callable[..., Array]) -> Callable[..., Array]:
    """``init`` drawn in at least float32, then cast: jax's orthogonal initialiser runs a QR
    decomposition, which has no bfloat16 (or float16) kernel."""

    def wrapped(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
        return init(key, shape, jnp.promote_types(dtype, jnp.float32)).astype(dtype)

    return wrapped


def _uniform(bound: float) -> Callable[..., Array]:
    """Uniform in ``[-bound, bound)`` (:func:`unirnn.init_weights`' ``"uniform"``)."""

    def init(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
        return jax.random.uniform(key, shape, jnp.promote_types(dtype, jnp.float32),
                                  -bound, bound).astype(dtype)

    return init


def param_inits(spec: Spec, in_features: int) -> dict[str, Callable[..., Array]]:
    """Flax's initialisers per parameter of one layer-direction
    (:func:`unirnn.layouts.kernels.kernel_layout_shapes`): lecun normal input and
    projection kernels, orthogonal recurrent blocks, zero biases and peepholes; a family's
    extra parameters as :func:`unirnn._weights.layer_inits` says (``"ones"``: a layer-norm
    scale, ``"zeros"``: an offset, ``"uniform"``: ``±1/sqrt(H)`` as
    :func:`unirnn.init_weights`)."""
    zeros = jax.nn.initializers.zeros
    builtin = {
        "input_kernel": _drawn_in_float32(jax.nn.initializers.lecun_normal()),
        "recurrent_kernel": _drawn_in_float32(_recurrent_init(spec.num_gates)),
        "input_bias": zeros,
        "recurrent_bias": zeros,
        "peepholes": zeros,
        "projection_kernel": _drawn_in_float32(jax.nn.initializers.lecun_normal()),
    }
    by_kind = {"ones": jax.nn.initializers.ones, "zeros": zeros,
               "uniform": _uniform(1.0 / float(np.sqrt(spec.hidden_size)))}
    inits = {}
    for short, kind in layer_inits(spec, in_features).items():
        if short in KERNEL_LAYOUT:
            name = KERNEL_LAYOUT[short][0]
            inits[name] = builtin[name]
        else:
            inits[short] = by_kind[kind]
    assert set(inits) == set(kernel_layout_shapes(spec, in_features))
    return inits


def processing_order(outputs: Array, seq_lengths: Array | None, time_major: bool) -> Array:
    """A reversed run's outputs, given in input order, put in processing order (Flax's
    ``nn.RNN(reverse=True, keep_order=False)``, Keras' ``go_backwards``): step ``t``
    holds the output after reading ``x[L-1-t]``, each sequence reversed within its
    length ``L`` (padded steps stay zero)."""
    y = outputs if time_major else jnp.swapaxes(outputs, 0, 1)
    steps = y.shape[0]
    if seq_lengths is None:
        y = y[::-1]
    else:
        t = jnp.arange(steps)[:, None]
        lengths = jnp.asarray(seq_lengths)[None, :]
        index = jnp.where(t < lengths, lengths - 1 - t, t)
        y = JaxOps().take_time(y, index)
    return y if time_major else jnp.swapaxes(y, 0, 1)
