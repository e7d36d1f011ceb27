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
:data:`HOIST_INPUT_PROJECTION`), layers and directions by the shared stack runner; its
``kernel`` is ``"unirnn.keras-cell"`` (every registered family runs there; minGRU and
minLSTM on an accelerator: ``"unirnn.keras-parallel-scan"``, no step loop). The two are
strategies behind one interface (:mod:`unirnn.backends._keras_strategies`), chosen once
when the layer is built. Exactly means
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

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from .._errors import FileFormatError, InputError, SpecError
from .._evaluation import Evaluation
from .._inputs import (
    check_cotangent,
    check_input_shape,
    check_lengths,
    check_stacked_state,
    check_state_list,
)
from .._spec import Spec
from .._weights import Weights, check_weights, weight_name
from ..layouts.keras import native_problem
from ._keras_cell import KERAS_ACTIVATIONS, KerasOps, UniRNNCell, as_spec, build_cell
from ._keras_interface import LayerInterface, check_dtype
from ._keras_strategies import (
    CUSTOM_KERNEL,
    HOIST_INPUT_PROJECTION,
    PARALLEL_KERNEL,
    CustomStrategy,
    NativeStrategy,
    Strategy,
)

__all__ = ["HOIST_INPUT_PROJECTION", "KERAS_ACTIVATIONS", "KERNELS", "KerasOps", "UniRNN",
           "UniRNNCell", "build", "evaluate"]

KERNELS = ("keras.layers.LSTM", "keras.layers.GRU", "keras.layers.SimpleRNN", CUSTOM_KERNEL,
           PARALLEL_KERNEL)
"""Every ``kernel`` a layer of this backend reports."""

PATHS = ("auto", "native", "custom")


