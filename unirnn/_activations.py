"""The activation registry: every name defined once, precisely.

An activation is named in a spec by a string: a registered name, optionally with
numeric parameters, e.g. ``"tanh"``, ``"leaky_relu(0.2)"``, ``"hard_sigmoid(0.2, 0.5)"``.
The registry holds, per name, its parameters with defaults, its formula and a numpy
reference implementation. Each backend supplies its own implementation of the
built-in names (tests hold every backend to the numpy reference) and looks up
user-registered activations here by backend key.

Backend keys for user implementations: ``"numpy"``, ``"torch"``, ``"jax"`` (Flax),
``"keras"`` (``keras.ops``, any Keras backend) and ``"onnx"`` (nodes of an ONNX graph).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import SpecError

__all__ = [
    "Activation",
    "ActivationDef",
    "BACKEND_KEYS",
    "activation_names",
    "get_activation_def",
    "parse_activation",
    "register_activation",
    "resolve_activation",
]

BACKEND_KEYS = ("numpy", "torch", "jax", "keras", "onnx")

ActivationImpl = Callable[..., Any]
"""``f(x, *params) -> y``: elementwise, for one backend's array type."""


@dataclass(frozen=True)
class ActivationDef:
    """A registered activation.

    Attributes:
        name: the registry name.
        params: ``(parameter name, default)`` pairs, in call order.
        formula: the definition, in words a reader can check an implementation against.
        implementations: backend key -> ``f(x, *params)``. Built-ins carry only
            ``"numpy"``; each backend implements built-ins itself.
        builtin: whether unirnn defines it (backends must implement it natively).
    """

    name: str
    params: tuple[tuple[str, float], ...]
    formula: str
    implementations: Mapping[str, ActivationImpl] = field(default_factory=dict)
    builtin: bool = False


@dataclass(frozen=True)
class Activation:
    """A parsed activation reference: a registered name and its parameter values."""

    name: str
    args: tuple[float, ...]

    def __str__(self) -> str:
        definition = get_activation_def(self.name)
        defaults = tuple(default for _, default in definition.params)
        if self.args == defaults:
            return self.name
        return f"{self.name}({', '.join(repr(a) for a in self.args)})"


# -- numpy reference implementations ---------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow for large |x|, exact to rounding.
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _np_gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(x.dtype, copy=False)


def _np_gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _np_softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0.0)


def _np_elu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


_REGISTRY: dict[str, ActivationDef] = {}


def _builtin(
    name: str, formula: str, numpy: ActivationImpl, params: tuple[tuple[str, float], ...] = ()
) -> None:
    _REGISTRY[name] = ActivationDef(name, params, formula, {"numpy": numpy}, builtin=True)


_builtin("sigmoid", "1 / (1 + exp(-x))", _np_sigmoid)
_builtin("tanh", "tanh(x)", np.tanh)
_builtin("relu", "max(x, 0)", lambda x: np.maximum(x, 0.0).astype(x.dtype, copy=False))
_builtin("identity", "x", lambda x: x)
_builtin("gelu", "x/2 * (1 + erf(x / sqrt(2)))  (exact GELU)", _np_gelu)
_builtin(
    "gelu_tanh",
    "x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))  (GELU, tanh approximation)",
    _np_gelu_tanh,
)
_builtin("silu", "x * sigmoid(x)  (swish)", lambda x: x * _np_sigmoid(x))
_builtin(
    "hard_sigmoid",
    "clip(alpha*x + beta, 0, 1); defaults alpha=1/6, beta=1/2 are torch's hardsigmoid and "
    "Keras 3's hard_sigmoid; hard_sigmoid(0.2, 0.5) is Keras 2's and ONNX HardSigmoid's",
    lambda x, alpha, beta: np.clip(alpha * x + beta, 0.0, 1.0).astype(x.dtype, copy=False),
    params=(("alpha", 1.0 / 6.0), ("beta", 0.5)),
)
_builtin("softsign", "x / (1 + |x|)", lambda x: x / (1.0 + np.abs(x)))
_builtin("softplus", "log(1 + exp(x))", _np_softplus)
_builtin(
    "elu",
    "x if x > 0 else alpha * (exp(x) - 1); default alpha=1",
    _np_elu,
    params=(("alpha", 1.0),),
)
_builtin(
    "leaky_relu",
    "x if x >= 0 else alpha * x; default alpha=0.01 (torch's default)",
    lambda x, alpha: np.where(x >= 0, x, alpha * x).astype(x.dtype, copy=False),
    params=(("alpha", 0.01),),
)

