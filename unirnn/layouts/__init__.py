"""Every fact about an external weight layout, numpy only: one module per layout.

- :mod:`unirnn.layouts.kernels`: unirnn's own ``(in, out)`` cell kernels (Keras and Flax
  custom cells).
- :mod:`unirnn.layouts.torch`: ``nn.RNN``/``nn.LSTM``/``nn.GRU`` and their state dicts.
- :mod:`unirnn.layouts.keras`: Keras 3's ``SimpleRNN``/``LSTM``/``GRU``.
- :mod:`unirnn.layouts.flax`: Flax's ``LSTMCell``/``OptimizedLSTMCell``/``GRUCell``/
  ``SimpleCell`` trees and unirnn's Flax layer tree.
- :mod:`unirnn.layouts.onnx`: ONNX's ``LSTM``/``GRU``/``RNN`` operators.

Each module has the same small surface, read by the backends, by porting and by error
messages alike: the framework's tensor names and shapes; canonical weights to and from
them; ``native_problem(spec) -> str | None`` (why the framework's own layer cannot
compute ``spec``, or ``None``); spec inference from tensor shapes; the bias-folding rule
(from the cell's declaration, :func:`unirnn._cells.folded_bias_rows`); and the key under
which that framework's files carry the spec. No module here imports a framework
(``tests/test_no_framework_import.py`` proves it).
"""

from __future__ import annotations

from typing import Any

from .._errors import WeightsError

__all__ = ["GATES", "SPEC_KEY", "family_from_gates", "family_problem"]

SPEC_KEY = "unirnn.spec"
"""The key under which a framework's file carries the spec's JSON, where the file has
string-keyed metadata: a torch state dict's ``_metadata[""]``, a Keras weights file's HDF5
root attributes. (``.safetensors`` and Flax trees carry it in their own places:
:mod:`unirnn._file`, :data:`unirnn.layouts.flax.SPEC_ENTRY`.)"""

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
"""Gate count per family: the row blocks of ``w_x``/``w_h``."""


def family_problem(spec: Any, layer: str) -> str | None:
    """Why ``layer`` (a framework's own RNN/LSTM/GRU, named for the message) cannot take
    ``spec``'s family or its structural options, or ``None``: families beyond rnn, lstm
    and gru (:func:`unirnn.register_family`), a GRU without a reset gate, an LSTM with
    coupled gates. unirnn's own layer of every backend computes them."""
    if spec.family not in GATES:
        return (f"family {spec.family!r}: {layer} has no such cell; unirnn's own layer "
                f"(the custom path of every backend) computes it")
    if spec.family == "gru" and spec.reset == "none":
        return (f"reset='none' (a GRU without a reset gate): {layer} has a reset gate; "
                f"unirnn's own layer computes it")
    if spec.family == "lstm" and getattr(spec, "coupled", False):
        return (f"coupled=True (i = 1 - f): {layer} has no coupled gates; unirnn's own "
                f"layer computes it")
    return None


def family_from_gates(rows: int, hidden: int, what: str) -> str:
    """The family whose ``G*H`` rows (or columns) ``rows`` are, for hidden size ``hidden``.

    Raises:
        ValueError: ``rows`` is not 1, 3 or 4 times ``hidden``; ``what`` names the tensor.
    """
    for family, gates in GATES.items():
        if hidden > 0 and rows == gates * hidden:
            return family
    raise WeightsError(
        f"{what}: expected {', '.join(f'{g}*H ({f})' for f, g in GATES.items())} gate rows "
        f"for hidden size H={hidden}; received {rows}"
    )
