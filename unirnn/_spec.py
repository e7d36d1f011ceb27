"""The framework-neutral description of a recurrent layer stack.

A :class:`Spec` is a frozen dataclass: the cell family, its sizes, one activation per
role, the family's options and the stack's options. It is plain data: it validates on
construction, round-trips through JSON and is what every backend builds from.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from ._activations import canonical_activation
from ._errors import SpecError
from ._families import get_family

__all__ = [
    "FAMILIES",
    "GATE_ORDER",
    "ROLES",
    "Spec",
    "gru",
    "lstm",
    "preset",
    "preset_names",
    "rnn",
]

SPEC_FORMAT = 1

FAMILIES = ("rnn", "lstm", "gru")
"""The families with a native layer in the frameworks; :func:`unirnn.family_names` lists
every registered one."""

GATE_ORDER: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
)
"""Canonical gate order per family: the order of row blocks in ``w_x``, ``w_h``, biases."""

ROLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"rnn": ("h",), "lstm": ("i", "f", "g", "o", "c"), "gru": ("r", "z", "n")}
)
"""Activation roles per family: each gate, the candidate, and LSTM's cell output ``c``."""

DEFAULT_ACTIVATIONS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "rnn": {"h": "tanh"},
        "lstm": {"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid", "c": "tanh"},
        "gru": {"r": "sigmoid", "z": "sigmoid", "n": "tanh"},
    }
)

RESETS = ("after", "before", "none")
UPDATES = ("old", "new")

# (field, family it applies to, value meaning "not used")
_FAMILY_OPTIONS: tuple[tuple[str, str, Any], ...] = (
    ("reset", "gru", None),
    ("update", "gru", None),
    ("peepholes", "lstm", False),
    ("proj_size", "lstm", 0),
    ("cell_clip", "lstm", None),
    ("coupled", "lstm", False),
)

# keyword arguments of the family constructors beyond the common ones, per family
_CONSTRUCTOR_OPTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "rnn": (),
    "lstm": ("recurrent_activation", "peepholes", "proj_size", "cell_clip", "coupled"),
    "gru": ("recurrent_activation", "reset", "update"),
})


def _other_family(name: str, value: Any, family: str) -> SpecError:
    """The error for an option ``name`` of another family than ``family``."""
    owners = [f for f, names in _CONSTRUCTOR_OPTIONS.items() if name in names]
    where = (f"family {owners[0]!r}" if len(owners) == 1
             else "families " + ", ".join(repr(f) for f in owners))
    return SpecError(
        f"{name}: applies to {where} only; received {name}={value!r} for family {family!r}"
    )


