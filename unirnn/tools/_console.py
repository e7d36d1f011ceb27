"""What the ``unirnn`` commands put on the terminal besides their results.

Two things, both for the commands only (importing unirnn changes nothing):

- The frameworks' start-up messages stay off the terminal. TensorFlow (2.21 measured)
  logs "oneDNN custom operations are on" and "All log messages before
  absl::InitializeLog()" through absl before it reads ``TF_CPP_MIN_LOG_LEVEL``, so that
  variable alone does not silence them: while ``tensorflow`` or ``jax`` is being
  imported, file descriptor 2 is read into a buffer and every line but the known
  start-up messages is written back.
  ``TF_CPP_MIN_LOG_LEVEL`` is set to 3 unless the user set it (a user's 0 shows
  everything: nothing is filtered); JAX's "no GPU/TPU found, falling back to CPU" and
  absl's Python warnings are kept below ERROR unless the user set ``JAX_LOGGING_LEVEL``
  or configured the logger.
- A long command says what it is doing on one line of stderr, rewritten in place, when
  stderr is a terminal (:class:`StatusLine`); in a pipe or a test it writes nothing.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import shutil
import sys
import tempfile
import types
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

__all__ = ["StatusLine", "is_startup_noise", "quiet_frameworks"]

TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
NOISY_IMPORTS = ("tensorflow", "jax", "jaxlib")
"""Top-level packages whose import writes start-up lines straight to file descriptor 2."""

_ABSL_HEADER = re.compile(
    # absl / glog: "I0000 00:00:1796235441.358654    3873 port.cc:153] ..."
    # (before absl is initialised the "seconds" are the whole Unix time)
    r"^(?P<severity>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] "
    # TensorFlow before 2.17: "2024-01-11 05:40:05.061907: I tensorflow/.../x.cc:182] ..."
    r"|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<old_severity>[IWEF]) [\w./-]+:\d+\] "
)
_NOISE = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR"
    r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate"
    r"|^TF-TRT Warning: "
)
_KNOWN_ERRORS = re.compile(
    # printed at import by GPU builds of TensorFlow and JAX whether or not anything is wrong
    r"Unable to register cu(DNN|FFT|BLAS) factory|failed call to cuInit"
    r"|computation placer already registered|Could not find cuda drivers"
)
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def is_startup_noise(line: str, level: int | None = None) -> bool:
    """Whether ``line`` is a framework start-up message that a user did not ask to see.

    ``level`` is the user's own ``TF_CPP_MIN_LOG_LEVEL`` (None when unset): with it, a
    log line below that level is noise (0 keeps everything); without it, information
    and warnings are, and errors only when they are the known import-time ones.
    Fatal lines are never noise.
    """
    if level is not None and level <= 0:
        return False
    if _NOISE.search(line):
        return True
    header = _ABSL_HEADER.match(line)
    if header is None:
        return False
    severity = _SEVERITY[header.group("severity") or header.group("old_severity")]
    if severity >= _SEVERITY["F"]:
        return False
    if level is not None:
        return severity < level
    return severity < _SEVERITY["E"] or bool(_KNOWN_ERRORS.search(line))


def _user_level() -> int | None:
    text = os.environ.get(TF_LOG_LEVEL)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


@contextlib.contextmanager
def _stderr_filtered(noise: Callable[[str], bool]) -> Iterator[None]:
    """Collect what is written to file descriptor 2 (C++ logging included), then write
    back every line that is not ``noise``. Without a file descriptor 2, does nothing."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    _flush()
    buffer = tempfile.TemporaryFile()
    os.dup2(buffer.fileno(), 2)
    try:
        yield
    finally:
        _flush()
        os.dup2(saved, 2)
        os.close(saved)
        buffer.seek(0)
        text = buffer.read().decode("utf-8", errors="replace")
        buffer.close()
        kept = [line for line in text.splitlines(keepends=True) if not noise(line)]
        if kept:
            os.write(2, "".join(kept).encode("utf-8", errors="replace"))


