"""port() across frameworks keeps each interface option where the target holds it, refuses
it (naming it and drop=) where not, and ports cells as cells; outputs equal the source's.

One test per option and target (docs/porting.md, "What port keeps"): "carried" checks the
target's attribute and the outputs, "error" the refusal and that drop= ports without it.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from support import framework, max_rel_error

import unirnn

torch = framework("torch")
keras = framework("keras")
jax = framework("jax")
framework("flax")
from flax import linen as nn  # noqa: E402

X = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)


def _keras(layer):
    layer(X)
    return layer


def _flax_rnn(**options):
    module = nn.RNN(nn.GRUCell(features=4), **options)
    return module.bind(module.init(jax.random.key(0), X))


SOURCES = {
    "torch-batch_first": lambda: torch.nn.GRU(3, 4, batch_first=True),
    "keras-return_sequences": lambda: _keras(keras.layers.GRU(4, return_sequences=True)),
    "keras-return_state": lambda: _keras(keras.layers.GRU(4, return_sequences=True,
                                                          return_state=True)),
    "keras-go_backwards": lambda: _keras(keras.layers.GRU(4, return_sequences=True,
                                                          go_backwards=True)),
    "keras-stateful": lambda: _keras(keras.layers.GRU(4, return_sequences=True,
                                                      stateful=True)),
    "keras-unroll": lambda: _keras(keras.layers.GRU(4, return_sequences=True, unroll=True)),
    "keras-recurrent_dropout": lambda: _keras(keras.layers.GRU(4, return_sequences=True,
                                                               recurrent_dropout=0.2)),
    "keras-dropout": lambda: _keras(keras.layers.GRU(4, return_sequences=True, dropout=0.2)),
    "keras-merge_mode": lambda: _keras(keras.layers.Bidirectional(
        keras.layers.GRU(4, return_sequences=True), merge_mode="sum")),
    "flax-time_major": lambda: _flax_rnn(time_major=True),
    "flax-return_carry": lambda: _flax_rnn(return_carry=True),
    "flax-reverse": lambda: _flax_rnn(reverse=True),
    "flax-reverse-keep_order": lambda: _flax_rnn(reverse=True, keep_order=True),
    "flax-unroll": lambda: _flax_rnn(unroll=2),
}



@functools.cache
def _source(name):
    """Each source built once (port reads it, never changes it)."""
    return SOURCES[name]()


# (source, target) -> ("carried", {attribute: value}) or ("error", option named)
EXPECTED = {
    ("torch-batch_first", "keras"): ("carried", {}),  # Keras is batch-major
    ("torch-batch_first", "flax"): ("carried", {"time_major": False}),
    ("torch-batch_first", "numpy"): ("carried", {}),
    ("keras-return_sequences", "torch"): ("carried", {}),  # torch returns every step
    ("keras-return_sequences", "flax"): ("carried", {}),
    ("keras-return_state", "torch"): ("carried", {}),  # torch returns the state anyway
    ("keras-return_state", "flax"): ("carried", {"return_carry": True}),
    ("keras-go_backwards", "torch"): ("error", "go_backwards"),
    ("keras-go_backwards", "flax"): ("carried", {"reverse": True, "keep_order": False}),
    ("keras-go_backwards", "numpy"): ("error", "go_backwards"),
    ("keras-stateful", "torch"): ("error", "stateful"),
    ("keras-stateful", "flax"): ("error", "stateful"),
    ("keras-unroll", "torch"): ("error", "unroll"),
    ("keras-unroll", "flax"): ("carried", {"unroll": True}),
    ("keras-recurrent_dropout", "torch"): ("error", "recurrent_dropout"),
    ("keras-recurrent_dropout", "flax"): ("error", "recurrent_dropout"),
    ("keras-dropout", "torch"): ("error", "input_dropout"),
    ("keras-dropout", "flax"): ("error", "input_dropout"),
    ("keras-merge_mode", "torch"): ("error", "merge_mode"),
    ("keras-merge_mode", "flax"): ("error", "merge_mode"),
    ("flax-time_major", "torch"): ("carried", {"batch_first": False}),
    ("flax-time_major", "keras"): ("error", "time_major"),
    ("flax-return_carry", "torch"): ("carried", {}),
    ("flax-return_carry", "keras"): ("carried", {"return_state": True}),
    ("flax-reverse", "torch"): ("error", "go_backwards"),
    ("flax-reverse", "keras"): ("carried", {"go_backwards": True}),
    ("flax-reverse-keep_order", "torch"): ("error", "reverse"),
    ("flax-reverse-keep_order", "keras"): ("error", "reverse"),
    ("flax-unroll", "torch"): ("error", "unroll"),
    ("flax-unroll", "keras"): ("error", "unroll"),
}


@pytest.mark.parametrize(("source", "target"), list(EXPECTED),
                         ids=[f"{s}-to-{t}" for s, t in EXPECTED])
def test_option_per_target(source, target):
    obj = _source(source)
    outcome, detail = EXPECTED[source, target]
    if outcome == "error":
        with pytest.raises(unirnn.SpecError, match=rf"has no equivalent in unirnn's {target} "
                           rf"module.*drop=\['{detail}'\]"):
            unirnn.port(obj, to=target)
        ported = unirnn.port(obj, to=target, drop=[detail])
        assert ported.spec.family == "gru"
        return
    ported = unirnn.port(obj, to=target)
    for attribute, value in detail.items():
        assert getattr(ported, attribute) == value, attribute


def test_keras_go_backwards_to_flax_equal_outputs():
    source = _source("keras-go_backwards")
    want = np.asarray(keras.ops.convert_to_numpy(source(X)))
    ported = unirnn.port(source, to="flax")
    got = ported.apply(ported.init(jax.random.key(0), X), X)
    assert max_rel_error(got, want) <= 1e-5


def test_flax_reverse_to_keras_equal_outputs():
    source = _source("flax-reverse")
    want = np.asarray(source(X))
    ported = unirnn.port(source, to="keras")
    assert max_rel_error(keras.ops.convert_to_numpy(ported(X)), want) <= 1e-5


def test_flax_time_major_to_torch_equal_outputs():
    source = _source("flax-time_major")
    x_tm = np.swapaxes(X, 0, 1)
    want = np.asarray(source(x_tm))
    ported = unirnn.port(source, to="torch")
    with torch.no_grad():
        got = ported(torch.from_numpy(x_tm))[0].numpy()
    assert max_rel_error(got, want) <= 1e-5


def test_conventions_at_default_follow_the_target():
    """An option left at its framework's default is that framework's convention: nn.GRU()
    (time-major) becomes a batch-major Flax layer, keras GRU() (last output only) a torch
    module returning every step, as each framework's users expect."""
    assert unirnn.port(torch.nn.GRU(3, 4), to="flax").time_major is False
    assert unirnn.port(_keras(keras.layers.GRU(4)), to="torch").batch_first is False
    assert unirnn.port(_keras(keras.layers.GRU(4)), to="keras").return_sequences is False


