"""Cell math, written once per family against a small ops protocol.

A backend provides :class:`Ops` (a few lines over its array library) and owns the time
loop of one layer and direction (the stack around it is :mod:`unirnn._stack`): it
projects the whole input once (``xp = x @ w_x.T + b_x``, all steps in one GEMM), calls
:meth:`Cell.prepare` once per layer and direction, then :meth:`Cell.step` per time step.
The carry is always a tuple: ``(h,)`` for rnn and gru, ``(h, c)`` for lstm.

A cell declares what backends need to know of it without reading its step:
:meth:`Cell.recurrent_weights` (the prepared parameters multiplied by the state at every
step, each with its bias: what a backend may pre-pack for its step GEMM) and
:func:`folded_bias_rows` (how much of ``b_h`` may be added into ``b_x`` without changing
the outputs: what one-bias layouts and hoisted projections may fold).

The equations are those of :class:`unirnn.Spec` (DESIGN.md, "Cell semantics").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ._families import get_family, register_family
from ._spec import DEFAULT_ACTIVATIONS, GATE_ORDER, Spec

__all__ = ["Cell", "Ops", "folded_bias_rows", "make_cell", "split_points"]

Array = Any
"""The backend's array type (numpy array, torch tensor, jax array, Keras tensor)."""


class Ops(Protocol):
    """What a backend provides for the cell math. Arrays also support ``+ - *``."""

    backend: str
    """Key used to look up user-registered activations: numpy, torch, jax or keras."""

    def linear(self, x: Array, w: Array, b: Array | None) -> Array:
        """``x @ w.T (+ b)`` with ``w`` in canonical ``(out, in)`` layout."""
        ...

    def recurrent(self, name: str, x: Array, w: Array, b: Array | None) -> Array:
        """The step GEMM of the recurrent weight ``name`` (a key of
        :meth:`Cell.recurrent_weights`): ``linear(x, w, b)``, which a backend may run on a
        weight it laid out once per scan."""
        ...

    def split(self, x: Array, sections: int | Sequence[int]) -> list[Array]:
        """Parts along the last axis: ``sections`` equal ones, or, for a sequence of
        sizes, parts of those sizes (as ``torch.split``; :func:`split_points` gives the
        indices numpy-style libraries take)."""
        ...

    def lerp(self, a: Array, b: Array, w: Array) -> Array:
        """``a + w * (b - a)``, elementwise: ``(1 - w) * a + w * b`` in one op where the
        library has one (``torch.lerp``)."""
        ...

    def clip(self, x: Array, bound: float) -> Array:
        """Clamp to ``[-bound, bound]``."""
        ...

    def activation(self, name: str) -> Callable[[Array], Array]:
        """The one-argument function for an activation name as written in a spec."""
        ...

    def layer_norm(self, x: Array, scale: Array, offset: Array | None,
                   eps: float = 1e-5) -> Array:
        """``(x - mean) / sqrt(var + eps) * scale (+ offset)`` over the last axis, with the
        biased variance (``torch.nn.functional.layer_norm``)."""
        ...

    def log(self, x: Array) -> Array:
        """Elementwise natural logarithm."""
        ...

    def where(self, condition: Array, a: Array, b: Array) -> Array:
        """Elementwise ``a`` where ``condition``, else ``b``."""
        ...

    def linear_scan(self, log_a: Array, b: Array, log_b: Array | None, h0: Array) -> Array:
        """Every ``h_t`` of ``h_t = a_t * h_{t-1} + b_t`` at once, over time-major
        ``(T, N, H)`` coefficients (``log_a = log a_t``, ``a_t > 0``) from ``h0``
        ``(N, H)``: a parallel scan (torch: ``cumsum``/``logcumsumexp`` in log space, jax:
        ``lax.associative_scan``, Keras: ``keras.ops.associative_scan``). ``log_b``, when
        given, is ``log b_t`` (all ``b_t > 0``), which a log-space scan uses directly."""
        ...


Carry = tuple[Any, ...]


