"""Golden values: constant weights and inputs whose outputs a reader can check by hand.

Every weight is 0.1 (or as stated), every bias 0, every input 1, batch 1, two steps.
Each expected value is written as the equation it comes from.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import unirnn


def _constant(spec, value=0.1):
    return unirnn.Weights(
        {n: np.full(s, 0.0 if ".b_" in n else value) for n, s in unirnn.weight_shapes(spec).items()}
    )


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def _run(spec):
    model = unirnn.build(spec, backend="numpy", weights=_constant(spec), dtype=np.float64)
    out, _ = model(np.ones((1, 2, 2)))
    return out[0]


def test_rnn_golden():
    # h1 = tanh(0.1*1 + 0.1*1) for each unit; h2 = tanh(0.2 + 0.1*(h1 + h1))
    h1 = math.tanh(0.2)
    h2 = math.tanh(0.2 + 0.2 * h1)
    np.testing.assert_allclose(_run(unirnn.rnn(2, 2)), [[h1, h1], [h2, h2]], atol=1e-15)


def test_lstm_golden():
    # every gate pre-activation a = 0.2 + 0.2*h; c1 = s(a)*0 + s(a)*tanh(a)
    a1 = 0.2
    c1 = _sig(a1) * math.tanh(a1)
    h1 = _sig(a1) * math.tanh(c1)
    a2 = 0.2 + 0.2 * h1
    c2 = _sig(a2) * c1 + _sig(a2) * math.tanh(a2)
    h2 = _sig(a2) * math.tanh(c2)
    np.testing.assert_allclose(_run(unirnn.lstm(2, 2)), [[h1, h1], [h2, h2]], atol=1e-15)


def test_relu_lstm_golden():
    a1 = 0.2
    c1 = _sig(a1) * a1  # relu(a) = a for a > 0
    h1 = _sig(a1) * c1
    a2 = 0.2 + 0.2 * h1
    c2 = _sig(a2) * c1 + _sig(a2) * a2
    h2 = _sig(a2) * c2
    np.testing.assert_allclose(
        _run(unirnn.lstm(2, 2, activation="relu")), [[h1, h1], [h2, h2]], atol=1e-15
    )


@pytest.mark.parametrize("reset", ["after", "before"])
def test_gru_golden(reset):
    # step 1 from h=0: r = z = s(0.2); n = tanh(0.2) (h=0 removes the reset term)
    z1 = _sig(0.2)
    h1 = (1 - z1) * math.tanh(0.2)
    # step 2: r = z = s(0.2 + 0.2*h1); reset after: n = tanh(0.2 + r*(0.2*h1));
    # reset before: n = tanh(0.2 + 0.1*(r*h1 + r*h1)) -- equal with zero biases
    g = _sig(0.2 + 0.2 * h1)
    n2 = math.tanh(0.2 + g * 0.2 * h1)
    h2 = g * h1 + (1 - g) * n2
    np.testing.assert_allclose(
        _run(unirnn.gru(2, 2, reset=reset)), [[h1, h1], [h2, h2]], atol=1e-15
    )


def test_gru_update_new_golden():
    z1 = _sig(0.2)
    h1 = z1 * math.tanh(0.2)  # h = (1-z)*h + z*n
    np.testing.assert_allclose(_run(unirnn.gru(2, 2, update="new"))[0], [h1, h1], atol=1e-15)


def test_gru_reset_variants_differ_with_bias():
    # With b_hn != 0 the two reset placements give different n: r*(W h + b) vs W(r h) + b.
    spec_a, spec_b = unirnn.gru(2, 2), unirnn.gru(2, 2, reset="before")
    w = {**_constant(spec_a), "layer0.forward.b_h": np.full(6, 0.5)}
    x = np.ones((1, 1, 2))
    out_a, _ = unirnn.build(spec_a, "numpy", w, dtype=np.float64)(x)
    out_b, _ = unirnn.build(spec_b, "numpy", w, dtype=np.float64)(x)
    r = z = _sig(0.2 + 0.5)
    assert out_a[0, 0, 0] == pytest.approx((1 - z) * math.tanh(0.2 + r * 0.5), abs=1e-15)
    assert out_b[0, 0, 0] == pytest.approx((1 - z) * math.tanh(0.2 + 0.5), abs=1e-15)
