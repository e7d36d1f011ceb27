"""Input checks every backend shares: shapes in, clear errors out.

These take plain shapes and numpy arrays, so each backend calls them with
``tuple(x.shape)`` before it touches its framework's kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._spec import Spec

__all__ = ["check_input_shape", "check_lengths", "check_state_shape", "state_shapes"]


def check_input_shape(spec: Spec, shape: tuple[int, ...], layout: str = "(N, T, I)",
                      time_axis: int = 1) -> None:
    """Rank 3, the feature size ``I`` last and at least one time step (axis ``time_axis``).

    ``layout`` is how the caller names the axes in messages, e.g. ``"(T, N, I)"``.
    """
    if len(shape) != 3:
        raise ValueError(
            f"input: expected a rank-3 array {layout} with I={spec.input_size}; "
            f"received shape {shape}"
        )
    if shape[-1] != spec.input_size:
        raise ValueError(
            f"input: expected {spec.input_size} features in the last axis of {layout}; "
            f"received shape {shape}"
        )
    steps = shape[time_axis]
    if steps < 1:
        raise ValueError(
            f"input: expected at least one time step (T >= 1) in {layout}; received T={steps} "
            f"(shape {shape})"
        )


def check_lengths(lengths: Any, batch: int, steps: int) -> np.ndarray:
    """``lengths`` as an int64 array of shape ``(N,)`` with every value in ``[1, T]``."""
    array = np.asarray(lengths)
    if array.dtype.kind not in "iu" and not (
        array.dtype.kind == "f" and np.all(np.equal(np.mod(array, 1), 0))
    ):
        raise ValueError(f"lengths: expected integers; received dtype {array.dtype}")
    if array.shape != (batch,):
        raise ValueError(f"lengths: expected shape ({batch},) (one per sequence); "
                         f"received {array.shape}")
    array = array.astype(np.int64)
    bad = (array < 1) | (array > steps)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(
            f"lengths: expected every length in [1, {steps}] (T={steps}); "
            f"received lengths[{index}]={int(array[index])}"
        )
    return array


def state_shapes(spec: Spec, batch: int) -> tuple[tuple[int, ...], ...]:
    """Shapes of the torch-ordered state: ``h`` ``(L*D, N, P)`` and, for lstm, ``c``."""
    rows = spec.num_layers * spec.num_directions
    h = (rows, batch, spec.output_size)
    if spec.family == "lstm":
        return h, (rows, batch, spec.hidden_size)
    return (h,)


def check_state_shape(spec: Spec, name: str, shape: tuple[int, ...], expected: tuple[int, ...]
                      ) -> None:
    if tuple(shape) != tuple(expected):
        raise ValueError(
            f"initial state {name}: expected shape {tuple(expected)} "
            f"(num_layers*num_directions, batch, size); received {tuple(shape)}"
        )
