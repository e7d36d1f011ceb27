"""The two ways a :class:`~unirnn.backends.keras.UniRNN` computes its spec, behind one interface.

:class:`NativeStrategy` holds and runs Keras' own ``SimpleRNN``/``LSTM``/``GRU`` (in
``Bidirectional``, one per stacked layer), so Keras' fused kernels apply where Keras allows
them; :class:`CustomStrategy` holds one :class:`~unirnn.backends._keras_cell.UniRNNCell` per
layer and direction and runs them through the stack runner (:func:`unirnn._stack.run_stack`)
with Keras' backend loop as the per-direction scan. The layer picks one in its constructor
and never asks which it holds again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import keras
import numpy as np
from keras import ops

from .._spec import Spec
from .._stack import Carry, run_stack
from ..layouts.keras import (
    NATIVE_CLASSES,
    from_native_arrays,
    native_config,
    one_bias,
    to_native_arrays,
)
from ..layouts.kernels import to_canonical_array
from ._keras_cell import KerasOps, UniRNNCell
from ._keras_scans import on_cpu_only

__all__ = ["CUSTOM_KERNEL", "HOIST_INPUT_PROJECTION", "PARALLEL_KERNEL", "CustomStrategy",
           "NativeStrategy", "Strategy"]

CUSTOM_KERNEL = "unirnn.keras-cell"
"""The custom cell stepped by Keras' backend loop."""

PARALLEL_KERNEL = "unirnn.keras-parallel-scan"
"""The custom cell of a family whose state is linear in itself with input-only
coefficients (minGRU, minLSTM: :meth:`unirnn._cells.Cell.parallel`): per layer and
direction the gates of every step at once, then the linear recurrence as an associative
scan over time (:meth:`~unirnn.backends._keras_cell.KerasOps.linear_scan`), no step loop
of the cell. On an accelerator only: without one (:func:`~unirnn.backends._keras_scans.
on_cpu_only`) the cell is stepped, which measured faster (jax backend, N=32, T=512,
I=H=256: 62-77 ms stepped against 97-101 ms forward)."""

PARALLEL_ON_CPU = False
"""Whether minGRU and minLSTM run their parallel form without an accelerator too (tests)."""

HOIST_INPUT_PROJECTION = keras.backend.backend() != "jax"
"""Project all steps' inputs in one GEMM before the loop (tensorflow, torch). On jax, XLA
fuses the per-step input GEMM into the ``lax.scan`` body and the hoisted form measured
1.35x slower on CPU (benchmarks/bench_keras.py, GRU forward; Keras' own jax GRU kernel,
which hoists, shows the same), so there the step projects its own input."""

Dropout = Callable[[Any], Any]


class Strategy(Protocol):
    """One variable structure of a ``UniRNN``: its sub-layers, weights and run."""

    kernel: str
    """What runs: ``"keras.layers.LSTM"`` (``GRU``, ``SimpleRNN``), ``"unirnn.keras-cell"``
    or ``"unirnn.keras-parallel-scan"``."""
    resolved_path: str
    """``"native"`` or ``"custom"``: what ``get_config`` stores as ``path``."""
    tracked_as: str
    """The ``UniRNN`` attribute that tracks :attr:`layers`. Keras saves variables under the
    attribute path that tracks them (``uni_rnn/native_layers/lstm/cell/vars/0``,
    ``uni_rnn/cells/uni_rnn_cell/vars/0``), so these names keep files loading."""
    layers: list[keras.layers.Layer]

    def build(self) -> None:
        """Create every variable (the input sizes are the spec's)."""
        ...

    def direction_variables(self) -> dict[tuple[int, str], list[Any]]:
        """``(layer, direction) -> variables``, in a fixed order."""
        ...

    def to_canonical(self, layer: int, direction: str, arrays: Sequence[np.ndarray],
                     gradient: bool = False) -> dict[str, np.ndarray]:
        """Values (or gradients) of :meth:`direction_variables` as canonical tensors."""
        ...

    def set_canonical(self, layer: int, direction: str,
                      params: Mapping[str, np.ndarray]) -> None:
        """Assign one layer and direction's canonical tensors."""
        ...

    def run(self, x: Any, carries: Sequence[Carry] | None, mask: Any, training: Any,
            dropout: Dropout | None) -> tuple[Any, list[Carry]]:
        """``x`` ``(N, T, I)``, ``carries`` one per layer and direction (``None``: zeros),
        ``mask`` ``(N, T)`` bool or ``None``; ``dropout`` applies between layers. Returns
        outputs ``(N, T, D*P)``, zero at masked steps, and the final carries."""
        ...


