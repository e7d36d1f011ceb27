"""The interface a ported layer keeps: the source's call options, carried or refused.

A spec and its weights say what a layer computes; a layer's constructor says more: how it
is called and what it returns (torch ``batch_first``; Keras ``return_sequences``,
``return_state``, ``go_backwards``, ``stateful``, ``unroll``, ``recurrent_dropout``,
``Bidirectional(merge_mode=...)``; Flax ``nn.RNN``'s ``time_major``, ``return_carry``,
``reverse``/``keep_order``, ``unroll``). :func:`read_interface` reads them off a source
object into neutral options, and :func:`target_options` turns them into the target's
``build`` keywords. The rule (docs/porting.md, "What port keeps"):

- Between two objects of one framework every option is kept, defaults included.
- Across frameworks an option set away from its framework's default is kept by the
  target's equivalent; one left at its default is the source framework's convention,
  and the target follows its own (an ``nn.GRU()`` becomes a batch-major Keras layer).
- An option the target cannot hold is a :class:`~unirnn.SpecError` naming it; naming it
  in ``port(..., drop=[...])`` drops it.

Frameworks are consulted through the objects' attributes only; nothing is imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import SpecError

__all__ = ["Interface", "Option", "read_interface", "target_options"]


@dataclass(frozen=True)
class Option:
    """One interface option of a source: its value, its framework's default and its name
    there (``batch_first=True`` is the neutral ``time_major=False``)."""

    value: Any
    default: Any
    label: str  # as the source writes it, e.g. "batch_first=True"


@dataclass
class Interface:
    """What a source's constructor says beyond its spec, in neutral names.

    ``framework`` is the source's (``"torch"``, ``"keras"``, ``"flax"``, ``"numpy"``, or
    ``None`` for a ``(spec, weights)`` pair or a file) and ``module`` is ``"layer"`` or
    ``"cell"`` (one step: ``nn.LSTMCell``, a Flax cell, unirnn's cells).
    """

    framework: str | None = None
    module: str = "layer"
    options: dict[str, Option] = field(default_factory=dict)


def _flag(obj: Any, name: str, default: Any) -> Any:
    """``obj.name``; unirnn's Keras layer keeps its Keras options in ``obj.interface``."""
    held = getattr(obj, "interface", None)
    if held is not None and hasattr(held, name):
        return getattr(held, name)
    return getattr(obj, name, default)


def _dtype_name(dtype: Any) -> str | None:
    text = str(dtype).replace("torch.", "")
    for name in ("float64", "float32", "bfloat16", "float16"):
        if name in text:
            return name
    return None


# -- sources -----------------------------------------------------------------------------


def _torch_interface(obj: Any) -> Interface:
    import torch

    cell = isinstance(obj, torch.nn.RNNCellBase) or type(obj).__name__ == "TorchRNNCell"
    interface = Interface("torch", "cell" if cell else "layer")
    if isinstance(obj, torch.nn.Module):
        if not cell:
            batch_first = bool(getattr(obj, "batch_first", False))
            interface.options["time_major"] = Option(not batch_first, True,
                                                     f"batch_first={batch_first}")
        param = next(iter(obj.parameters()), None)
        name = None if param is None else _dtype_name(param.dtype)
        if param is not None and name is not None:
            interface.options["dtype"] = Option(name, "float32", f"dtype=torch.{name}")
            interface.options["device"] = Option(param.device, torch.device("cpu"),
                                                 f"device={param.device}")
    return interface


def _keras_recurrent_layers(obj: Any) -> list[Any]:
    import keras

    if isinstance(obj, (list, tuple)):
        layers = list(obj)
    elif isinstance(obj, keras.Model):
        layers = list(obj.layers)
    else:
        layers = [obj]
    skip = (keras.layers.InputLayer, keras.layers.Masking, keras.layers.Dropout)
    return [layer for layer in layers if not isinstance(layer, skip)]


def _keras_interface(obj: Any) -> Interface:
    import keras

    interface = Interface("keras")
    layers = _keras_recurrent_layers(obj)
    if not layers:
        return interface
    ours = type(layers[-1]).__name__ == "UniRNN"
    last = layers[-1]
    if type(last).__name__ == "UniRNNCell" or isinstance(last, keras.layers.Layer) and \
            type(last).__name__ in ("LSTMCell", "GRUCell", "SimpleRNNCell"):
        interface.module = "cell"
        return interface
    inner = last.forward_layer if isinstance(last, keras.layers.Bidirectional) else last
    options = interface.options
    options["return_sequences"] = Option(bool(last.return_sequences), ours,
                                         f"return_sequences={bool(last.return_sequences)}")
    options["return_state"] = Option(bool(last.return_state), False,
                                     f"return_state={bool(last.return_state)}")
    if isinstance(last, keras.layers.Bidirectional):
        options["merge_mode"] = Option(last.merge_mode, "concat",
                                       f"Bidirectional(merge_mode={last.merge_mode!r})")
    else:
        back = bool(_flag(inner, "go_backwards", False))
        options["go_backwards"] = Option(back, False, f"go_backwards={back}")
    if ours:
        merge = _flag(last, "merge_mode", "concat")
        options["merge_mode"] = Option(merge, "concat", f"merge_mode={merge!r}")
    for name, default in (("stateful", False), ("unroll", False)):
        value = any(bool(_flag(_inner(layer), name, default)) for layer in layers)
        options[name] = Option(value, default, f"{name}={value}")
    if options["stateful"].value:  # its states fix the batch size
        held = getattr(_inner(last), "states", None) or []
        held = held if isinstance(held, (list, tuple)) else [held]
        batch = next((int(s.shape[0]) for s in held if getattr(s, "shape", None)), None)
        batch = _flag(last, "batch_size", batch)
        options["stateful"] = Option((True, batch), (False, None), "stateful=True")
    for name, keras_name in (("recurrent_dropout", "recurrent_dropout"),
                             ("input_dropout", "input_dropout" if ours else "dropout")):
        rates = {float(_flag(_inner(layer), keras_name, 0.0) or 0.0) for layer in layers}
        rate = max(rates)
        options[name] = Option(rate, 0.0, f"{keras_name}={rate}")
    dtype = _dtype_name(getattr(last, "dtype", None))
    if dtype is not None:
        options["dtype"] = Option(dtype, "float32", f"dtype={dtype!r}")
    return interface


def _inner(layer: Any) -> Any:
    return getattr(layer, "forward_layer", layer)


def _flax_interface(obj: Any) -> Interface:
    interface = Interface("flax")
    name = type(obj).__name__
    if name in ("UniCell", "UniCellNNX", "LSTMCell", "OptimizedLSTMCell", "GRUCell",
                "SimpleCell"):
        interface.module = "cell"
        return interface
    if not hasattr(obj, "time_major"):
        return interface  # a parameter tree
    options = interface.options
    time_major = bool(obj.time_major)
    options["time_major"] = Option(time_major, False, f"time_major={time_major}")
    carry = bool(_flag(obj, "return_carry", False))
    options["return_state"] = Option(carry, False, f"return_carry={carry}")
    reverse = bool(_flag(obj, "reverse", False))
    # Flax's nn.RNN returns a reversed run's outputs in processing order unless keep_order;
    # unirnn's Flax layer keeps input order unless keep_order=False
    keep = bool(_flag(obj, "keep_order", name in ("UniRNN", "UniRNNNNX")))
    options["go_backwards"] = Option(reverse and not keep, False,
                                     f"reverse={reverse}, keep_order={keep}")
    options["reverse"] = Option(reverse and keep, False,
                                f"reverse={reverse}, keep_order={keep}")
    unroll = _flag(obj, "unroll", 1)
    options["unroll"] = Option(unroll, 1, f"unroll={unroll!r}")
    dtype = _dtype_name(_flag(obj, "param_dtype", "float32"))
    if dtype is not None:
        options["dtype"] = Option(dtype, "float32", f"param_dtype={dtype!r}")
    return interface


def read_interface(obj: Any, framework: str | None) -> Interface:
    """The interface of ``obj``, a source of ``framework`` (``None``: a pair or a file)."""
    if framework == "torch":
        return _torch_interface(obj)
    if framework == "keras":
        return _keras_interface(obj)
    if framework == "flax":
        return _flax_interface(obj)
    return Interface(framework)


# -- targets -----------------------------------------------------------------------------

Handler = Callable[[Any], "dict[str, Any] | None"]
"""An option's value -> the target's build keywords, ``{}`` where the target's own
convention already holds it, ``None`` where the target cannot hold it."""


def _only(value: Any) -> Handler:
    return lambda v: {} if v == value else None


def _keep(keyword: str, convert: Callable[[Any], Any] = lambda v: v) -> Handler:
    return lambda v: {keyword: convert(v)}


def _torch_dtype(name: Any) -> Any:
    import torch

    return getattr(torch, str(name))


def _flax_unroll(value: Any) -> Any:
    return value  # Keras' unroll=True is lax.scan's unroll=True (every step unrolled)


_TARGETS: Mapping[str, Mapping[str, Handler]] = {
    "torch": {
        "time_major": lambda v: {"batch_first": not v},
        "return_sequences": _only(True),
        "return_state": lambda v: {},  # torch's modules always return the final state
        "go_backwards": _only(False),
        "reverse": _only(False),
        "stateful": _only(False),
        "unroll": lambda v: {} if v is False or not isinstance(v, bool) and v == 1 else None,
        "recurrent_dropout": _only(0.0),
        "input_dropout": _only(0.0),
        "merge_mode": _only("concat"),
        "dtype": lambda v: {"dtype": _torch_dtype(v)},
        "device": _keep("device"),
    },
    "keras": {
        "time_major": _only(False),
        "return_sequences": _keep("return_sequences"),
        "return_state": _keep("return_state"),
        "go_backwards": _keep("go_backwards"),
        "reverse": _only(False),
        "stateful": lambda v: {} if v is False else  # v: (True, the states' batch size)
        ({"stateful": True, "batch_size": v[1]} if v[1] else None),
        "unroll": lambda v: {"unroll": bool(v)} if isinstance(v, bool) or v == 1 else None,
        "recurrent_dropout": _keep("recurrent_dropout"),
        "input_dropout": _keep("input_dropout"),
        "merge_mode": _keep("merge_mode"),
        "dtype": _keep("dtype"),
        "device": lambda v: {},
    },
    "flax": {
        "time_major": _keep("time_major"),
        "return_sequences": _only(True),
        "return_state": _keep("return_carry"),
        "go_backwards": lambda v: {"reverse": True, "keep_order": False} if v else {},
        "reverse": lambda v: {"reverse": True} if v else {},
        "stateful": _only(False),
        "unroll": lambda v: {"unroll": v} if not isinstance(v, bool) else
        ({"unroll": True} if v else {}),
        "recurrent_dropout": _only(0.0),
        "input_dropout": _only(0.0),
        "merge_mode": _only("concat"),
        "dtype": lambda v: {"param_dtype": v},
        "device": lambda v: {},
    },
    "numpy": {
        "time_major": _only(False),
        "return_sequences": _only(True),
        "return_state": lambda v: {},
        "go_backwards": _only(False),
        "reverse": _only(False),
        "stateful": _only(False),
        "unroll": lambda v: {},  # a numpy loop: unrolling changes nothing
        "recurrent_dropout": _only(0.0),
        "input_dropout": _only(0.0),
        "merge_mode": _only("concat"),
        "dtype": lambda v: {"dtype": v},
        "device": lambda v: {},
    },
}

_WHY = {
    "return_sequences": "it returns every step's outputs",
    "go_backwards": "it has no reversed run of a unidirectional layer",
    "reverse": "it has no reversed run that keeps the input order",
    "stateful": "it keeps no state between calls",
    "unroll": "it has no such unroll setting",
    "recurrent_dropout": "it has no dropout on the recurrent state",
    "input_dropout": "it has no dropout on each step's input",
    "merge_mode": "its bidirectional outputs are concatenated (forward, backward)",
    "time_major": "it takes batch-major input (N, T, I)",
}


def drop_names(drop: Iterable[str] | None) -> set[str]:
    """The neutral names ``drop`` means (a source's own names too: ``dropout`` is Keras'
    input dropout, ``return_carry`` Flax's ``return_state``...)."""
    if drop is None:
        return set()
    if isinstance(drop, str):
        raise SpecError(f"drop: expected a list of option names such as ['recurrent_dropout']; "
                        f"received the string {drop!r}")
    aliases = {"dropout": "input_dropout", "return_carry": "return_state",
               "batch_first": "time_major", "keep_order": "reverse"}
    names = set()
    for name in drop:
        neutral = aliases.get(name, name)
        if neutral not in _TARGETS["torch"] and neutral != "module":
            raise SpecError(f"drop: {name!r} is not an interface option; expected some of "
                            f"{', '.join(sorted({*_TARGETS['torch'], 'module', *aliases}))}")
        names.add(neutral)
        if name == "reverse":
            names.add("go_backwards")
    return names


def target_options(interface: Interface, target: str, drop: set[str]) -> dict[str, Any]:
    """The ``build`` keywords that keep ``interface`` in ``target`` (module docstring).

    Raises:
        SpecError: an option the target cannot hold; the message names it and ``drop=``.
    """
    same = interface.framework == target
    table = _TARGETS[target]
    keywords: dict[str, Any] = {}
    for name, option in interface.options.items():
        if name in drop:
            continue
        if not same and option.value == option.default:
            continue  # the source framework's convention: the target follows its own
        handler = table.get(name)
        result = None if handler is None else handler(option.value)
        if result is None:
            raise SpecError(
                f"port(to={target!r}): the source's {option.label} has no equivalent in "
                f"unirnn's {target} module ({_WHY.get(name, 'it has no such option')}); pass "
                f"drop=[{name!r}] to port without it"
            )
        keywords.update(result)
    return keywords
