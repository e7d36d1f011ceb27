"""The Flax modules as Flax users call them: linen and nnx layers, the cell, carries, options."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import oracle
import pytest
from support import TOL, framework, max_rel_error, nonzero_weights

import unirnn

jax = framework("jax")
framework("flax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy
nn = importlib.import_module("flax.linen")
nnx = importlib.import_module("flax.nnx")
flax_backend = importlib.import_module("unirnn.backends.flax")

F64 = {"dtype": np.float64, "param_dtype": np.float64}


def _oracle(spec, weights, x, state=None, lengths=None):
    """The independent float64 oracle (tests/oracle.py): outputs and torch-shaped state."""
    return oracle.run(spec, weights, x, state, lengths)


def _inputs(spec, batch=3, steps=5, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, steps, spec.input_size))


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_layer_carry_layout_time_major_and_initial_carry(api, default_kernel):
    """Carry: one Flax-ordered (c, h) per layer and direction in torch row order."""
    spec = unirnn.lstm(3, 5, proj_size=2, num_layers=2, bidirectional=True)
    weights = nonzero_weights(spec)
    x = _inputs(spec)
    rng = np.random.default_rng(1)
    h0 = rng.standard_normal((4, 3, 2))
    c0 = rng.standard_normal((4, 3, 5))
    lengths = np.array([5, 2, 4])
    ref_out, (ref_h, ref_c) = _oracle(spec, weights, x, (h0, c0), lengths)

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
    assert model.kernel == default_kernel
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
    ref_out, _ = _oracle(bidir, weights, x, lengths=lengths)
    model = unirnn.build(uni, backend="flax", weights=backward, reverse=True, **F64)
    out = model.apply(model.init(jax.random.key(0), x), x, seq_lengths=lengths)
    assert max_rel_error(out, ref_out[..., 4:]) <= 1e-12


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_cell_follows_flax_cell_protocol(api):
    """The cell under Flax's own nn.RNN / nnx.RNN gives the layer's outputs; carry (c, h)."""
    spec = unirnn.lstm(3, 4, activation="relu")
    weights = nonzero_weights(spec)
    x = _inputs(spec)
    ref_out, (ref_h, ref_c) = _oracle(spec, weights, x)
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
    ref_out, _ = _oracle(spec, weights, x)
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
    ref_out, _ = _oracle(spec, weights, x)
    model = unirnn.build(spec, backend="flax", weights=weights, dtype=jnp.bfloat16)
    variables = model.init(jax.random.key(0), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables))
    out = model.apply(variables, x)
    assert out.dtype == jnp.bfloat16
    assert max_rel_error(np.asarray(out, np.float64), ref_out) <= 5e-2


def test_user_registered_activation_uses_its_jax_implementation(monkeypatch):
    known = oracle._activation
    monkeypatch.setattr(oracle, "_activation", lambda text, xp=np: (
        (lambda v: 0.7 * xp.tanh(v)) if text == "flax_test_scaled_tanh(0.7)"
        else known(text, xp)))
    unirnn.register_activation("flax_test_scaled_tanh", numpy=lambda x, a: a * np.tanh(x),
                               jax=lambda x, a: a * jnp.tanh(x), params={"a": 1.5},
                               overwrite=True)
    spec = unirnn.gru(3, 4, activations={"n": "flax_test_scaled_tanh(0.7)"})
    weights = nonzero_weights(spec)
    x = _inputs(spec)
    result = flax_backend.evaluate(spec, weights, x)
    assert max_rel_error(result.outputs, _oracle(spec, weights, x)[0]) <= 1e-12
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
    with pytest.raises(ValueError,
                       match=r"initial_carry\[0\] \(layer 0, forward, h\): expected shape"):
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
    assert max_rel_error(out, _oracle(spec, weights, x, lengths=lengths)[0]) <= 1e-12


def _bf16(array):
    """``array`` rounded to bfloat16, as float64 (which holds every bfloat16 exactly)."""
    return np.asarray(jnp.asarray(array, jnp.bfloat16), np.float64)


# Computing in bfloat16: 8 significant bits, unit roundoff 2**-9 (about 2e-3). Every step
# rounds its input, both GEMM outputs, the gates and the new state, and the state's error
# carries into the next step, so over 5 steps and 2 layers a few roundoffs add up
# (measured at most 3.6e-3 of the output scale on these cases). 2e-2, about ten
# roundoffs, leaves room for another summation order (GPU) yet fails a wrong gate, bias
# or state, which are off by O(0.1).
BF16_TOL = 2e-2

BF16_SPECS = {
    "lstm": unirnn.lstm(3, 8),
    "gru-gelu-z": unirnn.gru(3, 8, activations={"z": "gelu"}),
    "gru-before-bidir-2layer": unirnn.gru(3, 8, reset="before", num_layers=2,
                                          bidirectional=True),
}


def _params_of(api, model, variables=None):
    if api == "linen":
        return variables
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("name", list(BF16_SPECS))
def test_bfloat16_parameters_match_oracle(name, api):
    """param_dtype=bfloat16 with weights: the parameters are the weights rounded to
    bfloat16. Float32 inputs promote the computation to float32 (the float32 tolerance
    against the oracle on the rounded weights); dtype=bfloat16 computes in bfloat16."""
    spec = BF16_SPECS[name]
    weights = nonzero_weights(spec, scale=0.3)
    rounded = unirnn.Weights({n: _bf16(w) for n, w in weights.items()})
    x = _inputs(spec).astype(np.float32)
    outputs = {}
    for dtype in (None, jnp.bfloat16):
        inputs = x if dtype is None else jnp.asarray(x, jnp.bfloat16)
        model = unirnn.build(spec, backend="flax", api=api, weights=weights,
                             param_dtype=jnp.bfloat16, dtype=dtype)
        if api == "linen":
            variables = model.init(jax.random.key(0), inputs)
            outputs[dtype] = model.apply(variables, inputs)
        else:
            variables = None
            outputs[dtype] = model(inputs)
        leaves = jax.tree_util.tree_leaves(_params_of(api, model, variables))
        assert leaves and all(a.dtype == jnp.bfloat16 for a in leaves)
    assert outputs[None].dtype == jnp.float32
    ref_out, _ = oracle.run(spec, rounded, x.astype(np.float64))
    assert max_rel_error(outputs[None], ref_out) <= TOL["float32"]
    assert outputs[jnp.bfloat16].dtype == jnp.bfloat16
    ref_out, _ = oracle.run(spec, rounded, _bf16(x))
    assert max_rel_error(np.asarray(outputs[jnp.bfloat16], np.float64), ref_out) <= BF16_TOL


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_random_init_in_bfloat16(api):
    """param_dtype=bfloat16 without weights: drawn in float32 and cast (jax's orthogonal
    initialiser has no bfloat16 QR). The recurrent blocks are orthogonal to bfloat16
    precision; the outputs are the oracle's on the parameters read back by from_flax."""
    spec = unirnn.gru(3, 4, reset="before", num_layers=2)
    x = _inputs(spec).astype(np.float32)
    if api == "linen":
        model = unirnn.build(spec, backend="flax", param_dtype=jnp.bfloat16)
        variables = model.init(jax.random.key(0), x)
        out = model.apply(variables, x)
    else:
        model = unirnn.build(spec, backend="flax", api="nnx", param_dtype=jnp.bfloat16,
                             rngs=nnx.Rngs(0))
        variables = None
        out = model(x)
    params = _params_of(api, model, variables)
    leaves = jax.tree_util.tree_leaves(params)
    assert leaves and all(a.dtype == jnp.bfloat16 for a in leaves)
    tree = params["params"] if api == "linen" else params
    kernel = np.asarray(tree["layer1_forward"]["recurrent_kernel"], np.float64)
    for gate in range(3):
        block = kernel[:, 4 * gate: 4 * gate + 4]
        np.testing.assert_allclose(block.T @ block, np.eye(4), atol=2e-2)
    read_spec, weights = unirnn.from_flax(params, spec=spec)
    assert read_spec == spec
    assert all(w.dtype == np.float32 for w in weights.values())
    assert out.dtype == jnp.float32
    assert max_rel_error(out, oracle.run(spec, weights, x.astype(np.float64))[0]) <= TOL["float32"]


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_reverse_matches_oracle_backward_direction(api):
    """reverse=True (attribute or call argument) runs the valid steps right to left: the
    oracle's backward direction, outputs and final (c, h)."""
    bidir = unirnn.lstm(3, 4, bidirectional=True, peepholes=True)
    weights = nonzero_weights(bidir)
    backward = unirnn.Weights({n.replace("backward", "forward"): v for n, v in weights.items()
                               if ".backward." in n})
    uni = unirnn.lstm(3, 4, peepholes=True)
    x, lengths = _inputs(bidir), np.array([5, 3, 1])
    ref_out, (ref_h, ref_c) = oracle.run(bidir, weights, x, None, lengths)
    runs = []
    if api == "linen":
        model = unirnn.build(uni, backend="flax", weights=backward, reverse=True,
                             return_carry=True, **F64)
        variables = model.init(jax.random.key(0), x)
        runs.append(model.apply(variables, x, seq_lengths=lengths))
        forward = unirnn.build(uni, backend="flax", weights=backward, return_carry=True, **F64)
        runs.append(forward.apply(variables, x, seq_lengths=lengths, reverse=True))
    else:
        model = unirnn.build(uni, backend="flax", api="nnx", weights=backward, reverse=True,
                             return_carry=True, **F64)
        runs.append(model(x, seq_lengths=lengths))
        forward = unirnn.build(uni, backend="flax", api="nnx", weights=backward,
                               return_carry=True, **F64)
        runs.append(forward(x, seq_lengths=lengths, reverse=True))
    for finals, out in runs:
        assert max_rel_error(out, ref_out[..., 4:]) <= TOL["float64"]
        (c, h), = finals
        assert max_rel_error(h, ref_h[1]) <= TOL["float64"]
        assert max_rel_error(c, ref_c[1]) <= TOL["float64"]


