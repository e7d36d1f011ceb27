"""Gradients of evaluate() (jax.vjp through the scan) against central finite differences
of the independent float64 oracle, along random directions in (x, every weight)."""

from __future__ import annotations

import importlib

import numpy as np
import oracle
import pytest
from cases import SPECS
from support import (
    directional_gradient_error,
    example_inputs,
    framework,
    max_rel_error,
    nonzero_weights,
)

import unirnn

jax = framework("jax")
framework("flax")
jax.config.update("jax_enable_x64", True)
flax_backend = importlib.import_module("unirnn.backends.flax")

# One spec per family and option group; each costs a forward and a backward compile.
GRAD_CASES = ["rnn-relu-nobias", "rnn-2layer-bidir", "lstm-peephole-clip",
              "lstm-proj-bidir-2layer", "lstm-roles", "gru-gelu-z", "gru-before-new-nobias"]


def _loss(spec, weights, x, state, lengths, cotangent):
    out, _ = oracle.run(spec, weights, x, state, lengths)
    return float(np.sum(out * cotangent))


@pytest.mark.parametrize("name", GRAD_CASES)
def test_grads_match_oracle_finite_differences(name):
    _check_grads(SPECS[name])


@pytest.mark.parametrize("hoist_input", [True, False], ids=["hoisted", "input-per-step"])
@pytest.mark.parametrize("name", ["lstm-proj-bidir-2layer", "gru-before"])
def test_grads_of_both_input_placements(name, hoist_input):
    """The input GEMM hoisted (its gradient one GEMM after the scan) or inside each step."""
    _check_grads(SPECS[name], hoist_input=hoist_input)


def _check_grads(spec, **options):
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    rng = np.random.default_rng(7)
    cotangent = rng.standard_normal((*x.shape[:2], spec.num_directions * spec.output_size))
    result = flax_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                   cotangent=cotangent, **options)
    grads = result.grads
    assert grads is not None
    assert set(grads) == {"x", *weights}
    assert grads["x"].shape == x.shape
    for n in weights:
        assert grads[n].shape == weights[n].shape, n
    # Padded steps get no gradient: the outputs there are zero whatever x is.
    t = np.arange(x.shape[1])
    assert np.all(grads["x"][t[None, :] >= lengths[:, None]] == 0)

    assert directional_gradient_error(spec, weights, x, state, lengths, cotangent, grads, rng,
                                      eps=1e-5) <= 1e-6


def test_grad_under_jit_and_vmap():
    """jax.grad of the linen module's params under jit, and vmap over a batch of sequences."""
    spec = unirnn.gru(3, 4, activations={"z": "gelu"})
    weights = nonzero_weights(spec)
    model = unirnn.build(spec, backend="flax", param_dtype=np.float64)
    variables = flax_backend.variables_from_weights(spec, weights)
    x = np.random.default_rng(3).standard_normal((2, 5, 3))

    def loss(v, x):
        return (model.apply(v, x) ** 2).sum()

    g = jax.jit(jax.grad(loss))(variables, x)
    eps = 1e-6
    kernel = variables["params"]["layer0_forward"]["recurrent_kernel"]
    bumped = jax.tree_util.tree_map(lambda a: a, variables)
    bumped["params"]["layer0_forward"]["recurrent_kernel"] = kernel.copy()
    bumped["params"]["layer0_forward"]["recurrent_kernel"][1, 2] += eps
    numeric = (loss(bumped, x) - loss(variables, x)) / eps
    analytic = g["params"]["layer0_forward"]["recurrent_kernel"][1, 2]
    assert abs(numeric - analytic) <= 1e-4 * max(1.0, abs(numeric))

    per_sequence = jax.vmap(lambda xs: model.apply(variables, xs[None])[0])(x)
    np.testing.assert_allclose(per_sequence, model.apply(variables, x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["lstm-proj-bidir-2layer", "gru-before"])
def test_nnx_evaluate_matches_oracle_and_linen_grads(name):
    """evaluate(api="nnx") runs UniRNNNNX: oracle outputs, and the same grads as linen."""
    spec = SPECS[name]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    cotangent = np.random.default_rng(8).standard_normal(
        (*x.shape[:2], spec.num_directions * spec.output_size))
    nnx_result = flax_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                       cotangent=cotangent, api="nnx")
    linen_result = flax_backend.evaluate(spec, weights, x, initial_state=state,
                                         lengths=lengths, cotangent=cotangent, api="linen")
    ref_out, _ = oracle.run(spec, weights, x, state, lengths)
    assert max_rel_error(nnx_result.outputs, ref_out) <= 1e-10
    for key, grad in linen_result.grads.items():
        np.testing.assert_allclose(nnx_result.grads[key], grad, rtol=1e-12, atol=1e-13)
