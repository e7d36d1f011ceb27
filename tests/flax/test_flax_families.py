"""The families beyond rnn, lstm and gru on the Flax backend (linen and nnx), against the
float64 oracle: outputs and final carries, gradients, streaming, the parallel scan of
minGRU/minLSTM, Flax's initialisers, a user-defined family, and Flax's own cells refusing
them."""

from __future__ import annotations

import importlib

import numpy as np
import oracle
import pytest
from support import (
    TOL,
    directional_gradient_error,
    example_inputs,
    framework,
    max_rel_error,
    nonzero_weights,
)

import unirnn

jax = framework("jax")
framework("flax")
jax.config.update("jax_enable_x64", True)  # process-wide; float32 tests pass with it on
jnp = jax.numpy
nn = importlib.import_module("flax.linen")
nnx = importlib.import_module("flax.nnx")
flax_backend = importlib.import_module("unirnn.backends.flax")
flax_nnx = importlib.import_module("unirnn.backends._flax_nnx")
jax_ops = importlib.import_module("unirnn.backends._jax_ops")
kernels_layout = importlib.import_module("unirnn.layouts.kernels")

STACK = {"num_layers": 2, "bidirectional": True}
SPECS = {
    "gru-no-reset": unirnn.gru(3, 4, reset="none", **STACK),
    "lstm-coupled": unirnn.lstm(3, 4, coupled=True, **STACK),
    "ln_lstm": unirnn.Spec("ln_lstm", 3, 4, **STACK),
    "ln_gru": unirnn.Spec("ln_gru", 3, 4, **STACK),
    "indrnn": unirnn.Spec("indrnn", 3, 4, **STACK),
    "mingru": unirnn.Spec("mingru", 3, 4, **STACK),
    "minlstm": unirnn.Spec("minlstm", 3, 4, **STACK),
    "mingru-identity": unirnn.Spec("mingru", 3, 4, activations={"h": "identity"}, **STACK),
}
PARALLEL = {"mingru", "minlstm"}
PARALLEL_KERNEL = "unirnn.flax-parallel-scan"
NNX_NAMES = ["lstm-coupled", "ln_lstm", "indrnn", "minlstm"]
"""nnx runs the linen layer's pure function on its own parameters: these cover the
parameter kinds (extras, no recurrent kernel, the parallel scan, the (c, h) carry)."""
ORACLE_CASES = [(name, "linen") for name in SPECS] + [(name, "nnx") for name in NNX_NAMES]


@pytest.fixture(autouse=True)
def parallel_form_on_cpu(monkeypatch):
    """minGRU and minLSTM run their parallel form off XLA:CPU only; these tests run it on
    the CPU too (test_cpu_steps_mingru checks the CPU's own choice)."""
    from unirnn.backends import _jax_ops

    monkeypatch.setattr(_jax_ops, "PARALLEL_ON_CPU", True)


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_cpu_steps_mingru(name, monkeypatch, default_kernel):
    from unirnn.backends import _jax_ops

    monkeypatch.setattr(_jax_ops, "PARALLEL_ON_CPU", False)
    spec = SPECS[name]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    result = flax_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                   dtype="float64")
    assert result.kernel == default_kernel
    _check_against_oracle(result, spec, weights, x, state, lengths, "float64")


def _states(state):
    return state if isinstance(state, tuple) else (state,)


def _kernel(spec, default_kernel):
    return PARALLEL_KERNEL if spec.family in PARALLEL else default_kernel


def _check_against_oracle(result, spec, weights, x, state, lengths, dtype):
    ref_out, ref_state = oracle.run(spec, weights, x, state, lengths)
    assert result.outputs.dtype == np.dtype(dtype)
    assert result.outputs.shape == ref_out.shape
    assert max_rel_error(result.outputs, ref_out) <= TOL[dtype]
    for got, ref in zip(result.state, _states(ref_state), strict=True):
        assert got.shape == ref.shape
        assert max_rel_error(got, ref) <= TOL[dtype]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("name", "api"), ORACLE_CASES, ids=[f"{n}-{a}" for n, a in ORACLE_CASES])
