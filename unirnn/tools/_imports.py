"""``--import``: the user code a command imports before it reads a file (families and
activations registered by name, which a file names but cannot carry)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["import_definitions"]


def import_definitions(names: Sequence[str]) -> None:
    """Import the modules (or ``.py`` files) named by ``--import``: the user code that
    registers families and activations (``unirnn.register_family``) before a file naming
    them is read. The working directory is importable, as with ``python -m``."""
    for name in names:
        if name.endswith(".py"):
            path = Path(name)
            spec = importlib.util.spec_from_file_location(path.stem, path) \
                if path.is_file() else None
            if spec is None or spec.loader is None:
                raise ImportError(f"--import {name}: no such Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
            continue
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ImportError(f"--import {name}: {err}") from None