_builtin(
    "min_g",
    "x + 1/2 if x >= 0 else sigmoid(x)  (minGRU/minLSTM's g: positive, continuous, for the "
    "log-space scan)",
    lambda x: np.where(x >= 0, x + 0.5, _np_sigmoid(x)).astype(x.dtype, copy=False),
)

BUILTIN_NAMES = tuple(_REGISTRY)

_NAME_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


def activation_names() -> tuple[str, ...]:
    """All registered activation names: the built-ins, then the user's own in the order
    they were registered (:func:`register_activation`).

    The names are bare; an activation with parameters takes them in the name where a spec
    uses it (``"leaky_relu(0.2)"``, ``"hard_sigmoid(0.2, 0.5)"``). docs/spec.md defines
    every built-in.

    Example:
        >>> import unirnn
        >>> unirnn.activation_names()[:5]
        ('sigmoid', 'tanh', 'relu', 'identity', 'gelu')
        >>> unirnn.lstm(3, 4, activation="leaky_relu(0.2)").activations["g"]
        'leaky_relu(0.2)'
    """
    return tuple(_REGISTRY)


def get_activation_def(name: str) -> ActivationDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SpecError(
            f"unknown activation {name!r}; expected one of {', '.join(_REGISTRY)} "
            "(or register your own with unirnn.register_activation)"
        ) from None


def parse_activation(text: str | Activation) -> Activation:
    """Parse ``"name"`` or ``"name(a, b)"`` into an :class:`Activation`.

    Raises:
        ValueError: unknown name, malformed text, wrong number or type of parameters.
    """
    if isinstance(text, Activation):
        return text
    if not isinstance(text, str):
        raise SpecError(f"an activation must be a name string such as 'tanh'; received {text!r}")
    match = _NAME_RE.match(text)
    if match is None:
        raise SpecError(
            f"malformed activation {text!r}; expected 'name' or 'name(number, ...)', "
            "e.g. 'leaky_relu(0.2)'"
        )
    name, arg_text = match.group(1), match.group(2)
    definition = get_activation_def(name)
    if arg_text is None or not arg_text.strip():
        args = tuple(default for _, default in definition.params)
    else:
        try:
            args = tuple(float(part) for part in arg_text.split(","))
        except ValueError:
            raise SpecError(
                f"activation {text!r}: parameters must be numbers; received ({arg_text})"
            ) from None
        if len(args) != len(definition.params):
            expected = ", ".join(p for p, _ in definition.params) or "no parameters"
            raise SpecError(
                f"activation {name!r} takes {len(definition.params)} parameter(s) ({expected}); "
                f"received {len(args)} in {text!r}"
            )
        if any(not math.isfinite(a) for a in args):
            raise SpecError(f"activation {text!r}: parameters must be finite numbers")
    return Activation(name, args)


def canonical_activation(text: str | Activation) -> str:
    """The canonical spelling of an activation (defaults written as the bare name)."""
    return str(parse_activation(text))


