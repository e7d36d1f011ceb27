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

from ._spec import Spec

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

    def prepare(self, params: Mapping[str, Array]) -> dict[str, Any]:
        """Per layer and direction, once: the step's parameters (``w_h``, ``b_h``, ...)."""
        return {"w_h": params["w_h"], "b_h": params.get("b_h")}

    def recurrent_weights(self) -> dict[str, str | None]:
        """The prepared parameters the step multiplies by the state, each with the key of
        its bias (``None``: no bias), e.g. ``{"w_h": "b_h"}``."""
        return {"w_h": "b_h"}

    def _recurrent(self, p: Mapping[str, Any], name: str, x: Array) -> Array:
        bias = self._bias_of[name]
        return self.ops.recurrent(name, x, p[name], None if bias is None else p[bias])

    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        """One time step: ``xp`` is this step's projected input ``W_x x_t + b_x``."""
        raise NotImplementedError


class RNNCell(Cell):
    def step(self, p: Mapping[str, Any], xp: Array, carry: Carry) -> tuple[Carry, Array]:
        h = self.act["h"](xp + self._recurrent(p, "w_h", carry[0]))
        return (h,), h


class GRUCell(Cell):
    def __init__(self, spec: Spec, ops: Ops) -> None:
        super().__init__(spec, ops)
        # r and z with one activation: one call over their adjacent blocks
        self._rz_together = spec.activations["r"] == spec.activations["z"]

    def prepare(self, params: Mapping[str, Array]) -> dict[str, Any]:
        if self.spec.reset == "after":
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
        if self.spec.reset == "after":
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


_CELLS: dict[str, type[Cell]] = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}


def folded_bias_rows(spec: Spec) -> int:
    """How many leading rows of ``b_h`` may be added into ``b_x`` without changing outputs.

    ``b_h`` adds to a gate's pre-activation unchanged, and so folds, everywhere except
    GRU's ``b_hn`` under reset "after", where it is multiplied by ``r``
    (``n = act(W_xn x + b_xn + r * (W_hn h + b_hn))``): rnn and lstm ``G*H`` (all), gru
    reset "before" ``3H`` (all), gru reset "after" ``2H`` (``b_hr``, ``b_hz``).
    """
    if spec.family == "gru" and spec.reset == "after":
        return 2 * spec.hidden_size
    return spec.num_gates * spec.hidden_size


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
    return _CELLS[spec.family](spec, ops)
