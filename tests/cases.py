"""The specs every backend is tested on: each family and option at least once.

Import ``SPECS`` and parametrize with ``ids=list(SPECS)`` so a failing test names its case.
"""

from __future__ import annotations

import unirnn

SPECS = {
    "rnn-tanh": unirnn.rnn(3, 4),
    "rnn-relu-nobias": unirnn.rnn(3, 4, activation="relu", bias=False),
    "rnn-2layer-bidir": unirnn.rnn(3, 4, num_layers=2, bidirectional=True),
    "rnn-gelu-bidir-2layer": unirnn.rnn(3, 4, activation="gelu", num_layers=2,
                                        bidirectional=True),
    "lstm": unirnn.lstm(3, 4),
    "lstm-relu": unirnn.lstm(3, 4, activation="relu"),
    "lstm-peephole-clip": unirnn.lstm(3, 4, peepholes=True, cell_clip=0.7),
    "lstm-proj-bidir-2layer": unirnn.lstm(3, 5, proj_size=2, num_layers=2, bidirectional=True),
    "lstm-relu-proj-peephole": unirnn.lstm(3, 5, activation="relu", proj_size=3,
                                           peepholes=True),
    "lstm-nobias-hardsig": unirnn.lstm(3, 4, bias=False, recurrent_activation="hard_sigmoid"),
    "lstm-roles": unirnn.lstm(
        3, 4, activations={"i": "silu", "f": "hard_sigmoid(0.2, 0.5)", "g": "softsign",
                           "o": "gelu_tanh", "c": "elu"}
    ),
    "gru": unirnn.gru(3, 4),
    "gru-gelu-z": unirnn.gru(3, 4, activations={"z": "gelu"}),
    "gru-before": unirnn.gru(3, 4, reset="before"),
    "gru-before-new-nobias": unirnn.gru(3, 4, reset="before", update="new", bias=False),
    "gru-new-bidir-2layer": unirnn.gru(3, 4, update="new", num_layers=2, bidirectional=True),
    "gru-leaky-softplus": unirnn.gru(
        3, 4, activations={"n": "leaky_relu(0.2)", "r": "softplus", "z": "identity"}
    ),
}

STANDARD = {
    "rnn-tanh": unirnn.rnn(3, 4),
    "rnn-relu": unirnn.rnn(3, 4, activation="relu"),
    "lstm": unirnn.lstm(3, 4),
    "gru": unirnn.gru(3, 4),
}
"""Specs a framework's native kernel computes (torch's fused kernels, Keras' layers)."""
