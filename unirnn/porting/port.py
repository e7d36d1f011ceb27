"""``unirnn.port``: a trained RNN of any supported framework, rebuilt for another.

Sources are recognised the einops way: a framework is only consulted when it is already
imported (``sys.modules``), since an object of that framework cannot exist otherwise.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._spec import Spec
from .._weights import Weights, check_weights
from ..backends import BACKENDS, build

__all__ = ["port", "read"]

TORCH_SUFFIXES = (".pt", ".pth")
FLAX_SUFFIXES = (".msgpack", ".flax")


def _first_leaf(tree: Any) -> Any:
    while isinstance(tree, Mapping) and tree:
        tree = next(iter(tree.values()))
    return tree


def _is_torch(obj: Any) -> bool:
    if "torch" not in sys.modules:
        return False
    import torch

    return isinstance(obj, torch.nn.Module) or (
        isinstance(obj, Mapping) and isinstance(_first_leaf(obj), torch.Tensor)
    )


def _is_keras(obj: Any) -> bool:
    if "keras" not in sys.modules:
        return False
    import keras

    return isinstance(obj, keras.layers.Layer)


def _is_flax(obj: Any) -> bool:
    if "flax" not in sys.modules:
        return False
    from flax import linen, nnx

    # a module, or a parameter tree: nested mappings such as {"params": {...}}
    return isinstance(obj, (linen.Module, nnx.Module)) or (
        isinstance(obj, Mapping) and any(isinstance(v, Mapping) for v in obj.values())
    )


def read(obj: Any, *, spec: Spec | None = None, cell: str | None = None) -> tuple[Spec, Weights]:
    """``(spec, weights)`` from any source unirnn reads.

    Args:
        obj: a ``(spec, weights)`` pair; a module built by ``unirnn.build`` (any backend);
            a torch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` or state dict; a Keras ``LSTM``/
            ``GRU``/``SimpleRNN``/``Bidirectional`` layer or model; a Flax parameter tree
            or module; or a path: ``.safetensors`` (unirnn file), ``.pt``/``.pth`` (torch
            state dict, loaded with ``weights_only=True``), ``.keras``/``.weights.h5``
            (Keras), ``.msgpack`` (``flax.serialization`` bytes of a parameter tree).
        spec: needed where the source does not determine it (a state dict whose activation
            is not torch's, a Flax tree of custom activations); checked against it otherwise.
        cell: for Flax trees of Flax's own cells: ``"LSTMCell"``, ``"OptimizedLSTMCell"``,
            ``"GRUCell"`` or ``"SimpleCell"``.

    Raises:
        ValueError: a source unirnn cannot read; the message names what was found.
    """
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], Spec):
        return obj[0], check_weights(obj[0], obj[1])
    if isinstance(obj, (str, os.PathLike)):
        return _read_path(Path(obj), spec=spec, cell=cell)
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

        return from_flax(obj, cell=cell, spec=spec)
    raise ValueError(
        f"cannot read a {type(obj).__module__}.{type(obj).__qualname__}: expected a "
        "(spec, weights) pair, a module built by unirnn, a torch nn.RNN/LSTM/GRU or state "
        "dict, a Keras LSTM/GRU/SimpleRNN/Bidirectional layer or model, a Flax parameter "
        "tree, or a file path"
    )


def _read_path(path: Path, *, spec: Spec | None, cell: str | None) -> tuple[Spec, Weights]:
    if not path.is_file():
        raise FileNotFoundError(f"no file at {str(path)!r}")
    name = path.name.lower()
    if name.endswith(".safetensors"):
        from .._file import load

        return load(path)
    if name.endswith(TORCH_SUFFIXES):
        import torch

        from .torch import from_torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{str(path)!r} holds more than tensors, and unirnn loads torch files with "
                f"weights_only=True (no code from the file runs): expected a state_dict "
                f"saved with torch.save(module.state_dict(), path) ({err})"
            ) from None
        return from_torch(state, spec=spec)
    if name.endswith((".keras", ".weights.h5", ".h5")):
        from .keras import from_keras

        return from_keras(str(path)) if spec is None else from_keras(str(path), spec=spec)
    if name.endswith(FLAX_SUFFIXES):
        from flax import serialization

        from .flax import from_flax

        tree = serialization.msgpack_restore(path.read_bytes())
        return from_flax(tree, cell=cell, spec=spec)
    raise ValueError(
        f"{str(path)!r}: unknown file type; expected .safetensors (unirnn), .pt/.pth (torch "
        f"state dict), .keras/.weights.h5 (Keras) or .msgpack (Flax parameters)"
    )


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