def test_family_matches_oracle(name, api, dtype, default_kernel):
    """2 layers, bidirectional, initial state and ragged lengths."""
    spec = SPECS[name]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    result = flax_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                   dtype=dtype, api=api)
    assert result.kernel == _kernel(spec, default_kernel)
    _check_against_oracle(result, spec, weights, x, state, lengths, dtype)


@pytest.mark.parametrize("hoist_input", [True, False], ids=["hoisted", "input-per-step"])
@pytest.mark.parametrize("name", ["ln_lstm", "mingru"])
def test_family_without_state_or_lengths(name, hoist_input):
    """The unmasked scan (the parallel scan without ``valid``) and both input placements
    (the layer norm of the projection before the scan or inside each step)."""
    spec = SPECS[name]
    weights = nonzero_weights(spec)
    x, _, _ = example_inputs(spec, with_state=False, with_lengths=False)
    result = flax_backend.evaluate(spec, weights, x, hoist_input=hoist_input)
    _check_against_oracle(result, spec, weights, x, None, None, "float64")


def _loss(spec, weights, x, state, lengths, cotangent):
    out, _ = oracle.run(spec, weights, x, state, lengths)
    return float(np.sum(out * cotangent))


GRAD_CASES = [("ln_lstm", "nnx"), ("ln_gru", "linen"), ("indrnn", "nnx"), ("mingru", "linen"),
              ("minlstm", "linen")]
"""Bidirectional, one layer (minlstm: two); each layer-direction costs compile time."""


@pytest.mark.parametrize(("name", "api"), GRAD_CASES, ids=[f"{n}-{a}" for n, a in GRAD_CASES])
def test_family_grads_match_oracle_finite_differences(name, api):
    """jax.vjp through the layer (the parallel scan for minGRU/minLSTM) against central
    finite differences of the oracle, along random directions in (x, every weight)."""
    _check_grads(SPECS[name] if name == "minlstm" else SPECS[name].replace(num_layers=1),
                 api=api)


def _check_grads(spec, **options):
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    rng = np.random.default_rng(7)
    cotangent = rng.standard_normal((*x.shape[:2], spec.num_directions * spec.output_size))
    result = flax_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                   cotangent=cotangent, **options)
    grads = result.grads
    assert set(grads) == {"x", *weights}
    for n in weights:
        assert grads[n].shape == weights[n].shape, n
    t = np.arange(x.shape[1])
    assert np.all(grads["x"][t[None, :] >= lengths[:, None]] == 0)  # padded steps
    assert directional_gradient_error(spec, weights, x, state, lengths, cotangent, grads, rng,
                                      eps=1e-5) <= 1e-6


def _flax_carry(spec, state):
    """A torch-shaped single-row state as the Flax cell's carry (``h``; ``(c, h)``)."""
    if spec.has_cell_state:
        h, c = (jnp.asarray(s[0]) for s in state)
        return (c, h)
    return jnp.asarray(state[0])