class Cell:
    """Array family's step function bound to a spec and a backend's ops.

    Activations are resolved once here, not per step.
    """

    def __init__(self, spec: Spec, ops: Ops) -> None:
        self.spec = spec
        self.ops = ops
        self.act = {role: ops.activation(name) for role, name in spec.activations.items()}
        self._bias_of = self.recurrent_weights()

    def project(self, params: Mapping[str, Array], x: Array) -> Array:
        """The input's part of every step at once, ``x`` time-major ``(T, N, I_k)``: by
        default ``W_x x + b_x`` (one GEMM, which a backend may run its own way). A family
        that transforms the projection (a layer norm) overrides it."""
        return self.ops.linear(x, params["w_x"], params.get("b_x"))

    def prepare(self, params: Mapping[str, Array]) -> dict[str, Any]:
        """Per layer and direction, once: the step's parameters (``w_h``, ``b_h``, ...)."""
        return {"w_h": params["w_h"], "b_h": params.get("b_h")}

    def recurrent_weights(self) -> dict[str, str | None]:
        """The prepared parameters the step multiplies by the state, each with the key of
        its bias (``None``: no bias), e.g. ``{"w_h": "b_h"}``."""
        return {"w_h": "b_h"}

    @classmethod
    def folded_bias_rows(cls, spec: Spec) -> int:
        """How many leading rows of ``b_h`` add to their gates' pre-activations unchanged
        (:func:`folded_bias_rows`): all ``G*H`` unless a family says fewer."""
        return spec.num_gates * spec.hidden_size

    def _recurrent(self, p: Mapping[str, Any], name: str, x: Array) -> Array:
        bias = self._bias_of[name]
        return self.ops.recurrent(name, x, p[name], None if bias is None else p[bias])

    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        """One time step: ``xp`` is this step's projected input ``W_x x_t + b_x``."""
        raise NotImplementedError

    def has_parallel_form(self) -> bool:
        """Whether :meth:`linear_recurrence` applies to this spec (a backend's ``kernel``
        says so)."""
        return False

    def linear_recurrence(self, p: Mapping[str, Any], xp: Array, log_space: bool = False
                          ) -> tuple[Array, Array, Array | None] | None:
        """For a family whose state follows ``h_t = a_t * h_{t-1} + b_t`` with ``a_t`` and
        ``b_t`` functions of the input alone (minGRU, minLSTM): ``(log_a, b, log_b)`` over
        all of time-major ``xp``, so a backend runs the whole sequence as one parallel scan
        (:meth:`Ops.linear_scan`). ``log_b`` is given only with ``log_space`` (the backend's
        scan runs in log space: ``Ops.prefers_log_space``) and where every ``b_t > 0``;
        else ``None``. ``None`` (the default): the family has per-step dependencies and is
        stepped."""
        return None

    def parallel(self, p: Mapping[str, Any], xp: Array, carry: Carry, valid: Array | None
                 ) -> tuple[Array, Carry] | None:
        """The whole scan at once when :meth:`linear_recurrence` allows it: ``(outputs,
        final carry)`` with the sequential meaning of ``valid`` (a masked step keeps the
        state and outputs zero); ``None`` otherwise."""
        prefers = getattr(self.ops, "prefers_log_space", None)
        recurrence = self.linear_recurrence(p, xp, bool(prefers and prefers(xp)))
        if recurrence is None:
            return None
        log_a, b, log_b = recurrence
        ops = self.ops
        if valid is not None:  # a masked step: a = 1, b = 0, so h is held
            log_a = ops.where(valid, log_a, 0.0 * log_a)
            b = ops.where(valid, b, 0.0 * b)
            log_b = None
        hs = ops.linear_scan(log_a, b, log_b, carry[0])
        final = hs[-1]
        if valid is not None:
            hs = ops.where(valid, hs, 0.0 * hs)
        return hs, (final,)


class RNNCell(Cell):
    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        h = self.act["h"](xp + self._recurrent(p, "w_h", carry[0]))
        return (h,), h


class GRUCell(Cell):
    def __init__(self, spec: Spec, ops: Ops) -> None:
        super().__init__(spec, ops)
        # r and z with one activation: one call over their adjacent blocks
        self._rz_together = spec.reset != "none" and \
            spec.activations["r"] == spec.activations["z"]

    @classmethod
    def folded_bias_rows(cls, spec: Spec) -> int:
        # reset after: b_hn is multiplied by r, so only b_hr and b_hz fold
        if spec.reset == "after":
            return 2 * spec.hidden_size
        return spec.num_gates * spec.hidden_size

    def prepare(self, params: Mapping[str, Array]) -> dict[str, Any]:
        if self.spec.reset != "before":
            return super().prepare(params)
        # Reset before: r multiplies h ahead of W_hn, so the r/z and n blocks of the
        # recurrent GEMM are separate; split them here rather than at every step.
        H = self.spec.hidden_size
        w_h, b_h = params["w_h"], params.get("b_h")
        return {
            "w_hrz": w_h[: 2 * H],
            "w_hn": w_h[2 * H :],
            "b_hrz": None if b_h is None else b_h[: 2 * H],
            "b_hn": None if b_h is None else b_h[2 * H :],
        }

    def recurrent_weights(self) -> dict[str, str | None]:
        if self.spec.reset != "before":
            return {"w_h": "b_h"}
        return {"w_hrz": "b_hrz", "w_hn": "b_hn"}

    def _reset_update(self, a_rz: Array) -> tuple[Array, Array]:
        """``r`` and ``z`` from their pre-activations ``(N, 2H)``."""
        if self._rz_together:
            r, z = self.ops.split(self.act["r"](a_rz), 2)
            return r, z
        a_r, a_z = self.ops.split(a_rz, 2)
        return self.act["r"](a_r), self.act["z"](a_z)

    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        ops, act, H = self.ops, self.act, self.spec.hidden_size
        (h,) = carry
        if self.spec.reset == "none":  # gates z, n: no reset gate
            x_z, x_n = ops.split(xp, 2)
            h_z, h_n = ops.split(self._recurrent(p, "w_h", h), 2)
            z = act["z"](x_z + h_z)
            n = act["n"](x_n + h_n)
            h = ops.lerp(h, n, z) if self.spec.update == "new" else ops.lerp(n, h, z)
            return (h,), h
        x_rz, x_n = ops.split(xp, [2 * H, H])
        if self.spec.reset == "after":
            h_rz, h_n = ops.split(self._recurrent(p, "w_h", h), [2 * H, H])
            r, z = self._reset_update(x_rz + h_rz)
            n = act["n"](x_n + r * h_n)
        else:
            r, z = self._reset_update(x_rz + self._recurrent(p, "w_hrz", h))
            n = act["n"](x_n + self._recurrent(p, "w_hn", r * h))
        # update "new": (1 - z) * h + z * n; "old": z * h + (1 - z) * n
        h = ops.lerp(h, n, z) if self.spec.update == "new" else ops.lerp(n, h, z)
        return (h,), h


