"""port() keeps a Flax layer's interface (nn.RNN's time_major, return_carry, reverse and
keep_order, unroll), Flax cells port as cells, float64 from float32 weights: judged by
Flax's own nn.RNN and the float64 oracle."""

from __future__ import annotations

import importlib

import numpy as np
import oracle
import pytest
from support import framework, max_rel_error, nonzero_weights

import unirnn

jax = framework("jax")
framework("flax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy
nn = importlib.import_module("flax.linen")
nnx = importlib.import_module("flax.nnx")

X = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
LENGTHS = np.array([5, 3])


def _bound_rnn(**options):
    """A bound linen nn.RNN(GRUCell) with non-zero biases, and its variables."""
    module = nn.RNN(nn.GRUCell(features=4), **options)
    x = np.swapaxes(X, 0, 1) if options.get("time_major") else X
    variables = module.init(jax.random.key(1), x)
    variables = jax.tree_util.tree_map(lambda a: a + 0.05, variables)
    return module, variables, x


@pytest.mark.parametrize(
    "options",
    [{"time_major": True, "unroll": 2}, {"return_carry": True}, {"reverse": True},
     {"reverse": True, "keep_order": True}],
    ids=["time_major-unroll", "return_carry", "reverse", "reverse-keep_order"],
)
def test_port_to_flax_keeps_nn_rnn_interface(options):
    module, variables, x = _bound_rnn(**options)
    lengths = None if options.get("time_major") else LENGTHS
    want = module.apply(variables, x, seq_lengths=lengths)
    ported = unirnn.port(module.bind(variables), to="flax")
    got = ported.apply(ported.init(jax.random.key(0), x), x, seq_lengths=lengths)
    if options.get("return_carry"):
        (carry,), got = got
        np.testing.assert_allclose(carry, want[0], atol=1e-6)
        want = want[1]
    if lengths is None:
        assert max_rel_error(got, want) <= 1e-6
        return
    got, want = np.asarray(got), np.asarray(want)
    for n, length in enumerate(lengths):  # Flax leaves padded steps as they come; unirnn zeros
        assert max_rel_error(got[n, :length], want[n, :length]) <= 1e-6
        assert np.all(got[n, length:] == 0)


def test_reverse_is_refused_by_targets_without_it():
    module, variables, _ = _bound_rnn(reverse=True)
    bound = module.bind(variables)
    with pytest.raises(unirnn.SpecError, match=r"reverse=True, keep_order=False has no "
                       r"equivalent in unirnn's torch module.*drop=\['go_backwards'\]"):
        unirnn.port(bound, to="torch")
    with pytest.raises(unirnn.SpecError, match=r"the spec has no direction"):
        unirnn.from_flax(bound)  # reading weights alone would run it forwards
    assert unirnn.from_flax(bound, drop=["reverse"])[0] == unirnn.gru(3, 4)


def test_unirnn_layer_keep_order_false():
    spec = unirnn.lstm(3, 4)
    weights = nonzero_weights(spec, seed=2)
    model = unirnn.build(spec, backend="flax", weights=weights, reverse=True, keep_order=False)
    variables = model.init(jax.random.key(0), X)
    got = np.asarray(model.apply(variables, X, seq_lengths=LENGTHS))
    # the oracle's backward direction of a bidirectional spec is the reversed run
    bidir = unirnn.lstm(3, 4, bidirectional=True)
    both = {**{k: v for k, v in weights.items()},
            **{k.replace("forward", "backward"): v for k, v in weights.items()}}
    reversed_run = oracle.run(bidir, both, X, lengths=LENGTHS)[0][..., 4:]
    for n, length in enumerate(LENGTHS):  # processing order within each length
        assert max_rel_error(got[n, :length], reversed_run[n, :length][::-1]) <= 1e-5
        assert np.all(got[n, length:] == 0)
    nnx_model = unirnn.build(spec, backend="flax", api="nnx", weights=weights, reverse=True,
                             keep_order=False)
    assert max_rel_error(nnx_model(X, seq_lengths=LENGTHS), got) <= 1e-6


def test_flax_cell_ports_as_cell():
    cell = nn.GRUCell(features=4)
    carry = cell.initialize_carry(jax.random.key(0), X[:, 0].shape)
    variables = cell.init(jax.random.key(1), carry, X[:, 0])
    ported = unirnn.port(cell.bind(variables), to="flax")
    assert type(ported).__name__ == "UniCell"
    params = ported.init(jax.random.key(0), carry, X[:, 0])
    (_, got), (_, want) = (ported.apply(params, carry, X[:, 0]),
                           cell.apply(variables, carry, X[:, 0]))
    assert max_rel_error(got, want) <= 1e-6


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_float64_from_float32_weights(api):
    spec = unirnn.gru(3, 4, reset="before")
    weights = nonzero_weights(spec, seed=7).astype(np.float32)
    x = X.astype(np.float64)
    want, _ = oracle.run(spec, weights, x)
    options = {"dtype": jnp.float64, "param_dtype": jnp.float64}
    model = unirnn.build(spec, backend="flax", api=api, weights=weights, **options)
    got = model(x) if api == "nnx" else model.apply(model.init(jax.random.key(0), x), x)
    assert np.asarray(got).dtype == np.float64
    assert max_rel_error(got, want) <= 1e-12


def test_bare_cell_tree_says_what_was_assumed():
    cell = nn.GRUCell(features=4)
    carry = cell.initialize_carry(jax.random.key(0), X[:, 0].shape)
    variables = cell.init(jax.random.key(1), carry, X[:, 0])
    read = unirnn.from_flax(variables, cell="GRUCell")
    assert "a Flax GRUCell parameter tree" in read.assumed
    assert unirnn.from_flax(cell.bind(variables)).assumed is None  # gate_fn read off it
    spec = unirnn.gru(3, 4, activation="relu")
    assert unirnn.from_flax(variables, cell="GRUCell", spec=spec).assumed is None


def test_from_gates_takes_jax_arrays_and_nnx_params():
    spec = unirnn.rnn(3, 4)
    rng = np.random.default_rng(5)
    w_x, w_h, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 4)), rng.normal(size=4)
    weights = unirnn.from_gates(spec, {"h": {"w_x": jnp.asarray(w_x), "w_h": nnx.Param(
        jnp.asarray(w_h)), "b": jnp.asarray(b)}}, layout="in_out")
    np.testing.assert_array_equal(weights["layer0.forward.w_x"], w_x.T)
    np.testing.assert_array_equal(weights["layer0.forward.w_h"], w_h.T)
    np.testing.assert_array_equal(weights["layer0.forward.b_x"], b)


def test_nnx_rnn_interface_is_kept():
    rnn = nnx.RNN(nnx.GRUCell(3, 4, rngs=nnx.Rngs(0)), time_major=True, return_carry=True)
    x = np.swapaxes(X, 0, 1)
    carry, want = rnn(x)
    ported = unirnn.port(rnn, to="flax", api="nnx")
    assert ported.time_major and ported.return_carry
    (got_carry,), got = ported(x)
    assert max_rel_error(got, want) <= 1e-6
    assert max_rel_error(got_carry, carry) <= 1e-6