def _jax_on_cpu_only() -> bool:
    """Keras runs on jax and jax sees no accelerator."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return all(device.platform == "cpu" for device in jax.devices())


class NativeStrategy:
    """Keras' own layers, one per stacked layer (``Bidirectional`` when bidirectional)."""

    resolved_path = "native"
    tracked_as = "native_layers"

    def __init__(self, spec: Spec, dtype: Any, interface: Any = None) -> None:
        self.spec = spec
        self.kernel = f"keras.layers.{NATIVE_CLASSES[spec.family]}"
        # Keras' own keywords: unroll, recurrent_dropout, dropout (LayerInterface)
        self.options = {} if interface is None else interface.native_options()
        self.batch_size = getattr(interface, "batch_size", None) if self.options.get(
            "stateful") else None  # a stateful layer's states have a fixed batch
        self.layers = [self._make(k, dtype) for k in range(spec.num_layers)]

    def _make(self, k: int, dtype: Any) -> keras.layers.Layer:
        cls = getattr(keras.layers, NATIVE_CLASSES[self.spec.family])
        options: dict[str, Any] = {}
        if self.spec.family == "gru" and _jax_on_cpu_only():
            # Keras' jax "fused" GRU is a lax.scan over a hoisted input projection, not a
            # cuDNN kernel; on CPU it measured 1.3-1.5x slower than the generic loop
            # (benchmarks/bench_keras.py), so take the loop there.
            options["use_cudnn"] = False
        inner = cls(**native_config(self.spec), **options, **self.options, return_sequences=True,
                    return_state=True, dtype=dtype, name=f"layer{k}")
        if not self.spec.bidirectional:
            return inner
        return keras.layers.Bidirectional(inner, dtype=dtype, name=f"layer{k}_bidirectional")

    def build(self) -> None:
        for k, layer in enumerate(self.layers):
            if not layer.built:
                layer.build((self.batch_size, None, self.spec.layer_input_size(k)))

    def _direction(self, k: int, direction: str) -> keras.layers.Layer:
        layer = self.layers[k]
        if not self.spec.bidirectional:
            return layer
        return layer.forward_layer if direction == "forward" else layer.backward_layer

    def direction_variables(self) -> dict[tuple[int, str], list[Any]]:
        out = {}
        for k in range(self.spec.num_layers):
            for direction in self.spec.directions:
                cell = self._direction(k, direction).cell
                out[k, direction] = [cell.kernel, cell.recurrent_kernel] + (
                    [cell.bias] if self.spec.bias else [])
        return out

    def to_canonical(self, layer: int, direction: str, arrays: Sequence[np.ndarray],
                     gradient: bool = False) -> dict[str, np.ndarray]:
        params = from_native_arrays(self.spec, list(arrays))
        if gradient and one_bias(self.spec):  # bias = b_x + b_h: one gradient for both
            params["b_h"] = params["b_x"].copy()
        return params

    def set_canonical(self, layer: int, direction: str,
                      params: Mapping[str, np.ndarray]) -> None:
        target = self._direction(layer, direction)
        dtype = target.cell.kernel.dtype
        # upcast before folding b_x + b_h: float32 weights in a float64 layer sum in float64
        params = {name: np.asarray(value, dtype) for name, value in params.items()}
        target.set_weights([a.astype(dtype) for a in to_native_arrays(self.spec, params)])

    def run(self, x: Any, carries: Sequence[Carry] | None, mask: Any, training: Any,
            dropout: Dropout | None) -> tuple[Any, list[Carry]]:
        spec = self.spec
        D, S = spec.num_directions, 2 if spec.has_cell_state else 1
        finals: list[Carry] = []
        for k, layer in enumerate(self.layers):
            if k and dropout is not None:
                x = dropout(x)
            given = None if carries is None else [
                state for carry in carries[k * D:(k + 1) * D] for state in carry]
            result = layer(x, initial_state=given, mask=mask, training=training)
            x, states = result[0], list(result[1:])
            if mask is not None:  # Keras' LSTM/GRU repeat the previous output at masked steps
                x = x * ops.cast(ops.expand_dims(mask, -1), x.dtype)
            finals.extend(tuple(states[i:i + S]) for i in range(0, len(states), S))
        return x, finals


