"""``unirnn.port``: a trained RNN of any supported framework, rebuilt for another.

Sources are recognised the einops way: a framework is only consulted when it is already
imported (``sys.modules``), since an object of that framework cannot exist otherwise.

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
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._spec import Spec
from .._weights import Weights, check_weights, init_weights
from ..backends import BACKENDS, build

__all__ = ["FILE_FORMATS", "file_format_of", "keras_model", "port", "read", "write"]

FILE_FORMATS: Mapping[str, tuple[str, ...]] = {
    "unirnn": (".safetensors",),
    "torch": (".pt", ".pth"),
    "keras": (".keras", ".weights.h5"),
    "flax": (".msgpack",),
}
"""File format -> the file name endings that select it (first: the default)."""

_READ_SUFFIXES = {**FILE_FORMATS, "keras": (".keras", ".weights.h5", ".h5"),
                  "flax": (".msgpack", ".flax")}

SPEC_KEY = "unirnn.spec"
"""Where a file carries the spec: torch ``_metadata[""]``, Keras weights-file attribute."""

KERAS_PATH_KEY = "unirnn.keras_path"
FLAX_ENTRY = "unirnn"

# framework -> the pip extra that installs it
_EXTRAS = {"torch": "torch", "keras": "keras", "tensorflow": "keras", "jax": "flax",
           "flax": "flax", "h5py": "keras"}


def require(framework: str, what: str) -> Any:
    """Import ``framework`` for ``what``, or raise an ImportError naming the extra."""
    try:
        return importlib.import_module(framework)
    except ModuleNotFoundError as err:
        missing = (err.name or framework).split(".")[0]
        extra = _EXTRAS.get(missing, _EXTRAS.get(framework, framework))
        raise ImportError(
            f"{what} needs {missing}, which is not installed; install it with: "
            f"pip install 'unirnn[{extra}]'"
        ) from err


def file_format_of(path: str | os.PathLike[str], explicit: str | None = None) -> str:
    """The file format (a key of :data:`FILE_FORMATS`) of ``path``, from its name."""
    if explicit is not None:
        if explicit not in FILE_FORMATS:
            raise ValueError(f"file format: expected one of {', '.join(FILE_FORMATS)}; "
                             f"received {explicit!r}")
        return explicit
    name = os.fspath(path).lower()
    for fmt, suffixes in _READ_SUFFIXES.items():
        if name.endswith(suffixes):
            return fmt
    raise ValueError(
        f"cannot tell the format of {os.fspath(path)!r} from its name; expected one of "
        f"{', '.join(s for ss in FILE_FORMATS.values() for s in ss)}"
    )


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


def _same_spec(given: Spec | None, carried: Spec, where: str) -> Spec:
    """The carried spec, after checking it against a given one."""
    if given is not None and given != carried:
        raise ValueError(
            f"spec: {where} carries the spec {carried.to_json()}; received a different spec "
            f"{given.to_json()}. Leave spec (--spec) out to use the file's own"
        )
    return carried


def _spec_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.astype(np.uint8).tobytes().decode()
    return str(value)


def flax_carried_spec(tree: Mapping[str, Any]) -> tuple[Mapping[str, Any], Spec | None]:
    """``(params tree, spec)`` of a Flax tree, with the ``"unirnn"`` entry taken out."""
    if FLAX_ENTRY not in tree or not isinstance(tree[FLAX_ENTRY], Mapping):
        return tree, None
    entry = tree[FLAX_ENTRY]
    if "spec" not in entry:
        raise ValueError(f"Flax tree: the {FLAX_ENTRY!r} entry holds no 'spec'; expected "
                         f"{{'spec': <the spec's JSON>}} as written by unirnn")
    try:
        spec = Spec.from_json(_spec_text(entry["spec"]))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"Flax tree: the {FLAX_ENTRY!r} entry's spec is not a unirnn spec "
                         f"({err})") from None
    return {k: v for k, v in tree.items() if k != FLAX_ENTRY}, spec


def read(obj: Any, *, spec: Spec | None = None, cell: str | None = None,
         file_format: str | None = None) -> tuple[Spec, Weights]:
    """``(spec, weights)`` from any source unirnn reads.

    Args:
        obj: a ``(spec, weights)`` pair; a module built by ``unirnn.build`` (any backend);
            a torch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` or state dict; a Keras ``LSTM``/
            ``GRU``/``SimpleRNN``/``Bidirectional`` layer or model; a Flax parameter tree
            or module; or a path: ``.safetensors`` (unirnn file), ``.pt``/``.pth`` (torch
            state dict, loaded with ``weights_only=True``), ``.keras``/``.weights.h5``
            (Keras), ``.msgpack`` (``flax.serialization`` bytes of a parameter tree).
        spec: needed where the source does not determine it (a state dict whose activation
            is not torch's, a Flax tree of custom activations); checked against it otherwise,
            and against the spec a file written by unirnn carries.
        cell: for Flax trees of Flax's own cells: ``"LSTMCell"``, ``"OptimizedLSTMCell"``,
            ``"GRUCell"`` or ``"SimpleCell"``.
        file_format: for a path whose name does not say: ``"unirnn"``, ``"torch"``,
            ``"keras"`` or ``"flax"`` (see :data:`FILE_FORMATS`).

    Raises:
        ValueError: a source unirnn cannot read; the message names what was found.
        ImportError: a file of a framework that is not installed (names the extra).
    """
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], Spec):
        return obj[0], check_weights(obj[0], obj[1])
    if isinstance(obj, (str, os.PathLike)):
        return _read_path(Path(obj), spec=spec, cell=cell, file_format=file_format)
    from ..backends.numpy import NumpyRNN

    if isinstance(obj, NumpyRNN):
        return obj.spec, obj.weights
    # Keras first: on the torch backend a Keras layer is also a torch.nn.Module.
    if _is_keras(obj):
        from .keras import from_keras

        return from_keras(obj)
    if _is_torch(obj):
        from .torch import from_torch

        return from_torch(obj, spec=spec)
    if _is_flax(obj):
        from .flax import from_flax

        if isinstance(obj, Mapping):
            obj, carried = flax_carried_spec(obj)
            if carried is not None:
                spec = _same_spec(spec, carried, "the Flax tree")
        return from_flax(obj, cell=cell, spec=spec)
    raise ValueError(
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
        raise ValueError(
            f"{str(path)!r}: unknown file type; expected .safetensors (unirnn), .pt/.pth "
            f"(torch state dict), .keras/.weights.h5 (Keras) or .msgpack (Flax parameters)"
        ) from None
    if fmt == "unirnn":
        from .._file import load

        loaded_spec, weights = load(path)
        return _same_spec(spec, loaded_spec, repr(str(path))), weights
    if fmt == "torch":
        return _read_torch(path, spec)
    if fmt == "keras":
        return _read_keras(path, spec)
    return _read_flax(path, spec, cell)


def _read_torch(path: Path, spec: Spec | None) -> tuple[Spec, Weights]:
    torch = require("torch", f"reading {str(path)!r} (a torch file)")
    from .torch import from_torch

    with path.open("rb") as handle:
        head = handle.read(2)
    # torch.save writes a zip archive (or, in the legacy format, a pickle: byte 0x80)
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise ValueError(
            f"{str(path)!r} is not a torch file: expected a state dict saved with "
            f"torch.save(module.state_dict(), path) (a zip archive); received {head!r}... "
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = next((line.strip() for line in str(err).splitlines()
                       if "WeightsUnpickler error" in line), str(err).splitlines()[0])
        if "Unsupported global" in str(err):
            raise ValueError(
                f"{str(path)!r} holds more than tensors, and unirnn loads torch files with "
                f"weights_only=True (no code from the file runs): expected a state_dict "
                f"saved with torch.save(module.state_dict(), path) ({detail})"
            ) from None
        raise ValueError(f"{str(path)!r} is not a readable torch file: expected a state dict "
                         f"saved with torch.save; torch.load failed ({detail})") from None
    except (RuntimeError, EOFError, KeyError, OSError) as err:
        raise ValueError(f"{str(path)!r} is not a readable torch file: expected a state dict "
                         f"saved with torch.save; torch.load failed ({type(err).__name__}: "
                         f"{err})") from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{str(path)!r}: expected a state dict (a mapping of names to "
                         f"tensors); received a {type(state).__name__}")
    return from_torch(state, spec=spec)


def _read_keras(path: Path, spec: Spec | None) -> tuple[Spec, Weights]:
    require("keras", f"reading {str(path)!r} (a Keras file)")
    from .keras import from_keras

    name = str(path)
    if path.name.lower().endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{name!r} is not a Keras model file: expected a .keras zip "
                             f"archive written by model.save()")
        return from_keras(name)
    h5py = require("h5py", f"reading {name!r} (a Keras weights file)")
    if not h5py.is_hdf5(name):
        raise ValueError(f"{name!r} is not a Keras weights file: expected an HDF5 file "
                         f"written by model.save_weights()")
    with h5py.File(name, "r") as handle:
        carried = handle.attrs.get(SPEC_KEY)
        keras_path = handle.attrs.get(KERAS_PATH_KEY)
    if carried is None:
        return from_keras(name) if spec is None else from_keras(name, spec=spec)
    carried_spec = _same_spec(spec, Spec.from_json(_spec_text(carried)), repr(name))
    model = keras_model(carried_spec, init_weights(carried_spec),
                        path=_spec_text(keras_path) if keras_path is not None else "auto")
    model.load_weights(name)
    read_spec, weights = from_keras(model)
    if read_spec != carried_spec:
        raise ValueError(f"{name!r}: the model rebuilt from the file's spec "
                         f"{carried_spec.to_json()} reads as {read_spec.to_json()}")
    return carried_spec, weights


def _read_flax(path: Path, spec: Spec | None, cell: str | None) -> tuple[Spec, Weights]:
    serialization = require("flax.serialization", f"reading {str(path)!r} (a Flax file)")
    from .flax import from_flax

    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises its own exception types
        raise ValueError(
            f"{str(path)!r} is not a Flax parameter file: expected msgpack bytes written by "
            f"flax.serialization.msgpack_serialize / to_bytes; could not read it "
            f"({type(err).__name__}: {err})"
        ) from None
    if not isinstance(tree, Mapping):
        raise ValueError(f"{str(path)!r}: expected a msgpack'd parameter tree (a mapping); "
                         f"received a {type(tree).__name__}")
    tree, carried = flax_carried_spec(tree)
    if carried is not None:
        spec = _same_spec(spec, carried, repr(str(path)))
    return from_flax(tree, cell=cell, spec=spec)


def keras_model(spec: Spec, weights: Mapping[str, Any], path: str = "auto") -> Any:
    """A Keras ``Sequential`` of ``spec``: one ``Input``, then the layers ``to_keras`` gives.

    The model a ``.weights.h5`` file of :func:`write` belongs to.
    """
    keras = require("keras", "a Keras model")
    from .keras import to_keras

    layer = to_keras(spec, weights, path=path)
    layers = list(layer.layers) if isinstance(layer, keras.Sequential) else [layer]
    return keras.Sequential([keras.Input((None, spec.input_size)), *layers])


def write(path: str | os.PathLike[str], spec: Spec, weights: Mapping[str, Any], *,
          file_format: str | None = None, cell: str | None = None) -> str:
    """Write ``spec`` and ``weights`` to ``path`` in a framework's file format.

    The spec travels in the file (see the module docstring), so :func:`read` gives back
    this spec without being told it. ``file_format`` defaults to the one ``path``'s name
    says; ``cell`` picks Flax's own cell for ``.msgpack`` (``None``: unirnn's layer).
    The file is written in place; ``unirnn convert`` stages it beside the target first.

    Returns:
        Where the spec travels, in words.
    """
    fmt = file_format_of(path, file_format)
    weights = check_weights(spec, weights)
    target = Path(path)
    if fmt == "unirnn":
        from .._file import save_file

        save_file(target, spec, weights)
        return "the .safetensors metadata"
    if fmt == "torch":
        torch = require("torch", "writing a torch file")
        from .torch import to_torch

        torch.save(to_torch(spec, weights), target)
        return f"the state dict's _metadata[''][{SPEC_KEY!r}]"
    if fmt == "flax":
        serialization = require("flax.serialization", "writing a Flax file")
        from .flax import to_flax

        tree = dict(to_flax(spec, weights, cell=cell))
        tree[FLAX_ENTRY] = {"spec": np.frombuffer(spec.to_json().encode(), np.uint8).copy()}
        target.write_bytes(serialization.msgpack_serialize(tree))
        return f"the tree's {FLAX_ENTRY!r} entry, beside 'params'"
    name = target.name.lower()
    if not name.endswith((".keras", ".weights.h5")):
        raise ValueError(f"{str(target)!r}: a Keras file's name must end in .keras (model "
                         f"file) or .weights.h5 (weights file); received {target.name!r}")
    require("keras", "writing a Keras file")
    model = keras_model(spec, weights)
    if name.endswith(".keras"):
        model.save(target)
        return "the .keras model's layer configs"
    from ..backends.keras import UniRNN

    model.save_weights(target)
    custom = any(isinstance(layer, UniRNN) for layer in model.layers)
    h5py = require("h5py", "writing a Keras weights file")
    with h5py.File(target, "a") as handle:
        handle.attrs[SPEC_KEY] = spec.to_json()
        handle.attrs[KERAS_PATH_KEY] = "custom" if custom else "native"
    return f"the weights file's {SPEC_KEY!r} attribute"


def port(obj: Any, to: str, *, spec: Spec | None = None, cell: str | None = None,
         **options: Any) -> Any:
    """Rebuild a trained RNN for another framework, weights included.

    The spec and weights are read from ``obj`` (see :func:`read`) and built with
    ``unirnn.build(spec, backend=to, weights=...)``: Keras gets its own layers when they
    can express the spec and unirnn's custom layer otherwise; torch gets a drop-in
    ``nn.Module`` that runs torch's fused kernel for standard cells; Flax a linen module
    (``api="nnx"`` for NNX). Nothing is approximated: a cell the target's native layers
    cannot compute runs on unirnn's custom path for that framework.

    Example:
        >>> import torch, unirnn
        >>> native = torch.nn.GRU(8, 16, batch_first=True)
        >>> layer = unirnn.port(native, to="keras")  # doctest: +SKIP
    """
    if to not in BACKENDS:
        raise ValueError(f"port: unknown target {to!r}; expected one of {', '.join(BACKENDS)}")
    source_spec, weights = read(obj, spec=spec, cell=cell)
    return build(source_spec, backend=to, weights=weights, **options)