def _family_options(family: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check the extra keywords given to ``family``'s constructor: options of another
    family are a ValueError naming it (the Spec fields among them are left to the Spec's
    own check), unknown names a TypeError as Python gives."""
    fields_ = {f.name for f in fields(Spec)}
    passed: dict[str, Any] = {}
    for name, value in options.items():
        if not any(name in names for names in _CONSTRUCTOR_OPTIONS.values()):
            raise TypeError(f"{family}() got an unexpected keyword argument {name!r}")
        if name in fields_:
            passed[name] = value  # Spec.__post_init__ rejects it, naming the family
        elif value is not None:
            raise _other_family(name, value, family)
    return passed


class RoleActivations(Mapping[str, str]):
    """An immutable, hashable, picklable mapping of role -> activation name."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items = dict(items)

    def __getitem__(self, role: str) -> str:
        return self._items[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (RoleActivations, (self._items,))


def _is_int(value: Any) -> bool:
    """Python and numpy integers (``np.int64(3)``), not bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """Python and numpy real numbers, not bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Spec:
    """A recurrent layer stack, independent of any framework.

    Cell semantics (DESIGN.md; per gate ``k``: ``a_k = W_xk x_t + b_xk + W_hk h_{t-1} + b_hk``):

    .. math::

        \\text{rnn:}\\quad h_t = act_h(a_h)

        \\text{lstm:}\\quad i = act_i(a_i [+ p_i c_{t-1}]),\\ f = act_f(a_f [+ p_f c_{t-1}]),
        \\ g = act_g(a_g),\\ c_t = f c_{t-1} + i g\\ [\\text{clip}],
        \\ o = act_o(a_o [+ p_o c_t]),\\ h_t = o\\, act_c(c_t)\\ [h_t = W_{hr} h_t]

        \\text{gru:}\\quad r = act_r(a_r),\\ z = act_z(a_z),
        \\ n = act_n(W_{xn} x + b_{xn} + r (W_{hn} h + b_{hn}))\\ \\text{(reset after)}
        \\ \\text{or}\\ act_n(W_{xn} x + b_{xn} + W_{hn}(r h) + b_{hn})\\ \\text{(before)},
        \\ h_t = z h_{t-1} + (1-z) n\\ \\text{(update old)}\\ \\text{or}\\ (1-z) h_{t-1} + z n

    Attributes:
        family: ``"rnn"`` (Elman), ``"lstm"`` or ``"gru"``.
        input_size: features per time step of the first layer's input, ``I``.
        hidden_size: state size ``H``.
        activations: one activation name per role (all roles present; see :data:`ROLES`).
        bias: whether ``b_x`` and ``b_h`` exist.
        num_layers: stacked layers ``L``.
        bidirectional: a backward direction per layer; outputs are ``[forward, backward]``.
        dropout: dropout on the outputs of every layer but the last, training only.
        reset: GRU only, ``"after"`` (torch/cuDNN/Keras default/Flax), ``"before"`` (d2l,
            Keras ``reset_after=False``) or ``"none"``: no reset gate (gates ``z, n``).
        update: GRU only, which term ``z`` weights: ``"old"`` gives
            ``h_t = z*h_{t-1} + (1-z)*n`` (torch, Keras, Flax, ONNX, d2l), ``"new"`` gives
            ``h_t = (1-z)*h_{t-1} + z*n`` (haiku).
        peepholes: LSTM only, diagonal peephole weights ``p`` (order i, f, o).
        proj_size: LSTM only, projection size ``P`` of ``h`` (0: none; torch ``proj_size``).
        cell_clip: LSTM only, clamp the cell state ``c_t`` to ``[-cell_clip, cell_clip]``
            after its update (TF's ``LSTMCell(cell_clip=...)``); ``None``: no clip.
        coupled: LSTM only, ``i = 1 - f`` (gates ``f, g, o``; ONNX ``input_forget``).

    ``family`` may also name any registered family (:func:`unirnn.register_family`,
    :func:`unirnn.family_names`: ln_lstm, ln_gru, indrnn, mingru, minlstm and the user's).
    """

    family: str
    input_size: int
    hidden_size: int
    activations: Mapping[str, str] = field(default_factory=dict)
    bias: bool = True
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    reset: str | None = None
    update: str | None = None
    peepholes: bool = False
    proj_size: int = 0
    cell_clip: float | None = None
    coupled: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.family, str):
            raise SpecError(f"family: expected a family name such as 'gru'; received "
                            f"{self.family!r}")
        family_def = get_family(self.family)
        for name in ("input_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise SpecError(f"{name}: expected an integer >= 1; received {value!r}")
            set_(self, name, int(value))  # a plain int: np.int64(3) becomes 3
        for name in ("bias", "bidirectional", "peepholes", "coupled"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise SpecError(f"{name}: expected True or False; received {value!r}")
        dropout = self.dropout
        if not _is_real(dropout) or not 0.0 <= dropout < 1.0:
            raise SpecError(f"dropout: expected a number in [0, 1); received {dropout!r}")
        set_(self, "dropout", float(dropout))

        # Options of another family: reject rather than ignore.
        for name, family, unused in _FAMILY_OPTIONS:
            value = getattr(self, name)
            if self.family != family and value != unused:
                raise _other_family(name, value, self.family)
        if self.family == "gru":
            reset = "after" if self.reset is None else self.reset
            update = "old" if self.update is None else self.update
            if reset not in RESETS:
                raise SpecError(f"reset: expected 'after', 'before' or 'none' (no reset "
                                f"gate); received {reset!r}")
            if update not in UPDATES:
                raise SpecError(
                    f"update: expected 'old' (h = z*h + (1-z)*n) or 'new' "
                    f"(h = (1-z)*h + z*n); received {update!r}"
                )
            set_(self, "reset", reset)
            set_(self, "update", update)
        if self.family == "lstm":
            if not _is_int(self.proj_size) or not 0 <= self.proj_size:
                raise SpecError(
                    f"proj_size: expected an integer >= 0 (0: no projection); "
                    f"received {self.proj_size!r}"
                )
            set_(self, "proj_size", int(self.proj_size))
            if self.proj_size >= self.hidden_size:
                raise SpecError(
                    f"proj_size: expected less than hidden_size={self.hidden_size}; "
                    f"received {self.proj_size}"
                )
            if self.cell_clip is not None:
                clip = self.cell_clip
                if not _is_real(clip) or not (math.isfinite(clip) and clip > 0):
                    raise SpecError(
                        f"cell_clip: expected a positive finite number or None; received {clip!r}"
                    )
                set_(self, "cell_clip", float(clip))
            if self.coupled and self.peepholes:
                raise SpecError(
                    "coupled: coupled input and forget gates (i = 1 - f) take no peepholes "
                    "in unirnn; received coupled=True with peepholes=True"
                )

        if not isinstance(self.activations, Mapping):
            raise SpecError(
                f"activations: expected a mapping of role to activation name; "
                f"received {self.activations!r}"
            )
        defaults = family_def.default_activations(self)
        roles = tuple(defaults)
        unknown = [r for r in self.activations if r not in roles]
        if unknown:
            raise SpecError(
                f"activations: role {unknown[0]!r} does not exist for family {self.family!r}; "
                f"expected roles {', '.join(roles)}"
            )
        merged = dict(defaults)
        for role, name in self.activations.items():
            try:
                merged[role] = canonical_activation(name)
            except ValueError as err:
                raise SpecError(f"activations[{role!r}]: {err}") from None
        set_(self, "activations", RoleActivations({r: merged[r] for r in roles}))

    def __hash__(self) -> int:
        return hash(self.to_json())

    # -- derived sizes ----------------------------------------------------------------

    @property
    def gate_order(self) -> tuple[str, ...]:
        """The row blocks of ``w_x``/``w_h`` in order (lstm ``i, f, g, o``...)."""
        return get_family(self.family).gate_order(self)

    @property
    def roles(self) -> tuple[str, ...]:
        """The activation roles, in order."""
        return tuple(self.activations)

    @property
    def num_gates(self) -> int:
        """``G``: 1 for rnn, 4 for lstm, 3 for gru (2 with ``reset="none"``, 3 coupled)."""
        return len(self.gate_order)

    @property
    def state_names(self) -> tuple[str, ...]:
        """The carry's parts: ``("h",)`` or ``("h", "c")`` (lstm and its kin)."""
        return get_family(self.family).state

    @property
    def has_cell_state(self) -> bool:
        """Whether the state is ``(h, c)``."""
        return len(self.state_names) == 2

    @property
    def native_family(self) -> bool:
        """Whether the family is one of the frameworks' own (rnn, lstm, gru)."""
        return self.family in FAMILIES

    @property
    def num_directions(self) -> int:
        """``D``: 2 when bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Size of ``h`` as emitted: ``proj_size`` when projecting, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    def layer_input_size(self, layer: int) -> int:
        """Input features of ``layer``: ``I`` for layer 0, ``D * output_size`` above."""
        return self.input_size if layer == 0 else self.num_directions * self.output_size

    @property
    def directions(self) -> tuple[str, ...]:
        return ("forward", "backward") if self.bidirectional else ("forward",)

    def describe(self) -> str:
        """One line for people: sizes, activations and the options that are set, e.g.
        ``"gru 3->4; r=sigmoid, z=gelu, n=tanh; reset=after, update=old; layers=1"``."""
        parts = [f"{self.family} {self.input_size}->{self.hidden_size}",
                 ", ".join(f"{role}={name}" for role, name in self.activations.items())]
        if self.family == "gru":
            parts.append(f"reset={self.reset}, update={self.update}")
        if self.peepholes:
            parts.append("peepholes")
        if self.proj_size:
            parts.append(f"proj_size={self.proj_size}")
        if self.cell_clip is not None:
            parts.append(f"cell_clip={self.cell_clip}")
        if self.coupled:
            parts.append("coupled (i = 1 - f)")
        if not self.bias:
            parts.append("no bias")
        parts.append(f"layers={self.num_layers}" + (" bidirectional" if self.bidirectional
                                                     else ""))
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        return "; ".join(parts)

    # -- serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["activations"] = dict(self.activations)
        if not data["coupled"]:
            del data["coupled"]  # files without coupled gates read in unirnn before them
        return {"format": SPEC_FORMAT, **data}

    def to_json(self) -> str:
        """The spec as JSON text; ``Spec.from_json(spec.to_json()) == spec``."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Spec:
        if not isinstance(data, Mapping):
            raise SpecError(f"a spec must be a JSON object; received {type(data).__name__}")
        data = dict(data)
        version = data.pop("format", SPEC_FORMAT)
        if not _is_int(version) or version < 1:
            raise SpecError(
                f"spec: the format field must be an integer >= 1 (the spec format version; "
                f"this unirnn writes {SPEC_FORMAT}); received format={version!r}"
            )
        if version > SPEC_FORMAT:
            raise SpecError(
                f"spec format {version!r} is newer than this unirnn reads (format "
                f"{SPEC_FORMAT}); upgrade unirnn"
            )
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError(
                f"spec: unknown field(s) {', '.join(unknown)}; expected fields "
                f"{', '.join(sorted(names))}"
            )
        for required in ("family", "input_size", "hidden_size"):
            if required not in data:
                raise SpecError(f"spec: missing required field {required!r}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Spec:
        """Read a spec from JSON text written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"spec: expected JSON text; could not parse it ({err})") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> Spec:
        """A copy with ``changes`` applied (validated)."""
        data = self.to_dict()
        data.pop("format")
        data.update(changes)
        return Spec.from_dict(data)


def _activations(
    family: str,
    activation: str | None,
    recurrent_activation: str | None,
    activations: Mapping[str, str] | None,
    absent: str = "",
) -> dict[str, str]:
    """Merge the Keras-style shorthands with per-role overrides (overrides win)."""
    for option, value in (("activation", activation),
                          ("recurrent_activation", recurrent_activation)):
        if value is None and not (option == "recurrent_activation" and family == "rnn"):
            raise SpecError(
                f"{option}: expected an activation name such as 'tanh' or 'identity'; received "
                f"None (Keras reads None as linear, other code as the default: say which, "
                f"{option}='identity', or leave it out for the {family}'s default)"
            )
    merged: dict[str, str] = {}
    if family == "lstm":
        if activation is not None:
            merged.update(g=activation, c=activation)
        if recurrent_activation is not None:
            merged.update(i=recurrent_activation, f=recurrent_activation, o=recurrent_activation)
    elif family == "gru":
        if activation is not None:
            merged["n"] = activation
        if recurrent_activation is not None:
            merged.update(r=recurrent_activation, z=recurrent_activation)
    else:
        if activation is not None:
            merged["h"] = activation
    merged.pop(absent, None)  # a gate the options remove (gru reset "none", coupled lstm)
    if activations is not None:
        if not isinstance(activations, Mapping):
            raise SpecError(
                f"activations: expected a mapping of role to name such as {{'z': 'gelu'}}; "
                f"received {activations!r}"
            )
        merged.update(activations)
    return merged


def rnn(
    input_size: int,
    hidden_size: int,
    *,
    activation: str = "tanh",
    activations: Mapping[str, str] | None = None,
    bias: bool = True,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    **others: Any,
) -> Spec:
    """An Elman RNN: ``h_t = act(W_x x_t + b_x + W_h h_{t-1} + b_h)``.

    ``activation`` is the role ``h`` (torch's ``nonlinearity``, Keras' ``activation``).
    Options of the other families (``recurrent_activation``, ``reset``, ``proj_size``...)
    raise a ValueError naming the option and the family it belongs to.

    Example:
        >>> import unirnn
        >>> unirnn.rnn(8, 16, activation="relu").activations["h"]
        'relu'
    """
    return Spec(
        "rnn",
        input_size,
        hidden_size,
        _activations("rnn", activation, None, activations),
        bias=bias,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout,
        **_family_options("rnn", others),
    )


def lstm(
    input_size: int,
    hidden_size: int,
    *,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
    activations: Mapping[str, str] | None = None,
    bias: bool = True,
    peepholes: bool = False,
    proj_size: int = 0,
    cell_clip: float | None = None,
    coupled: bool = False,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    **others: Any,
) -> Spec:
    """An LSTM (gate order i, f, g, o; state ``(h, c)``).

    ``activation`` sets the candidate ``g`` and the cell output ``c`` together, and
    ``recurrent_activation`` the gates ``i, f, o``, exactly as Keras' ``LSTM`` does;
    ``activations={"c": "relu"}`` overrides a single role. ``coupled=True`` couples the
    input and forget gates, ``i = 1 - f`` (ONNX ``input_forget=1``, TFLite's CIFG): the
    gates are then ``f, g, o`` and ``w_x``/``w_h`` have ``3H`` rows. GRU options (``reset``,
    ``update``) raise a ValueError naming the option and its family.

    Example (Keras' ``LSTM(64, activation='relu', recurrent_activation='sigmoid')``):
        >>> import unirnn
        >>> spec = unirnn.lstm(32, 64, activation="relu")
        >>> spec.activations["g"], spec.activations["c"], spec.activations["f"]
        ('relu', 'relu', 'sigmoid')
    """
    return Spec(
        "lstm",
        input_size,
        hidden_size,
        _activations("lstm", activation, recurrent_activation, activations,
                     absent="i" if coupled is True else ""),
        bias=bias,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout,
        peepholes=peepholes,
        proj_size=proj_size,
        cell_clip=cell_clip,
        coupled=coupled,
        **_family_options("lstm", others),
    )


def gru(
    input_size: int,
    hidden_size: int,
    *,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
    activations: Mapping[str, str] | None = None,
    bias: bool = True,
    reset: str = "after",
    update: str = "old",
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    **others: Any,
) -> Spec:
    """A GRU (gate order r, z, n; state ``h``).

    ``activation`` is the candidate ``n`` and ``recurrent_activation`` the gates ``r, z``
    (Keras' meaning); ``activations={"z": "gelu"}`` overrides one gate. ``reset`` picks
    where the reset gate applies, or ``"none"`` for a GRU without one (gates ``z, n``:
    ``n = act_n(W_xn x + b_xn + W_hn h + b_hn)``), ``update`` which term ``z`` weights
    (see :class:`Spec`).
    LSTM options (``peepholes``, ``proj_size``, ``cell_clip``) raise a ValueError naming
    the option and its family.

    Example (a GELU update gate only):
        >>> import unirnn
        >>> unirnn.gru(32, 64, activations={"z": "gelu"}).activations
        {'r': 'sigmoid', 'z': 'gelu', 'n': 'tanh'}
    """
    return Spec(
        "gru",
        input_size,
        hidden_size,
        _activations("gru", activation, recurrent_activation, activations,
                     absent="r" if reset == "none" else ""),
        bias=bias,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout,
        reset=reset,
        update=update,
        **_family_options("gru", others),
    )


_CONSTRUCTORS: Mapping[str, Callable[..., Spec]] = MappingProxyType(
    {"rnn": rnn, "lstm": lstm, "gru": gru}
)

# name -> (what it reproduces, family, the options that define it)
_PRESETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "torch_rnn": ("torch nn.RNN defaults: tanh Elman RNN", "rnn", {}),
    "torch_rnn_relu": ("torch nn.RNN(nonlinearity='relu')", "rnn", {"activation": "relu"}),
    "torch_lstm": ("torch nn.LSTM defaults", "lstm", {}),
    "torch_gru": ("torch nn.GRU defaults: reset after", "gru", {}),
    "keras_simple_rnn": ("Keras SimpleRNN defaults", "rnn", {}),
    "keras_lstm": ("Keras 3 LSTM defaults", "lstm", {}),
    "keras_gru": ("Keras 3 GRU defaults (reset_after=True)", "gru", {}),
    "keras_gru_reset_before": ("Keras GRU(reset_after=False)", "gru", {"reset": "before"}),
    "flax_lstm": ("Flax LSTMCell / OptimizedLSTMCell", "lstm", {}),
    "flax_gru": ("Flax GRUCell", "gru", {}),
    "d2l_gru": ("d2l's GRU: reset before, h = z*h + (1-z)*n", "gru", {"reset": "before"}),
    "relu_lstm": (
        "Keras LSTM(activation='relu', recurrent_activation='sigmoid')",
        "lstm",
        {"activation": "relu"},
    ),
    "gelu_update_gru": ("GRU with a GELU update gate only", "gru", {"activations": {"z": "gelu"}}),
}


def preset_names() -> dict[str, str]:
    """Preset name -> what it reproduces."""
    return {name: doc for name, (doc, _, _) in _PRESETS.items()}


def preset(name: str, input_size: int, hidden_size: int, **options: Any) -> Spec:
    """A named convention, e.g. ``preset("d2l_gru", 28, 256)``.

    ``options`` are the family constructor's keywords (``num_layers``, ``bidirectional``...).
    An option that contradicts the preset (``reset="after"`` for ``d2l_gru``) or belongs to
    another family (``proj_size`` for a GRU preset) raises a ValueError naming it;
    ``activations`` adds roles to a preset's own.
    """
    try:
        _, family, defining = _PRESETS[name]
    except KeyError:
        raise SpecError(
            f"unknown preset {name!r}; expected one of {', '.join(_PRESETS)}"
        ) from None
    merged = dict(options)
    for key, fixed in defining.items():
        given = options.get(key)
        if key == "activations" and given is not None:
            if not isinstance(given, Mapping):
                continue  # the constructor says what activations must be
            clash = [r for r in given if r in fixed and canonical_activation(given[r])
                     != canonical_activation(fixed[r])]
            if clash:
                role = clash[0]
                raise SpecError(
                    f"activations[{role!r}]: preset {name!r} fixes it to {fixed[role]!r}; "
                    f"received {given[role]!r}. Build the spec with unirnn.{family}() instead"
                )
            merged[key] = {**given, **fixed}
        elif key in options and given != fixed:
            raise SpecError(
                f"{key}: preset {name!r} fixes {key}={fixed!r}; received {key}={given!r}. "
                f"Build the spec with unirnn.{family}() instead"
            )
        else:
            merged[key] = fixed
    return _CONSTRUCTORS[family](input_size, hidden_size, **merged)


def same_spec(given: Spec | None, held: Spec, where: str) -> Spec:
    """``held`` (the spec a source holds or carries), after checking a given one against it.

    Raises:
        ValueError: ``given`` is a different spec; the message shows both and ``where``.
    """
    if given is not None and given != held:
        raise SpecError(
            f"spec: {where} holds {held.to_json()}; received a different spec "
            f"{given.to_json()}. Leave spec (--spec) out to use the source's own"
        )
    return held
