"""One portable file: the spec and canonical weights in a single ``.safetensors`` file.

The weights are stored under their canonical names; the metadata holds
``format = "unirnn"``, ``format_version`` and ``spec`` (the spec's JSON). Files are
staged beside the target and renamed into place (:func:`write_atomic`, :func:`publish`),
so a crash never leaves a half-written file under the target's name, a replaced file keeps
its permission bits, and a file that must not be replaced cannot be, even by a concurrent
writer.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from ._errors import FileFormatError, SpecError, WeightsError
from ._extras import installed
from ._spec import Spec, same_spec
from ._weights import Weights, check_weights, weight_shapes

__all__ = [
    "FORMAT_VERSION",
    "destination",
    "load",
    "publish",
    "read_file",
    "save_file",
    "staging",
    "write_atomic",
    "write_file",
]

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


_STAGING = ".unirnn-staging-"
"""Staging folders are named ``.{destination name}.unirnn-staging-{pid}-{random}``."""


def destination(path: str | os.PathLike[str]) -> Path:
    """Where writing ``path`` lands: a symlink's target (the link itself is kept).

    Raises:
        IsADirectoryError: ``path`` is a directory; the message names it.
        FileNotFoundError: its folder does not exist.
    """
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise IsADirectoryError(f"{os.fspath(path)!r} is a directory; expected a file name")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{os.fspath(path)!r}: no folder {str(target.parent)!r} "
                                "to write it in")
    return target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def _remove_stale_staging(target: Path) -> None:
    """Remove staging left beside ``target`` by runs that were killed (their pid is gone)."""
    for folder in target.parent.glob(f".{glob.escape(target.name)}{_STAGING}*"):
        pid_text = folder.name[len(f".{target.name}{_STAGING}"):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text)):
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A private folder beside ``target`` (same file system, so publishing is a rename),
    removed with all it holds when the block ends, however it ends; staging left by a
    killed run for the same destination is removed first."""
    _remove_stale_staging(target)
    folder = tempfile.mkdtemp(prefix=f".{target.name}{_STAGING}{os.getpid()}-",
                              dir=target.parent)
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish(staged: Path, target: Path, *, overwrite: bool, shown_as: str | None = None
            ) -> None:
    """Move the finished file ``staged`` to ``target`` (from :func:`destination`).

    ``overwrite=False`` cannot replace a file, even one that appears meanwhile: the
    file is hard-linked into place, which fails if the name exists (an exclusive create
    and a copy where the file system has no hard links). ``overwrite=True`` replaces it
    atomically and keeps the replaced file's permission bits. A new file gets the
    permissions ``open(path, "wb")`` would give it (``0o666`` less the umask).

    Raises:
        FileExistsError: ``target`` exists and ``overwrite`` is False.
    """
    shown = shown_as if shown_as is not None else str(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode) if overwrite else None
    except FileNotFoundError:
        mode = None
    os.chmod(staged, 0o666 & ~_umask() if mode is None else mode)
    if overwrite:
        os.replace(staged, target)
        return
    exists = FileExistsError(f"{shown!r} exists; pass --force (or overwrite=True) to "
                             "overwrite it")
    try:
        os.link(staged, target)
    except FileExistsError:
        raise exists from None
    except OSError:  # no hard links here: an exclusive create, then the bytes
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            raise exists from None
        with os.fdopen(fd, "wb") as out, open(staged, "rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
    staged.unlink()


def write_atomic(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
                 ) -> None:
    """Write ``data`` to ``path`` through a staged file and an atomic rename.

    A symlink is written through to its target; a replaced file keeps its permission
    bits; ``overwrite=False`` refuses to replace a file (see :func:`publish`).
    """
    target = destination(path)
    with staging(target) as folder:
        staged = folder / target.name
        with open(staged, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        publish(staged, target, overwrite=overwrite, shown_as=os.fspath(path))


def save_file(path: str | os.PathLike[str], spec: Spec, weights: Mapping[str, Any], *,
              overwrite: bool = True) -> None:
    """Save ``spec`` and ``weights`` to one ``.safetensors`` file at ``path``.

    The weights are checked against the spec first; nothing is written if they disagree.
    The file is staged and renamed into place (:func:`write_atomic`): a replaced file
    keeps its permission bits, a symlink is written through, and ``overwrite=False``
    refuses to replace an existing file (``FileExistsError``), even one that appears while
    writing.

    Example:
        >>> import os, tempfile, unirnn
        >>> spec = unirnn.lstm(3, 4)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> unirnn.save(path, spec, unirnn.init_weights(spec))
        >>> unirnn.load(path)[0] == spec
        True
    """
    if not isinstance(spec, Spec):
        raise FileFormatError(f"save: expected a unirnn.Spec; received {type(spec).__name__}")
    checked = check_weights(spec, weights)
    tensors = {name: np.ascontiguousarray(array) for name, array in checked.items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "spec": spec.to_json(),
    }
    write_atomic(path, save(tensors, metadata=metadata), overwrite=overwrite)


_FLOAT_TYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16"}
"""safetensors dtype codes unirnn reads (bfloat16 is widened to float32, exactly)."""


def _bfloat16_tensor(path: Path, name: str) -> np.ndarray:
    """A bfloat16 tensor widened to float32 (exact: every bfloat16 is a float32), read
    through torch, which decodes it; numpy has no bfloat16."""
    if not installed("torch"):
        raise FileFormatError(
            f"{str(path)!r}: tensor {name!r} is bfloat16, which numpy cannot hold; install "
            "torch (pip install 'unirnn[torch]') to read it, widened exactly to float32"
        )
    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor(name).float().numpy()  # type: ignore[no-any-return]


def load(path: str | os.PathLike[str]) -> tuple[Spec, Weights]:
    """Read ``(spec, weights)`` from a file written by :func:`unirnn.save`.

    The header (metadata, tensor names, dtypes and shapes) is checked against the spec
    before any tensor data is read. bfloat16 tensors are widened exactly to float32
    (through torch).

    Raises:
        FileNotFoundError: no such file.
        FileFormatError: not a unirnn file, a format version this unirnn does not read,
            a spec that does not parse, or tensors that disagree with the stored spec.
    """
    path = Path(path)
    shown = repr(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"no unirnn file at {shown}")
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT_NAME:
                raise FileFormatError(
                    f"{shown} is a safetensors file but not a unirnn file (its metadata "
                    f"has no format='unirnn'); expected a file written by unirnn.save"
                )
            spec = _header_spec(shown, metadata)
            expected = weight_shapes(spec)
            header = {name: handle.get_slice(name) for name in handle.keys()}
            for name, tensor in header.items():
                code = tensor.get_dtype()
                shape = tuple(tensor.get_shape())
                if name in expected and shape != expected[name]:
                    raise FileFormatError(f"{shown}: tensor {name!r} has shape {shape}; the "
                                          f"file's spec expects {expected[name]}")
                if code not in _FLOAT_TYPES:
                    raise FileFormatError(
                        f"{shown}: tensor {name!r} has dtype {code}; expected one of "
                        f"{', '.join(_FLOAT_TYPES)} (floating point)")
            unknown = sorted(set(header) - set(expected))
            if unknown:
                raise FileFormatError(f"{shown}: tensor {unknown[0]!r} does not belong to the "
                                      f"file's spec ({spec.describe()})")
            arrays = {name: _bfloat16_tensor(path, name) if tensor.get_dtype() == "BF16"
                      else handle.get_tensor(name) for name, tensor in header.items()}
    except SafetensorError as err:
        raise FileFormatError(
            f"{shown} is not a unirnn file: expected a .safetensors file written by "
            f"unirnn.save; could not read it ({err})"
        ) from None
    try:
        return spec, check_weights(spec, arrays)
    except WeightsError as err:
        raise FileFormatError(f"{shown}: {err}") from None


def _header_spec(shown: str, metadata: Mapping[str, str]) -> Spec:
    """The spec of a unirnn file's metadata, after checking its format version."""
    text = metadata.get("format_version", "")
    if not text.isdigit() or not 1 <= int(text) <= FORMAT_VERSION:
        newer = text.isdigit() and int(text) > FORMAT_VERSION
        raise FileFormatError(
            f"{shown} has unirnn format_version {text!r}; this unirnn reads versions 1 to "
            f"{FORMAT_VERSION}" + (": upgrade unirnn" if newer else "")
        )
    if "spec" not in metadata:
        raise FileFormatError(f"{shown}: the unirnn metadata holds no spec")
    try:
        return Spec.from_json(metadata["spec"])
    except SpecError as err:
        raise FileFormatError(f"{shown}: the spec in its metadata is not valid: {err}") from None


def read_file(path: Path, spec: Spec | None = None) -> tuple[Spec, Weights]:
    """:func:`load`, with the file's spec checked against a given one (``unirnn.port``)."""
    loaded, weights = load(path)
    return same_spec(spec, loaded, repr(str(path))), weights


def write_file(path: Path, spec: Spec, weights: Mapping[str, Any]) -> str:
    """:func:`save_file`; returns where the spec travels, in words."""
    save_file(path, spec, weights)
    return "the .safetensors metadata"