class LSTMCell(Cell):
    def prepare(self, params: Mapping[str, Array]) -> dict[str, Any]:
        prepared = super().prepare(params)
        if self.spec.peepholes:
            prepared["p_i"], prepared["p_f"], prepared["p_o"] = self.ops.split(params["p"], 3)
        if self.spec.proj_size:
            prepared["w_r"] = params["w_r"]
        return prepared

    def recurrent_weights(self) -> dict[str, str | None]:
        return {"w_h": "b_h", "w_r": None} if self.spec.proj_size else {"w_h": "b_h"}

    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        ops, act, spec = self.ops, self.act, self.spec
        h, c = carry
        if spec.coupled:  # gates f, g, o and i = 1 - f
            a_f, a_g, a_o = ops.split(xp + self._recurrent(p, "w_h", h), 3)
            f = act["f"](a_f)
            c = ops.lerp(act["g"](a_g), c, f)  # f * c + (1 - f) * g
        else:
            a_i, a_f, a_g, a_o = ops.split(xp + self._recurrent(p, "w_h", h), 4)
            if spec.peepholes:
                a_i = a_i + p["p_i"] * c
                a_f = a_f + p["p_f"] * c
            c = act["f"](a_f) * c + act["i"](a_i) * act["g"](a_g)
        if spec.cell_clip is not None:
            c = ops.clip(c, spec.cell_clip)
        if spec.peepholes:
            a_o = a_o + p["p_o"] * c
        h = act["o"](a_o) * act["c"](c)
        if spec.proj_size:
            h = self._recurrent(p, "w_r", h)
        return (h, c), h


def _without(family: str, gate: str) -> tuple[tuple[str, ...], Mapping[str, str]]:
    """``family``'s gates and default activations with ``gate`` removed (one home for the
    native families' facts: :data:`unirnn._spec.GATE_ORDER`, ``DEFAULT_ACTIVATIONS``)."""
    return (tuple(g for g in GATE_ORDER[family] if g != gate),
            {r: a for r, a in DEFAULT_ACTIVATIONS[family].items() if r != gate})


def _gru_variant(spec: Spec) -> tuple[tuple[str, ...], Mapping[str, str]]:
    return _without("gru", "r" if spec.reset == "none" else "")


def _lstm_variant(spec: Spec) -> tuple[tuple[str, ...], Mapping[str, str]]:
    return _without("lstm", "i" if spec.coupled else "")


for _name, _cell, _doc in (
    ("rnn", RNNCell, "Elman RNN: h = act(W_x x + b_x + W_h h + b_h)"),
    ("lstm", LSTMCell, "LSTM (i, f, g, o; peepholes, projection, cell clip, coupled gates)"),
    ("gru", GRUCell, "GRU (r, z, n; reset after, before or none; update old or new)"),
):
    register_family(_name, gates=GATE_ORDER[_name], activations=DEFAULT_ACTIVATIONS[_name],
                    cell=_cell, state=("h", "c") if _name == "lstm" else ("h",),
                    _variant={"lstm": _lstm_variant, "gru": _gru_variant}.get(_name),
                    doc=_doc, _builtin=True)


def folded_bias_rows(spec: Spec) -> int:
    """How many leading rows of ``b_h`` may be added into ``b_x`` without changing outputs.

    ``b_h`` adds to a gate's pre-activation unchanged, and so folds, everywhere except
    GRU's ``b_hn`` under reset "after", where it is multiplied by ``r``
    (``n = act(W_xn x + b_xn + r * (W_hn h + b_hn))``): rnn and lstm ``G*H`` (all), gru
    reset "before" or "none" (all), gru reset "after" ``2H`` (``b_hr``, ``b_hz``); each
    family's cell says (:meth:`Cell.folded_bias_rows`).
    """
    return get_family(spec.family).cell.folded_bias_rows(spec)


def split_points(sections: Sequence[int]) -> list[int]:
    """The indices at which parts of sizes ``sections`` begin, after the first (what
    ``numpy.split`` and its kin take): ``[2, 1] -> [2]``."""
    points, total = [], 0
    for size in sections[:-1]:
        total += size
        points.append(total)
    return points


def make_cell(spec: Spec, ops: Ops) -> Cell:
    """The cell of ``spec.family`` bound to ``ops``."""
    return get_family(spec.family).cell(spec, ops)
