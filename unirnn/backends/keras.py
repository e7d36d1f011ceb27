"""The Keras 3 backend: a unirnn spec as one Keras layer, on any Keras backend.

``unirnn.build(spec, backend="keras")`` returns a :class:`UniRNN` layer. When Keras' own
layers compute the spec exactly (``SimpleRNN``, ``LSTM(activation, recurrent_activation)``,
``GRU(reset_after=...)``, ``use_bias``, stacked, wrapped in ``Bidirectional``), the layer
holds and runs those, so Keras' fused (cuDNN) path applies where Keras allows it; its
``kernel`` is then ``"keras.layers.LSTM"`` (``GRU``, ``SimpleRNN``). Every other spec (a
GELU update gate only, peepholes, projection, cell clip, ``update="new"``, a registered
activation) runs unirnn's custom cell written with ``keras.ops``
(:class:`~unirnn.backends._keras_cell.UniRNNCell`): one GEMM projects the inputs of all
steps, then Keras' backend RNN loop (``lax.scan``, ``tf.while_loop``, a torch loop) runs
only the recurrent part (on jax the step projects its own input: see
:data:`HOIST_INPUT_PROJECTION`); its ``kernel`` is ``"unirnn.keras-cell"``.

Example:
    >>> import numpy as np, unirnn
    >>> layer = unirnn.build(unirnn.lstm(3, 8, activation="relu"), backend="keras")
    >>> layer.kernel
    'keras.layers.LSTM'
    >>> tuple(layer(np.zeros((2, 5, 3), "float32")).shape)
    (2, 5, 8)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from .._checks import check_input_shape, check_lengths, check_state_shape, state_shapes
from .._evaluation import Evaluation
from .._spec import Spec
from .._weights import Weights, check_weights, weight_name
from ._keras_cell import KERAS_ACTIVATIONS, KerasOps, UniRNNCell, as_spec
from ._keras_layout import (
    NATIVE_CLASSES,
    bias_folded,
    from_native_arrays,
    native_config,
    native_problem,
    to_native_arrays,
)

__all__ = ["KERAS_ACTIVATIONS", "KerasOps", "UniRNN", "UniRNNCell", "build", "evaluate"]

CUSTOM_KERNEL = "unirnn.keras-cell"
PATHS = ("auto", "native", "custom")

HOIST_INPUT_PROJECTION = keras.backend.backend() != "jax"
"""Project all steps' inputs in one GEMM before the loop (tensorflow, torch). On jax, XLA
fuses the per-step input GEMM into the ``lax.scan`` body and the hoisted form measured
1.35x slower on CPU (benchmarks/bench_keras.py, GRU forward; Keras' own jax GRU kernel,
which hoists, shows the same), so there the step projects its own input."""


def reverse_valid(x: Any, lengths: Any | None) -> Any:
    """Reverse ``x`` ``(N, T, F)`` along time within each sequence's first ``lengths[n]`` steps.

    Padded steps stay in place (DESIGN.md's reverse direction over the valid steps).
    """
    if lengths is None:
        return ops.flip(x, axis=1)
    t = ops.expand_dims(ops.arange(ops.shape(x)[1], dtype="int32"), 0)
    n = ops.expand_dims(ops.cast(lengths, "int32"), 1)
    index = ops.where(t < n, n - 1 - t, t)
    index = ops.broadcast_to(ops.expand_dims(index, -1), ops.shape(x))
    return ops.take_along_axis(x, index, axis=1)


@keras.saving.register_keras_serializable(package="unirnn")
class UniRNN(keras.layers.Layer):
    """A unirnn spec as one Keras layer (stacked, bidirectional), batch-major.

    ``layer(x, mask=None, initial_state=None, training=None)``:

    - ``x``: ``(N, T, I)``.
    - ``mask``: ``(N, T)`` bool, a Keras mask (e.g. from ``keras.layers.Masking``). It
      means DESIGN.md's variable lengths: sequence ``n`` has ``L_n = sum(mask[n])`` valid
      steps ``0..L_n-1`` (masks are expected left-aligned: padding at the end); outputs
      at padded steps are **zero** (Keras' own layers repeat the previous output there);
      the final state is the one after step ``L_n - 1``; the backward direction runs over
      the ``L_n`` valid steps reversed.
    - ``initial_state``: a flat list of ``(N, ·)`` tensors, per layer then direction
      (forward, backward), each ``[h]`` or, for lstm, ``[h, c]`` (Keras' ``Bidirectional``
      order); ``None``: zeros.
    - ``training``: dropout between stacked layers applies only when true.

    Returns ``outputs`` ``(N, T, D*P)`` (``return_sequences=True``) or the last valid
    output ``(N, D*P)`` (each direction's final ``h`` of the top layer, concatenated);
    with ``return_state=True`` the list ``[outputs, *states]``, ``states`` in the order of
    ``initial_state``. ``go_backwards=True`` reads each sequence's valid steps in reverse
    and returns outputs in that processing order, as Keras' ``go_backwards`` does.

    Attributes:
        spec: the :class:`unirnn.Spec`.
        kernel: ``"keras.layers.LSTM"`` / ``"keras.layers.GRU"`` / ``"keras.layers.SimpleRNN"``
            (Keras' own layers run) or ``"unirnn.keras-cell"`` (the custom cell).
        native_layers: per stacked layer, the Keras layer (``Bidirectional`` when
            bidirectional); empty on the custom path.
        cells: per layer and direction, the :class:`UniRNNCell`; empty on the native path.
    """

    def __init__(
        self,
        spec: Spec | Mapping[str, Any] | str,
        path: str = "auto",
        return_sequences: bool = True,
        return_state: bool = False,
        go_backwards: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        spec = as_spec(spec)
        if path not in PATHS:
            raise ValueError(f"path: expected one of {', '.join(PATHS)}; received {path!r}")
        problem = native_problem(spec)
        if path == "native" and problem is not None:
            raise ValueError(f"path='native': Keras' own layers cannot compute this spec: "
                             f"{problem}; use path='auto' or 'custom'")
        self.spec = spec
        self.requested_path = path
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.supports_masking = True
        if problem is None and path == "auto" and self.compute_dtype == "float64" \
                and keras.backend.backend() != "tensorflow":
            # Keras 3's type promotion computes float64 in float32 on jax and torch
            # (BIT64_TO_BIT32_DTYPE), so its own layers are not exact there; the custom
            # cell keeps float64.
            problem = f"float64 on Keras' {keras.backend.backend()} backend"
        self.native = path != "custom" and problem is None
        self.kernel = f"keras.layers.{NATIVE_CLASSES[spec.family]}" if self.native \
            else CUSTOM_KERNEL
        self.native_layers = [self._make_native(k) for k in range(spec.num_layers)] \
            if self.native else []
        self.cells = [] if self.native else [
            UniRNNCell(spec, layer=k, dtype=self.dtype_policy, name=f"layer{k}_{direction}")
            for k in range(spec.num_layers) for direction in spec.directions
        ]
        self.dropout_layer = (
            keras.layers.Dropout(spec.dropout, dtype=self.dtype_policy)
            if spec.dropout > 0 and spec.num_layers > 1 else None
        )
        self.build()

    def _make_native(self, k: int) -> keras.layers.Layer:
        cls = getattr(keras.layers, NATIVE_CLASSES[self.spec.family])
        inner = cls(**native_config(self.spec), return_sequences=True, return_state=True,
                    dtype=self.dtype_policy, name=f"layer{k}")
        if not self.spec.bidirectional:
            return inner
        return keras.layers.Bidirectional(inner, dtype=self.dtype_policy,
                                          name=f"layer{k}_bidirectional")

    def build(self, input_shape: Any = None) -> None:
        for k, layer in enumerate(self.native_layers):
            if not layer.built:
                layer.build((None, None, self.spec.layer_input_size(k)))
        self.built = True

    # -- weights ---------------------------------------------------------------------

    def _native_directions(self, k: int) -> list[keras.layers.Layer]:
        layer = self.native_layers[k]
        if self.spec.bidirectional:
            return [layer.forward_layer, layer.backward_layer]
        return [layer]

    def direction_variables(self) -> dict[tuple[int, str], list[Any]]:
        """``(layer, direction) -> variables``: Keras' ``[kernel, recurrent_kernel(, bias)]``
        on the native path, the cell's variables by canonical name on the custom path."""
        spec = self.spec
        out: dict[tuple[int, str], list[Any]] = {}
        for k in range(spec.num_layers):
            for d, direction in enumerate(spec.directions):
                if self.native:
                    cell = self._native_directions(k)[d].cell
                    out[k, direction] = [cell.kernel, cell.recurrent_kernel] + (
                        [cell.bias] if spec.bias else [])
                else:
                    variables = self.cells[k * spec.num_directions + d]
                    out[k, direction] = list(variables.variables_by_canonical_name().values())
        return out

    def canonical_from_arrays(self, k: int, direction: str, arrays: Sequence[np.ndarray],
                              gradient: bool = False) -> dict[str, np.ndarray]:
        """Values (or gradients, ``gradient=True``) of :meth:`direction_variables` in the
        canonical layout; a folded bias' gradient goes to both ``b_x`` and ``b_h``."""
        spec = self.spec
        if self.native:
            params = from_native_arrays(spec, list(arrays))
            if gradient and bias_folded(spec):
                params["b_h"] = params["b_x"].copy()
            return params
        cell = self.cells[k * spec.num_directions + spec.directions.index(direction)]
        names = list(cell.variables_by_canonical_name())
        return {n: UniRNNCell.to_canonical(n, np.asarray(a)) for n, a in zip(names, arrays)}

    def set_canonical_weights(self, weights: Mapping[str, Any]) -> None:
        """Assign canonical weights (checked against the spec; folded where Keras has one bias)."""
        spec = self.spec
        weights = check_weights(spec, weights)
        for k in range(spec.num_layers):
            for d, direction in enumerate(spec.directions):
                params = weights.layer(k, direction)
                if self.native:
                    target = self._native_directions(k)[d]
                    dtype = target.cell.kernel.dtype
                    target.set_weights([a.astype(dtype) for a in to_native_arrays(spec, params)])
                else:
                    self.cells[k * spec.num_directions + d].set_canonical(params)

    def canonical_weights(self) -> Weights:
        """The layer's weights in the canonical layout (one-bias layouts: ``b_h`` = 0)."""
        out = {}
        for (k, direction), variables in self.direction_variables().items():
            arrays = [ops.convert_to_numpy(v) for v in variables]
            for name, array in self.canonical_from_arrays(k, direction, arrays).items():
                out[weight_name(k, direction, name)] = array
        return Weights(out)

    # -- running ---------------------------------------------------------------------

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask if self.return_sequences else None

    def call(self, inputs: Any, mask: Any = None, initial_state: Any = None,
             training: Any = None) -> Any:
        spec = self.spec
        D, S = spec.num_directions, (2 if spec.family == "lstm" else 1)
        x = inputs
        lengths = valid = None
        if mask is not None:
            lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
            steps = ops.arange(ops.shape(x)[1], dtype="int32")
            valid = ops.expand_dims(steps, 0) < ops.expand_dims(lengths, 1)
        if self.go_backwards:
            x = reverse_valid(x, lengths)
        if initial_state is not None:
            initial_state = list(initial_state)
            expected = spec.num_layers * D * S
            if len(initial_state) != expected:
                raise ValueError(
                    f"initial_state: expected a list of {expected} tensors (per layer and "
                    f"direction, {'[h, c]' if S == 2 else '[h]'}); received {len(initial_state)}"
                )
        finals: list[list[Any]] = []
        for k in range(spec.num_layers):
            given = None if initial_state is None else initial_state[k * D * S:(k + 1) * D * S]
            if self.native:
                y, states = self._run_native(k, x, given, valid, training)
            else:
                y, states = self._run_custom(k, x, given, valid, lengths, training)
            finals.extend(states)
            if self.dropout_layer is not None and k < spec.num_layers - 1:
                y = self.dropout_layer(y, training=training)
            x = y
        if self.return_sequences:
            outputs = x
        else:
            top = finals[-D:]
            outputs = top[0][0] if D == 1 else ops.concatenate([s[0] for s in top], axis=-1)
        if not self.return_state:
            return outputs
        return [outputs, *(s for states in finals for s in states)]

    def _run_native(self, k: int, x: Any, given: Any, valid: Any,
                    training: Any) -> tuple[Any, list[list[Any]]]:
        S = 2 if self.spec.family == "lstm" else 1
        result = self.native_layers[k](x, initial_state=given, mask=valid, training=training)
        y, states = result[0], list(result[1:])
        if valid is not None:  # Keras repeats the previous output at padded steps
            y = y * ops.cast(ops.expand_dims(valid, -1), y.dtype)
        return y, [states[i:i + S] for i in range(0, len(states), S)]

    def _run_custom(self, k: int, x: Any, given: Any, valid: Any, lengths: Any,
                    training: Any) -> tuple[Any, list[list[Any]]]:
        spec = self.spec
        S = 2 if spec.family == "lstm" else 1
        outputs, finals = [], []
        for d, direction in enumerate(spec.directions):
            cell = self.cells[k * spec.num_directions + d]
            backward = direction == "backward"
            inp = reverse_valid(x, lengths) if backward else x
            xp = cell.project(inp) if HOIST_INPUT_PROJECTION else inp
            if given is None:
                batch = ops.shape(x)[0]
                init = [ops.zeros((batch, size), dtype=xp.dtype) for size in cell.state_size]
            else:
                init = [ops.cast(s, xp.dtype) for s in given[d * S:(d + 1) * S]]
            prepared = cell.step_params()

            def step(xp_t: Any, states: Any, cell: UniRNNCell = cell,
                     prepared: Any = prepared) -> tuple[Any, list[Any]]:
                if not HOIST_INPUT_PROJECTION:
                    xp_t = cell.project(xp_t)
                return cell.recurrent_step(prepared, xp_t, states)

            _, y, states = keras.src.backend.rnn(
                step, xp, init, mask=valid, zero_output_for_mask=True,
                input_length=xp.shape[1], return_all_outputs=True,
            )
            outputs.append(reverse_valid(y, lengths) if backward else y)
            finals.append(list(states))
        y = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=-1)
        return y, finals

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "spec": self.spec.to_dict(),
            "path": self.requested_path,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
        }


def build(
    spec: Spec,
    weights: Mapping[str, Any] | None = None,
    *,
    path: str = "auto",
    dtype: str = "float32",
    return_sequences: bool = True,
    return_state: bool = False,
    go_backwards: bool = False,
    name: str | None = None,
) -> UniRNN:
    """``unirnn.build(spec, backend="keras", weights=None, path="auto", dtype="float32", ...)``.

    Args:
        spec: the cell stack.
        weights: canonical weights; ``None`` keeps Keras' initialisation (native) or
            uniform ``±1/sqrt(H)`` (custom cell).
        path: ``"auto"`` (Keras' own layers when they compute the spec exactly, else the
            custom cell), ``"native"`` (raise ``ValueError`` naming the field when Keras
            cannot) or ``"custom"`` (force unirnn's cell).
        dtype: the layer's dtype (``"float32"``, ``"float64"``; jax needs x64 for float64).
        return_sequences, return_state, go_backwards: Keras' meanings (see :class:`UniRNN`).
        name: the Keras layer name.
    """
    layer = UniRNN(spec, path=path, return_sequences=return_sequences,
                   return_state=return_state, go_backwards=go_backwards, dtype=dtype, name=name)
    if weights is not None:
        layer.set_canonical_weights(weights)
    return layer


def _check_dtype(dtype: Any) -> str:
    name = np.dtype(dtype).name
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype: expected float32 or float64; received {name}")
    if name == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.read("jax_enable_x64"):
            raise ValueError("dtype float64 on Keras' jax backend needs x64: set "
                             "JAX_ENABLE_X64=1 before importing jax; received x64 disabled")
    return name


def evaluate(
    spec: Spec,
    weights: Mapping[str, Any],
    x: Any,
    *,
    initial_state: Any = None,
    lengths: Any = None,
    dtype: Any = "float64",
    cotangent: Any = None,
    path: str = "auto",
) -> Evaluation:
    """Run on numpy inputs (see :mod:`unirnn._evaluation`) with Keras' current backend.

    ``lengths`` becomes a Keras mask; ``initial_state`` is torch-ordered ``(L*D, N, ·)``;
    with ``cotangent`` ``(N, T, D*P)``, ``grads`` holds d sum(outputs*cotangent) for ``"x"``
    and every canonical weight (one-bias layouts: the bias' gradient in ``b_x`` and ``b_h``).
    """
    name = _check_dtype(dtype)
    x = np.asarray(x, dtype=name)
    check_input_shape(spec, tuple(x.shape))
    batch, steps = x.shape[:2]
    layer = build(spec, weights, path=path, dtype=name, return_sequences=True,
                  return_state=True)
    mask = None
    if lengths is not None:
        lens = check_lengths(lengths, batch, steps)
        mask = np.arange(steps)[None, :] < lens[:, None]
    state = None
    if initial_state is not None:
        given = tuple(initial_state) if spec.family == "lstm" else (initial_state,)
        arrays = [np.asarray(s, dtype=name) for s in given]
        for label, array, shape in zip(("h0", "c0"), arrays, state_shapes(spec, batch)):
            check_state_shape(spec, label, array.shape, shape)
        state = [a[row] for row in range(arrays[0].shape[0]) for a in arrays]

    def run(inputs: Any) -> list[Any]:
        return layer(inputs, mask=mask, initial_state=state, training=False)

    grads = None
    if cotangent is None:
        result = run(x)
    else:
        from ._keras_gradients import gradients

        cot = np.asarray(cotangent, dtype=name)
        result, dx, var_grads = gradients(layer, run, x, cot)
        grads = {"x": dx}
        for (k, direction), arrays in var_grads.items():
            for tensor, g in layer.canonical_from_arrays(k, direction, arrays, True).items():
                grads[weight_name(k, direction, tensor)] = g
    result = [ops.convert_to_numpy(r) for r in result]
    S = 2 if spec.family == "lstm" else 1
    flat = result[1:]
    state_out = tuple(np.stack(flat[i::S]) for i in range(S))
    return Evaluation(result[0], state_out, layer.kernel, grads)
