"""Golden values: constant weights and inputs whose outputs a reader can check by hand.

Every weight is 0.1 (or as stated), every bias 0, every input 1, batch 1, two steps.
Each expected value is written as the equation it comes from. The same constants are
asserted on every backend (``tests/test_golden.py`` numpy, ``tests/<backend>/`` the
others, through each backend's ``evaluate``), so a bug in the shared cell math cannot
hide behind a backend that shares it.
"""

from __future__ import annotations

import math

import numpy as np

import unirnn


def constant_weights(spec, value=0.1):
    return unirnn.Weights(
        {n: np.full(s, 0.0 if ".b_" in n else value) for n, s in unirnn.weight_shapes(spec).items()}
    )


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def _rnn():
    # h1 = tanh(0.1*1 + 0.1*1) for each unit; h2 = tanh(0.2 + 0.1*(h1 + h1))
    h1 = math.tanh(0.2)
    h2 = math.tanh(0.2 + 0.2 * h1)
    return [[h1, h1], [h2, h2]]


def _lstm():
    # every gate pre-activation a = 0.2 + 0.2*h; c1 = s(a)*0 + s(a)*tanh(a)
    a1 = 0.2
    c1 = _sig(a1) * math.tanh(a1)
    h1 = _sig(a1) * math.tanh(c1)
    a2 = 0.2 + 0.2 * h1
    c2 = _sig(a2) * c1 + _sig(a2) * math.tanh(a2)
    h2 = _sig(a2) * math.tanh(c2)
    return [[h1, h1], [h2, h2]]


def _relu_lstm():
    a1 = 0.2
    c1 = _sig(a1) * a1  # relu(a) = a for a > 0
    h1 = _sig(a1) * c1
    a2 = 0.2 + 0.2 * h1
    c2 = _sig(a2) * c1 + _sig(a2) * a2
    h2 = _sig(a2) * c2
    return [[h1, h1], [h2, h2]]


def _gru():
    # step 1 from h=0: r = z = s(0.2); n = tanh(0.2) (h=0 removes the reset term)
    z1 = _sig(0.2)
    h1 = (1 - z1) * math.tanh(0.2)
    # step 2: r = z = s(0.2 + 0.2*h1); reset after: n = tanh(0.2 + r*(0.2*h1));
    # reset before: n = tanh(0.2 + 0.1*(r*h1 + r*h1)) -- equal with zero biases
    g = _sig(0.2 + 0.2 * h1)
    n2 = math.tanh(0.2 + g * 0.2 * h1)
    h2 = g * h1 + (1 - g) * n2
    return [[h1, h1], [h2, h2]]


def _gru_update_new():
    # h = (1-z)*h + z*n: step 1 z1*tanh(0.2); step 2 with g = s(0.2 + 0.2*h1)
    z1 = _sig(0.2)
    h1 = z1 * math.tanh(0.2)
    g = _sig(0.2 + 0.2 * h1)
    n2 = math.tanh(0.2 + g * 0.2 * h1)
    h2 = (1 - g) * h1 + g * n2
    return [[h1, h1], [h2, h2]]


def _gru_reset_bias(reset):
    # With b_hn = 0.5 (every b_h 0.5) the two reset placements give different n:
    # r*(W h + b) vs W(r h) + b. One step from h = 0.
    r = z = _sig(0.2 + 0.5)
    n = math.tanh(0.2 + r * 0.5) if reset == "after" else math.tanh(0.2 + 0.5)
    return [[(1 - z) * n] * 2]


def cases():
    """``(id, spec, weights, x (N, T, I), expected outputs of sequence 0 (T, P))``."""
    out = [
        ("rnn", unirnn.rnn(2, 2), _rnn()),
        ("lstm", unirnn.lstm(2, 2), _lstm()),
        ("relu-lstm", unirnn.lstm(2, 2, activation="relu"), _relu_lstm()),
        ("gru-after", unirnn.gru(2, 2), _gru()),
        ("gru-before", unirnn.gru(2, 2, reset="before"), _gru()),
        ("gru-update-new", unirnn.gru(2, 2, update="new"), _gru_update_new()),
    ]
    result = [(name, spec, constant_weights(spec), np.ones((1, 2, 2)), np.array(expected))
              for name, spec, expected in out]
    for reset in ("after", "before"):
        spec = unirnn.gru(2, 2, reset=reset)
        weights = unirnn.Weights({**constant_weights(spec), "layer0.forward.b_h": np.full(6, 0.5)})
        result.append((f"gru-{reset}-bias", spec, weights, np.ones((1, 1, 2)),
                       np.array(_gru_reset_bias(reset))))
    return result


CASES = cases()
IDS = [case[0] for case in CASES]


def assert_golden(evaluate, case, **options):
    """Run ``case`` through a backend's ``evaluate`` in float64 and compare at 1e-15."""
    _, spec, weights, x, expected = case
    result = evaluate(spec, weights, x, dtype="float64", **options)
    np.testing.assert_allclose(result.outputs[0], expected, rtol=0, atol=1e-15)
