"""The command line: unirnn info, unirnn demo, --help, as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import pytest

import unirnn
from unirnn.cli import main


def test_info(tmp_path, capsys):
    spec = unirnn.lstm(3, 4, proj_size=2)
    path = tmp_path / "m.safetensors"
    unirnn.save(path, spec, unirnn.init_weights(spec))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "lstm 3->4" in out and "proj_size=2" in out
    assert "layer0.forward.w_r" in out and "(2, 4)" in out


def test_info_on_bad_file(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"nope")
    assert main(["info", str(bad)]) == 2
    assert "is not a unirnn file" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--help"], ["info", "--help"], ["demo", "--help"]],
                         ids=["top", "info", "demo"])
def test_help(args):
    result = subprocess.run([sys.executable, "-m", "unirnn", *args], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0
    assert "usage: unirnn" in result.stdout
