"""The independent oracle: DESIGN.md's equations as plain numpy loops, in float64.

Written straight from the cell semantics, sharing no code with unirnn's cells, ops,
activations or backends: only the spec's plain fields and the canonical weight names
are read. One sample, one step, one gate at a time, so a reader can check it line by
line against the equations.
"""

from __future__ import annotations

import math

import numpy as np

_ERF = np.vectorize(math.erf)


def _activation(text: str, xp=np):
    name, _, rest = text.partition("(")
    args = [float(a) for a in rest.rstrip(")").split(",")] if rest else []
    if name == "sigmoid":
        return lambda x: 1.0 / (1.0 + xp.exp(-x))
    if name == "tanh":
        return xp.tanh
    if name == "relu":
        return lambda x: xp.maximum(x, 0.0)
    if name == "identity":
        return lambda x: x
    if name == "gelu":
        erf = _ERF if xp is np else _jax_erf()
        return lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return lambda x: 0.5 * x * (1 + xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if name == "silu":
        return lambda x: x / (1.0 + xp.exp(-x))
    if name == "hard_sigmoid":
        alpha, beta = args or [1.0 / 6.0, 0.5]
        return lambda x: xp.minimum(xp.maximum(alpha * x + beta, 0.0), 1.0)
    if name == "softsign":
        return lambda x: x / (1.0 + xp.abs(x))
    if name == "softplus":
        return lambda x: xp.log(1.0 + xp.exp(x))
    if name == "elu":
        (alpha,) = args or [1.0]
        return lambda x: xp.where(x > 0, x, alpha * (xp.exp(xp.minimum(x, 0.0)) - 1.0))
    if name == "leaky_relu":
        (alpha,) = args or [0.01]
        return lambda x: xp.where(x >= 0, x, alpha * x)
    if name == "min_g":  # Feng et al. 2024, appendix: x + 1/2 for x >= 0, else sigmoid(x)
        return lambda x: xp.where(x >= 0, x + 0.5, 1.0 / (1.0 + xp.exp(-x)))
    raise KeyError(f"oracle has no activation {text!r}")


def _jax_erf():
    from jax.scipy.special import erf

    return erf


_WITH_CELL_STATE = ("lstm", "ln_lstm")


def _layer_norm(v, scale, offset=0.0, xp=np):
    """Layer normalisation of one vector: biased variance, epsilon 1e-5 (haste, torch)."""
    mean = xp.sum(v) / v.shape[0]
    var = xp.sum((v - mean) ** 2) / v.shape[0]
    return (v - mean) / xp.sqrt(var + 1e-5) * scale + offset


def _sigmoid(v, xp=np):
    return 1.0 / (1.0 + xp.exp(-v))


def _other_family_step(spec, w, x, state, act, xp):
    """The families beyond rnn, lstm and gru, each from its paper's or haste's equations."""
    H = spec.hidden_size
    zero = xp.zeros(w["w_x"].shape[0])
    b_x = w.get("b_x", zero)
    b_h = w.get("b_h", zero)
    h = state["h"]
    blocks = lambda v, k: v[k * H:(k + 1) * H]  # noqa: E731
    if spec.family == "indrnn":  # h = act(W x + b + u * h)
        h_new = act["h"](w["w_x"] @ x + b_x + w["u"] * h)
        return {"h": h_new}, h_new
    if spec.family == "mingru":  # z = sigmoid(W_z x), h~ = g(W_h x), h = (1-z) h + z h~
        z = act["z"](blocks(w["w_x"] @ x + b_x, 0))
        h_tilde = act["h"](blocks(w["w_x"] @ x + b_x, 1))
        h_new = (1.0 - z) * h + z * h_tilde
        return {"h": h_new}, h_new
    if spec.family == "minlstm":  # f' = f / (f + i), i' = i / (f + i), h = f' h + i' h~
        f = act["f"](blocks(w["w_x"] @ x + b_x, 0))
        i = act["i"](blocks(w["w_x"] @ x + b_x, 1))
        h_tilde = act["h"](blocks(w["w_x"] @ x + b_x, 2))
        h_new = f / (f + i) * h + i / (f + i) * h_tilde
        return {"h": h_new}, h_new
    # haste: LN(W x; gamma[0]) and LN(R h; gamma[1]), then the biases
    ax = _layer_norm(w["w_x"] @ x, w["ln_x"], xp=xp) + b_x
    ah = _layer_norm(w["w_h"] @ h, w["ln_h"], xp=xp) + b_h
    if spec.family == "ln_gru":  # reset after, h = z h + (1 - z) n
        r = act["r"](blocks(ax, 0) + blocks(ah, 0))
        z = act["z"](blocks(ax, 1) + blocks(ah, 1))
        n = act["n"](blocks(ax, 2) + r * blocks(ah, 2))
        h_new = z * h + (1.0 - z) * n
        return {"h": h_new}, h_new
    assert spec.family == "ln_lstm", spec.family
    a = ax + ah
    i, f = act["i"](blocks(a, 0)), act["f"](blocks(a, 1))
    g, o = act["g"](blocks(a, 2)), act["o"](blocks(a, 3))
    c_new = f * state["c"] + i * g
    h_new = o * act["c"](_layer_norm(c_new, w["ln_c"], w["ln_c_offset"], xp=xp))
    return {"h": h_new, "c": c_new}, h_new


def _cell_step(spec, w, x, state, xp=np):
    """One step of one sample. x: (I,), state: dict of 1-D arrays. Returns (state, y)."""
    H = spec.hidden_size
    act = {role: _activation(name, xp) for role, name in spec.activations.items()}
    if spec.family not in ("rnn", "lstm", "gru"):
        return _other_family_step(spec, w, x, state, act, xp)
    zero = xp.zeros(w["w_x"].shape[0])
    b_x = w.get("b_x", zero)
    b_h = w.get("b_h", zero)
    h = state["h"]

    def a(k):  # a_k = W_xk x + b_xk + W_hk h + b_hk
        rows = slice(k * H, (k + 1) * H)
        return w["w_x"][rows] @ x + b_x[rows] + w["w_h"][rows] @ h + b_h[rows]

    if spec.family == "rnn":
        h_new = act["h"](a(0))
        return {"h": h_new}, h_new

    if spec.family == "gru" and spec.reset == "none":  # z, n: no reset gate
        z = act["z"](a(0))
        n = act["n"](a(1))
        h_new = z * h + (1.0 - z) * n if spec.update == "old" else (1.0 - z) * h + z * n
        return {"h": h_new}, h_new

    if spec.family == "gru":
        r = act["r"](a(0))
        z = act["z"](a(1))
        rows = slice(2 * H, 3 * H)
        if spec.reset == "after":
            n = act["n"](w["w_x"][rows] @ x + b_x[rows] + r * (w["w_h"][rows] @ h + b_h[rows]))
        else:
            n = act["n"](w["w_x"][rows] @ x + b_x[rows] + w["w_h"][rows] @ (r * h) + b_h[rows])
        if spec.update == "old":
            h_new = z * h + (1.0 - z) * n
        else:
            h_new = (1.0 - z) * h + z * n
        return {"h": h_new}, h_new

    # lstm, gate order i, f, g, o; peepholes i, f, o
    c = state["c"]
    if getattr(spec, "coupled", False):  # gates f, g, o; i = 1 - f
        f = act["f"](a(0))
        c_new = f * c + (1.0 - f) * act["g"](a(1))
        if spec.cell_clip is not None:
            c_new = xp.minimum(xp.maximum(c_new, -spec.cell_clip), spec.cell_clip)
        h_new = act["o"](a(2)) * act["c"](c_new)
        if "w_r" in w:
            h_new = w["w_r"] @ h_new
        return {"h": h_new, "c": c_new}, h_new
    p = w.get("p")
    a_i, a_f, a_g, a_o = a(0), a(1), a(2), a(3)
    if p is not None:
        a_i = a_i + p[0:H] * c
        a_f = a_f + p[H : 2 * H] * c
    i = act["i"](a_i)
    f = act["f"](a_f)
    g = act["g"](a_g)
    c_new = f * c + i * g
    if spec.cell_clip is not None:
        c_new = xp.minimum(xp.maximum(c_new, -spec.cell_clip), spec.cell_clip)
    if p is not None:
        a_o = a_o + p[2 * H : 3 * H] * c_new
    o = act["o"](a_o)
    h_new = o * act["c"](c_new)
    if "w_r" in w:
        h_new = w["w_r"] @ h_new
    return {"h": h_new, "c": c_new}, h_new


def run(spec, weights, x, initial_state=None, lengths=None, xp=np):
    """Run the stack in float64.

    x: (N, T, I) batch-major. initial_state: h0 (L*D, N, P) or (h0, c0) for lstm.
    lengths: (N,) or None. Returns (outputs (N, T, D*P), h_n or (h_n, c_n)).
    ``xp`` is the array namespace: numpy, or ``jax.numpy`` to differentiate the oracle
    (the code is purely functional for that reason).
    """
    x = xp.asarray(x, dtype=xp.float64)
    N, T, _ = x.shape
    D = 2 if spec.bidirectional else 1
    P = spec.proj_size or spec.hidden_size
    H = spec.hidden_size
    lengths = [T] * N if lengths is None else [int(v) for v in lengths]
    rows = spec.num_layers * D
    if initial_state is None:
        h0 = xp.zeros((rows, N, P))
        c0 = xp.zeros((rows, N, H))
    elif spec.family in _WITH_CELL_STATE:
        h0, c0 = (xp.asarray(s, dtype=xp.float64) for s in initial_state)
    else:
        h0, c0 = xp.asarray(initial_state, dtype=xp.float64), xp.zeros((rows, N, H))

    h_n, c_n = [], []
    layer_in = x
    for layer in range(spec.num_layers):
        direction_outputs = []
        for d, direction in enumerate(["forward", "backward"][:D]):
            prefix = f"layer{layer}.{direction}."
            w = {
                k[len(prefix) :]: xp.asarray(v, dtype=xp.float64)
                for k, v in weights.items()
                if k.startswith(prefix)
            }
            row = layer * D + d
            per_sample = []
            for n in range(N):
                L = lengths[n]
                state = {"h": h0[row, n], "c": c0[row, n]}
                ys = [xp.zeros(P)] * T
                steps = range(L) if direction == "forward" else range(L - 1, -1, -1)
                for t in steps:
                    state, ys[t] = _cell_step(spec, w, layer_in[n, t], state, xp)
                per_sample.append(xp.stack(ys))
                h_n.append(state["h"])
                c_n.append(state.get("c", c0[row, n]))
            direction_outputs.append(xp.stack(per_sample))
        layer_in = xp.concatenate(direction_outputs, axis=-1)
    h_n = xp.stack(h_n).reshape(rows, N, P)
    c_n = xp.stack(c_n).reshape(rows, N, H)
    return layer_in, ((h_n, c_n) if spec.family in _WITH_CELL_STATE else h_n)
