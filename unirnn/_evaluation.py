"""One result type for running any backend on numpy inputs: what cross-backend checks compare.

Every backend module provides::

    evaluate(spec, weights, x, *, initial_state=None, lengths=None, dtype="float64",
             cotangent=None, **options) -> Evaluation

taking batch-major numpy ``x`` ``(N, T, I)``, the torch-ordered initial state and
``lengths`` with the meanings of :class:`unirnn.backends.numpy.NumpyRNN`, and giving back
numpy arrays in the same layouts, so results from every framework line up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Evaluation"]


@dataclass
class Evaluation:
    """What a backend computed for one input.

    Attributes:
        outputs: ``(N, T, D*P)``, batch-major, zero at padded steps.
        state: ``(h_n,)`` or, for lstm, ``(h_n, c_n)``; each ``(L*D, N, ·)`` in torch's row
            order (layer 0 forward, layer 0 backward, layer 1 ...).
        kernel: the path the backend ran (e.g. ``"torch._VF.lstm"``, ``"unirnn-scan"``).
        grads: when a ``cotangent`` ``(N, T, D*P)`` was given, the gradients of
            ``sum(outputs * cotangent)`` with respect to ``"x"`` and to every canonical
            weight name (in the canonical layout); ``None`` otherwise.
    """

    outputs: np.ndarray
    state: tuple[np.ndarray, ...]
    kernel: str
    grads: dict[str, np.ndarray] | None = None
