"""haste's LayerNormLSTM/LayerNormGRU parameters in and out: unirnn's ln_lstm/ln_gru on
weights read from haste's layout equal haste's own equations computed on that layout."""

from __future__ import annotations

import numpy as np
import pytest

import unirnn

H, I, N, T = 3, 2, 2, 5


def _ln(v, gain, offset=0.0):
    mean = v.mean(-1, keepdims=True)
    var = ((v - mean) ** 2).mean(-1, keepdims=True)
    return (v - mean) / np.sqrt(var + 1e-5) * gain + offset


def _sig(v):
    return 1 / (1 + np.exp(-v))


def haste_gru(t, x, h):
    """haste's LayerNormGRU from its documentation (gates z, r, h; reset after)."""
    wx = _ln(x @ t["kernel"], t["gamma"][0]) + t["bias"]
    out = []
    for x_t in wx:
        rh = _ln(h @ t["recurrent_kernel"], t["gamma"][1]) + t["recurrent_bias"]
        vx, vh = np.split(x_t, 3, -1), np.split(rh, 3, -1)
        z, r = _sig(vx[0] + vh[0]), _sig(vx[1] + vh[1])
        g = np.tanh(vx[2] + r * vh[2])
        h = z * h + (1 - z) * g
        out.append(h)
    return np.stack(out)


def haste_lstm(t, x, h, c):
    """haste's LayerNormLSTM (gates i, g, f, o; the cell state layer-normed for h)."""
    wx = _ln(x @ t["kernel"], t["gamma"][0])
    out = []
    for x_t in wx:
        a = x_t + _ln(h @ t["recurrent_kernel"], t["gamma"][1]) + t["bias"]
        i, g, f, o = np.split(a, 4, -1)
        c = _sig(f) * c + _sig(i) * np.tanh(g)
        h = _sig(o) * np.tanh(_ln(c, t["gamma_h"], t["beta_h"]))
        out.append(h)
    return np.stack(out)


def _tensors(family, rng):
    G = 3 if family == "gru" else 4
    t = {"kernel": rng.uniform(-1, 1, (I, G * H)),
         "recurrent_kernel": rng.uniform(-1, 1, (H, G * H)),
         "bias": rng.uniform(-1, 1, G * H), "gamma": rng.uniform(0.5, 1.5, (2, G * H))}
    if family == "gru":
        t["recurrent_bias"] = rng.uniform(-1, 1, G * H)
    else:
        t["gamma_h"], t["beta_h"] = rng.uniform(0.5, 1.5, H), rng.uniform(-1, 1, H)
    return t


@pytest.mark.parametrize("family", ["gru", "lstm"])
def test_haste_layout_reads_as_hastes_equations(family):
    rng = np.random.default_rng(0)
    t = _tensors(family, rng)
    x = rng.standard_normal((T, N, I))
    h0 = rng.standard_normal((N, H))
    spec, weights = unirnn.from_haste(t)
    assert spec.family == f"ln_{family}" and (spec.input_size, spec.hidden_size) == (I, H)
    model = unirnn.build(spec, backend="numpy", weights=weights, dtype=np.float64)
    if family == "gru":
        want = haste_gru(t, x, h0)
        got, _ = model(x.transpose(1, 0, 2), initial_state=h0[None])
    else:
        c0 = rng.standard_normal((N, H))
        want = haste_lstm(t, x, h0, c0)
        got, _ = model(x.transpose(1, 0, 2), initial_state=(h0[None], c0[None]))
    np.testing.assert_allclose(got.transpose(1, 0, 2), want, rtol=0, atol=1e-12)
    back = unirnn.to_haste(spec, weights)
    assert set(back) == set(t)
    for name, value in t.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_haste_errors_name_what_is_wrong():
    rng = np.random.default_rng(0)
    t = _tensors("gru", rng)
    with pytest.raises(ValueError, match="missing gamma"):
        unirnn.from_haste({k: v for k, v in t.items() if k != "gamma"})
    with pytest.raises(ValueError, match="expected LayerNormLSTM's tensors"):
        unirnn.from_haste({"kernel": t["kernel"]})
    with pytest.raises(ValueError, match="expected kernel"):
        unirnn.from_haste({**t, "recurrent_kernel": t["recurrent_kernel"][:, :4]})
    with pytest.raises(ValueError, match="expected family 'ln_lstm' or 'ln_gru'"):
        unirnn.to_haste(unirnn.gru(2, 3), unirnn.init_weights(unirnn.gru(2, 3)))
    spec = unirnn.Spec("ln_gru", 2, 3, bidirectional=True)
    with pytest.raises(ValueError, match="one layer, one direction"):
        unirnn.to_haste(spec, unirnn.init_weights(spec))
