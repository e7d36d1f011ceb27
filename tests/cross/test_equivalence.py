"""Every backend computes the same function: outputs, final state and gradients.

Each backend (numpy, torch on both its paths, flax linen and NNX, Keras on the Keras
backend of this process, native and custom paths) is held to the independent float64
oracle: float64 within 1e-10 and float32 within 1e-5 of the output scale; gradients
(with respect to the input and every canonical weight) against JAX autodiff of the
oracle.
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from cases import FAMILY_SPECS, SPECS
from equivalence import BACKENDS, evaluate, oracle_gradients
from hypothesis import given
from hypothesis import strategies as st
from support import TOL, max_rel_error, nonzero_weights

import unirnn


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def _inputs(spec, batch, steps, seed, with_state=True, with_lengths=True):
    """Input, initial state (or None: zeros), lengths (or None: all T) and a cotangent.

    Without state and lengths a backend takes its plain path (the native kernels without
    packing or masking); with them, the ragged and stateful one.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, spec.input_size))
    rows = spec.num_layers * spec.num_directions
    h0 = 0.5 * rng.standard_normal((rows, batch, spec.output_size))
    state = (h0, 0.5 * rng.standard_normal((rows, batch, spec.hidden_size))) \
        if spec.has_cell_state else h0
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    cotangent = rng.standard_normal((batch, steps, spec.num_directions * spec.output_size))
    return x, state if with_state else None, lengths if with_lengths else None, cotangent


def _check(backend_id, spec, weights, x, state, lengths, cotangent, dtype):
    want_out, want_state = oracle.run(spec, weights, x, state, lengths)
    w = weights.astype(dtype)
    got = evaluate(backend_id, spec, w, x.astype(dtype), state, lengths, dtype,
                   cotangent=cotangent)
    tol = TOL[dtype]
    assert max_rel_error(got.outputs, want_out) <= tol, "outputs"
    for name, g, want in zip(("h_n", "c_n"), got.state, _as_tuple(want_state)):
        assert max_rel_error(g, want) <= tol, name
    if got.grads is not None:
        want_grads = oracle_gradients(spec, weights, x, state, lengths, cotangent)
        assert set(got.grads) == set(want_grads)
        for name, want in want_grads.items():
            assert got.grads[name].shape == want.shape, name
            assert max_rel_error(got.grads[name], want) <= tol, f"gradient of {name}"
    return got


ALL_SPECS = {**SPECS, **FAMILY_SPECS}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec", ALL_SPECS.values(), ids=list(ALL_SPECS))
@pytest.mark.parametrize("backend_id", list(BACKENDS))
def test_every_case_on_every_backend(backend_id, spec, dtype):
    weights = nonzero_weights(spec, seed=7)
    x, state, lengths, cotangent = _inputs(spec, batch=3, steps=5, seed=3)
    got = _check(backend_id, spec, weights, x, state, lengths, cotangent, dtype)
    if backend_id != "numpy":
        assert got.grads is not None, f"{backend_id} returned no gradients"


OTHER_FAMILIES = ("ln_lstm", "ln_gru", "indrnn", "mingru", "minlstm")

ACTIVATIONS = st.sampled_from(
    ["sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu", "hard_sigmoid(0.2, 0.5)",
     "softsign", "softplus", "elu", "leaky_relu(0.2)", "identity"]
)


@st.composite
def equivalence_cases(draw):
    family = draw(st.sampled_from((*unirnn.FAMILIES, *OTHER_FAMILIES)))
    roles = unirnn.Spec(family, 1, 2).roles
    options = dict(
        activations=draw(st.dictionaries(st.sampled_from(roles), ACTIVATIONS, max_size=3)),
        bias=draw(st.booleans()),
        num_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
    )
    input_size, hidden_size = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    if family in OTHER_FAMILIES:
        if family in ("mingru", "minlstm"):  # f/(f+i) needs positive gates: keep sigmoid
            options["activations"] = {r: a for r, a in options["activations"].items()
                                      if r == "h"}
        spec = unirnn.Spec(family, input_size, hidden_size, **options)
    elif family == "rnn":
        spec = unirnn.rnn(input_size, hidden_size, **options)
    elif family == "gru":
        reset = draw(st.sampled_from(["after", "before", "none"]))
        if reset == "none":
            options["activations"].pop("r", None)
        spec = unirnn.gru(input_size, hidden_size, reset=reset,
                          update=draw(st.sampled_from(["old", "new"])), **options)
    else:
        coupled = draw(st.booleans())
        if coupled:
            options["activations"].pop("i", None)
        spec = unirnn.lstm(
            input_size, hidden_size, peepholes=not coupled and draw(st.booleans()),
            coupled=coupled, proj_size=draw(st.integers(0, hidden_size - 1)),
            cell_clip=draw(st.sampled_from([None, 0.8])), **options,
        )
    return (spec, draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(0, 2**16)),
            draw(st.sampled_from(["float64", "float32"])), draw(st.booleans()),
            draw(st.booleans()))


@pytest.mark.parametrize("backend_id", list(BACKENDS))
@given(case=equivalence_cases())
def test_drawn_specs_match_oracle(backend_id, case):
    spec, batch, steps, seed, dtype, with_state, with_lengths = case
    weights = nonzero_weights(spec, seed=seed)
    x, state, lengths, cotangent = _inputs(spec, batch, steps, seed, with_state, with_lengths)
    _check(backend_id, spec, weights, x, state, lengths, cotangent, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec", [SPECS["lstm"], SPECS["rnn-2layer-bidir"]],
                         ids=["lstm", "rnn-2layer-bidir"])
@pytest.mark.parametrize("backend_id", list(BACKENDS))
def test_plain_path_without_state_and_lengths(backend_id, spec, dtype):
    """No initial state, no lengths: torch's fused kernel on a plain tensor (no packing),
    Keras' layers without a mask, Flax without seq_lengths; held to the oracle too."""
    weights = nonzero_weights(spec, seed=5)
    x, state, lengths, cotangent = _inputs(spec, 3, 5, seed=4, with_state=False,
                                           with_lengths=False)
    assert state is None and lengths is None
    _check(backend_id, spec, weights, x, state, lengths, cotangent, dtype)
