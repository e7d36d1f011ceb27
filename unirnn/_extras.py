"""The one table of pip extras: which ``unirnn[...]`` extra installs a missing framework."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "missing", "require"]

EXTRAS = {
    "torch": "torch",
    "keras": "keras",
    "tensorflow": "keras",
    "h5py": "keras",
    "jax": "flax",
    "jaxlib": "flax",
    "flax": "flax",
    "onnx": "onnx",
    "onnxruntime": "onnx",
}
"""Top-level package -> the extra of pyproject.toml that installs it."""


def missing(what: str, package: str) -> ImportError:
    """The error for ``what`` needing ``package``, which is not installed."""
    extra = EXTRAS.get(package, package)
    return ImportError(f"{what} needs {package}, which is not installed; install it with: "
                       f"pip install 'unirnn[{extra}]'")


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` for ``what``, or raise an ImportError naming the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        package = (err.name or module).split(".")[0]
        if package not in EXTRAS:
            package = module.split(".")[0]
        raise missing(what, package) from err


def installed(name: str) -> bool:
    """Whether the framework ``name`` can be imported, without importing it.

    A namespace package does not count: a folder named like a framework on ``sys.path``
    (``tests/torch`` when ``tests`` is on the path) is not the framework.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None