@pytest.mark.parametrize("target", ["keras", "flax"])
def test_torch_cell_ports_as_cell(target):
    torch.manual_seed(0)
    source = torch.nn.LSTMCell(3, 4)
    with torch.no_grad():
        h, c = source(torch.from_numpy(X[:, 0]))
    ported = unirnn.port(source, to=target)
    if target == "keras":
        assert type(ported).__name__ == "UniRNNCell"
        zeros = np.zeros((2, 4), np.float32)
        got, _ = ported(X[:, 0], [zeros, zeros])
        got = keras.ops.convert_to_numpy(got)
    else:
        assert type(ported).__name__ == "UniCell"
        carry = ported.initialize_carry(jax.random.key(0), X[:, 0].shape)
        params = ported.init(jax.random.key(0), carry, X[:, 0])
        (_, got) = ported.apply(params, carry, X[:, 0])
    assert max_rel_error(got, h.numpy()) <= 1e-5


def test_keras_cell_ports_as_torch_cell():
    spec = unirnn.gru(3, 4, reset="before")
    weights = unirnn.init_weights(spec, seed=1)
    cell = unirnn.build(spec, backend="keras", module="cell", weights=weights)
    ported = unirnn.port(cell, to="torch")
    assert type(ported).__name__ == "TorchRNNCell"
    h0 = np.zeros((2, 4), np.float32)
    want, _ = cell(X[:, 0], [h0])
    with torch.no_grad():
        got = ported(torch.from_numpy(X[:, 0]))
    assert max_rel_error(got.numpy(), keras.ops.convert_to_numpy(want)) <= 1e-6
