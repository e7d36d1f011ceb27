"""unirnn.from_gates / to_gates: hand-written per-gate weights, judged by the oracle.

Each hand-written cell below is the tutorial's own step, written per gate in numpy; the
canonical weights from_gates builds must make the oracle compute the same outputs.
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest

import unirnn

I, H = 3, 4
RNG = np.random.default_rng(0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _d2l_params(seed=0):
    """d2l's get_params: W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, (in, out)."""
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.5, size=s) for _ in range(3) for s in ((I, H), (H, H), (H,))]


def _d2l_gru(params, x):
    """d2l's gru(): reset before, h = z*h + (1-z)*h_tilde, batch-major (N, T, I)."""
    W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h = params
    h = np.zeros((x.shape[0], H))
    outputs = []
    for t in range(x.shape[1]):
        X = x[:, t]
        Z = _sigmoid(X @ W_xz + h @ W_hz + b_z)
        R = _sigmoid(X @ W_xr + h @ W_hr + b_r)
        H_tilde = np.tanh(X @ W_xh + (R * h) @ W_hh + b_h)
        h = Z * h + (1 - Z) * H_tilde
        outputs.append(h)
    return np.stack(outputs, 1)


def _d2l_gates(params):
    W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h = params
    return {"z": {"w_x": W_xz, "w_h": W_hz, "b": b_z},
            "r": {"w_x": W_xr, "w_h": W_hr, "b": b_r},
            "h": {"w_x": W_xh, "w_h": W_hh, "b": b_h}}


def test_d2l_gru_matches_oracle():
    params = _d2l_params()
    spec = unirnn.preset("d2l_gru", I, H)
    weights = unirnn.from_gates(spec, _d2l_gates(params), layout="in_out")
    x = RNG.standard_normal((2, 5, I))
    want = _d2l_gru(params, x)
    got, _ = oracle.run(spec, weights, x)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_d2l_gru_round_trips_through_to_gates():
    params = _d2l_params(1)
    spec = unirnn.preset("d2l_gru", I, H)
    weights = unirnn.from_gates(spec, _d2l_gates(params), layout="in_out")
    back = unirnn.to_gates(spec, weights, layout="in_out", bias="one", names={"n": "h"})
    for gate, parts in _d2l_gates(params).items():
        assert set(back[gate]) == {"w_x", "w_h", "b"}
        for part, value in parts.items():
            np.testing.assert_array_equal(back[gate][part], value)


class FakeLinear:
    """Duck-typed nn.Linear: (out, in) weight, optional bias (as torch's modules hold them)."""

    def __init__(self, weight, bias=None):
        self.weight, self.bias = weight, bias


class FakeDense:
    """Duck-typed Keras Dense: (in, out) kernel and bias."""

    def __init__(self, kernel, bias=None):
        self.kernel, self.bias = kernel, bias


def test_linear_per_gate_lstm_matches_oracle():
    """One Linear per gate and side (x2i, h2i, ...), the input ones with a bias, gate g as 'c'."""
    rng = np.random.default_rng(2)
    layers = {g: (FakeLinear(rng.normal(size=(H, I)), rng.normal(size=H)),
                  FakeLinear(rng.normal(size=(H, H)), rng.normal(size=H) if g == "o" else None))
              for g in "ifco"}
    gates = {g: {"x": x2g, "h": h2g} for g, (x2g, h2g) in layers.items()}
    spec = unirnn.lstm(I, H)
    weights = unirnn.from_gates(spec, gates)
    x = rng.standard_normal((2, 4, I))

    def lin(m, v):
        return v @ m.weight.T + (0 if m.bias is None else m.bias)

    h, c, outs = np.zeros((2, H)), np.zeros((2, H)), []
    for t in range(x.shape[1]):
        a = {g: lin(layers[g][0], x[:, t]) + lin(layers[g][1], h) for g in "ifco"}
        c = _sigmoid(a["f"]) * c + _sigmoid(a["i"]) * np.tanh(a["c"])
        h = _sigmoid(a["o"]) * np.tanh(c)
        outs.append(h)
    got, _ = oracle.run(spec, weights, x)
    np.testing.assert_allclose(got, np.stack(outs, 1), atol=1e-12)
    np.testing.assert_array_equal(weights["layer0.forward.b_h"][:3 * H], 0)


def test_dense_modules_and_two_biases():
    rng = np.random.default_rng(3)
    spec = unirnn.rnn(I, H)
    kx, kh, bx, bh = rng.normal(size=(I, H)), rng.normal(size=(H, H)), rng.normal(size=H), \
        rng.normal(size=H)
    weights = unirnn.from_gates(spec, {"h": {"w_x": FakeDense(kx, bx), "w_h": FakeDense(kh),
                                             "b_h": bh}})
    np.testing.assert_array_equal(weights["layer0.forward.w_x"], kx.T)
    np.testing.assert_array_equal(weights["layer0.forward.b_x"], bx)
    np.testing.assert_array_equal(weights["layer0.forward.b_h"], bh)


