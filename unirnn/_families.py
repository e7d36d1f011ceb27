"""Cell families: registered by name, described once, built on every backend.

A :class:`Family` says everything a backend, a file and a check need of a cell without
reading its step: its gates (the row blocks of ``w_x`` and ``w_h``), its activation roles
with their defaults, its state (``h``, or ``h`` and ``c``), whether it has recurrent
weights, and any extra per-layer parameters (layer-norm scales, a per-unit recurrent
vector) with shapes derived from the spec. Its math is a :class:`unirnn._cells.Cell`
subclass written against the ops protocol. :func:`register_family` makes the name
usable in a :class:`unirnn.Spec`; the spec stores only the name, so files stay portable
and reading one whose family is not registered here is an error naming it.

The built-in families (rnn, lstm, gru, ln_lstm, ln_gru, indrnn, mingru, minlstm) are
registered through this same API by :mod:`unirnn._cells` and :mod:`unirnn._cell_families`,
which ``import unirnn`` loads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from ._errors import SpecError

Cell = Any  # unirnn._cells.Cell (a layer above: this module may not import it)
Spec = Any  # unirnn.Spec (which imports this module)

__all__ = ["Family", "Param", "family_names", "get_family", "register_family"]

INITS = ("uniform", "ones", "zeros")


class Param(NamedTuple):
    """An extra per-layer, per-direction parameter of a family.

    Attributes:
        shape: its shape (usually from the spec: ``(spec.hidden_size,)``).
        init: how :func:`unirnn.init_weights` fills it: ``"uniform"`` (``±1/sqrt(H)``, as
            the weights), ``"ones"`` (a layer-norm scale) or ``"zeros"`` (an offset).
    """

    shape: tuple[int, ...]
    init: str = "uniform"


@dataclass(frozen=True, eq=False)
class Family:
    """A cell family: what it computes and what it holds.

    Attributes:
        name: the name a spec stores (an identifier).
        gates: the row blocks of ``w_x`` (and ``w_h``) in order, each ``H`` rows.
        activations: role -> default activation, in role order (a gate, a candidate,
            LSTM's cell output...). A spec may override each role.
        cell: the :class:`unirnn._cells.Cell` subclass computing a step.
        state: the carry's parts: ``("h",)``, or ``("h", "c")``; ``h`` is the output.
        recurrent: whether ``w_h`` (and ``b_h``) exist; ``False`` for cells whose
            gates read the input only (IndRNN, minGRU).
        params: ``spec -> {name: Param}``, extra per-layer parameters beyond ``w_x``,
            ``w_h``, ``b_x``, ``b_h``.
        variant: built-in families whose options change the gate set (a GRU without a
            reset gate, an LSTM with coupled gates): ``spec -> (gates, activations)``.
        doc: one line for people.
    """

    name: str
    gates: tuple[str, ...]
    activations: Mapping[str, str]
    cell: type[Cell]
    state: tuple[str, ...] = ("h",)
    recurrent: bool = True
    params: Callable[[Spec], Mapping[str, Param]] | None = None
    variant: Callable[[Spec], tuple[tuple[str, ...], Mapping[str, str]]] | None = None
    doc: str = ""
    builtin: bool = field(default=False, repr=False)

    def gate_order(self, spec: Spec) -> tuple[str, ...]:
        return self.variant(spec)[0] if self.variant is not None else self.gates

    def default_activations(self, spec: Spec) -> dict[str, str]:
        return dict(self.variant(spec)[1] if self.variant is not None else self.activations)

    def extra_params(self, spec: Spec) -> dict[str, Param]:
        if self.params is None:
            return {}
        extra = dict(self.params(spec))
        for name, param in extra.items():
            if not isinstance(param, Param):
                raise SpecError(f"family {self.name!r}: params()[{name!r}] must be a "
                                f"unirnn.Param(shape, init); received {param!r}")
        return extra


_REGISTRY: dict[str, Family] = {}
_BASE_TENSORS = ("w_x", "w_h", "b_x", "b_h", "p", "w_r")


def register_family(
    name: str,
    *,
    gates: tuple[str, ...] | list[str],
    activations: Mapping[str, str],
    cell: type[Cell],
    state: tuple[str, ...] | list[str] = ("h",),
    recurrent: bool = True,
    params: Callable[[Spec], Mapping[str, Param]] | None = None,
    doc: str = "",
    overwrite: bool = False,
    _variant: Callable[[Spec], tuple[tuple[str, ...], Mapping[str, str]]] | None = None,
    _builtin: bool = False,
) -> Family:
    """Register a cell family under ``name``: ``unirnn.Spec(name, I, H)`` then builds it on
    every backend.

    Args:
        name: an identifier, not a built-in family's name.
        gates: the gate blocks of ``w_x``/``w_h`` in order (each ``H`` rows), e.g.
            ``("z", "n")``.
        activations: role -> default activation name, e.g. ``{"z": "sigmoid", "n": "tanh"}``;
            roles are what a spec's ``activations`` may override.
        cell: a :class:`unirnn.Cell` subclass; its ``step(p, xp, carry)`` is written
            against the ops protocol (``self.ops``) and ``self.act[role]``.
        state: ``("h",)`` or ``("h", "c")``.
        recurrent: ``False`` when the family has no ``w_h``/``b_h``.
        params: ``spec -> {name: unirnn.Param(shape, init)}``, extra per-layer tensors.
        doc: one line for people (``unirnn.family_names()`` shows it).
        overwrite: replace a user family registered under ``name`` before.

    Returns:
        The registered :class:`Family`.

    Raises:
        SpecError: a bad name, a clash with a registered family, or a malformed field.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise SpecError(f"a family name must be an identifier; received {name!r}")
    existing = _REGISTRY.get(name)
    if existing is not None and (existing.builtin or not overwrite):
        raise SpecError(
            f"family {name!r} is already registered"
            + ("" if existing.builtin else "; pass overwrite=True to replace it")
            + (" (a built-in family cannot be replaced)" if existing.builtin else "")
        )
    gates = tuple(gates)
    if not gates or not all(isinstance(g, str) and g for g in gates) \
            or len(set(gates)) != len(gates):
        raise SpecError(f"family {name!r}: gates must be distinct non-empty names; "
                        f"received {gates!r}")
    if not isinstance(activations, Mapping) or not activations:
        raise SpecError(f"family {name!r}: activations must map each role to a default "
                        f"activation name; received {activations!r}")
    if not (isinstance(cell, type) and callable(getattr(cell, "step", None))
            and callable(getattr(cell, "recurrent_weights", None))):
        raise SpecError(f"family {name!r}: cell must be a subclass of unirnn.Cell; "
                        f"received {cell!r}")
    state = tuple(state)
    if state not in (("h",), ("h", "c")):
        raise SpecError(f"family {name!r}: state must be ('h',) or ('h', 'c'); "
                        f"received {state!r}")
    if not isinstance(recurrent, bool):
        raise SpecError(f"family {name!r}: recurrent must be True or False; "
                        f"received {recurrent!r}")
    if params is not None and not callable(params):
        raise SpecError(f"family {name!r}: params must be a function of the spec returning "
                        f"{{name: unirnn.Param(...)}}; received {params!r}")
    family = Family(name, gates, MappingProxyType(dict(activations)), cell, state, recurrent,
                    params, _variant, doc, _builtin)
    _REGISTRY[name] = family
    return family


def get_family(name: str) -> Family:
    """The registered family ``name``.

    Raises:
        SpecError: ``name`` is not registered; the message names it and the families
            that are, and says how a file's user-defined family is made available.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise SpecError(
            f"family: {name!r} is not registered; registered families: "
            f"{', '.join(_REGISTRY)}. A spec or file naming a user-defined family needs "
            f"unirnn.register_family({name!r}, ...) run before it is built or loaded (on "
            f"the command line: --import the module that registers it)"
        ) from None


def family_names() -> dict[str, str]:
    """Every registered family's name -> its one-line description, built-ins first."""
    return {name: family.doc for name, family in _REGISTRY.items()}


def check_params(family: Family, spec: Spec) -> dict[str, Param]:
    """The family's extra parameters for ``spec``, their names checked against the base
    tensors'."""
    extra = family.extra_params(spec)
    for name, param in extra.items():
        if name in _BASE_TENSORS or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SpecError(f"family {family.name!r}: a parameter may not be named {name!r} "
                            f"(an identifier other than {', '.join(_BASE_TENSORS)})")
        if param.init not in INITS:
            raise SpecError(f"family {family.name!r}: {name}.init: expected one of "
                            f"{', '.join(INITS)}; received {param.init!r}")
        if not all(isinstance(s, int) and s >= 1 for s in param.shape):
            raise SpecError(f"family {family.name!r}: {name}.shape: expected positive "
                            f"integers; received {param.shape!r}")
    return extra
