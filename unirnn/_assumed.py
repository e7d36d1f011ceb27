"""What a reader assumed: ``(spec, weights)`` pairs that say when the spec was not carried.

A framework's own file or state dict holds tensors, not the cell's equations: a torch
state dict of a ReLU LSTM (``class ReLULSTMCell(nn.LSTMCell)``) or of a reset-before GRU
looks exactly like one of ``nn.LSTM``/``nn.GRU``. Where the source carries no spec (a
plain state dict, a subclass with its own ``forward``) the reader takes the framework's
standard cell and says so: the pair it returns has ``assumed`` set to a sentence naming
the source and the spec taken, and modules built from it (``unirnn.port``) keep that
sentence in their ``spec_assumed`` attribute, which :func:`unirnn.explain` prints. Pass
``spec=`` to say what the cell computes.
"""

from __future__ import annotations

from typing import Any

from ._spec import Spec
from ._weights import Weights

__all__ = ["SpecAndWeights", "assumed_standard"]


class SpecAndWeights(tuple):  # type: ignore[type-arg]
    """``(spec, weights)``, unpacked as a pair, with what the reader assumed.

    Attributes:
        spec: the :class:`~unirnn.Spec`.
        weights: the canonical :class:`~unirnn.Weights`.
        assumed: ``None`` when the spec was carried by the source (or given, or read off
            a module's attributes); otherwise a sentence saying which standard cell was
            taken for a source that does not say, and how to say otherwise (``spec=``).
    """

    assumed: str | None

    def __new__(cls, spec: Spec, weights: Weights, assumed: str | None = None
                ) -> SpecAndWeights:
        pair = super().__new__(cls, (spec, weights))
        pair.assumed = assumed
        return pair

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self[0], self[1], self.assumed)

    @property
    def spec(self) -> Spec:
        return self[0]  # type: ignore[no-any-return]

    @property
    def weights(self) -> Weights:
        return self[1]  # type: ignore[no-any-return]


def assumed_standard(spec: Spec, source: str) -> str:
    """The sentence for ``source`` read as the standard cell ``spec``."""
    return (f"{source} was read as the standard cell ({spec.describe()}); a ReLU LSTM, a "
            "reset-before GRU or any other cell with these tensor shapes needs spec=")