def _flush() -> None:
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


class _QuietLoader(importlib.abc.Loader):
    """The real loader of a noisy package, its module run with stderr filtered."""

    def __init__(self, loader: Any, noise: Callable[[str], bool]) -> None:
        self._loader = loader
        self._noise = noise

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: types.ModuleType) -> None:
        try:
            with _stderr_filtered(self._noise):
                self._loader.exec_module(module)
        finally:
            # the module keeps the loader it would have had: nothing else sees this one
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader

    def __getattr__(self, name: str) -> Any:
        if name == "_loader":  # not set yet (a copy): no recursion
            raise AttributeError(name)
        return getattr(self._loader, name)


class _QuietImports(importlib.abc.MetaPathFinder):
    """Finds the noisy top-level packages through the other finders and wraps their
    loader in :class:`_QuietLoader`; every other import is left to the other finders."""

    def __init__(self, names: Sequence[str], noise: Callable[[str], bool]) -> None:
        self._names = frozenset(names)
        self._noise = noise
        self._finding = False

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: types.ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._names or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _QuietLoader(spec.loader, self._noise)
        return spec


QUIET_LOGGERS = {
    "absl": None,  # Keras' and TensorFlow's Python warnings through absl.logging
    "jax._src.xla_bridge": "JAX_LOGGING_LEVEL",  # "... falling back to cpu"
}
"""Python loggers kept at ERROR during a command, with the variable that, when set,
leaves the logger to the user. A logger whose level the user set is left alone too."""


@contextlib.contextmanager
def quiet_frameworks() -> Iterator[None]:
    """Keep the frameworks' start-up messages off stderr while the block runs.

    The environment, loggers and import system are put back as they were on exit; the
    frameworks imported meanwhile stay imported.
    """
    level = _user_level()
    set_here = TF_LOG_LEVEL not in os.environ
    os.environ.setdefault(TF_LOG_LEVEL, "3")
    quieted = []
    if level is None or level > 0:
        for name, variable in QUIET_LOGGERS.items():
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET and not (variable and variable in os.environ):
                logger.setLevel(logging.ERROR)
                quieted.append(logger)
    finder = _QuietImports(NOISY_IMPORTS, lambda line: is_startup_noise(line, level))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        for logger in quieted:
            logger.setLevel(logging.NOTSET)
        if set_here:
            os.environ.pop(TF_LOG_LEVEL, None)


def _is_terminal(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


class StatusLine:
    """One line of stderr that says what a long command is doing, rewritten in place.

    Silent unless the stream is a terminal, so pipes, files and tests see nothing. Only
    carriage returns and spaces are written (no escape codes: a dumb terminal shows it
    too), and the text is cut to the terminal's width so it never wraps. Use it as a
    context manager: the line is wiped on the way out, before the results are printed.

    >>> with StatusLine() as status:
    ...     status.show("checking torch (2/5)...")  # nothing when stderr is not a terminal
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = sys.stderr if stream is None else stream
        self.active = _is_terminal(self._stream)
        self._width = 0

    def show(self, text: str) -> None:
        """Replace the line with ``text``."""
        if not self.active:
            return
        text = text[: max(10, self._columns() - 1)]
        self._write("\r" + text.ljust(self._width))
        self._width = len(text)

    def progress(self, step: int, total: int, what: str) -> None:
        """``what (step/total)...``: the callback ``unirnn check`` reports to."""
        self.show(f"{what} ({step}/{total})...")

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return columns if columns > 0 else shutil.get_terminal_size().columns

    def clear(self) -> None:
        """Wipe the line (what :meth:`show` wrote), leaving the cursor at its start."""
        if self.active and self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            self.active = False  # the terminal went away: the status is not worth a crash

    def __enter__(self) -> StatusLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()