def test_stack_keyed_by_layer_and_direction_round_trips():
    spec = unirnn.gru(I, H, num_layers=2, bidirectional=True)
    weights = unirnn.init_weights(spec, seed=4, dtype=np.float64)
    gates = unirnn.to_gates(spec, weights)
    assert set(gates) == {(k, d) for k in range(2) for d in ("forward", "backward")}
    back = unirnn.from_gates(spec, gates)
    for name in weights:
        np.testing.assert_array_equal(back[name], weights[name])
    with pytest.raises(unirnn.WeightsError, match=r"missing layer 1 direction 'backward'"):
        unirnn.from_gates(spec, {k: v for k, v in gates.items() if k != (1, "backward")})
    with pytest.raises(unirnn.WeightsError, match=r"key the gates by \(layer, direction\)"):
        unirnn.from_gates(spec, gates[0, "forward"])


def test_peepholes_and_projection_round_trip():
    spec = unirnn.lstm(I, 5, peepholes=True, proj_size=2)
    weights = unirnn.init_weights(spec, seed=5, dtype=np.float64)
    gates = unirnn.to_gates(spec, weights, layout="in_out")
    assert gates["w_r"].shape == (5, 2) and gates["i"]["p"].shape == (5,)
    back = unirnn.from_gates(spec, gates, layout="in_out")
    for name in weights:
        np.testing.assert_array_equal(back[name], weights[name])


def test_float32_inputs_stay_float32():
    spec = unirnn.rnn(I, H)
    w = unirnn.from_gates(spec, {"h": {"w_x": np.ones((H, I), np.float32),
                                       "w_h": np.ones((H, H), np.float32),
                                       "b": np.ones(H, np.float32)}})
    assert w.dtype == np.float32


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        ({"z": {}, "r": {}}, r"missing gate 'n' of the gru \(r, z, n\)"),
        ({"r": {}, "z": {}, "n": {}, "q": {}}, r"gate 'q' is not a gru gate; expected 'r', 'z', "
         r"'n' \(or 'h', 'h_tilde'\)"),
        ({"r": {}, "z": {}, "n": {}, "h": {}}, r"gate 'n' given twice \(as 'n' and 'h'\)"),
    ],
    ids=["missing-gate", "unknown-gate", "alias-twice"],
)
def test_gate_errors_name_the_gate(gates, message):
    with pytest.raises(unirnn.WeightsError, match=message):
        unirnn.from_gates(unirnn.gru(I, H), gates)


def test_shape_error_names_gate_and_both_shapes():
    gates = unirnn.to_gates(unirnn.gru(I, H), unirnn.init_weights(unirnn.gru(I, H)))
    gates["z"]["w_h"] = np.zeros((H, H + 1))
    with pytest.raises(unirnn.WeightsError,
                       match=r"gates\['z'\] w_h: expected shape \(4, 4\).*received \(4, 5\)"):
        unirnn.from_gates(unirnn.gru(I, H), gates)
    gates["z"]["w_h"] = np.zeros((H, H))
    gates["r"]["w_x"] = np.zeros((I, H))
    with pytest.raises(unirnn.WeightsError, match=r"it is the transpose: pass layout='in_out'"):
        unirnn.from_gates(unirnn.gru(I, H), gates)


def test_bias_mismatches_are_errors():
    spec = unirnn.rnn(I, H, bias=False)
    with pytest.raises(unirnn.WeightsError, match=r"non-zero bias, but the spec has bias=False"):
        unirnn.from_gates(spec, {"h": {"w_x": np.ones((H, I)), "w_h": np.ones((H, H)),
                                       "b": np.ones(H)}})
    with pytest.raises(unirnn.WeightsError, match=r"no gate has a bias"):
        unirnn.from_gates(unirnn.rnn(I, H), {"h": {"w_x": np.ones((H, I)),
                                                   "w_h": np.ones((H, H))}})


def test_one_bias_refuses_unfoldable_b_hn():
    spec = unirnn.gru(I, H)
    weights = unirnn.init_weights(spec)
    with pytest.raises(unirnn.WeightsError, match=r"b_hn is non-zero"):
        unirnn.to_gates(spec, weights, bias="one")


@pytest.mark.parametrize("spec", [unirnn.lstm(I, H), unirnn.gru(I, H, reset="before")],
                         ids=["lstm", "gru-before"])
def test_numpy_float64_from_float32_weights(spec):
    """Built in float64 from float32 weights, the numpy backend upcasts before any
    arithmetic: the float64 oracle on the same float32 values to 1e-12."""
    from support import max_rel_error, nonzero_weights

    weights = nonzero_weights(spec, seed=8).astype(np.float32)
    x = np.random.default_rng(9).standard_normal((2, 5, I))
    model = unirnn.build(spec, backend="numpy", weights=weights, dtype=np.float64)
    assert max_rel_error(model(x)[0], oracle.run(spec, weights, x)[0]) <= 1e-12