class CustomStrategy:
    """unirnn's cell per layer and direction, run by the stack runner over Keras' loop."""

    resolved_path = "custom"
    tracked_as = "cells"

    def __init__(self, spec: Spec, dtype: Any, interface: Any = None) -> None:
        self.spec = spec
        self.unroll = bool(getattr(interface, "unroll", False))
        self.ops = KerasOps()
        self.layers = [UniRNNCell(spec, layer=k, dtype=dtype, name=f"layer{k}_{direction}")
                       for k in range(spec.num_layers) for direction in spec.directions]
        self.parallel = self.layers[0].cell.has_parallel_form() and (
            PARALLEL_ON_CPU or not on_cpu_only())
        self.kernel = PARALLEL_KERNEL if self.parallel else CUSTOM_KERNEL

    def build(self) -> None:
        pass  # each cell builds its variables in its constructor

    def _cell(self, layer: int, direction: str) -> UniRNNCell:
        return self.layers[layer * self.spec.num_directions + self.spec.directions.index(
            direction)]

    def direction_variables(self) -> dict[tuple[int, str], list[Any]]:
        return {(k, direction): list(self._cell(k, direction).variables_by_canonical_name()
                                     .values())
                for k in range(self.spec.num_layers) for direction in self.spec.directions}

    def to_canonical(self, layer: int, direction: str, arrays: Sequence[np.ndarray],
                     gradient: bool = False) -> dict[str, np.ndarray]:
        names = list(self._cell(layer, direction).variables_by_canonical_name())
        return {name: np.ascontiguousarray(to_canonical_array(name, np.asarray(array)))
                for name, array in zip(names, arrays)}

    def set_canonical(self, layer: int, direction: str,
                      params: Mapping[str, np.ndarray]) -> None:
        self._cell(layer, direction).set_canonical(params)

    def _scan(self, layer: int, direction: str, x: Any, carry: Carry,
              valid: Any) -> tuple[Any, Carry]:
        """One layer and direction over time-major ``x``: Keras' backend loop (``lax.scan``,
        ``tf.while_loop``, a torch loop), a masked step keeping the state, output zero; for
        minGRU and minLSTM one parallel scan over all steps (:data:`PARALLEL_KERNEL`), a
        masked step holding the state there too."""
        cell = self._cell(layer, direction)
        if self.parallel:  # minGRU, minLSTM: the gates of all steps at once, then a scan
            result = cell.cell.parallel(cell.step_params(), cell.project(x), tuple(carry),
                                        valid)
            if result is not None:
                return result
        xp = cell.project(x) if HOIST_INPUT_PROJECTION else x
        prepared = cell.step_params()

        def step(xp_t: Any, states: Any) -> tuple[Any, list[Any]]:
            if not HOIST_INPUT_PROJECTION:
                xp_t = cell.project(xp_t)
            return cell.recurrent_step(prepared, xp_t, states)

        _, y, states = keras.src.backend.rnn(
            step, xp, list(carry), mask=valid, zero_output_for_mask=True,
            input_length=xp.shape[0], time_major=True, return_all_outputs=True,
            unroll=self.unroll,
        )
        return y, tuple(states)

    def run(self, x: Any, carries: Sequence[Carry] | None, mask: Any, training: Any,
            dropout: Dropout | None) -> tuple[Any, list[Carry]]:
        spec = self.spec
        if carries is None:
            batch = ops.shape(x)[0]
            sizes = self.layers[0].state_size
            carries = [tuple(ops.zeros((batch, size), dtype=x.dtype) for size in sizes)
                       ] * (spec.num_layers * spec.num_directions)
        else:
            carries = [tuple(ops.cast(s, x.dtype) for s in carry) for carry in carries]
        time_major = None
        if dropout is not None:
            def time_major(y: Any, dropout: Dropout = dropout) -> Any:
                # drawn on the batch-major layout, as on the native path
                return ops.transpose(dropout(ops.transpose(y, (1, 0, 2))), (1, 0, 2))
        y, finals = run_stack(
            spec, self.ops, self._scan, ops.transpose(x, (1, 0, 2)), carries,
            mask=None if mask is None else ops.transpose(mask, (1, 0)), dropout=time_major,
        )
        return ops.transpose(y, (1, 0, 2)), finals
