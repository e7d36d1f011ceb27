"""What the commands write besides their results (unirnn.tools._console): the frameworks'
start-up lines filtered out, a status line only on a terminal. Runs with or without
frameworks; tests/cross/test_cli_quiet.py runs the commands with every framework."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import tempfile

import pytest

import unirnn
from unirnn.tools import _console
from unirnn.tools._console import StatusLine, is_startup_noise, quiet_frameworks

TF_ONEDNN = ("I0000 00:00:1796235441.358654    3873 port.cc:153] oneDNN custom operations are "
             "on. You may see slightly different numerical results due to floating-point "
             "round-off errors from different computation orders.\n")
ABSL_PREAMBLE = ("WARNING: All log messages before absl::InitializeLog() is called are written "
                 "to STDERR\n")
CUDNN = ("E0000 00:00:1700000000.123456    4242 cuda_dnn.cc:8310] Unable to register cuDNN "
         "factory: Attempting to register factory for plugin cuDNN when one has already been "
         "registered\n")
OLD_TF = ("2024-01-11 05:40:05.061907: I tensorflow/core/platform/cpu_feature_guard.cc:182] "
          "This TensorFlow binary is optimized to use available CPU instructions.\n")
CONTINUATION = ("To enable the following instructions: AVX2 FMA, in other operations, rebuild "
                "TensorFlow with the appropriate compiler flags.\n")
OTHER_ERROR = "E0000 00:00:1700000000.123456    4242 foo.cc:1] a real failure\n"
FATAL = "F0000 00:00:1700000000.123456    4242 foo.cc:1] Check failed: x\n"


@pytest.mark.parametrize("line", [TF_ONEDNN, ABSL_PREAMBLE, CUDNN, OLD_TF, CONTINUATION],
                         ids=["onednn", "absl-preamble", "cudnn", "tf-2.16", "continuation"])
def test_start_up_lines_are_noise(line):
    assert is_startup_noise(line)


@pytest.mark.parametrize("line", [OTHER_ERROR, FATAL, "Traceback (most recent call last):\n",
                                  "unirnn check: error: x\n", "UserWarning: something\n"],
                         ids=["error", "fatal", "traceback", "unirnn", "warning"])
def test_other_lines_are_kept(line):
    assert not is_startup_noise(line)


def test_a_users_level_decides():
    assert not is_startup_noise(TF_ONEDNN, level=0)  # 0: show everything
    assert not is_startup_noise(ABSL_PREAMBLE, level=0)
    assert is_startup_noise(TF_ONEDNN, level=1)
    assert not is_startup_noise(OTHER_ERROR, level=2)
    assert is_startup_noise(OTHER_ERROR, level=3)
    assert not is_startup_noise(FATAL, level=3)


def test_a_noisy_import_is_filtered_and_the_rest_kept(tmp_path, monkeypatch, capfd):
    package = tmp_path / "unirnn_noisy_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os\n"
        f"os.write(2, {(ABSL_PREAMBLE + TF_ONEDNN).encode()!r})\n"
        "os.write(2, b'kept: a line the user should see\\n')\n"
        "VALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_console, "NOISY_IMPORTS", ("unirnn_noisy_pkg",))
    monkeypatch.delitem(sys.modules, "unirnn_noisy_pkg", raising=False)
    with quiet_frameworks():
        import unirnn_noisy_pkg
    assert unirnn_noisy_pkg.VALUE == 42
    assert type(unirnn_noisy_pkg.__loader__).__name__ == "SourceFileLoader"
    err = capfd.readouterr().err
    assert err == "kept: a line the user should see\n"


@pytest.fixture
def loggers():
    """The loggers quiet_frameworks touches, their levels put back afterwards."""
    found = {name: logging.getLogger(name) for name in _console.QUIET_LOGGERS}
    levels = {name: logger.level for name, logger in found.items()}
    yield found
    for name, logger in found.items():
        logger.setLevel(levels[name])


def test_quiet_frameworks_puts_everything_back(monkeypatch, loggers):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("JAX_LOGGING_LEVEL", raising=False)
    absl = loggers["absl"]
    absl.setLevel(logging.NOTSET)
    finders = list(sys.meta_path)
    with quiet_frameworks():
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
        assert absl.level == logging.ERROR
        assert len(sys.meta_path) == len(finders) + 1
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert absl.level == logging.NOTSET
    assert sys.meta_path == finders


def test_a_users_settings_win(monkeypatch, loggers):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    monkeypatch.setenv("JAX_LOGGING_LEVEL", "WARNING")
    jax_logger, absl = loggers["jax._src.xla_bridge"], loggers["absl"]
    jax_logger.setLevel(logging.NOTSET)
    absl.setLevel(logging.INFO)  # a level the user configured
    with quiet_frameworks():
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
        assert jax_logger.level == logging.NOTSET
        assert absl.level == logging.INFO
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_is_silent_off_a_terminal():
    stream = io.StringIO()
    with StatusLine(stream) as status:
        assert not status.active
        status.progress(1, 3, "checking numpy (cpu) on x")
    assert stream.getvalue() == ""


def test_status_line_rewrites_one_line_and_wipes_it():
    stream = _Terminal()
    with StatusLine(stream) as status:
        status.progress(1, 2, "checking torch (cpu) on a long case name")
        status.progress(2, 2, "short")
    written = stream.getvalue()
    assert "\n" not in written and "\x1b" not in written
    first = "checking torch (cpu) on a long case name (1/2)..."
    assert written.startswith("\r" + first)
    assert "\rshort (2/2)..." + " " * (len(first) - len("short (2/2)...")) in written
    assert written.endswith("\r" + " " * len("short (2/2)...") + "\r")


def _spec_file(tmp_path):
    path = tmp_path / "rnn.json"
    path.write_text(unirnn.rnn(2, 3).to_json())
    return path


CHECK = ["check", "--no-keras", "--no-grad", "--dtypes", "float64"]


def test_check_writes_nothing_to_stderr_in_a_pipe(tmp_path):
    result = subprocess.run([sys.executable, "-m", "unirnn", *CHECK, str(_spec_file(tmp_path))],
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert "\r" not in result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_check_shows_progress_on_a_terminal(tmp_path):
    import pty

    master, slave = pty.openpty()
    with tempfile.TemporaryFile() as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "unirnn", *CHECK, str(_spec_file(tmp_path))],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=slave,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        assert process.wait(timeout=300) == 0
        stdout.seek(0)
        out = stdout.read().decode()
    err = b"".join(chunks).decode()
    assert "\rfloat64 reference of rnn.json (1/" in err, repr(err)
    assert "\rchecking numpy (cpu) on rnn.json (2/" in err, repr(err)
    total = err.split("(1/", 1)[1].split(")", 1)[0]
    assert f"({total}/{total})..." in err, repr(err)
    assert "\n" not in err and err.endswith(" \r")  # the line is wiped before the table
    assert "rnn.json  numpy" in out and "\r" not in out
