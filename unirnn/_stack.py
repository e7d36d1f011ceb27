"""The stack runner: layers x directions x lengths, written once against the ops protocol.

Every backend's custom path runs a spec through :func:`run_stack`. The backend supplies
its :class:`StackOps` (a few lines over its array library) and a ``scan`` function that
runs one layer and direction over time (where its speed work lives: oneDNN GEMMs,
``lax.scan``, Keras' backend loop); everything else about a stack is decided here:

- layer ``k > 0`` reads the concatenated outputs of layer ``k - 1`` (forward then
  backward), after ``dropout`` when one is given (training only);
- the initial and final states are one carry per layer and direction in torch's row
  order (layer 0 forward, layer 0 backward, layer 1 forward, ...);
- variable lengths have DESIGN.md's one meaning: a sequence of length ``L`` uses steps
  ``0..L-1``, outputs at padded steps are zero, its final state is the one after step
  ``L-1``, and a backward direction runs over the ``L`` valid steps reversed (as
  ``PackedSequence`` and ONNX ``sequence_lens`` do);
- a Keras mask (any pattern of valid steps) keeps Keras' own meaning instead: a masked
  step keeps the state and outputs zero, and a backward direction runs over the whole
  sequence reversed with its mask (Keras' ``Bidirectional``).

Arrays are time-major: ``x`` ``(T, N, I)``, outputs ``(T, N, D*P)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ._errors import InputError
from ._spec import Spec

__all__ = ["Carry", "Scan", "StackOps", "run_stack", "stack_rows", "unstack_rows"]

Array = Any
Carry = tuple[Any, ...]
"""One layer and direction's state in the cells' order: ``(h,)``, lstm ``(h, c)``."""


class StackOps(Protocol):
    """What the stack runner needs of a backend's array library (time axis 0)."""

    def concat(self, xs: list[Array]) -> Array:
        """Concatenate along the last axis."""
        ...

    def stack(self, xs: list[Array]) -> Array:
        """Stack along a new leading axis."""
        ...

    def flip_time(self, x: Array) -> Array:
        """Reverse axis 0."""
        ...

    def take_time(self, x: Array, index: Array) -> Array:
        """``out[t, n] = x[index[t, n], n]`` for ``x`` ``(T, N, ...)``, ``index`` ``(T, N)``."""
        ...

    def positions(self, steps: int, like: Array) -> Array:
        """``[[0], [1], ..., [T-1]]`` ``(T, 1)``, integers on ``like``'s device."""
        ...

    def where(self, condition: Array, a: Array, b: Array) -> Array:
        """Elementwise ``a`` where ``condition`` else ``b``, broadcasting."""
        ...


class Scan(Protocol):
    """A backend's run of one layer and direction, in time order (the runner reverses)."""

    def __call__(self, layer: int, direction: str, x: Array, carry: Carry,
                 valid: Array | None, /) -> tuple[Array, Carry]:
        """``x`` ``(T, N, I_k)``; ``valid`` ``(T, N, 1)`` booleans or ``None`` (all valid).

        Returns outputs ``(T, N, P)``, zero where ``valid`` is false, and the carry after
        the last valid step of each sequence (a step that is not valid keeps the carry).
        """
        ...


def unstack_rows(states: Sequence[Array]) -> list[Carry]:
    """Torch-shaped states (``h`` ``(L*D, N, P)``, lstm also ``c``) as one carry per row."""
    return [tuple(s[row] for s in states) for row in range(states[0].shape[0])]


def stack_rows(ops: StackOps, finals: Sequence[Carry]) -> tuple[Array, ...]:
    """The inverse of :func:`unstack_rows`: ``(h_n,)`` or ``(h_n, c_n)``, each ``(L*D, N, ·)``."""
    return tuple(ops.stack([carry[i] for carry in finals]) for i in range(len(finals[0])))


def run_stack(
    spec: Spec,
    ops: StackOps,
    scan: Scan,
    x: Array,
    carries: Sequence[Carry],
    *,
    lengths: Array | None = None,
    mask: Array | None = None,
    dropout: Callable[[Array], Array] | None = None,
    reverse: bool = False,
) -> tuple[Array, list[Carry]]:
    """Run every layer and direction of ``spec`` over time-major ``x`` ``(T, N, I)``.

    Args:
        spec: the stack.
        ops: the backend's :class:`StackOps`.
        scan: the backend's run of one layer and direction (:class:`Scan`).
        x: ``(T, N, I)``.
        carries: ``L*D`` initial carries in torch's row order.
        lengths: ``(N,)`` valid steps per sequence, already checked to lie in ``[1, T]``
            (DESIGN.md's variable lengths).
        mask: ``(T, N)`` booleans, a Keras mask (Keras' meaning, see the module
            docstring). At most one of ``lengths`` and ``mask``.
        dropout: applied to every layer's output but the last (``None``: none).
        reverse: run a unidirectional stack right to left (outputs in input order),
            Flax's ``nn.RNN(reverse=True, keep_order=True)``.

    Returns:
        ``(outputs, finals)``: outputs ``(T, N, D*P)``, zero at steps that are not valid;
        the final carries in the order of ``carries``.
    """
    if lengths is not None and mask is not None:
        raise InputError("run_stack: expected lengths or a mask, not both")
    valid = index = None
    if lengths is not None:
        t = ops.positions(x.shape[0], lengths)
        within = t < lengths[None, :]  # (T, N)
        index = ops.where(within, lengths[None, :] - 1 - t, t)
        valid = within[:, :, None]
    elif mask is not None:
        valid = mask[:, :, None]

    def reversed_in_time(a: Array) -> Array:
        return ops.flip_time(a) if index is None else ops.take_time(a, index)

    finals: list[Carry] = []
    layer_input = x
    for layer in range(spec.num_layers):
        if layer and dropout is not None:
            layer_input = dropout(layer_input)
        outputs = []
        for d, direction in enumerate(spec.directions):
            row = layer * spec.num_directions + d
            if (direction == "backward") != reverse:
                # lengths: the valid steps reversed within each length, which are again
                # steps 0..L-1 (same mask); a Keras mask: the whole sequence and its mask
                back_valid = valid if valid is None or index is not None \
                    else ops.flip_time(valid)
                out, carry = scan(layer, direction, reversed_in_time(layer_input),
                                  carries[row], back_valid)
                out = reversed_in_time(out)
            else:
                out, carry = scan(layer, direction, layer_input, carries[row], valid)
            outputs.append(out)
            finals.append(carry)
        layer_input = ops.concat(outputs) if len(outputs) > 1 else outputs[0]
    return layer_input, finals
