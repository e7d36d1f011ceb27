"""Canonical weights <-> PyTorch: ``nn.RNN``/``nn.LSTM``/``nn.GRU``, state dicts, unirnn modules.

The layout (names, the spec's key, spec inference) is :mod:`unirnn.layouts.torch`; this
module reads and writes torch objects and ``.pt`` files.

Example:
    >>> import torch, unirnn
    >>> native = torch.nn.GRU(3, 4, num_layers=2)
    >>> spec, weights = unirnn.from_torch(native)
    >>> spec.family, spec.num_layers, weights["layer1.forward.w_h"].shape
    ('gru', 2, (12, 4))
    >>> _ = native.load_state_dict(unirnn.to_torch(spec, weights))

A state dict from :func:`to_torch` carries the spec's JSON in its ``_metadata``
(``state_dict._metadata[""]["unirnn.spec"]``, where ``nn.Module.state_dict`` keeps its
version), which ``torch.save`` and ``torch.load(weights_only=True)`` keep and
``load_state_dict`` ignores; :func:`from_torch` reads it, so a custom cell saved as a
``.pt`` file reads back as itself rather than as the standard cell its tensors also fit.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._assumed import SpecAndWeights, assumed_standard
from .._errors import FileFormatError, SpecError, WeightsError
from .._spec import Spec, gru, lstm, rnn, same_spec
from .._weights import Weights, available_memory, check_weights
from ..backends.torch import TorchRNN, TorchRNNCell, canonical_weights, tensor_to_numpy
from ..layouts import SPEC_KEY
from ..layouts import torch as torch_layout

__all__ = ["from_torch", "read_file", "to_torch", "write_file"]


def to_torch(spec: Spec, weights: Mapping[str, Any], *, dtype: Any = None,
             device: Any = None) -> dict[str, torch.Tensor]:
    """A state dict in torch's naming for ``spec`` and canonical ``weights``.

    It loads into ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (for specs torch's layers can hold) and
    into the module ``unirnn.build(spec, backend="torch")``. Tensors keep the weights'
    dtype unless ``dtype`` (a torch dtype) is given. The returned ``OrderedDict`` carries
    the spec in its ``_metadata`` (as ``nn.Module.state_dict()`` carries its version), so
    ``torch.save(to_torch(spec, weights), path)`` writes a file that
    ``from_torch(torch.load(path, weights_only=True))`` reads back as ``spec``.

    Raises:
        ValueError: the weights do not match the spec (name, expected and received shape).
    """
    if not isinstance(spec, Spec):
        raise SpecError(f"to_torch: expected a unirnn.Spec; received {type(spec).__name__}")
    checked = check_weights(spec, weights)
    names = torch_layout.tensor_names(spec)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, array in checked.items():
        value = torch.from_numpy(np.array(array))
        if dtype is not None or device is not None:
            value = value.to(device=device, dtype=dtype)
        state[names[name]] = value
    # load_state_dict hands _metadata[prefix] to each module and ignores keys it does not
    # know; "version" is what nn.Module.state_dict writes there.
    metadata = OrderedDict({"": {"version": 1, SPEC_KEY: spec.to_json()}})
    state._metadata = metadata  # type: ignore[attr-defined]
    return state


def carried_spec(state: Mapping[str, Any]) -> Spec | None:
    """The spec a state dict from :func:`to_torch` carries in its ``_metadata``, if any."""
    text = torch_layout.carried_spec_text(getattr(state, "_metadata", None))
    if text is None:
        return None
    try:
        return Spec.from_json(text)
    except ValueError as err:
        raise SpecError(f"from_torch: the state dict's _metadata[''][{SPEC_KEY!r}] is not a "
                         f"unirnn spec ({err})") from None


def from_torch(obj: Any, spec: Spec | None = None) -> SpecAndWeights:
    """``(spec, weights)`` from a torch module or state dict.

    Args:
        obj: ``nn.RNN``, ``nn.LSTM``, ``nn.GRU``, ``nn.RNNCell``, ``nn.LSTMCell``,
            ``nn.GRUCell`` or a subclass of one (the spec is inferred: ``nonlinearity``,
            ``proj_size``, ``bias``, ``num_layers``, ``bidirectional``, ``dropout``), a
            module built by unirnn's torch backend (it carries ``.spec``), or a state dict
            in torch's naming (a layer's ``weight_ih_l0``..., or a cell's ``weight_ih``...).
        spec: the spec of a state dict or of a subclass whose ``forward`` computes another
            cell (a ReLU LSTM written as ``class ReLULSTMCell(nn.LSTMCell)``); for a
            module, or a state dict from :func:`to_torch` (its ``_metadata`` carries the
            spec), it must equal the carried one. Without it, a state dict from
            :func:`to_torch` is read as its carried spec, and any other as what
            ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (or their cells) would hold: sizes, layers,
            directions, bias and projection from the entries' names and shapes, torch's
            activations (an Elman RNN is taken as tanh: pass ``spec=`` for
            ``nonlinearity="relu"`` or any custom cell).

    Returns:
        The spec and canonical numpy weights in the tensors' dtype (bfloat16 and float16
        become float32), as a :class:`~unirnn.SpecAndWeights` pair whose ``assumed`` says,
        when the spec was not carried by the source but taken as torch's standard cell,
        what was assumed (``None`` otherwise).

    Raises:
        ValueError: an unsupported object, a missing ``spec``, or names/shapes that do not
            match the spec.
    """
    if isinstance(obj, (TorchRNN, TorchRNNCell)):
        same_spec(spec, obj.spec, "the module")
        return SpecAndWeights(obj.spec, canonical_weights(obj))
    if isinstance(obj, nn.RNNBase):
        inferred = _infer_spec(obj)
        same_spec(spec, inferred, "the module")
        return SpecAndWeights(inferred, _from_state_dict(inferred, obj.state_dict()))
    if isinstance(obj, nn.RNNCellBase):
        return _from_cell_module(obj, spec)
    if isinstance(obj, Mapping):
        carried = carried_spec(obj)
        cell = torch_layout.is_cell_state(obj)
        if carried is not None:
            same_spec(spec, carried, "the state dict")
            return SpecAndWeights(carried, _from_state_dict(carried, obj, cell))
        if spec is None:
            inferred = _infer_state_dict_spec(obj)
            what = f"nn.{torch_layout.CELL_CLASSES[inferred.family]}" if cell \
                else f"nn.{inferred.family.upper()}"
            return SpecAndWeights(inferred, _from_state_dict(inferred, obj, cell),
                                  assumed=assumed_standard(inferred, f"a plain {what} state "
                                                           "dict (it carries no spec)"))
        if not isinstance(spec, Spec):
            raise ValueError(f"spec: expected a unirnn.Spec; received {type(spec).__name__}")
        return SpecAndWeights(spec, _from_state_dict(spec, obj, cell))
    raise ValueError(
        "from_torch: expected nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell, "
        f"a unirnn torch module or a state dict; received {type(obj).__name__}"
    )


_CELL_MODULES = {"LSTMCell": "lstm", "GRUCell": "gru", "RNNCell": "rnn"}


def _from_cell_module(module: nn.RNNCellBase, spec: Spec | None) -> SpecAndWeights:
    """A torch cell or a subclass of one: the spec from its attributes (or ``spec``)."""
    base = next((cls for cls in type(module).__mro__
                 if cls.__module__.startswith("torch.nn") and cls.__name__ in _CELL_MODULES),
                None)
    if base is None:
        raise ValueError(f"from_torch: expected nn.RNNCell, nn.LSTMCell or nn.GRUCell (or a "
                         f"subclass); received {type(module).__name__}")
    family = _CELL_MODULES[base.__name__]
    size = (int(module.input_size), int(module.hidden_size))
    bias = bool(module.bias)
    if family == "rnn":
        inferred = rnn(*size, activation=str(getattr(module, "nonlinearity", "tanh")),
                       bias=bias)
    else:
        inferred = (lstm if family == "lstm" else gru)(*size, bias=bias)
    state = module.state_dict()
    if spec is not None:
        if not isinstance(spec, Spec):
            raise ValueError(f"spec: expected a unirnn.Spec; received {type(spec).__name__}")
        if type(module) is base:
            same_spec(spec, inferred, "the module")
        return SpecAndWeights(spec, _from_state_dict(spec, state, cell=True))
    assumed = None
    if type(module) is not base and getattr(type(module), "forward", None) is not \
            getattr(base, "forward", None):
        assumed = assumed_standard(
            inferred, f"{type(module).__name__}, a subclass of nn.{base.__name__} with its "
            "own forward")
    return SpecAndWeights(inferred, _from_state_dict(inferred, state, cell=True),
                          assumed=assumed)


def _infer_spec(module: nn.RNNBase) -> Spec:
    common: dict[str, Any] = {
        "bias": bool(module.bias),
        "num_layers": int(module.num_layers),
        "bidirectional": bool(module.bidirectional),
        "dropout": float(module.dropout),
    }
    size = (int(module.input_size), int(module.hidden_size))
    mode = module.mode
    if mode == "LSTM":
        return lstm(*size, proj_size=int(module.proj_size), **common)
    if mode == "GRU":
        return gru(*size, **common)
    if mode in ("RNN_TANH", "RNN_RELU"):
        return rnn(*size, activation=mode[4:].lower(), **common)
    raise WeightsError(
        f"from_torch: expected an RNN, LSTM or GRU module; received mode {mode!r} "
        f"({type(module).__name__})"
    )


def _infer_state_dict_spec(state: Mapping[str, Any]) -> Spec:
    """The nn.RNN/LSTM/GRU (or cell) spec a state dict's names and shapes describe."""
    shapes = {k: tuple(torch.as_tensor(v).shape) for k, v in state.items()}
    if torch_layout.is_cell_state(shapes):
        return torch_layout.infer_cell_spec(shapes)
    return torch_layout.infer_spec(shapes)


