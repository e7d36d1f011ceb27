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
:data:`HOIST_INPUT_PROJECTION`); its ``kernel`` is ``"unirnn.keras-cell"``. Exactly means
in the layer's dtype too: in float64 Keras' own layers compute float32 on jax and torch, so
there (and on tensorflow for ``gelu``/``leaky_relu``) ``auto`` takes the custom cell.

Importing this module registers :class:`UniRNN` and :class:`UniRNNCell` with Keras
(``unirnn>UniRNN``); ``import unirnn`` alone does not (it imports no framework), so load a
saved model in a fresh process after ``import unirnn.backends.keras``.

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


def native_problem_here(spec: Spec, dtype: str) -> str | None:
    """Why Keras' own layers cannot compute ``spec`` exactly in ``dtype`` on Keras' current
    backend, or ``None`` (:func:`~unirnn.backends._keras_layout.native_problem`, plus a
    Keras defect: on jax with x64 switched on, Keras' fused GRU kernel without bias adds a
    float64 zero bias to float32 and fails, so that GRU takes the custom cell)."""
    backend = keras.backend.backend()
    problem = native_problem(spec, dtype, backend)
    if problem is None and backend == "jax" and spec.family == "gru" and not spec.bias \
            and spec.reset == "after":
        import jax

        if jax.config.read("jax_enable_x64"):
            problem = ("bias=False with reset='after' on Keras' jax backend with x64: Keras' "
                       "GRU kernel fails there (its zero bias is float64)")
    return problem


