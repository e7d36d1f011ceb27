"""unirnn: describe a recurrent cell once, run it in PyTorch, Keras and Flax.

The core (this package's top level) imports numpy and safetensors only; a framework is
imported when a backend or converter that needs it is first used.

>>> import numpy as np, unirnn
>>> spec = unirnn.lstm(8, 16, activation="relu")
>>> weights = unirnn.init_weights(spec, seed=0)
>>> model = unirnn.build(spec, backend="numpy", weights=weights)
>>> outputs, (h, c) = model(np.ones((2, 5, 8), np.float32))
>>> outputs.shape
(2, 5, 16)
"""

from __future__ import annotations

import importlib
from typing import Any

from . import _cell_families  # noqa: F401  (registers ln_lstm, ln_gru, indrnn, mingru, minlstm)
from ._activations import activation_names, register_activation
from ._assumed import SpecAndWeights
from ._cells import Cell, Ops
from ._errors import FileFormatError, InputError, SpecError, UnirnnError, WeightsError
from ._extras import EXTRAS, missing
from ._families import Family, Param, family_names, register_family
from ._file import load
from ._file import save_file as save
from ._gates import from_gates, to_gates
from ._spec import FAMILIES, GATE_ORDER, ROLES, Spec, gru, lstm, preset, preset_names, rnn
from ._weights import Weights, check_weights, init_weights, weight_shapes
from .backends import BACKENDS, build, explain
from .layouts.haste import from_haste, to_haste

__version__ = "0.1.0"

# Framework converters and helpers live in modules that import their framework; they are
# loaded on first attribute access so that `import unirnn` stays framework-free.
_LAZY = {
    "to_torch": "unirnn.porting.torch",
    "from_torch": "unirnn.porting.torch",
    "to_keras": "unirnn.porting.keras",
    "from_keras": "unirnn.porting.keras",
    "to_flax": "unirnn.porting.flax",
    "from_flax": "unirnn.porting.flax",
    "to_onnx": "unirnn.porting.onnx",
    "from_onnx": "unirnn.porting.onnx",
    "port": "unirnn.porting.port",
}

__all__ = [
    "BACKENDS",
    "Cell",
    "FAMILIES",
    "Family",
    "FileFormatError",
    "InputError",
    "GATE_ORDER",
    "Ops",
    "Param",
    "ROLES",
    "Spec",
    "SpecAndWeights",
    "SpecError",
    "UnirnnError",
    "Weights",
    "WeightsError",
    "activation_names",
    "build",
    "explain",
    "family_names",
    "from_gates",
    "from_haste",
    "check_weights",
    "gru",
    "init_weights",
    "load",
    "lstm",
    "preset",
    "preset_names",
    "register_activation",
    "register_family",
    "rnn",
    "save",
    "to_gates",
    "to_haste",
    "weight_shapes",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unirnn' has no attribute {name!r}")
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as err:
        package = (err.name or "").split(".")[0]
        if package not in EXTRAS:
            raise
        raise missing(f"unirnn.{name}", package) from err
    return getattr(loaded, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
