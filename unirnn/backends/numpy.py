"""The numpy backend: a float32/float64 inference executor that needs no framework.

It is also the reference every other backend is compared with in float64 (itself
checked against the independent oracle in tests/).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .._activations import NUMPY_ACTIVATIONS, resolve_activation
from .._cells import Cell, make_cell
from .._checks import check_input_shape, check_lengths, check_state_shape, state_shapes
from .._evaluation import Evaluation
from .._spec import Spec
from .._weights import Weights, check_weights, init_weights

__all__ = ["NumpyOps", "NumpyRNN", "build", "evaluate", "reverse_padded"]


class NumpyOps:
    backend = "numpy"

    def linear(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        y = x @ w.T
        return y if b is None else y + b

    def split(self, x: np.ndarray, sections: int) -> list[np.ndarray]:
        return np.split(x, sections, axis=-1)

    def clip(self, x: np.ndarray, bound: float) -> np.ndarray:
        return np.clip(x, -bound, bound)

    def activation(self, name: str) -> Callable[[np.ndarray], np.ndarray]:
        return resolve_activation(name, "numpy", NUMPY_ACTIVATIONS)


def reverse_padded(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """Reverse ``x`` (N, T, ...) along time within each sequence's first ``lengths[n]`` steps.

    Padded steps stay where they are, so the backward direction sees the valid steps
    reversed, as PackedSequence and ONNX ``sequence_lens`` define it.
    """
    if lengths is None:
        return x[:, ::-1]
    steps = x.shape[1]
    t = np.arange(steps)[None, :]
    index = np.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return np.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


class NumpyRNN:
    """A recurrent stack run with numpy (inference only: dropout is not applied).

    Call it with ``x`` of shape ``(N, T, I)`` (batch-major):

    >>> import numpy as np, unirnn
    >>> model = unirnn.build(unirnn.lstm(3, 5, num_layers=2), backend="numpy")
    >>> y, (h, c) = model(np.zeros((2, 7, 3), np.float32))
    >>> y.shape, h.shape, c.shape
    ((2, 7, 5), (2, 2, 5), (2, 2, 5))

    Attributes:
        spec: the spec it runs.
        weights: canonical weights in ``dtype``.
        kernel: ``"numpy-loop"``, the path it runs.
    """

    backend = "numpy"
    kernel = "numpy-loop"

    def __init__(self, spec: Spec, weights: Mapping[str, Any] | None = None,
                 dtype: DTypeLike = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype: expected float32 or float64; received {self.dtype}")
        self.spec = spec
        weights = init_weights(spec, dtype=self.dtype) if weights is None else weights
        self.weights: Weights = check_weights(spec, weights).astype(self.dtype)
        self.cell: Cell = make_cell(spec, NumpyOps())
        self._params = {
            (layer, direction): self.weights.layer(layer, direction)
            for layer in range(spec.num_layers)
            for direction in spec.directions
        }
        self._prepared = {key: self.cell.prepare(p) for key, p in self._params.items()}

    def __repr__(self) -> str:
        return f"NumpyRNN({self.spec.to_json()}, dtype={self.dtype})"

    def __call__(
        self,
        x: Any,
        initial_state: Any = None,
        lengths: Any = None,
    ) -> tuple[np.ndarray, Any]:
        """Run the stack.

        Args:
            x: ``(N, T, I)``.
            initial_state: ``h0`` ``(L*D, N, P)``; lstm: ``(h0, c0)`` with ``c0``
                ``(L*D, N, H)``; rows ordered layer 0 forward, layer 0 backward, layer 1...
                ``None``: zeros.
            lengths: ``(N,)`` valid steps per sequence, each in ``[1, T]``; outputs past a
                sequence's length are zero and its final state is the one after its last
                valid step.

        Returns:
            ``(outputs, state)``: outputs ``(N, T, D*P)``; state ``h_n`` ``(L*D, N, P)``,
            for lstm ``(h_n, c_n)``.
        """
        spec = self.spec
        x = np.asarray(x)
        check_input_shape(spec, tuple(x.shape))
        x = x.astype(self.dtype, copy=False)
        batch, steps = x.shape[:2]
        lens = None if lengths is None else check_lengths(lengths, batch, steps)
        mask = None if lens is None else (np.arange(steps)[None, :] < lens[:, None])
        states = self._initial_state(initial_state, batch)

        finals: list[tuple[np.ndarray, ...]] = []
        layer_input = x
        for layer in range(spec.num_layers):
            outputs = []
            for d, direction in enumerate(spec.directions):
                row = layer * spec.num_directions + d
                carry = tuple(s[row] for s in states)
                out, carry = self._run_direction(
                    layer_input, layer, direction, carry, mask, lens
                )
                outputs.append(out)
                finals.append(carry)
            layer_input = np.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        final = tuple(np.stack([f[i] for f in finals]) for i in range(len(states)))
        return layer_input, (final if spec.family == "lstm" else final[0])

    def _initial_state(self, initial_state: Any, batch: int) -> tuple[np.ndarray, ...]:
        shapes = state_shapes(self.spec, batch)
        if initial_state is None:
            return tuple(np.zeros(s, self.dtype) for s in shapes)
        given = initial_state if self.spec.family == "lstm" else (initial_state,)
        if self.spec.family == "lstm" and (
            not isinstance(given, (tuple, list)) or len(given) != 2
        ):
            raise ValueError(
                f"initial state: an lstm takes a pair (h0, c0); received {type(given).__name__}"
            )
        arrays = tuple(np.asarray(s, dtype=self.dtype) for s in given)
        for name, array, shape in zip(("h0", "c0"), arrays, shapes):
            check_state_shape(self.spec, name, array.shape, shape)
        return arrays

    def _run_direction(
        self,
        x: np.ndarray,
        layer: int,
        direction: str,
        carry: tuple[np.ndarray, ...],
        mask: np.ndarray | None,
        lengths: np.ndarray | None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        params = self._params[layer, direction]
        prepared = self._prepared[layer, direction]
        backward = direction == "backward"
        if backward:
            x = reverse_padded(x, lengths)
        xp = self.cell.ops.linear(x, params["w_x"], params.get("b_x"))  # all steps, one GEMM
        outputs = []
        for t in range(x.shape[1]):
            new_carry, y = self.cell.step(prepared, xp[:, t], carry)
            if mask is None:
                carry = new_carry
            else:
                valid = mask[:, t, None]
                carry = tuple(np.where(valid, n, o) for n, o in zip(new_carry, carry))
                y = np.where(valid, y, 0)
            outputs.append(y)
        out = np.stack(outputs, axis=1).astype(self.dtype, copy=False)
        if backward:
            out = reverse_padded(out, lengths)
        return out, carry


def evaluate(
    spec: Spec,
    weights: Mapping[str, Any],
    x: Any,
    *,
    initial_state: Any = None,
    lengths: Any = None,
    dtype: DTypeLike = np.float64,
    cotangent: Any = None,
) -> Evaluation:
    """Run on numpy inputs (see :mod:`unirnn._evaluation`); numpy computes no gradients."""
    if cotangent is not None:
        raise ValueError("the numpy backend computes no gradients; pass cotangent=None")
    model = NumpyRNN(spec, weights, dtype=dtype)
    outputs, state = model(x, initial_state=initial_state, lengths=lengths)
    return Evaluation(outputs, state if isinstance(state, tuple) else (state,), model.kernel)


def build(spec: Spec, weights: Mapping[str, Any] | None = None,
          dtype: DTypeLike = np.float32) -> NumpyRNN:
    """``unirnn.build(spec, backend="numpy", weights=None, dtype=np.float32)``."""
    return NumpyRNN(spec, weights, dtype=dtype)
