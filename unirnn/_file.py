"""One portable file: the spec and canonical weights in a single ``.safetensors`` file.

The weights are stored under their canonical names; the metadata holds
``format = "unirnn"``, ``format_version`` and ``spec`` (the spec's JSON). Files are
written to a temporary file beside the target and renamed into place, so a crash never
leaves a half-written file under the target's name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from ._spec import Spec, same_spec
from ._weights import Weights, check_weights

__all__ = ["FORMAT_VERSION", "load", "read_file", "save_file", "write_atomic", "write_file"]

FORMAT_NAME = "unirnn"
FORMAT_VERSION = 1


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # elsewhere os.umask can only be read by setting it: set it back at once
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    The file gets the permissions ``open(path, "wb")`` would give it (``0o666`` less the
    umask), not the private ``0o600`` of the temporary file it starts as.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_file(path: str | os.PathLike[str], spec: Spec, weights: Mapping[str, Any]) -> None:
    """Save ``spec`` and ``weights`` to one ``.safetensors`` file at ``path``.

    The weights are checked against the spec first; nothing is written if they disagree.

    Example:
        >>> import os, tempfile, unirnn
        >>> spec = unirnn.lstm(3, 4)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> unirnn.save(path, spec, unirnn.init_weights(spec))
        >>> unirnn.load(path)[0] == spec
        True
    """
    if not isinstance(spec, Spec):
        raise ValueError(f"save: expected a unirnn.Spec; received {type(spec).__name__}")
    checked = check_weights(spec, weights)
    tensors = {name: np.ascontiguousarray(array) for name, array in checked.items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "spec": spec.to_json(),
    }
    write_atomic(path, save(tensors, metadata=metadata))


def load(path: str | os.PathLike[str]) -> tuple[Spec, Weights]:
    """Read ``(spec, weights)`` from a file written by :func:`unirnn.save`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a unirnn file, a newer format version, or weights that disagree
            with the stored spec.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no unirnn file at {str(path)!r}")
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT_NAME:
                raise ValueError(
                    f"{str(path)!r} is a safetensors file but not a unirnn file (its metadata "
                    f"has no format='unirnn'); expected a file written by unirnn.save"
                )
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}
    except SafetensorError as err:
        raise ValueError(
            f"{str(path)!r} is not a unirnn file: expected a .safetensors file written by "
            f"unirnn.save; could not read it ({err})"
        ) from None
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise ValueError(
            f"{str(path)!r}: format_version {metadata.get('format_version')!r} is not a number"
        ) from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has unirnn format version {version}; this unirnn reads up to "
            f"{FORMAT_VERSION}: upgrade unirnn"
        )
    if "spec" not in metadata:
        raise ValueError(f"{str(path)!r}: the unirnn metadata holds no spec")
    spec = Spec.from_json(metadata["spec"])
    return spec, check_weights(spec, arrays)


def read_file(path: Path, spec: Spec | None = None) -> tuple[Spec, Weights]:
    """:func:`load`, with the file's spec checked against a given one (``unirnn.port``)."""
    loaded, weights = load(path)
    return same_spec(spec, loaded, repr(str(path))), weights


def write_file(path: Path, spec: Spec, weights: Mapping[str, Any]) -> str:
    """:func:`save_file`; returns where the spec travels, in words."""
    save_file(path, spec, weights)
    return "the .safetensors metadata"