@pytest.mark.parametrize("name", list(SPECS))
def test_streaming_equals_sequence(name):
    """The Flax cell stepped one input at a time (and under nn.RNN / nnx.RNN) gives the
    layer's outputs and carry: for minGRU/minLSTM, the step against the parallel scan."""
    spec = SPECS[name].replace(num_layers=1, bidirectional=False)
    weights = nonzero_weights(spec)
    x, state, _ = example_inputs(spec, with_lengths=False)
    carry0 = _flax_carry(spec, state)
    options = {"dtype": jnp.float64, "param_dtype": jnp.float64}

    layer = unirnn.build(spec, backend="flax", weights=weights, return_carry=True, **options)
    variables = layer.init(jax.random.key(0), x)
    (final,), out = layer.apply(variables, x, initial_carry=(carry0,))
    cell = unirnn.build(spec, backend="flax", weights=weights, module="cell", **options)
    cell_params = {"params": variables["params"]["layer0_forward"]}
    carry, steps = carry0, []
    for t in range(x.shape[1]):
        carry, y = cell.apply(cell_params, carry, x[:, t])
        steps.append(y)
    np.testing.assert_allclose(np.stack(steps, 1), out, rtol=0, atol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(final),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    scanned = nn.RNN(cell).apply({"params": {"cell": cell_params["params"]}}, x,
                                 initial_carry=carry0)
    np.testing.assert_allclose(scanned, out, rtol=0, atol=1e-12)

    nnx_cell = unirnn.build(spec, backend="flax", api="nnx", module="cell", weights=weights,
                            **options)
    nnx_layer = unirnn.build(spec, backend="flax", api="nnx", weights=weights, **options)
    carry, steps = carry0, []
    for t in range(x.shape[1]):
        carry, y = nnx_cell(carry, x[:, t])
        steps.append(y)
    np.testing.assert_allclose(np.stack(steps, 1), out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(nnx_layer(x, initial_carry=(carry0,)), out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(nnx.RNN(nnx_cell)(x, initial_carry=carry0), out, rtol=0,
                               atol=1e-12)


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_parallel_kernel_is_named(api, default_kernel):
    """minGRU/minLSTM layers run one associative scan per layer and direction and say so;
    minGRU with a non-sigmoid update gate has no parallel form and is scanned."""
    assert PARALLEL_KERNEL in flax_backend.KERNELS
    assert flax_backend.PARALLEL_KERNEL == PARALLEL_KERNEL
    for name, spec in SPECS.items():
        weights = nonzero_weights(spec) if api == "nnx" else None  # no nnx initialisers
        model = unirnn.build(spec, backend="flax", api=api, weights=weights)
        assert model.kernel == _kernel(spec, default_kernel), name
    stepped = unirnn.Spec("mingru", 3, 4, activations={"z": "hard_sigmoid"})
    weights = nonzero_weights(stepped)
    model = unirnn.build(stepped, backend="flax", api=api, weights=weights)
    assert model.kernel == default_kernel
    x, state, lengths = example_inputs(stepped)
    result = flax_backend.evaluate(stepped, weights, x, initial_state=state, lengths=lengths,
                                   api=api)
    assert result.kernel == default_kernel
    _check_against_oracle(result, stepped, weights, x, state, lengths, "float64")


@pytest.fixture(params=[True, False], ids=["associative", "multiply-add"])
def associative(request, monkeypatch):
    """Both linear scans of the parallel form, whichever the default backend uses: the
    associative scan (off XLA:CPU) and one multiply-add per step (XLA:CPU)."""
    monkeypatch.setattr(jax_ops, "uses_associative_scan", lambda: request.param)
    return request.param


def test_linear_scans_match_the_recurrence(associative):
    rng = np.random.default_rng(0)
    log_a = -np.abs(rng.standard_normal((9, 2, 3)))
    b = rng.standard_normal((9, 2, 3))
    h0 = rng.standard_normal((2, 3))
    h, expected = h0, []
    for t in range(9):
        h = np.exp(log_a[t]) * h + b[t]
        expected.append(h)
    got = jax.jit(flax_backend.JaxOps().linear_scan)(log_a, b, None, h0)
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_other_linear_scan_matches_oracle(name, dtype, monkeypatch):
    """The linear scan the default backend does not use (the tests above run the other)."""
    other = not jax_ops.uses_associative_scan()
    monkeypatch.setattr(jax_ops, "uses_associative_scan", lambda: other)
    spec = SPECS[name]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    result = flax_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                   dtype=dtype)
    assert result.kernel == PARALLEL_KERNEL
    _check_against_oracle(result, spec, weights, x, state, lengths, dtype)


def test_other_linear_scan_grads_match_oracle(monkeypatch):
    other = not jax_ops.uses_associative_scan()
    monkeypatch.setattr(jax_ops, "uses_associative_scan", lambda: other)
    _check_grads(SPECS["mingru"].replace(num_layers=1))


def test_parallel_scan_long_sequence_float32(associative):
    """T=512 in float32: both linear scans stay within float32 tolerance."""
    spec = unirnn.Spec("mingru", 4, 8)
    weights = nonzero_weights(spec, scale=1.5)
    x = np.random.default_rng(0).standard_normal((2, 512, 4))
    h0 = np.random.default_rng(1).standard_normal((1, 2, 8))
    result = flax_backend.evaluate(spec, weights, x, initial_state=h0, dtype="float32")
    assert result.kernel == PARALLEL_KERNEL
    assert max_rel_error(result.outputs, oracle.run(spec, weights, x, h0)[0]) <= 1e-5


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_flax_initialisers(api):
    """Without weights: the kernel layout's parameters, no recurrent kernel where the
    family has none, layer-norm scales at one and offsets at zero; the model runs."""
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    for name in ("ln_lstm", "indrnn"):
        spec = SPECS[name].replace(num_layers=1, bidirectional=False)
        if api == "nnx":
            model = unirnn.build(spec, backend="flax", api="nnx", rngs=nnx.Rngs(0))
            params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
            out = model(x)
        else:
            model = unirnn.build(spec, backend="flax")
            out, variables = jax.jit(model.init_with_output)(jax.random.key(0), x)
            params = variables["params"]
        assert np.all(np.isfinite(np.asarray(out)))
        for layer in range(spec.num_layers):
            tensors = params[f"layer{layer}_forward"]
            expected = kernels_layout.kernel_layout_shapes(spec, spec.layer_input_size(layer))
            assert {k: tuple(np.shape(v)) for k, v in tensors.items()} == expected, name
        first = params["layer0_forward"]
        assert ("recurrent_kernel" in first) == (name.startswith("ln_")), name
        for scale in ("ln_x", "ln_h", "ln_c"):
            if scale in first:
                assert np.all(np.asarray(first[scale]) == 1.0)
        if "ln_c_offset" in first:
            assert np.all(np.asarray(first["ln_c_offset"]) == 0.0)
        if "u" in first:  # IndRNN's per-unit weight: uniform in ±1/sqrt(H), as init_weights
            u = np.asarray(first["u"])
            assert np.all(np.abs(u) <= 0.5) and np.any(u != 0)


NATIVE = [
    ("gru-no-reset", "GRUCell", "reset='none'"),
    ("ln_gru", "GRUCell", "family='ln_gru'"),
    ("mingru", "GRUCell", "family='mingru'"),
    ("lstm-coupled", "LSTMCell", "coupled=True"),
    ("ln_lstm", "OptimizedLSTMCell", "family='ln_lstm'"),
    ("indrnn", "SimpleCell", "family='indrnn'"),
    ("minlstm", "LSTMCell", "family='minlstm'"),
]


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize(("name", "cell", "field"), NATIVE, ids=[n for n, _, _ in NATIVE])
def test_flax_cells_refuse_the_family(name, cell, field, api):
    spec = SPECS[name].replace(num_layers=1, bidirectional=False)
    with pytest.raises(ValueError, match=f"{field}.*Flax's {cell}") as info:
        unirnn.to_flax(spec, nonzero_weights(spec), cell=cell, api=api)
    assert "unirnn's own" in str(info.value)


def test_flax_cell_tree_read_as_a_family_is_refused():
    gru = unirnn.gru(3, 4)
    tree = unirnn.to_flax(gru, nonzero_weights(gru), cell="GRUCell")
    with pytest.raises(ValueError, match="family='ln_gru'.*Flax's GRUCell"):
        unirnn.from_flax(tree, cell="GRUCell", spec=unirnn.Spec("ln_gru", 3, 4))


@pytest.mark.parametrize("name", ["ln_lstm", "indrnn", "mingru"])
def test_layer_tree_round_trips_with_the_spec(name):
    """unirnn's layer tree of a family reads back with spec=; without it the tree cannot
    say the family, and reading says so."""
    spec = SPECS[name]
    weights = nonzero_weights(spec)
    tree = unirnn.to_flax(spec, weights)
    spec2, weights2 = unirnn.from_flax(tree, spec=spec)
    assert spec2 == spec
    for key in weights:
        np.testing.assert_array_equal(weights2[key], weights[key])
    with pytest.raises(ValueError, match="cannot infer the spec.*pass spec="):
        unirnn.from_flax(tree)


# -- a user-defined family ---------------------------------------------------------------


class ScaledGRUCell(unirnn.Cell):
    """A GRU without reset gate whose candidate is scaled per unit (``n = tanh(a_n) * s``)."""

    def prepare(self, params):
        return {"w_h": params["w_h"], "b_h": params.get("b_h"), "s": params["s"]}

    def step(self, p, xp, carry):
        (h,) = carry
        a_z, a_n = self.ops.split(xp + self._recurrent(p, "w_h", h), 2)
        h = self.ops.lerp(self.act["n"](a_n) * p["s"], h, self.act["z"](a_z))
        return (h,), h


def _scaled_gru_oracle(spec, w, x, h0):
    H = spec.hidden_size
    out = np.zeros((x.shape[0], x.shape[1], H))
    for n in range(x.shape[0]):
        h = h0[0, n]
        for t in range(x.shape[1]):
            a = w["layer0.forward.w_x"] @ x[n, t] + w["layer0.forward.b_x"] \
                + w["layer0.forward.w_h"] @ h + w["layer0.forward.b_h"]
            z = 1 / (1 + np.exp(-a[:H]))
            h = z * h + (1 - z) * np.tanh(a[H:]) * w["layer0.forward.s"]
            out[n, t] = h
    return out


def test_user_family_on_linen_and_nnx():
    unirnn.register_family(
        "test_scaled_gru", gates=("z", "n"), activations={"z": "sigmoid", "n": "tanh"},
        cell=ScaledGRUCell, params=lambda spec: {"s": unirnn.Param((spec.hidden_size,), "ones")},
        doc="a test family", overwrite=True)
    spec = unirnn.Spec("test_scaled_gru", 3, 4)
    weights = nonzero_weights(spec)
    x, h0, _ = example_inputs(spec, with_lengths=False)
    expected = _scaled_gru_oracle(spec, weights, x, h0)
    for api in ("linen", "nnx"):
        result = flax_backend.evaluate(spec, weights, x, initial_state=h0, api=api)
        assert max_rel_error(result.outputs, expected) <= 1e-12
    params = unirnn.build(spec, backend="flax").init(jax.random.key(0), x)["params"]
    assert np.all(np.asarray(params["layer0_forward"]["s"]) == 1.0)


def test_nnx_refuses_a_parameter_named_like_an_attribute():
    from unirnn._cell_families import IndRNNCell

    class Clash(IndRNNCell):
        def prepare(self, params):
            return {"u": params["cell"]}

    unirnn.register_family("test_flax_clash", gates=("h",), activations={"h": "tanh"},
                           cell=Clash, recurrent=False, overwrite=True,
                           params=lambda spec: {"cell": unirnn.Param((spec.hidden_size,))})
    spec = unirnn.Spec("test_flax_clash", 3, 4)
    with pytest.raises(ValueError, match="'cell' clashes with an attribute of UniCellNNX"):
        flax_nnx.UniCellNNX(spec, 3, rngs=nnx.Rngs(0))
    out = unirnn.build(spec, backend="flax").init_with_output(
        jax.random.key(0), np.ones((2, 3, 3), np.float32))[0]  # linen keeps params in a dict
    assert out.shape == (2, 3, 4)
