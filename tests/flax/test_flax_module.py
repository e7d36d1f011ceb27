"""The Flax modules as Flax users call them: linen and nnx layers, the cell, carries, options."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from support import framework, max_rel_error, nonzero_weights

import unirnn

jax = framework("jax")
framework("flax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy
nn = importlib.import_module("flax.linen")
nnx = importlib.import_module("flax.nnx")
flax_backend = importlib.import_module("unirnn.backends.flax")

F64 = {"dtype": np.float64, "param_dtype": np.float64}


def _numpy(spec, weights, x, state=None, lengths=None):
    model = unirnn.build(spec, backend="numpy", weights=weights, dtype=np.float64)
    return model(x, initial_state=state, lengths=lengths)


def _inputs(spec, batch=3, steps=5, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, steps, spec.input_size))


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_layer_carry_layout_time_major_and_initial_carry(api):
    """Carry: one Flax-ordered (c, h) per layer and direction in torch row order."""
    spec = unirnn.lstm(3, 5, proj_size=2, num_layers=2, bidirectional=True)
    weights = nonzero_weights(spec)
    x = _inputs(spec)
    rng = np.random.default_rng(1)
    h0 = rng.standard_normal((4, 3, 2))
    c0 = rng.standard_normal((4, 3, 5))
    lengths = np.array([5, 2, 4])
    ref_out, (ref_h, ref_c) = _numpy(spec, weights, x, (h0, c0), lengths)

    carry = tuple((c0[row], h0[row]) for row in range(4))
    if api == "linen":
        model = unirnn.build(spec, backend="flax", weights=weights, time_major=True,
                             return_carry=True, **F64)
        variables = model.init(jax.random.key(0), np.swapaxes(x, 0, 1))
        finals, out = model.apply(variables, np.swapaxes(x, 0, 1), initial_carry=carry,
                                  seq_lengths=lengths)
    else:
        model = unirnn.build(spec, backend="flax", api="nnx", weights=weights, time_major=True,
                             return_carry=True, **F64)
        finals, out = model(np.swapaxes(x, 0, 1), initial_carry=carry, seq_lengths=lengths)
    assert model.kernel == "unirnn-scan"
    assert max_rel_error(np.swapaxes(out, 0, 1), ref_out) <= 1e-12
    assert len(finals) == 4
    for row, (c, h) in enumerate(finals):
        assert max_rel_error(h, ref_h[row]) <= 1e-12
        assert max_rel_error(c, ref_c[row]) <= 1e-12


def test_build_with_weights_initialises_to_them_and_nnx_has_the_same_tree():
    spec = unirnn.gru(3, 4, num_layers=2, bidirectional=True)
    weights = nonzero_weights(spec)
    linen_model = unirnn.build(spec, backend="flax", weights=weights, **F64)
    variables = linen_model.init(jax.random.key(0), _inputs(spec))
    expected = unirnn.to_flax(spec, weights)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(expected)
    for got, want in zip(jax.tree_util.tree_leaves(variables),
                         jax.tree_util.tree_leaves(expected)):
        np.testing.assert_array_equal(got, want)
    nnx_model = unirnn.build(spec, backend="flax", api="nnx", weights=weights, **F64)
    pure = nnx.to_pure_dict(nnx.state(nnx_model, nnx.Param))
    assert jax.tree_util.tree_structure(pure) == jax.tree_util.tree_structure(
        expected["params"])
    x = _inputs(spec)
    np.testing.assert_array_equal(nnx_model(x), linen_model.apply(variables, x))


def test_random_init_shapes_and_dtypes():
    spec = unirnn.lstm(3, 4, peepholes=True, num_layers=2)
    model = unirnn.build(spec, backend="flax")
    variables = model.init(jax.random.key(0), jnp.ones((2, 5, 3), jnp.float32))
    shapes = jax.tree_util.tree_map(jnp.shape, variables["params"])
    assert shapes["layer0_forward"] == {"input_kernel": (3, 16), "recurrent_kernel": (4, 16),
                                        "input_bias": (16,), "recurrent_bias": (16,),
                                        "peepholes": (12,)}
    assert shapes["layer1_forward"]["input_kernel"] == (4, 16)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables))
    # Orthogonal recurrent init per gate block, like Flax's cells.
    block = np.asarray(variables["params"]["layer0_forward"]["recurrent_kernel"][:, :4])
    np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-5)
    nnx_model = unirnn.build(spec, backend="flax", api="nnx", rngs=nnx.Rngs(0))
    assert nnx_model(jnp.ones((2, 5, 3), jnp.float32)).dtype == jnp.float32


def test_reverse_is_the_backward_direction():
    bidir = unirnn.gru(3, 4, bidirectional=True, reset="before")
    weights = nonzero_weights(bidir)
    uni = unirnn.gru(3, 4, reset="before")
    backward = unirnn.Weights({n.replace("backward", "forward"): v for n, v in weights.items()
                               if ".backward." in n})
    x, lengths = _inputs(bidir), np.array([5, 3, 1])
    ref_out, _ = _numpy(bidir, weights, x, lengths=lengths)
    model = unirnn.build(uni, backend="flax", weights=backward, reverse=True, **F64)
    out = model.apply(model.init(jax.random.key(0), x), x, seq_lengths=lengths)
    assert max_rel_error(out, ref_out[..., 4:]) <= 1e-12


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_cell_follows_flax_cell_protocol(api):
    """The cell under Flax's own nn.RNN / nnx.RNN gives the layer's outputs; carry (c, h)."""
    spec = unirnn.lstm(3, 4, activation="relu")
    weights = nonzero_weights(spec)
    x = _inputs(spec)
    ref_out, (ref_h, ref_c) = _numpy(spec, weights, x)
    cell = unirnn.build(spec, backend="flax", api=api, module="cell", weights=weights, **F64)
    assert cell.kernel == "unirnn-scan"
    if api == "linen":
        assert isinstance(cell, nn.RNNCellBase)
        rnn = nn.RNN(cell, return_carry=True)
        (c, h), out = rnn.apply(rnn.init(jax.random.key(0), x), x)
    else:
        (c, h), out = nnx.RNN(cell, return_carry=True)(x)
    assert max_rel_error(out, ref_out) <= 1e-12
    assert max_rel_error(h, ref_h[0]) <= 1e-12
    assert max_rel_error(c, ref_c[0]) <= 1e-12


def test_dropout_between_layers():
    spec = unirnn.rnn(3, 4, num_layers=2, dropout=0.5)
    weights = nonzero_weights(spec)
    x = _inputs(spec)
    ref_out, _ = _numpy(spec, weights, x)
    model = unirnn.build(spec, backend="flax", weights=weights, **F64)
    variables = model.init(jax.random.key(0), x, deterministic=True)
    assert max_rel_error(model.apply(variables, x, deterministic=True), ref_out) <= 1e-12
    dropped = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert np.abs(dropped - ref_out).max() > 1e-3
    with pytest.raises(Exception, match="dropout"):
        model.apply(variables, x, deterministic=False)  # no rng stream: Flax's own error
    nnx_model = unirnn.build(spec, backend="flax", api="nnx", weights=weights,
                             rngs=nnx.Rngs(dropout=1), **F64)
    nnx_model.eval()
    assert max_rel_error(nnx_model(x), ref_out) <= 1e-12
    nnx_model.train()
    assert np.abs(nnx_model(x) - ref_out).max() > 1e-3


def test_bfloat16_compute():
    spec = unirnn.lstm(3, 8)
    weights = nonzero_weights(spec, scale=0.3)
    x = _inputs(spec)
    ref_out, _ = _numpy(spec, weights, x)
    model = unirnn.build(spec, backend="flax", weights=weights, dtype=jnp.bfloat16)
    variables = model.init(jax.random.key(0), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables))
    out = model.apply(variables, x)
    assert out.dtype == jnp.bfloat16
    assert max_rel_error(np.asarray(out, np.float64), ref_out) <= 5e-2


def test_user_registered_activation_uses_its_jax_implementation():
    unirnn.register_activation("flax_test_scaled_tanh", numpy=lambda x, a: a * np.tanh(x),
                               jax=lambda x, a: a * jnp.tanh(x), params={"a": 1.5},
                               overwrite=True)
    spec = unirnn.gru(3, 4, activations={"n": "flax_test_scaled_tanh(0.7)"})
    weights = nonzero_weights(spec)
    x = _inputs(spec)
    result = flax_backend.evaluate(spec, weights, x)
    assert max_rel_error(result.outputs, _numpy(spec, weights, x)[0]) <= 1e-12
    unirnn.register_activation("flax_test_numpy_only", numpy=np.tanh, overwrite=True)
    with pytest.raises(ValueError, match="no 'jax' implementation"):
        flax_backend.evaluate(unirnn.rnn(3, 4, activation="flax_test_numpy_only"),
                              nonzero_weights(unirnn.rnn(3, 4)), x)


def test_errors_name_what_was_expected():
    spec = unirnn.gru(3, 4)
    model = unirnn.build(spec, backend="flax")
    variables = model.init(jax.random.key(0), jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"rank-3.*received shape \(5, 3\)"):
        model.apply(variables, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="expected 3 features"):
        model.apply(variables, jnp.ones((2, 5, 4)))
    with pytest.raises(ValueError, match=r"lengths.*\[1, 5\].*lengths\[1\]=6"):
        model.apply(variables, jnp.ones((2, 5, 3)), seq_lengths=np.array([5, 6]))
    with pytest.raises(ValueError, match="initial_carry.*expected a tuple of 1"):
        model.apply(variables, jnp.ones((2, 5, 3)), initial_carry=jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"initial_carry\[0\]: expected shapes"):
        model.apply(variables, jnp.ones((2, 5, 3)), initial_carry=(jnp.zeros((2, 5)),))
    with pytest.raises(ValueError, match="reverse: expected a unidirectional"):
        bidir = unirnn.build(unirnn.gru(3, 4, bidirectional=True), backend="flax", reverse=True)
        bidir.init(jax.random.key(0), jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match="api: expected 'linen' or 'nnx'"):
        unirnn.build(spec, backend="flax", api="haiku")
    with pytest.raises(ValueError, match="module='cell': expected a single-layer"):
        unirnn.build(unirnn.gru(3, 4, num_layers=2), backend="flax", module="cell")
    bad = {**nonzero_weights(spec), "layer0.forward.w_x": np.zeros((12, 5))}
    with pytest.raises(ValueError, match=r"'layer0.forward.w_x' has shape \(12, 5\); expected"):
        unirnn.build(spec, backend="flax", weights=bad)


def test_seq_lengths_under_jit():
    spec = unirnn.lstm(3, 4, bidirectional=True)
    weights = nonzero_weights(spec)
    x, lengths = _inputs(spec), np.array([5, 1, 3])
    model = unirnn.build(spec, backend="flax", weights=weights, **F64)
    variables = model.init(jax.random.key(0), x)
    out = jax.jit(lambda v, x, l: model.apply(v, x, seq_lengths=l))(variables, x, lengths)
    assert max_rel_error(out, _numpy(spec, weights, x, lengths=lengths)[0]) <= 1e-12
