"""``unirnn.port``: a trained RNN of any supported framework, rebuilt for another.

Sources are recognised the einops way: a framework is only consulted when it is already
imported (``sys.modules``), since an object of that framework cannot exist otherwise.

This module is a dispatch table: each ``porting/<framework>.py`` owns reading and writing
its framework's objects and files, and the layout facts live in :mod:`unirnn.layouts`.

Files: :func:`read` reads and :func:`write` writes each framework's own file format, and
every format carries the spec where its native loaders ignore it, so a custom cell (a GELU
update gate, a ReLU LSTM, a reset-before GRU) reads back as itself, not as the standard
cell its tensors also fit:

- ``.safetensors``: unirnn's portable file (the spec in the metadata).
- ``.pt``/``.pth``: a torch state dict; the spec's JSON is in the state dict's
  ``_metadata[""]["unirnn.spec"]``, which ``torch.save``/``torch.load(weights_only=True)``
  keep and ``nn.Module.load_state_dict`` ignores.
- ``.keras``: Keras' model file (Keras' own layers, or unirnn's custom layer whose config
  holds the spec).
- ``.weights.h5``: Keras' weights file of the model :func:`keras_model` builds; the spec
  is the HDF5 root attribute ``unirnn.spec`` (and ``unirnn.keras_path``, which layers were
  used), which ``model.load_weights`` ignores.
- ``.msgpack``: ``flax.serialization`` bytes of ``{"params": ..., "unirnn": {"spec": s}}``
  with ``s`` the spec's UTF-8 JSON as a uint8 array (an array leaf, so the restored dict
  still goes through ``jax.jit(module.apply)``; ``flax.serialization.from_bytes`` with a
  ``{"params": ...}`` target ignores it).
- ``.onnx``: an ONNX model (:func:`unirnn.to_onnx`, float32, inputs ``x`` and
  ``lengths``): ONNX's own LSTM/GRU/RNN op where it computes the spec, an exact ``Scan``
  graph otherwise; the spec is ``metadata_props["unirnn.spec"]``, which runtimes ignore.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import FileFormatError, SpecError, UnirnnError, WeightsError
from .._extras import require
from .._file import destination, publish, staging
from .._spec import Spec, same_spec
from .._weights import Weights, check_weights
from ..backends import BACKENDS, build

__all__ = ["FILE_FORMATS", "file_format_of", "keras_model", "port", "read", "write"]


@dataclass(frozen=True)
class _Format:
    """A file format: the names that select it and the module that reads and writes it."""

    suffixes: tuple[str, ...]  # written (first: the default)
    read_suffixes: tuple[str, ...]  # also read
    module: str  # has read_file(path, spec[, cell]) and write_file(path, spec, weights[, cell])
    framework: str | None  # imported first, for a clear error when it is missing
    label: str  # "a {label} file"
    description: str  # what the file holds


_FORMATS: Mapping[str, _Format] = {
    "unirnn": _Format((".safetensors",), (), "unirnn._file", None, "unirnn", "unirnn"),
    "torch": _Format((".pt", ".pth"), (), "unirnn.porting.torch", "torch", "torch",
                     "torch state dict"),
    "keras": _Format((".keras", ".weights.h5"), (".h5",), "unirnn.porting.keras", "keras",
                     "Keras", "Keras"),
    "onnx": _Format((".onnx",), (), "unirnn.porting.onnx", "onnx", "ONNX", "ONNX model"),
    "flax": _Format((".msgpack",), (".flax",), "unirnn.porting.flax", "flax", "Flax",
                    "Flax parameters"),
}

FILE_FORMATS: Mapping[str, tuple[str, ...]] = {k: f.suffixes for k, f in _FORMATS.items()}
"""File format -> the file name endings that select it (first: the default)."""


def file_format_of(path: str | os.PathLike[str], explicit: str | None = None) -> str:
    """The file format (a key of :data:`FILE_FORMATS`) of ``path``, from its name."""
    if explicit is not None:
        if explicit not in _FORMATS:
            raise FileFormatError(f"file format: expected one of {', '.join(_FORMATS)}; "
                             f"received {explicit!r}")
        return explicit
    name = os.fspath(path).lower()
    for fmt, info in _FORMATS.items():
        if name.endswith(info.suffixes + info.read_suffixes):
            return fmt
    raise FileFormatError(
        f"cannot tell the format of {os.fspath(path)!r} from its name; expected one of "
        f"{', '.join(s for ss in FILE_FORMATS.values() for s in ss)}"
    )


def _format_module(fmt: str, what: str) -> Any:
    info = _FORMATS[fmt]
    if info.framework is not None:
        require(info.framework, what)
    return require(info.module, what)


# -- sources, recognised the einops way: a framework is consulted only when imported ------


def _first_leaf(tree: Any) -> Any:
    while isinstance(tree, Mapping) and tree:
        tree = next(iter(tree.values()))
    return tree


def _is_torch(obj: Any) -> bool:
    if sys.modules.get("torch") is None:
        return False
    import torch

    return isinstance(obj, torch.nn.Module) or (
        isinstance(obj, Mapping) and isinstance(_first_leaf(obj), torch.Tensor)
    )


def _is_keras(obj: Any) -> bool:
    if sys.modules.get("keras") is None:
        return False
    import keras

    return isinstance(obj, keras.layers.Layer)


def _is_flax(obj: Any) -> bool:
    if sys.modules.get("flax") is None:
        return False
    from flax import linen, nnx

    # a module, or a parameter tree: nested mappings such as {"params": {...}}
    return isinstance(obj, (linen.Module, nnx.Module)) or (
        isinstance(obj, Mapping) and any(isinstance(v, Mapping) for v in obj.values())
    )


def _is_onnx(obj: Any) -> bool:
    if sys.modules.get("onnx") is None:
        return False
    import onnx

    return isinstance(obj, onnx.ModelProto)


def _read_onnx(obj: Any, spec: Spec | None, cell: str | None) -> tuple[Spec, Weights]:
    from .onnx import from_onnx

    read_spec, weights = from_onnx(obj)
    return same_spec(spec, read_spec, "the ONNX model"), weights


def _is_numpy_module(obj: Any) -> bool:
    from ..backends.numpy import NumpyRNN

    return isinstance(obj, NumpyRNN)


def _read_numpy_module(obj: Any, spec: Spec | None, cell: str | None,
                       drop: frozenset[str] = frozenset()) -> tuple[Spec, Weights]:
    return same_spec(spec, obj.spec, "the module"), obj.weights


def _read_keras(obj: Any, spec: Spec | None, cell: str | None,
                drop: frozenset[str] = frozenset()) -> tuple[Spec, Weights]:
    from .keras import from_keras

    return from_keras(obj, drop=drop) if spec is None else from_keras(obj, spec=spec, drop=drop)


def _read_torch(obj: Any, spec: Spec | None, cell: str | None,
                drop: frozenset[str] = frozenset()) -> tuple[Spec, Weights]:
    from .torch import from_torch

    return from_torch(obj, spec=spec)


def _read_flax(obj: Any, spec: Spec | None, cell: str | None,
               drop: frozenset[str] = frozenset()) -> tuple[Spec, Weights]:
    from .flax import from_flax

    return from_flax(obj, cell=cell, spec=spec, drop=drop)


_SOURCES: tuple[tuple[Callable[[Any], bool], Callable[..., tuple[Spec, Weights]]], ...] = (
    (_is_numpy_module, _read_numpy_module),
    # Keras first: on the torch backend a Keras layer is also a torch.nn.Module.
    (_is_keras, _read_keras),
    (_is_torch, _read_torch),
    (_is_flax, _read_flax),
    (_is_onnx, _read_onnx),
)
"""(recognises the object, reads it): the first that recognises a source reads it."""

_SOURCE_FRAMEWORKS: Mapping[Callable[..., tuple[Spec, Weights]], str] = {
    _read_numpy_module: "numpy", _read_keras: "keras", _read_torch: "torch",
    _read_flax: "flax"}
"""The framework of each reader's sources, whose interface :func:`port` keeps; these
readers take ``drop``, the interface options :func:`port` has carried or dropped."""


def read(obj: Any, *, spec: Spec | None = None, cell: str | None = None,
         file_format: str | None = None) -> tuple[Spec, Weights]:
    """``(spec, weights)`` from any source unirnn reads.

    Args:
        obj: a ``(spec, weights)`` pair; a module built by ``unirnn.build`` (any backend);
            a torch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` or cell (``nn.LSTMCell``...; a
            subclass too) or either's state dict; a Keras ``LSTM``/
            ``GRU``/``SimpleRNN``/``Bidirectional`` layer or model; a Flax parameter tree
            or module; an ``onnx.ModelProto``; or a path: ``.safetensors`` (unirnn file),
            ``.pt``/``.pth`` (torch state dict, loaded with ``weights_only=True``),
            ``.keras``/``.weights.h5``
            (Keras), ``.msgpack`` (``flax.serialization`` bytes of a parameter tree),
            ``.onnx`` (an ONNX model: its LSTM/GRU/RNN nodes or a graph unirnn wrote).
        spec: needed where the source does not determine it (a state dict whose activation
            is not torch's, a Flax tree of custom activations); checked against it otherwise,
            and against the spec a file written by unirnn carries.
        cell: for Flax trees of Flax's own cells: ``"LSTMCell"``, ``"OptimizedLSTMCell"``,
            ``"GRUCell"`` or ``"SimpleCell"``.
        file_format: for a path whose name does not say: ``"unirnn"``, ``"torch"``,
            ``"keras"``, ``"flax"`` or ``"onnx"`` (see :data:`FILE_FORMATS`).

    Raises:
        ValueError: a source unirnn cannot read; the message names what was found.
        ImportError: a file of a framework that is not installed (names the extra).
    """
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], Spec):
        return obj[0], check_weights(obj[0], obj[1])
    if isinstance(obj, (str, os.PathLike)):
        return _read_path(Path(obj), spec=spec, cell=cell, file_format=file_format)
    for recognises, reader in _SOURCES:
        if recognises(obj):
            return reader(obj, spec, cell)
    raise WeightsError(
        f"cannot read a {type(obj).__module__}.{type(obj).__qualname__}: expected a "
        "(spec, weights) pair, a module built by unirnn, a torch nn.RNN/LSTM/GRU or state "
        "dict, a Keras LSTM/GRU/SimpleRNN/Bidirectional layer or model, a Flax parameter "
        "tree, or a file path"
    )


def _read_path(path: Path, *, spec: Spec | None, cell: str | None,
               file_format: str | None) -> tuple[Spec, Weights]:
    if not path.is_file():
        raise FileNotFoundError(f"no file at {str(path)!r}")
    try:
        fmt = file_format_of(path, file_format)
    except ValueError:
        if file_format is not None:
            raise
        raise FileFormatError(
            f"{str(path)!r}: unknown file type; expected "
            + ", ".join(f"{'/'.join(f.suffixes)} ({f.description})" for f in _FORMATS.values())
        ) from None
    info = _FORMATS[fmt]
    module = _format_module(fmt, f"reading {str(path)!r} (a {info.label} file)")
    try:
        if fmt == "flax":
            return module.read_file(path, spec, cell)  # type: ignore[no-any-return]
        return module.read_file(path, spec)  # type: ignore[no-any-return]
    except (UnirnnError, ImportError, OSError):
        raise
    except Exception as err:
        # a file the framework's own reader chokes on (truncated, tampered, hostile) is a
        # malformed file, whatever the reader raised
        raise FileFormatError(
            f"{str(path)!r} is not a readable {info.label} file ({type(err).__name__}: "
            f"{str(err)[:300]})"
        ) from err


def keras_model(spec: Spec, weights: Mapping[str, Any], path: str = "auto") -> Any:
    """A Keras ``Sequential`` of ``spec``: the model a ``.weights.h5`` file belongs to
    (:func:`unirnn.porting.keras.keras_model`)."""
    return _format_module("keras", "a Keras model").keras_model(spec, weights, path=path)


def _staged_name(target: Path, fmt: str) -> str:
    """The staged file's name: the destination's, or one with the suffix the format's
    writer needs (Keras saves only ``*.keras`` and ``*.weights.h5``)."""
    name = target.name.lower()
    suffixes = _FORMATS[fmt].suffixes
    if name.endswith(suffixes):
        return target.name
    return f"staged{suffixes[0]}"


def write(path: str | os.PathLike[str], spec: Spec, weights: Mapping[str, Any], *,
          file_format: str | None = None, cell: str | None = None, overwrite: bool = True,
          before_publish: Callable[[Path], None] | None = None) -> str:
    """Write ``spec`` and ``weights`` to ``path`` in a framework's file format.

    The spec travels in the file (see the module docstring), so :func:`read` gives back
    this spec without being told it. ``file_format`` defaults to the one ``path``'s name
    says; ``cell`` picks Flax's own cell for ``.msgpack`` (``None``: unirnn's layer).

    The file is written in a staging folder beside ``path`` and moved into place only
    when complete (:func:`unirnn._file.publish`): a symlink is written through, a
    replaced file keeps its permission bits, ``overwrite=False`` never replaces a file
    (not even one that appears meanwhile), and the staging folder goes however the
    write ends. ``before_publish(staged)`` may inspect the finished file and raise to
    stop it from being published (``unirnn convert`` reads it back and compares).

    Returns:
        Where the spec travels, in words.
    """
    fmt = file_format_of(path, file_format)
    weights = check_weights(spec, weights)
    module = _format_module(fmt, f"writing a {_FORMATS[fmt].label} file")
    target = destination(path)
    shown = os.fspath(path)
    if not overwrite and target.exists():
        raise FileExistsError(f"{shown!r} exists; pass --force (or overwrite=True) to "
                              "overwrite it")
    with staging(target) as folder:
        staged = folder / _staged_name(target, fmt)
        try:
            if fmt == "flax":
                where = module.write_file(staged, spec, weights, cell)
            else:
                where = module.write_file(staged, spec, weights)
            if before_publish is not None:
                before_publish(staged)
        except (UnirnnError, OSError) as err:
            if str(staged) not in str(err):
                raise
            raise type(err)(str(err).replace(str(staged), shown)) from None
        publish(staged, target, overwrite=overwrite, shown_as=shown)
    return str(where)


def port(obj: Any, to: str, *, spec: Spec | None = None, cell: str | None = None,
         drop: Sequence[str] | None = None, **options: Any) -> Any:
    """Rebuild a trained RNN for another framework, weights and interface included.

    The spec and weights are read from ``obj`` (see :func:`read`) and built with
    ``unirnn.build(spec, backend=to, weights=...)``: Keras gets its own layers when they
    can express the spec and unirnn's custom layer otherwise; torch gets a drop-in
    ``nn.Module`` that runs torch's fused kernel for standard cells; Flax a linen module
    (``api="nnx"`` for NNX). Nothing is approximated: a cell the target's native layers
    cannot compute runs on unirnn's custom path for that framework.

    The source's interface is kept (docs/porting.md, "What port keeps"): a one-step
    cell (``nn.LSTMCell``, a Flax cell) becomes the target's cell module, and the
    constructor's options (torch ``batch_first``, Keras ``return_sequences``,
    ``return_state``, ``go_backwards``, ``unroll``, ``recurrent_dropout``,
    ``Bidirectional(merge_mode=...)``, Flax ``time_major``, ``return_carry``,
    ``reverse``/``keep_order``, ``unroll``, the parameters' dtype) go to the target's
    equivalent: all of them between objects of one framework; across frameworks those set
    away from their framework's default (the target keeps its own conventions for the
    rest). ``options`` override what is carried.

    Args:
        drop: interface options to leave behind (``["recurrent_dropout"]``); without it an
            option the target cannot hold is an error naming it.

    Raises:
        SpecError: an unknown target, or an interface option the target cannot hold (the
            message names it and how to ``drop`` it).

    Example:
        >>> import torch, unirnn
        >>> native = torch.nn.GRU(8, 16, batch_first=True)
        >>> unirnn.port(native, to="torch").batch_first
        True
    """
    if to == "onnx":  # an onnx.ModelProto (unirnn.to_onnx; options are its keywords)
        source_spec, weights = read(obj, spec=spec, cell=cell)
        return _format_module("onnx", "port(to='onnx')").to_onnx(source_spec, weights, **options)
    if to not in BACKENDS:
        raise SpecError(f"port: unknown target {to!r}; expected one of {', '.join(BACKENDS)}")
    from ._interface import drop_names, read_interface, target_options

    dropped = drop_names(drop)
    reader: Callable[..., tuple[Spec, Weights]] | None = None
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], Spec)) and \
            not isinstance(obj, (str, os.PathLike)):
        reader = next((r for recognises, r in _SOURCES if recognises(obj)), None)
    framework = _SOURCE_FRAMEWORKS.get(reader) if reader is not None else None
    interface = read_interface(obj, framework)
    carried = target_options(interface, to, dropped)
    if reader is not None and framework is not None:
        # the interface is carried (or refused) here, so the reader need not refuse it
        read_result = reader(obj, spec, cell, frozenset(interface.options) | dropped)
    else:
        read_result = read(obj, spec=spec, cell=cell)
    source_spec, weights = read_result
    keywords = {**carried, **options}
    if interface.module == "cell" and "module" not in dropped and "module" not in options:
        if to == "numpy":
            raise SpecError("port(to='numpy'): the source is a cell (one step) and unirnn's "
                            "numpy backend has layers only; pass drop=['module'] to port it "
                            "as a layer")
        keywords["module"] = "cell"
    built = build(source_spec, backend=to, weights=weights, **keywords)
    assumed = getattr(read_result, "assumed", None)
    if assumed is not None:
        try:
            built.spec_assumed = assumed
        except (AttributeError, TypeError):  # a frozen module (Flax linen)
            object.__setattr__(built, "spec_assumed", assumed)
    return built
