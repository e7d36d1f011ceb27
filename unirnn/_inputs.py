"""The one input check: inputs, initial states, lengths and cotangents, the same everywhere.

Every backend's module call and ``evaluate`` check what they are given here, before
they touch their framework's kernels, so a wrong shape reads the same in numpy, torch,
Keras and Flax. The checks take shapes (any array with ``.shape``), never values, except
:func:`check_lengths`, which reads the lengths on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._errors import InputError
from ._spec import Spec

__all__ = [
    "check_cotangent",
    "check_input_shape",
    "check_lengths",
    "check_state_list",
    "check_stacked_state",
    "state_shapes",
]


def _shape(array: Any) -> tuple[Any, ...]:
    return tuple(getattr(array, "shape", np.shape(array)))


def check_input_shape(spec: Spec, shape: tuple[Any, ...], layout: str = "(N, T, I)",
                      time_axis: int = 1, dtype: Any = None) -> None:
    """Rank 3, the feature size ``I`` last and at least one time step (axis ``time_axis``);
    with ``dtype``, real numbers (floating point or integer: not complex, bool or object).

    ``layout`` is how the caller names the axes in messages, e.g. ``"(T, N, I)"``. An
    unknown size (``None``, as Keras' functional API traces) is not judged.
    """
    if dtype is not None:
        name = str(getattr(dtype, "name", dtype))
        try:
            kind = np.dtype(dtype).kind
        except TypeError:
            kind = "?"
        if "float" in name:  # bfloat16 and friends (ml_dtypes) are numpy kind "V"
            kind = "f"
        if kind not in "fiu" or name.startswith("bool"):
            raise InputError(f"input: expected real numbers (a floating-point array); "
                             f"received dtype {name}")
    if len(shape) != 3:
        raise InputError(
            f"input: expected a rank-3 array {layout} with I={spec.input_size}; "
            f"received shape {shape}"
        )
    if shape[-1] is not None and shape[-1] != spec.input_size:
        raise InputError(
            f"input: expected {spec.input_size} features in the last axis of {layout}; "
            f"received shape {shape}"
        )
    steps = shape[time_axis]
    if steps is not None and steps < 1:
        raise InputError(
            f"input: expected at least one time step (T >= 1) in {layout}; received T={steps} "
            f"(shape {shape})"
        )


def check_lengths(lengths: Any, batch: int, steps: int) -> np.ndarray:
    """``lengths`` as an int64 array of shape ``(N,)`` with every value in ``[1, T]``."""
    array = np.asarray(lengths)
    if array.dtype.kind not in "iu" and not (
        array.dtype.kind == "f" and np.all(np.equal(np.mod(array, 1), 0))
    ):
        raise InputError(f"lengths: expected integers; received dtype {array.dtype}")
    if array.shape != (batch,):
        raise InputError(f"lengths: expected shape ({batch},) (one per sequence); "
                         f"received {array.shape}")
    array = array.astype(np.int64)
    bad = (array < 1) | (array > steps)
    if bad.any():
        index = int(np.argmax(bad))
        raise InputError(
            f"lengths: expected every length in [1, {steps}] (T={steps}); "
            f"received lengths[{index}]={int(array[index])}"
        )
    return array


def state_shapes(spec: Spec, batch: int) -> tuple[tuple[int, ...], ...]:
    """Shapes of the torch-shaped state: ``h`` ``(L*D, N, P)`` and, for lstm, ``c``."""
    rows = spec.num_layers * spec.num_directions
    h = (rows, batch, spec.output_size)
    if spec.has_cell_state:
        return h, (rows, batch, spec.hidden_size)
    return (h,)


def _state_names(spec: Spec) -> tuple[str, ...]:
    return spec.state_names


def check_stacked_state(spec: Spec, state: Any, batch: int, name: str = "initial_state"
                        ) -> tuple[Any, ...]:
    """The torch-shaped initial state as a tuple ``(h0,)`` or, for lstm, ``(h0, c0)``.

    ``state`` is ``h0`` ``(L*D, N, P)``, or for lstm the pair ``(h0, c0)`` with ``c0``
    ``(L*D, N, H)``; rows are layer 0 forward, layer 0 backward, layer 1 ... ``name`` is
    what the caller calls it (``"hx"`` for torch modules).
    """
    if spec.has_cell_state:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            what = type(state).__name__ + (f" of length {len(state)}"
                                           if isinstance(state, (tuple, list)) else "")
            raise InputError(f"{name}: an lstm takes a pair (h0, c0); received {what}")
        given = tuple(state)
    else:
        if isinstance(state, (tuple, list)) or not hasattr(state, "shape") and \
                not isinstance(state, np.ndarray):
            raise InputError(f"{name}: a {spec.family} takes one array h0; received "
                             f"{type(state).__name__}")
        given = (state,)
    for label, array, shape in zip(("h0", "c0"), given, state_shapes(spec, batch)):
        received = _shape(array)
        if received != shape:
            raise InputError(
                f"{name} {label}: expected shape {shape} (num_layers*num_directions, batch, "
                f"size); received {received}"
            )
    return given


def check_state_list(spec: Spec, states: Sequence[Any], batch: Any,
                     name: str = "initial_state", order: Sequence[str] | None = None) -> None:
    """A flat list of per-row states: per layer, then direction, each ``[h]`` or ``[h, c]``.

    ``order`` names the entries of one row (``("h", "c")`` Keras, ``("c", "h")`` Flax's
    carry); each is ``(N, P)`` for ``h`` and ``(N, H)`` for ``c``. ``batch`` ``None``
    (unknown, under Keras' functional API) is not judged.
    """
    names = tuple(order) if order is not None else _state_names(spec)
    sizes = {"h": spec.output_size, "c": spec.hidden_size}
    expected = [(k, direction, part) for k in range(spec.num_layers)
                for direction in spec.directions for part in names]
    if len(states) != len(expected):
        raise InputError(
            f"{name}: expected {len(expected)} tensors (per layer and direction, "
            f"[{', '.join(names)}]); received {len(states)}"
        )
    for i, (state, (k, direction, part)) in enumerate(zip(states, expected)):
        received = _shape(state)
        size = sizes[part]
        if len(received) != 2 or received[1] != size or (
                None not in (batch, received[0]) and received[0] != batch):
            raise InputError(
                f"{name}[{i}] (layer {k}, {direction}, {part}): expected shape "
                f"(N, {size}) with N={batch}; received {received}"
            )


def check_cotangent(shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """A cotangent has the outputs' shape ``(N, T, D*P)``."""
    if tuple(shape) != tuple(expected):
        raise InputError(f"cotangent: expected shape {tuple(expected)} (N, T, D*P), the "
                         f"outputs'; received {tuple(shape)}")
