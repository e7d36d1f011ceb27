"""The numpy backend: a float32/float64 inference executor that needs no framework.

``unirnn check`` compares every other backend with it in float64; the tests judge it, and
every backend, against the independent oracle in tests/.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .._activations import NUMPY_ACTIVATIONS, resolve_activation
from .._cells import Cell, make_cell, split_points
from .._errors import SpecError
from .._evaluation import Evaluation
from .._inputs import check_input_shape, check_lengths, check_stacked_state, state_shapes
from .._spec import Spec
from .._stack import Carry, run_stack, stack_rows, unstack_rows
from .._weights import Weights, check_weights, init_weights

__all__ = ["KERNELS", "NumpyOps", "NumpyRNN", "build", "evaluate"]

KERNELS = ("numpy-loop",)
"""The paths this backend runs (:class:`NumpyRNN` ``.kernel``)."""


class NumpyOps:
    backend = "numpy"

    def linear(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        y = x @ w.T
        return y if b is None else y + b

    def split(self, x: np.ndarray, sections: int | Sequence[int]) -> list[np.ndarray]:
        parts = sections if isinstance(sections, int) else split_points(sections)
        return np.split(x, parts, axis=-1)

    def lerp(self, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
        return a + w * (b - a)

    def recurrent(self, name: str, x: np.ndarray, w: np.ndarray, b: np.ndarray | None
                  ) -> np.ndarray:
        return self.linear(x, w, b)

    def clip(self, x: np.ndarray, bound: float) -> np.ndarray:
        return np.clip(x, -bound, bound)

    def activation(self, name: str) -> Callable[[np.ndarray], np.ndarray]:
        return resolve_activation(name, "numpy", NUMPY_ACTIVATIONS)

    def layer_norm(self, x: np.ndarray, scale: np.ndarray, offset: np.ndarray | None,
                   eps: float = 1e-5) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + eps) * scale
        return y if offset is None else y + offset

    def log(self, x: np.ndarray) -> np.ndarray:
        return np.log(x)

    def linear_scan(self, log_a: np.ndarray, b: np.ndarray, log_b: np.ndarray | None,
                    h0: np.ndarray) -> np.ndarray:
        # numpy runs the recurrence step by step: it is the reference, not a fast path
        a, h, hs = np.exp(log_a), h0, []
        for t in range(a.shape[0]):
            h = a[t] * h + b[t]
            hs.append(h)
        return np.stack(hs)

    # the stack runner's ops (unirnn._stack.StackOps), time axis 0
    def concat(self, xs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(xs, axis=-1)

    def stack(self, xs: list[np.ndarray]) -> np.ndarray:
        return np.stack(xs)

    def flip_time(self, x: np.ndarray) -> np.ndarray:
        return x[::-1]

    def take_time(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=0)

    def positions(self, steps: int, like: np.ndarray) -> np.ndarray:
        return np.arange(steps)[:, None]

    def where(self, condition: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(condition, a, b)


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
            raise SpecError(f"dtype: expected float32 or float64; received {self.dtype}")
        self.spec = spec
        weights = init_weights(spec, dtype=self.dtype) if weights is None else weights
        self.weights: Weights = check_weights(spec, weights).astype(self.dtype)
        self.ops = NumpyOps()
        self.cell: Cell = make_cell(spec, self.ops)
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
        check_input_shape(spec, tuple(x.shape), dtype=x.dtype)
        x = x.astype(self.dtype, copy=False)
        batch, steps = x.shape[:2]
        lens = None if lengths is None else check_lengths(lengths, batch, steps)
        if initial_state is None:
            states = tuple(np.zeros(s, self.dtype) for s in state_shapes(spec, batch))
        else:
            states = tuple(np.asarray(s, dtype=self.dtype)
                           for s in check_stacked_state(spec, initial_state, batch))
        outputs, finals = run_stack(spec, self.ops, self._scan, x.transpose(1, 0, 2),
                                    unstack_rows(states), lengths=lens)
        final = stack_rows(self.ops, finals)
        return outputs.transpose(1, 0, 2), (final if spec.has_cell_state else final[0])

    def _scan(self, layer: int, direction: str, x: np.ndarray, carry: Carry,
              valid: np.ndarray | None) -> tuple[np.ndarray, Carry]:
        """One layer and direction over time-major ``x`` (:class:`unirnn._stack.Scan`)."""
        params = self._params[layer, direction]
        prepared = self._prepared[layer, direction]
        xp = self.cell.project(params, x)  # all steps, one GEMM
        outputs = []
        for t in range(x.shape[0]):
            new_carry, y = self.cell.step(prepared, xp[t], carry)
            if valid is None:
                carry = new_carry
            else:
                carry = tuple(np.where(valid[t], n, o) for n, o in zip(new_carry, carry))
                y = np.where(valid[t], y, 0)
            outputs.append(y)
        return np.stack(outputs).astype(self.dtype, copy=False), carry


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
        raise SpecError("the numpy backend computes no gradients; pass cotangent=None")
    model = NumpyRNN(spec, weights, dtype=dtype)
    outputs, state = model(x, initial_state=initial_state, lengths=lengths)
    return Evaluation(outputs, state if isinstance(state, tuple) else (state,), model.kernel)


def build(spec: Spec, weights: Mapping[str, Any] | None = None,
          dtype: DTypeLike = np.float32) -> NumpyRNN:
    """``unirnn.build(spec, backend="numpy", weights=None, dtype=np.float32)``."""
    return NumpyRNN(spec, weights, dtype=dtype)