def test_nnx_module_under_nnx_jit_grad_and_vmap():
    """nnx.jit and nnx.vmap give the oracle's outputs; nnx.grad the gradient of the oracle
    (central finite differences along a random direction in every weight)."""
    spec = unirnn.gru(3, 4, activations={"z": "gelu"}, num_layers=2)
    weights = nonzero_weights(spec)
    model = unirnn.build(spec, backend="flax", api="nnx", weights=weights, **F64)
    x = _inputs(spec)
    ref_out, _ = oracle.run(spec, weights, x)
    assert max_rel_error(nnx.jit(lambda m, x: m(x))(model, x), ref_out) <= TOL["float64"]
    per_sequence = nnx.vmap(lambda m, xs: m(xs[None])[0], in_axes=(None, 0))(model, x)
    assert max_rel_error(per_sequence, ref_out) <= TOL["float64"]

    rng = np.random.default_rng(5)
    cotangent = rng.standard_normal(ref_out.shape)
    grads = nnx.jit(nnx.grad(lambda m: (m(x) * cotangent).sum()))(model)
    _, canonical = unirnn.from_flax(nnx.to_pure_dict(grads), spec=spec)  # transposes only
    direction = {n: rng.standard_normal(w.shape) for n, w in weights.items()}
    eps = 1e-6

    def loss(sign):
        moved = unirnn.Weights({n: w + sign * eps * direction[n] for n, w in weights.items()})
        return float(np.sum(oracle.run(spec, moved, x)[0] * cotangent))

    numeric = (loss(1) - loss(-1)) / (2 * eps)
    analytic = sum(float(np.sum(canonical[n] * direction[n])) for n in weights)
    assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric))


