"""The Flax backend against the independent float64 oracle (tests/oracle.py), every spec."""

from __future__ import annotations

import importlib

import numpy as np
import oracle
import pytest
from cases import SPECS
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights

from unirnn._activations import BUILTIN_NAMES, NUMPY_ACTIVATIONS, parse_activation

jax = framework("jax")
framework("flax")
jax.config.update("jax_enable_x64", True)  # process-wide; float32 tests pass with it on
flax_backend = importlib.import_module("unirnn.backends.flax")

ACTIVATIONS = [*BUILTIN_NAMES, "hard_sigmoid(0.2, 0.5)", "leaky_relu(0.3)", "elu(0.5)"]
X = np.concatenate([np.linspace(-30.0, 30.0, 601), [-3.0, 0.0, 3.0, 2.5, -2.5]])


def _states(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_numpy_reference(name):
    act = parse_activation(name)
    reference = NUMPY_ACTIVATIONS[act.name](X, *act.args)
    actual = np.asarray(flax_backend.JaxOps().activation(name)(jax.numpy.asarray(X)))
    assert actual.dtype == np.float64
    np.testing.assert_allclose(actual, reference, rtol=1e-12, atol=1e-14)


def test_every_builtin_has_a_jax_implementation():
    assert set(flax_backend.JAX_ACTIVATIONS) == set(BUILTIN_NAMES)


# float64: the masked scan (state + lengths) and the unmasked one, every spec. float32 on
# the shared example inputs (state + lengths), as the numpy backend's test: without lengths
# "gru-leaky-softplus" (identity z) grows its state to ~1e5 and float32 rounding there
# reaches ~1.2e-5 of the scale (numpy's own float32 run: ~4e-6).
FLOAT64_CASES = [(name, variant) for name in SPECS for variant in ("state+lengths", "plain")]


@pytest.mark.parametrize(("name", "variant"), FLOAT64_CASES,
                         ids=[f"{n}-{v}" for n, v in FLOAT64_CASES])
def test_float64_matches_oracle(name, variant, default_kernel):
    spec = SPECS[name]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, with_state=variant != "plain",
                                       with_lengths=variant != "plain")
    result = flax_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths)
    ref_out, ref_state = oracle.run(spec, weights, x, state, lengths)
    assert result.kernel == default_kernel
    assert result.outputs.dtype == np.float64
    assert result.outputs.shape == ref_out.shape
    assert max_rel_error(result.outputs, ref_out) <= TOL["float64"]
    for got, ref in zip(result.state, _states(ref_state), strict=True):
        assert got.shape == ref.shape
        assert max_rel_error(got, ref) <= TOL["float64"]


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_float32_matches_oracle(spec):
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    result = flax_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                   dtype="float32")
    ref_out, ref_state = oracle.run(spec, weights, x, state, lengths)
    assert result.outputs.dtype == np.float32
    assert max_rel_error(result.outputs, ref_out) <= TOL["float32"]
    for got, ref in zip(result.state, _states(ref_state), strict=True):
        assert max_rel_error(got, ref) <= TOL["float32"]


@pytest.mark.parametrize("hoist_input", [True, False], ids=["hoisted", "input-per-step"])
@pytest.mark.parametrize("name", list(SPECS))
def test_both_input_placements_match_oracle(name, hoist_input):
    """The input GEMM hoisted before the scan or inside each step: the same function."""
    spec = SPECS[name]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    result = flax_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                   hoist_input=hoist_input)
    assert result.kernel == ("unirnn-scan" if hoist_input else "unirnn-scan(input-per-step)")
    ref_out, ref_state = oracle.run(spec, weights, x, state, lengths)
    assert max_rel_error(result.outputs, ref_out) <= TOL["float64"]
    for got, ref in zip(result.state, _states(ref_state), strict=True):
        assert max_rel_error(got, ref) <= TOL["float64"]


def _gpus():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


@pytest.mark.gpu
@pytest.mark.parametrize("hoist_input", [None, True, False],
                         ids=["default", "hoisted", "input-per-step"])
@pytest.mark.parametrize("spec", [SPECS["lstm-proj-bidir-2layer"], SPECS["gru-gelu-z"]],
                         ids=["lstm-proj-bidir-2layer", "gru-gelu-z"])
def test_gpu_float32_matches_oracle(spec, hoist_input):
    """On a GPU with full float32 matmuls (not TF32), the suite's float32 tolerance."""
    gpus = _gpus()
    if not gpus:
        pytest.skip("JAX sees no GPU")
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    with jax.default_device(gpus[0]), jax.default_matmul_precision("highest"):
        result = flax_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                       dtype="float32", hoist_input=hoist_input)
    ref_out, ref_state = oracle.run(spec, weights, x, state, lengths)
    assert max_rel_error(result.outputs, ref_out) <= TOL["float32"]
    for got, ref in zip(result.state, _states(ref_state), strict=True):
        assert max_rel_error(got, ref) <= TOL["float32"]


@pytest.mark.gpu
def test_gpu_tests_run_with_full_float32_matmuls():
    """tests/flax/conftest.py: on a GPU every test's matmuls are full float32."""
    if not _gpus():
        pytest.skip("JAX sees no GPU")
    assert jax.config.jax_default_matmul_precision == "highest"
