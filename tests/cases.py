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

FAMILY_SPECS = {
    "gru-no-reset": unirnn.gru(3, 4, reset="none"),
    "gru-no-reset-new-bidir": unirnn.gru(3, 4, reset="none", update="new",
                                         bidirectional=True),
    "lstm-coupled": unirnn.lstm(3, 4, coupled=True),
    "lstm-coupled-proj-clip-2layer": unirnn.lstm(3, 5, coupled=True, proj_size=2,
                                                 cell_clip=0.8, num_layers=2),
    "ln_lstm": unirnn.Spec("ln_lstm", 3, 4),
    "ln_gru-bidir": unirnn.Spec("ln_gru", 3, 4, bidirectional=True),
    "indrnn-2layer": unirnn.Spec("indrnn", 3, 4, num_layers=2),
    "mingru": unirnn.Spec("mingru", 3, 4),
    "mingru-identity-bidir-2layer": unirnn.Spec("mingru", 3, 4, activations={"h": "identity"},
                                                num_layers=2, bidirectional=True),
    "minlstm-bidir": unirnn.Spec("minlstm", 3, 4, bidirectional=True),
}
"""The families beyond the frameworks' own (unirnn.register_family), and the structural
options no framework layer has: every backend is tested on these too."""

STANDARD = {
    "rnn-tanh": unirnn.rnn(3, 4),
    "rnn-relu": unirnn.rnn(3, 4, activation="relu"),
    "lstm": unirnn.lstm(3, 4),
    "gru": unirnn.gru(3, 4),
}
"""Specs a framework's native kernel computes (torch's fused kernels, Keras' layers)."""