def register_activation(
    name: str,
    *,
    numpy: ActivationImpl,
    torch: ActivationImpl | None = None,
    jax: ActivationImpl | None = None,
    keras: ActivationImpl | None = None,
    onnx: ActivationImpl | None = None,
    params: Mapping[str, float] | None = None,
    formula: str = "",
    overwrite: bool = False,
) -> None:
    """Register a user activation, with one implementation per backend.

    Each implementation is ``f(x, *params) -> y``, elementwise, on that backend's arrays
    (numpy arrays, torch tensors, jax arrays, or Keras tensors via ``keras.ops``); the
    ``onnx`` one is ``f(graph, x, *params) -> name``: it adds the nodes computing the
    activation of the tensor named ``x`` to ``graph`` (``graph.op("Tanh", x)``,
    ``graph.const(0.5)``, see :class:`unirnn.porting.onnx.Graph`) and returns the name of
    their output, so :func:`unirnn.to_onnx` exports the spec exactly. The numpy one is
    required: it is the reference and runs the numpy backend. A spec names
    the activation by ``name`` so it stays serialisable; a backend without an
    implementation raises a clear error when a spec using it is built there.

    Args:
        name: an identifier, not a built-in's name (:func:`activation_names`).
        numpy: the reference implementation, ``f(x, *params)`` on numpy arrays.
        torch: ``f(x, *params)`` on torch tensors.
        jax: ``f(x, *params)`` on jax arrays (the Flax backend).
        keras: ``f(x, *params)`` on Keras tensors, with ``keras.ops`` (any Keras backend).
        onnx: ``f(graph, x, *params) -> name``, the nodes computing it in an ONNX graph.
        params: parameter name -> default, in call order; a spec sets them in the name
            (``"scaled_tanh(1.5)"``).
        formula: the definition, in words a reader can check the implementations against.
        overwrite: replace a user activation registered under ``name`` before.

    Raises:
        SpecError: ``name`` is not an identifier or is a built-in's, it is registered
            already (without ``overwrite``), or an implementation is not callable.

    Example:
        >>> import numpy as np, unirnn
        >>> unirnn.register_activation("scaled_tanh", numpy=lambda x, a: a * np.tanh(x),
        ...                            params={"a": 1.7159})
        >>> unirnn.gru(3, 4, activations={"n": "scaled_tanh(1.5)"}).activations["n"]
        'scaled_tanh(1.5)'
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise SpecError(f"an activation name must be an identifier; received {name!r}")
    if name in BUILTIN_NAMES:
        raise SpecError(f"{name!r} is a built-in activation and cannot be replaced")
    if name in _REGISTRY and not overwrite:
        raise SpecError(f"activation {name!r} is already registered; pass overwrite=True")
    if not callable(numpy):
        raise SpecError(f"numpy implementation of {name!r} must be callable; received {numpy!r}")
    impls: dict[str, ActivationImpl] = {"numpy": numpy}
    for key, impl in (("torch", torch), ("jax", jax), ("keras", keras), ("onnx", onnx)):
        if impl is not None:
            if not callable(impl):
                raise SpecError(f"{key} implementation of {name!r} must be callable")
            impls[key] = impl
    param_items = tuple((str(k), float(v)) for k, v in (params or {}).items())
    _REGISTRY[name] = ActivationDef(name, param_items, formula, impls, builtin=False)


def resolve_activation(
    text: str | Activation,
    backend: str,
    builtins: Mapping[str, ActivationImpl],
) -> Callable[[Any], Any]:
    """A one-argument function for ``text`` on ``backend``.

    Args:
        text: the activation as written in a spec.
        backend: the backend key (see :data:`BACKEND_KEYS`).
        builtins: the backend's implementations of the built-in names, ``f(x, *params)``.
    """
    act = parse_activation(text)
    definition = get_activation_def(act.name)
    impl = builtins.get(act.name) if definition.builtin else definition.implementations.get(backend)
    if impl is None:
        raise SpecError(
            f"activation {act.name!r} has no {backend!r} implementation; register one with "
            f"unirnn.register_activation({act.name!r}, numpy=..., {backend}=..., overwrite=True)"
        )
    if not act.args:
        return impl
    args = act.args
    return lambda x: impl(x, *args)


NUMPY_ACTIVATIONS: Mapping[str, ActivationImpl] = {
    name: _REGISTRY[name].implementations["numpy"] for name in BUILTIN_NAMES
}