def test_nnx_dropout_without_rngs_says_what_to_pass():
    """Built with weights= but no rngs: training-mode dropout names rngs=nnx.Rngs(...);
    deterministic runs need no rngs and give the oracle's outputs."""
    spec = unirnn.rnn(3, 4, num_layers=2, dropout=0.5)
    weights = nonzero_weights(spec)
    x = _inputs(spec)
    model = unirnn.build(spec, backend="flax", api="nnx", weights=weights, **F64)
    with pytest.raises(ValueError, match=r"dropout=0.5 in training mode.*rngs=nnx.Rngs\("):
        model(x)
    ref_out, _ = oracle.run(spec, weights, x)
    assert max_rel_error(model(x, deterministic=True), ref_out) <= TOL["float64"]
    model.eval()
    assert max_rel_error(model(x), ref_out) <= TOL["float64"]


_X64_OFF = """
import sys

import jax
import numpy as np

import unirnn

assert not jax.config.jax_enable_x64
data = np.load(sys.argv[1])
spec = unirnn.lstm(3, 5, proj_size=2, num_layers=2, bidirectional=True)
weights = {name: data[name] for name in unirnn.weight_shapes(spec)}
x, lengths = data["x"], data["lengths"]
linen = unirnn.build(spec, backend="flax", weights=weights)
linen_out = linen.apply(linen.init(jax.random.key(0), x), x, seq_lengths=lengths)
nnx_out = unirnn.build(spec, backend="flax", api="nnx", weights=weights)(x, seq_lengths=lengths)
np.savez(sys.argv[2], linen=np.asarray(linen_out), nnx=np.asarray(nnx_out))
"""


def test_float32_with_x64_off(tmp_path):
    """This module switches x64 on process-wide, so a fresh process runs linen and nnx with
    x64 off (JAX's default); their float32 outputs hold the float32 tolerance."""
    spec = unirnn.lstm(3, 5, proj_size=2, num_layers=2, bidirectional=True)
    weights = nonzero_weights(spec)
    x = _inputs(spec).astype(np.float32)
    lengths = np.array([5, 2, 4])
    np.savez(tmp_path / "in.npz", x=x, lengths=lengths, **weights)
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    subprocess.run([sys.executable, "-c", _X64_OFF, str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npz")], check=True, env=env,
                   cwd=Path(__file__).resolve().parents[2], timeout=300)
    result = np.load(tmp_path / "out.npz")
    ref_out, _ = oracle.run(spec, weights, x.astype(np.float64), None, lengths)
    for api in ("linen", "nnx"):
        assert result[api].dtype == np.float32
        assert max_rel_error(result[api], ref_out) <= TOL["float32"]
