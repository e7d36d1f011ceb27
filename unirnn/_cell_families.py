"""Families beyond the frameworks' own, registered through :func:`unirnn.register_family`
like a user's: layer-normalised LSTM and GRU (haste's), IndRNN, minGRU and minLSTM.

Equations (``LN(v; g, b) = (v - mean(v)) / sqrt(var(v) + 1e-5) * g + b`` over the ``G*H``
or ``H`` features of one step; ``a`` the pre-activations):

- ``ln_lstm`` (haste's ``LayerNormLSTM``): ``a = LN(W_x x; ln_x) + LN(W_h h; ln_h) + b_x +
  b_h``, gates i, f, g, o as lstm, ``c_t = f c + i g``, ``h_t = o act_c(LN(c_t; ln_c,
  ln_c_offset))``.
- ``ln_gru`` (haste's ``LayerNormGRU``, reset after): ``a^x = LN(W_x x; ln_x) + b_x``,
  ``a^h = LN(W_h h; ln_h) + b_h``, ``r = act_r(a^x_r + a^h_r)``, ``z = act_z(a^x_z + a^h_z)``,
  ``n = act_n(a^x_n + r a^h_n)``, ``h_t = z h + (1 - z) n``.
- ``indrnn`` (Li et al. 2018; haste's ``IndRNN``): ``h_t = act_h(W_x x + b_x + u * h)``,
  ``u`` one recurrent weight per unit.
- ``mingru`` (Feng et al. 2024): ``z = act_z(W_xz x + b_xz)``, ``h~ = act_h(W_xh x + b_xh)``,
  ``h_t = (1 - z) h + z h~``; the default ``act_h`` is the paper's ``g`` (``min_g``), which
  keeps ``h~ > 0`` for its log-space scan.
- ``minlstm`` (Feng et al. 2024): ``f = act_f(W_xf x + b_xf)``, ``i = act_i(W_xi x + b_xi)``,
  ``h~ = act_h(W_xh x + b_xh)``, ``h_t = f/(f+i) h + i/(f+i) h~``.

minGRU and minLSTM have no recurrent weights: ``h_t = a_t h_{t-1} + b_t`` with ``a_t``,
``b_t`` functions of the input, so their backends run the whole sequence as one parallel
scan in log space (the paper's appendix: ``log(1 - z) = -softplus(k)``, ``log z =
-softplus(-k)``, ``log g(v) = log(v + 1/2)`` for ``v >= 0`` else ``-softplus(-v)``), and
step it one input at a time when streaming; both give the same outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._cells import Array, Carry, Cell
from ._families import Param, register_family
from ._spec import Spec

__all__ = ["IndRNNCell", "LayerNormGRUCell", "LayerNormLSTMCell", "MinGRUCell",
           "MinLSTMCell"]

EPS = 1e-5
"""Layer norm's epsilon: haste's and ``torch.nn.functional.layer_norm``'s."""


class LayerNormLSTMCell(Cell):
    def project(self, params: Mapping[str, Array], x: Array) -> Array:
        ops = self.ops
        xp = ops.layer_norm(ops.linear(x, params["w_x"], None), params["ln_x"], None, EPS)
        b_x = params.get("b_x")
        return xp if b_x is None else xp + b_x

    def prepare(self, params: Mapping[str, Array]) -> dict[str, Any]:
        return {name: params.get(name) for name in
                ("w_h", "b_h", "ln_h", "ln_c", "ln_c_offset")}

    def recurrent_weights(self) -> dict[str, str | None]:
        return {"w_h": None}  # b_h adds after the layer norm

    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        ops, act = self.ops, self.act
        h, c = carry
        a = xp + ops.layer_norm(self._recurrent(p, "w_h", h), p["ln_h"], None, EPS)
        if p["b_h"] is not None:
            a = a + p["b_h"]
        a_i, a_f, a_g, a_o = ops.split(a, 4)
        c = act["f"](a_f) * c + act["i"](a_i) * act["g"](a_g)
        h = act["o"](a_o) * act["c"](ops.layer_norm(c, p["ln_c"], p["ln_c_offset"], EPS))
        return (h, c), h


class LayerNormGRUCell(Cell):
    def project(self, params: Mapping[str, Array], x: Array) -> Array:
        return LayerNormLSTMCell.project(self, params, x)  # type: ignore[arg-type]

    def prepare(self, params: Mapping[str, Array]) -> dict[str, Any]:
        return {name: params.get(name) for name in ("w_h", "b_h", "ln_h")}

    def recurrent_weights(self) -> dict[str, str | None]:
        return {"w_h": None}

    @classmethod
    def folded_bias_rows(cls, spec: Spec) -> int:
        return 2 * spec.hidden_size  # b_hn is multiplied by r

    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        ops, act = self.ops, self.act
        (h,) = carry
        ah = ops.layer_norm(self._recurrent(p, "w_h", h), p["ln_h"], None, EPS)
        if p["b_h"] is not None:
            ah = ah + p["b_h"]
        x_r, x_z, x_n = ops.split(xp, 3)
        h_r, h_z, h_n = ops.split(ah, 3)
        r = act["r"](x_r + h_r)
        z = act["z"](x_z + h_z)
        n = act["n"](x_n + r * h_n)
        h = ops.lerp(n, h, z)  # z * h + (1 - z) * n
        return (h,), h


