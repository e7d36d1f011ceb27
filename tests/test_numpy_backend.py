"""The numpy backend against the independent oracle (tests/oracle.py)."""

from __future__ import annotations

import re

import numpy as np
import oracle
import pytest
from cases import SPECS
from support import example_inputs, max_rel_error, nonzero_weights

import unirnn


def _flat_state(state):
    return np.concatenate([np.ravel(s) for s in (state if isinstance(state, tuple) else (state,))])


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
@pytest.mark.parametrize("variant", ["plain", "state+lengths"])
def test_float64_matches_oracle(spec, variant):
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, with_state=variant != "plain",
                                       with_lengths=variant != "plain")
    model = unirnn.build(spec, backend="numpy", weights=weights, dtype=np.float64)
    out, final = model(x, initial_state=state, lengths=lengths)
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert out.dtype == np.float64
    assert out.shape == ref_out.shape
    assert max_rel_error(out, ref_out) <= 1e-12
    assert max_rel_error(_flat_state(final), _flat_state(ref_final)) <= 1e-12


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_float32_matches_oracle(spec):
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    model = unirnn.build(spec, backend="numpy", weights=weights.astype(np.float32))
    out, final = model(x.astype(np.float32), initial_state=state, lengths=lengths)
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert out.dtype == np.float32
    assert max_rel_error(out, ref_out) <= 1e-5
    assert max_rel_error(_flat_state(final), _flat_state(ref_final)) <= 1e-5


def test_padded_steps_are_zero_and_state_is_last_valid():
    spec = unirnn.gru(3, 4, bidirectional=True)
    model = unirnn.build(spec, backend="numpy", dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 5, 3))
    out, h = model(x, lengths=[5, 2])
    assert np.all(out[1, 2:] == 0)
    # The final state of a short sequence equals a run on its valid steps alone.
    alone, h_alone = model(x[1:, :2])
    np.testing.assert_allclose(out[1, :2], alone[0], atol=1e-14)
    np.testing.assert_allclose(h[:, 1], h_alone[:, 0], atol=1e-14)


def test_state_order_matches_torch_layout():
    spec = unirnn.lstm(3, 4, num_layers=2, bidirectional=True)
    model = unirnn.build(spec, backend="numpy", dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((2, 5, 3))
    out, (h, c) = model(x)
    assert h.shape == (4, 2, 4) and c.shape == (4, 2, 4)
    # last layer forward's final h is its output at the last step; backward's at step 0
    np.testing.assert_array_equal(h[2], out[:, -1, :4])
    np.testing.assert_array_equal(h[3], out[:, 0, 4:])


def test_default_weights_are_initialised():
    model = unirnn.build(unirnn.gru(3, 4), backend="numpy")
    assert model.weights.dtype == np.float32
    assert model.kernel == "numpy-loop"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m(np.zeros((2, 5))), "rank-3"),
        (lambda m: m(np.zeros((2, 5, 4))), "expected 3 features"),
        (lambda m: m(np.zeros((2, 5, 3)), lengths=[5, 0]), r"\[1, 5\]"),
        (lambda m: m(np.zeros((2, 5, 3)), lengths=[5, 6]), r"lengths\[1\]=6"),
        (lambda m: m(np.zeros((2, 5, 3)), lengths=[5]), r"shape \(2,\)"),
        (lambda m: m(np.zeros((2, 5, 3)), lengths=[1.5, 2]), "integers"),
        (lambda m: m(np.zeros((2, 5, 3)), initial_state=np.zeros((1, 2, 4))), "pair"),
        (lambda m: m(np.zeros((2, 5, 3)), initial_state=(np.zeros((1, 3, 4)),
                                                         np.zeros((1, 2, 4)))), "h0"),
        (lambda m: m(np.zeros((2, 0, 3))),
         r"^input: expected at least one time step \(T >= 1\) in \(N, T, I\); received T=0 "
         r"\(shape \(2, 0, 3\)\)$"),
    ],
    ids=["rank", "features", "length-zero", "length-too-long", "lengths-shape",
         "lengths-float", "lstm-state-not-pair", "state-shape", "no-time-steps"],
)
def test_bad_inputs(call, message):
    model = unirnn.build(unirnn.lstm(3, 4), backend="numpy")
    with pytest.raises(ValueError, match=message):
        call(model)


def test_bad_dtype():
    with pytest.raises(ValueError, match="float32 or float64; received int32"):
        unirnn.build(unirnn.rnn(2, 2), backend="numpy", dtype=np.int32)


@pytest.mark.parametrize(("layout", "time_axis", "no_steps", "no_batch"), [
    ("(N, T, I)", 1, (2, 0, 3), (0, 2, 3)),
    ("(T, N, I)", 0, (0, 2, 3), (2, 0, 3)),
    # torch's unbatched (T, I) input, checked with a unit batch axis in front: (1, T, I)
    ("(T, I) or (T, N, I)", 1, (1, 0, 3), None),
    ("(T, I) or (N, T, I)", 1, (1, 0, 3), None),
])
def test_time_axis_is_checked(layout, time_axis, no_steps, no_batch):
    from unirnn._inputs import check_input_shape

    spec = unirnn.gru(3, 4)
    with pytest.raises(ValueError, match=rf"in {re.escape(layout)}; received T=0 "):
        check_input_shape(spec, no_steps, layout, time_axis)
    if no_batch is not None:  # an empty batch is not an empty sequence
        check_input_shape(spec, no_batch, layout, time_axis)