def _jax_on_cpu_only() -> bool:
    """Keras runs on jax and jax sees no accelerator."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return all(device.platform == "cpu" for device in jax.devices())


@keras.saving.register_keras_serializable(package="unirnn")
class UniRNN(keras.layers.Layer):
    """A unirnn spec as one Keras layer (stacked, bidirectional), batch-major.

    ``layer(x, mask=None, initial_state=None, training=None)``:

    - ``x``: ``(N, T, I)``.
    - ``mask``: ``(N, T)`` bool, a Keras mask (e.g. from ``keras.layers.Masking``), with
      Keras' own meaning: a masked step leaves the state unchanged and its output is
      **zero**, whatever the pattern (padding at the end, at the start as
      ``keras.utils.pad_sequences`` gives by default, or holes). That is Keras' layer with
      ``zero_output_for_mask=True`` (what ``Bidirectional`` sets); Keras' ``LSTM``/``GRU``
      default instead repeats the previous output at a masked step (zero before the first
      valid one). Valid steps and final states are Keras' either way. The backward
      direction runs over the reversed sequence, as Keras' ``Bidirectional`` does. For a
      mask whose valid steps are a prefix ``0..L_n-1`` this is DESIGN.md's variable length:
      outputs zero at padded steps, the final state after step ``L_n - 1``, the backward
      direction over the ``L_n`` valid steps reversed.
    - ``initial_state``: a flat list of ``(N, ·)`` tensors, per layer then direction
      (forward, backward), each ``[h]`` or, for lstm, ``[h, c]`` (Keras' ``Bidirectional``
      order); ``None``: zeros.
    - ``training``: dropout between stacked layers applies only when true.

    Returns ``outputs`` ``(N, T, D*P)`` (``return_sequences=True``) or the last output
    ``(N, D*P)`` (each direction's final ``h`` of the top layer, concatenated); with
    ``return_state=True`` the list ``[outputs, *states]``, ``states`` in the order of
    ``initial_state``. ``go_backwards=True`` is Keras' ``go_backwards``: the layer runs on
    the time-reversed input (and mask) and returns outputs in that processing order, so
    with 3 valid steps of 5 (prefix mask) the outputs are ``[0, 0, y2, y1, y0]``, ``y_t``
    the output after reading ``x_t`` (the run starts at ``x2``).

    Raises:
        ValueError: ``path`` not one of ``"auto"``, ``"native"``, ``"custom"``;
            ``path="native"`` where Keras' own layers do not compute the spec exactly in
            the layer's dtype on this Keras backend; at call time, an input that is not
            ``(N, T, I)`` or initial states of the wrong number or shape.

    Attributes:
        spec: the :class:`unirnn.Spec`.
        resolved_path: ``"native"`` or ``"custom"``, the path taken at construction; it is
            what ``get_config`` stores as ``path``, so a saved layer is rebuilt with the same
            variables on any Keras backend.
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
        if path not in PATHS:
            raise ValueError(f"path: expected one of {', '.join(PATHS)}; received {path!r}")
        super().__init__(**kwargs)
        spec = as_spec(spec)
        problem = native_problem_here(spec, self.compute_dtype)
        if path == "native" and problem is not None:
            raise ValueError(f"path='native': Keras' own layers cannot compute this spec "
                             f"exactly: {problem}; use path='auto' or 'custom'")
        self.spec = spec
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.supports_masking = True
        self.native = path != "custom" and problem is None
        self.resolved_path = "native" if self.native else "custom"
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
        options: dict[str, Any] = {}
        if self.spec.family == "gru" and _jax_on_cpu_only():
            # Keras' jax "fused" GRU is a lax.scan over a hoisted input projection, not a
            # cuDNN kernel; on CPU it measured 1.3-1.5x slower than the generic loop
            # (benchmarks/bench_keras.py), so take the loop there.
            options["use_cudnn"] = False
        inner = cls(**native_config(self.spec), **options, return_sequences=True,
                    return_state=True, dtype=self.dtype_policy, name=f"layer{k}")
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
        output_mask = mask if self.return_sequences else None
        if not self.return_state:
            return output_mask
        spec = self.spec  # like Keras' RNN: no mask on the states
        states = spec.num_layers * spec.num_directions * (2 if spec.family == "lstm" else 1)
        return [output_mask] + [None] * states

    def _check_call(self, x: Any, mask: Any, initial_state: Any) -> list[Any] | None:
        """Input ``(N, T, I)``, mask ``(N, T)``, initial states per layer and direction."""
        spec = self.spec
        shape = tuple(x.shape)
        # Keras' functional API calls with N and T unknown (None): check the rest.
        check_input_shape(spec, tuple(1 if d is None else d for d in shape[:2]) + shape[2:])
        batch, steps = shape[0], shape[1]
        if mask is not None:
            received = tuple(mask.shape)
            if len(received) != 2 or any(
                    e is not None and r is not None and e != r
                    for e, r in zip((batch, steps), received)):
                raise ValueError(f"mask: expected shape (N, T) = {(batch, steps)}, one flag per "
                                 f"sequence and step; received {received}")
        if initial_state is None:
            return None
        given = list(initial_state) if isinstance(initial_state, (list, tuple)) \
            else [initial_state]
        names = ["h", "c"] if spec.family == "lstm" else ["h"]
        sizes = [spec.output_size, spec.hidden_size][:len(names)]
        expected = [(k, direction, name, size) for k in range(spec.num_layers)
                    for direction in spec.directions for name, size in zip(names, sizes)]
        if len(given) != len(expected):
            raise ValueError(
                f"initial_state: expected a list of {len(expected)} tensors (per layer and "
                f"direction, [{', '.join(names)}]); received {len(given)}"
            )
        for i, (state, (k, direction, name, size)) in enumerate(zip(given, expected)):
            received = tuple(state.shape)
            if len(received) != 2 or received[1] != size or (
                    None not in (batch, received[0]) and received[0] != batch):
                raise ValueError(
                    f"initial_state[{i}] (layer {k}, {direction}, {name}): expected shape "
                    f"(N, {size}) with N={batch}; received {received}"
                )
        return given

    def call(self, inputs: Any, mask: Any = None, initial_state: Any = None,
             training: Any = None) -> Any:
        spec = self.spec
        D, S = spec.num_directions, (2 if spec.family == "lstm" else 1)
        initial_state = self._check_call(inputs, mask, initial_state)
        x = inputs
        valid = None if mask is None else ops.cast(mask, "bool")
        if self.go_backwards:  # Keras' go_backwards: outputs in processing order
            x = ops.flip(x, axis=1)
            valid = None if valid is None else ops.flip(valid, axis=1)
        finals: list[list[Any]] = []
        for k in range(spec.num_layers):
            given = None if initial_state is None else initial_state[k * D * S:(k + 1) * D * S]
            if self.native:
                y, states = self._run_native(k, x, given, valid, training)
            else:
                y, states = self._run_custom(k, x, given, valid)
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
        if valid is not None:  # Keras' LSTM/GRU repeat the previous output at masked steps
            y = y * ops.cast(ops.expand_dims(valid, -1), y.dtype)
        return y, [states[i:i + S] for i in range(0, len(states), S)]

    def _run_custom(self, k: int, x: Any, given: Any,
                    valid: Any) -> tuple[Any, list[list[Any]]]:
        spec = self.spec
        S = 2 if spec.family == "lstm" else 1
        outputs, finals = [], []
        for d, direction in enumerate(spec.directions):
            cell = self.cells[k * spec.num_directions + d]
            backward = direction == "backward"
            xp = cell.project(x) if HOIST_INPUT_PROJECTION else x
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

            # Keras' loop: a masked step keeps the state and outputs zero; go_backwards
            # reverses inputs and mask (Keras' Bidirectional backward layer).
            _, y, states = keras.src.backend.rnn(
                step, xp, init, mask=valid, go_backwards=backward, zero_output_for_mask=True,
                input_length=xp.shape[1], return_all_outputs=True,
            )
            outputs.append(ops.flip(y, axis=1) if backward else y)
            finals.append(list(states))
        y = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=-1)
        return y, finals

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "spec": self.spec.to_dict(),
            # resolved, so a saved layer keeps its variables' structure on any backend
            "path": self.resolved_path,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UniRNN:
        try:
            layer: UniRNN = super().from_config(config)
        except TypeError as err:  # Keras wraps the constructor's ValueError
            cause = err.__context__
            if config.get("path") != "native" or not isinstance(cause, ValueError):
                raise
            raise ValueError(
                f"UniRNN {config.get('name')!r} was saved on path 'native' (Keras' own "
                f"layers hold its variables), which cannot run here: {cause}. Load it where "
                "Keras' layers compute it (float64: KERAS_BACKEND=tensorflow), read its "
                "weights with unirnn.from_keras and rebuild with path='custom'"
            ) from cause
        return layer


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
        path: ``"auto"`` (Keras' own layers when they compute the spec exactly in
            ``dtype`` on this Keras backend, else the custom cell), ``"native"`` (raise
            ``ValueError`` naming the field or dtype when Keras cannot) or ``"custom"``
            (force unirnn's cell).
        dtype: the layer's dtype (``"float32"``, ``"float64"``; jax needs x64 for float64).
        return_sequences, return_state, go_backwards: Keras' meanings (see :class:`UniRNN`).
        name: the Keras layer name.
    """
    layer = UniRNN(spec, path=path, return_sequences=return_sequences,
                   return_state=return_state, go_backwards=go_backwards, dtype=dtype, name=name)
    if weights is not None:
        layer.set_canonical_weights(weights)
    return layer


def check_dtype(dtype: Any) -> str:
    """``dtype``'s name, float32 or float64 (float64 on jax: with x64 switched on)."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = repr(dtype)
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
    name = check_dtype(dtype)
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