def _from_state_dict(spec: Spec, state: Mapping[str, Any], cell: bool = False) -> Weights:
    names = torch_layout.cell_tensor_names(spec) if cell else torch_layout.tensor_names(spec)
    expected = {t: c for c, t in names.items()}
    extra = [k for k in state if k not in expected]
    if extra:
        raise WeightsError(
            f"from_torch: state dict entry {extra[0]!r} does not belong to the spec "
            f"{spec.to_json()}; expected entries {', '.join(expected)}"
        )
    missing = [k for k in expected if k not in state]
    if missing:
        raise WeightsError(
            f"from_torch: state dict lacks {missing[0]!r}, required by the spec "
            f"{spec.to_json()}"
        )
    arrays = {}
    for tname, cname in expected.items():
        arrays[cname] = tensor_to_numpy(torch.as_tensor(state[tname]),
                                        f"from_torch: state dict entry {tname!r}")
    return check_weights(spec, arrays)


# -- files --------------------------------------------------------------------------------


def _check_archive_size(path: Path) -> None:
    """Refuse, from the zip's directory alone, an archive whose tensors would not fit in
    memory (torch.load reads every tensor)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise FileFormatError(f"{str(path)!r} is not a readable torch file: its zip archive "
                              f"is damaged ({err})") from None
    available = available_memory()
    if available is not None and size > available:
        raise FileFormatError(f"{str(path)!r}: its tensors take {size:,} bytes; this machine "
                              f"has {available:,} bytes of memory available")


def read_file(path: Path, spec: Spec | None = None) -> tuple[Spec, Weights]:
    """``(spec, weights)`` of a ``.pt``/``.pth`` state dict, loaded with ``weights_only=True``
    (no code from the file runs); the spec it carries is used and checked against ``spec``."""
    with path.open("rb") as handle:
        head = handle.read(2)
    # torch.save writes a zip archive (or, in the legacy format, a pickle: byte 0x80)
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise FileFormatError(
            f"{str(path)!r} is not a torch file: expected a state dict saved with "
            f"torch.save(module.state_dict(), path) (a zip archive); received {head!r}... "
        )
    _check_archive_size(path)
    try:
        # not mmap=True: torch then maps a storage shorter than its tensor without a word
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's advice (weights_only=False) would run the file's code: show only the cause
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        cause = next((line for line in lines if "GLOBAL" in line), None)
        if cause is not None:
            raise FileFormatError(
                f"{str(path)!r} holds more than tensors: {cause.rstrip('.')}. unirnn loads "
                "torch files with weights_only=True, so no code from the file ran; expected "
                "a state dict saved with torch.save(module.state_dict(), path)"
            ) from None
        detail = next((line for line in lines if "weights_only" not in line
                       and "PyTorch 2.6" not in line), lines[0] if lines else "")
        raise FileFormatError(f"{str(path)!r} is not a readable torch file: expected a state "
                              f"dict saved with torch.save; torch.load failed ({detail})"
                              ) from None
    except Exception as err:  # a truncated or tampered archive: torch raises many kinds
        raise FileFormatError(f"{str(path)!r} is not a readable torch file: expected a state "
                              f"dict saved with torch.save; torch.load failed "
                              f"({type(err).__name__}: {err})") from None
    if not isinstance(state, Mapping):
        raise FileFormatError(f"{str(path)!r}: expected a state dict (a mapping of names to "
                         f"tensors); received a {type(state).__name__}")
    return from_torch(state, spec=spec)


def write_file(path: Path, spec: Spec, weights: Mapping[str, Any]) -> str:
    """Write :func:`to_torch`'s state dict with ``torch.save``; returns where the spec travels."""
    torch.save(to_torch(spec, weights), path)
    return f"the state dict's _metadata[''][{SPEC_KEY!r}]"