class _NoRecurrentWeights(Cell):
    """A family without ``w_h``: nothing for a backend to pack per step."""

    def prepare(self, params: Mapping[str, Array]) -> dict[str, Any]:
        return {}

    def recurrent_weights(self) -> dict[str, str | None]:
        return {}


class IndRNNCell(_NoRecurrentWeights):
    def prepare(self, params: Mapping[str, Array]) -> dict[str, Any]:
        return {"u": params["u"]}

    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        h = self.act["h"](xp + p["u"] * carry[0])
        return (h,), h


def _log_g(ops: Any, v: Array) -> Array:
    """``log(min_g(v))``: ``log(v + 1/2)`` for ``v >= 0``, else ``log(sigmoid(v))``."""
    softplus = ops.activation("softplus")
    relu = ops.activation("relu")
    return ops.where(v >= 0, ops.log(relu(v) + 0.5), -softplus(-v))


class MinGRUCell(_NoRecurrentWeights):
    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        a_z, a_h = self.ops.split(xp, 2)
        h = self.ops.lerp(carry[0], self.act["h"](a_h), self.act["z"](a_z))
        return (h,), h

    def has_parallel_form(self) -> bool:
        return self.spec.activations["z"] == "sigmoid"  # log(1 - z) = -softplus(a_z)

    def linear_recurrence(self, p: Mapping[str, Any], xp: Array, log_space: bool = False
                          ) -> tuple[Array, Array, Array | None] | None:
        acts = self.spec.activations
        if not self.has_parallel_form():
            return None
        ops = self.ops
        a_z, a_h = ops.split(xp, 2)
        log_a = -ops.activation("softplus")(a_z)  # log(1 - z)
        b = self.act["z"](a_z) * self.act["h"](a_h)
        log_b = None
        if log_space and acts["h"] == "min_g":
            log_b = log_a + a_z + _log_g(ops, a_h)  # log z = log(1 - z) + a_z
        return log_a, b, log_b


class MinLSTMCell(_NoRecurrentWeights):
    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        a_f, a_i, a_h = self.ops.split(xp, 3)
        f, i = self.act["f"](a_f), self.act["i"](a_i)
        h = (f * carry[0] + i * self.act["h"](a_h)) / (f + i)
        return (h,), h

    def has_parallel_form(self) -> bool:
        acts = self.spec.activations
        return acts["f"] == acts["i"] == "sigmoid"

    def linear_recurrence(self, p: Mapping[str, Any], xp: Array, log_space: bool = False
                          ) -> tuple[Array, Array, Array | None] | None:
        acts = self.spec.activations
        if not self.has_parallel_form():
            return None
        ops = self.ops
        softplus = ops.activation("softplus")
        a_f, a_i, a_h = ops.split(xp, 3)
        diff = softplus(-a_f) - softplus(-a_i)  # log i - log f
        log_a = -softplus(diff)  # log(f / (f + i))
        log_i = -softplus(-diff)  # log(i / (f + i))
        f, i = self.act["f"](a_f), self.act["i"](a_i)
        b = i / (f + i) * self.act["h"](a_h)
        log_b = log_i + _log_g(ops, a_h) if log_space and acts["h"] == "min_g" else None
        return log_a, b, log_b


def _ln_lstm_params(spec: Spec) -> dict[str, Param]:
    G, H = spec.num_gates, spec.hidden_size
    return {"ln_x": Param((G * H,), "ones"), "ln_h": Param((G * H,), "ones"),
            "ln_c": Param((H,), "ones"), "ln_c_offset": Param((H,), "zeros")}


def _ln_gru_params(spec: Spec) -> dict[str, Param]:
    G, H = spec.num_gates, spec.hidden_size
    return {"ln_x": Param((G * H,), "ones"), "ln_h": Param((G * H,), "ones")}


register_family(
    "ln_lstm", gates=("i", "f", "g", "o"),
    activations={"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid", "c": "tanh"},
    cell=LayerNormLSTMCell, state=("h", "c"), params=_ln_lstm_params,
    doc="layer-normalised LSTM (haste's LayerNormLSTM)", _builtin=True)
register_family(
    "ln_gru", gates=("r", "z", "n"), activations={"r": "sigmoid", "z": "sigmoid", "n": "tanh"},
    cell=LayerNormGRUCell, params=_ln_gru_params,
    doc="layer-normalised GRU, reset after (haste's LayerNormGRU)", _builtin=True)
register_family(
    "indrnn", gates=("h",), activations={"h": "relu"}, cell=IndRNNCell, recurrent=False,
    params=lambda spec: {"u": Param((spec.hidden_size,))},
    doc="IndRNN: h = act(W_x x + b_x + u * h)", _builtin=True)
register_family(
    "mingru", gates=("z", "h"), activations={"z": "sigmoid", "h": "min_g"}, cell=MinGRUCell,
    recurrent=False, doc="minGRU (Feng et al. 2024): a parallel scan over time",
    _builtin=True)
register_family(
    "minlstm", gates=("f", "i", "h"),
    activations={"f": "sigmoid", "i": "sigmoid", "h": "min_g"}, cell=MinLSTMCell,
    recurrent=False, doc="minLSTM (Feng et al. 2024): a parallel scan over time",
    _builtin=True)