def native_problem_here(spec: Spec, dtype: str) -> str | None:
    """Why Keras' own layers cannot compute ``spec`` exactly in ``dtype`` on Keras' current
    backend, or ``None`` (:func:`unirnn.layouts.keras.native_problem`, told the backend
    and, on jax, whether x64 is switched on)."""
    backend = keras.backend.backend()
    x64 = False
    if backend == "jax":
        import jax

        x64 = bool(jax.config.read("jax_enable_x64"))
    return native_problem(spec, dtype, backend, jax_x64=x64)


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
            (Keras' own layers run), ``"unirnn.keras-cell"`` (the custom cell) or
            ``"unirnn.keras-parallel-scan"`` (minGRU/minLSTM's parallel form).
        native_layers: per stacked layer, the Keras layer (``Bidirectional`` when
            bidirectional); empty on the custom path.
        cells: per layer and direction, the :class:`UniRNNCell`; empty on the native path.
        strategy: the :class:`~unirnn.backends._keras_strategies.Strategy` holding those
            and running them.
    """

    def __init__(
        self,
        spec: Spec | Mapping[str, Any] | str,
        path: str = "auto",
        return_sequences: bool = True,
        return_state: bool = False,
        go_backwards: bool = False,
        merge_mode: str | None = "concat", unroll: bool = False,
        recurrent_dropout: float = 0.0,
        input_dropout: float = 0.0,
        stateful: bool = False, batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if path not in PATHS:
            raise SpecError(f"path: expected one of {', '.join(PATHS)}; received {path!r}")
        super().__init__(**kwargs)
        spec = as_spec(spec)
        problem = native_problem_here(spec, self.compute_dtype)
        if path == "native" and problem is not None:
            raise SpecError(f"path='native': Keras' own layers cannot compute this spec "
                             f"exactly: {problem}; use path='auto' or 'custom'")
        self.spec = spec
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.supports_masking = True
        strategy_class = NativeStrategy if path != "custom" and problem is None \
            else CustomStrategy
        self.interface = LayerInterface(merge_mode, bool(unroll), float(recurrent_dropout),
                                        float(input_dropout), bool(stateful), batch_size)
        self.interface.check(spec, strategy_class.resolved_path)
        self.strategy: Strategy = strategy_class(spec, self.dtype_policy, self.interface)
        self.resolved_path = self.strategy.resolved_path
        self.kernel = self.strategy.kernel
        # Both attributes exist, in this order, the strategy's sub-layers in its own: Keras
        # names saved variables by the attribute path that tracks them.
        for attribute in ("native_layers", "cells"):
            setattr(self, attribute,
                    self.strategy.layers if attribute == self.strategy.tracked_as else [])
        self.dropout_layer = (
            keras.layers.Dropout(spec.dropout, dtype=self.dtype_policy)
            if spec.dropout > 0 and spec.num_layers > 1 else None
        )
        self.build()

    def build(self, input_shape: Any = None) -> None:
        self.strategy.build()
        self.built = True

    def reset_state(self) -> None:
        """Zero the states a ``stateful=True`` layer carries between calls (Keras' own)."""
        for layer in self.native_layers:
            layer.reset_state()

    # -- weights ---------------------------------------------------------------------

    def direction_variables(self) -> dict[tuple[int, str], list[Any]]:
        """``(layer, direction) -> variables``: Keras' ``[kernel, recurrent_kernel(, bias)]``
        on the native path, the cell's variables by canonical name on the custom path."""
        return self.strategy.direction_variables()

    def canonical_from_arrays(self, k: int, direction: str, arrays: Any,
                              gradient: bool = False) -> dict[str, np.ndarray]:
        """Values (or gradients, ``gradient=True``) of :meth:`direction_variables` in the
        canonical layout; a folded bias' gradient goes to both ``b_x`` and ``b_h``."""
        return self.strategy.to_canonical(k, direction, arrays, gradient)

    def set_canonical_weights(self, weights: Mapping[str, Any]) -> None:
        """Assign canonical weights (checked against the spec; folded where Keras has one bias)."""
        weights = check_weights(self.spec, weights)
        for k in range(self.spec.num_layers):
            for direction in self.spec.directions:
                self.strategy.set_canonical(k, direction, weights.layer(k, direction))

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
        spec = self.spec  # like Keras' RNN: no mask on the states
        masks = [mask if self.return_sequences else None] * (
            2 if spec.bidirectional and self.interface.merge_mode is None else 1)
        if not self.return_state:
            return masks[0] if len(masks) == 1 else masks
        states = spec.num_layers * spec.num_directions * (2 if spec.has_cell_state else 1)
        return masks + [None] * states

    def _check_call(self, x: Any, mask: Any, initial_state: Any) -> list[Any] | None:
        """Input ``(N, T, I)``, mask ``(N, T)``, initial states per layer and direction."""
        spec = self.spec
        shape = tuple(x.shape)
        # N and T may be None (Keras' functional API)
        check_input_shape(spec, shape, dtype=getattr(x, "dtype", None))
        batch, steps = shape[0], shape[1]
        if mask is not None:
            received = tuple(mask.shape)
            if len(received) != 2 or any(
                    e is not None and r is not None and e != r
                    for e, r in zip((batch, steps), received)):
                raise InputError(f"mask: expected shape (N, T) = {(batch, steps)}, one flag per "
                                 f"sequence and step; received {received}")
        if initial_state is None:
            return None
        given = list(initial_state) if isinstance(initial_state, (list, tuple)) \
            else [initial_state]
        check_state_list(spec, given, batch, "initial_state")
        return given

    def call(self, inputs: Any, mask: Any = None, initial_state: Any = None,
             training: Any = None) -> Any:
        spec = self.spec
        S = 2 if spec.has_cell_state else 1
        given = self._check_call(inputs, mask, initial_state)
        carries = None if given is None else [
            tuple(given[row * S:(row + 1) * S]) for row in range(len(given) // S)]
        x = inputs
        valid = None if mask is None else ops.cast(mask, "bool")
        if self.go_backwards:  # Keras' go_backwards: outputs in processing order
            x = ops.flip(x, axis=1)
            valid = None if valid is None else ops.flip(valid, axis=1)
        dropout = None
        if self.dropout_layer is not None:
            def dropout(y: Any, layer: keras.layers.Layer = self.dropout_layer) -> Any:
                return layer(y, training=training)
        y, finals = self.strategy.run(x, carries, valid, training, dropout)
        outputs = self.interface.outputs(spec, y, finals, self.return_sequences)
        if not self.return_state:
            return outputs[0] if len(outputs) == 1 else outputs
        return [*outputs, *(s for carry in finals for s in carry)]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "spec": self.spec.to_dict(),
            # resolved, so a saved layer keeps its variables' structure on any backend
            "path": self.resolved_path,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            **self.interface.config(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UniRNN:
        try:
            layer: UniRNN = super().from_config(config)
        except TypeError as err:  # Keras wraps the constructor's ValueError
            cause = err.__context__
            if config.get("path") != "native" or not isinstance(cause, ValueError):
                raise
            raise FileFormatError(
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
    module: str = "layer",
    **interface: Any,
) -> UniRNN | UniRNNCell:
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
        module: ``"layer"`` (:class:`UniRNN`) or ``"cell"`` (a :class:`UniRNNCell`, one step).
        interface: ``merge_mode``, ``unroll``, ``recurrent_dropout``, ``input_dropout``
            (:mod:`unirnn.backends._keras_interface`).
    """
    if module == "cell":
        return build_cell(spec, weights, check_dtype(dtype), name)
    if module != "layer":
        raise SpecError(f"module: expected 'layer' or 'cell'; received {module!r}")
    if dtype is not None:
        check_dtype(dtype)
    layer = UniRNN(spec, path=path, return_sequences=return_sequences,
                   return_state=return_state, go_backwards=go_backwards, dtype=dtype, name=name,
                   **interface)
    if weights is not None:
        layer.set_canonical_weights(weights)
    return layer


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
    mask = None
    if lengths is not None:
        lens = check_lengths(lengths, batch, steps)
        mask = np.arange(steps)[None, :] < lens[:, None]
    state = None
    if initial_state is not None:
        arrays = [np.asarray(s, dtype=name)
                  for s in check_stacked_state(spec, initial_state, batch)]
        state = [a[row] for row in range(arrays[0].shape[0]) for a in arrays]
    cot = None
    if cotangent is not None:
        cot = np.asarray(cotangent, dtype=name)
        check_cotangent(cot.shape, (batch, steps, spec.num_directions * spec.output_size))
    layer = build(spec, weights, path=path, dtype=name, return_sequences=True,
                  return_state=True)

    def run(inputs: Any) -> list[Any]:
        return layer(inputs, mask=mask, initial_state=state, training=False)

    grads = None
    if cot is None:
        result = run(x)
    else:
        from ._keras_gradients import gradients

        result, dx, var_grads = gradients(layer, run, x, cot)
        grads = {"x": dx}
        for (k, direction), arrays in var_grads.items():
            for tensor, g in layer.canonical_from_arrays(k, direction, arrays, True).items():
                grads[weight_name(k, direction, tensor)] = g
    result = [ops.convert_to_numpy(r) for r in result]
    S = 2 if spec.has_cell_state else 1
    flat = result[1:]
    state_out = tuple(np.stack(flat[i::S]) for i in range(S))
    return Evaluation(result[0], state_out, layer.kernel, grads)
