"""The command line: unirnn info, unirnn demo, --help, as a user runs them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import unirnn
from unirnn.tools.cli import main


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


HELP = {
    "top": (["--help"], ["{info,demo,check,convert}"]),
    "info": (["info", "--help"], ["usage: unirnn info", "file"]),
    "demo": (["demo", "--help"], ["usage: unirnn demo"]),
    "check": (["check", "--help"], ["usage: unirnn check", "--dtypes", "--no-keras",
                                    "--no-grad"]),
    "convert": (["convert", "--help"], ["usage: unirnn convert", "--spec", "--to",
                                        "--force", "--cell"]),
}


@pytest.mark.parametrize("name", list(HELP))
def test_help(name):
    args, expected = HELP[name]
    result = subprocess.run([sys.executable, "-m", "unirnn", *args], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0
    assert "usage: unirnn" in result.stdout
    for text in expected:
        assert text in result.stdout, text


def _console_script() -> str:
    script = Path(sys.executable).with_name("unirnn")
    found = str(script) if script.exists() else shutil.which("unirnn")
    assert found, "the unirnn console script is not installed (pip install .)"
    return found


def test_console_script(tmp_path):
    result = subprocess.run([_console_script(), "--help"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: unirnn ")
    assert "convert" in result.stdout and "check" in result.stdout
    version = subprocess.run([_console_script(), "--version"], capture_output=True, text=True,
                             check=False)
    assert version.stdout.strip() == f"unirnn {unirnn.__version__}"
    spec = unirnn.gru(2, 3)
    unirnn.save(tmp_path / "m.safetensors", spec, unirnn.init_weights(spec))
    info = subprocess.run([_console_script(), "info", str(tmp_path / "m.safetensors")],
                          capture_output=True, text=True, check=False)
    assert info.returncode == 0 and "gru 2->3" in info.stdout


@pytest.mark.parametrize("dtypes", ["float16", "float64,bfloat16", ""],
                         ids=["float16", "one-bad", "empty"])
def test_check_dtypes_are_validated(dtypes, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--dtypes", dtypes, "--no-keras"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --dtypes: expected a comma-separated list of float64, float32; " \
           f"received {dtypes!r}" in err


def test_check_spec_json_with_a_bad_format_field(tmp_path, capsys):
    path = tmp_path / "spec.json"
    path.write_text('{"format": "1", "family": "gru", "input_size": 3, "hidden_size": 4}')
    assert main(["check", str(path), "--no-keras", "--no-grad"]) == 2
    err = capsys.readouterr().err
    assert f"spec file {str(path)!r}: spec: the format field must be an integer" in err


def test_check_spec_json_numpy_only(tmp_path, capsys):
    """With --no-keras the numpy rows run on any install (other backends where present)."""
    path = tmp_path / "spec.json"
    path.write_text(unirnn.gru(2, 3, reset="before").to_json())
    assert main(["check", str(path), "--no-keras", "--dtypes", "float64"]) == 0
    out = capsys.readouterr().out
    row = re.search(r"^spec\.json\s+numpy\s+cpu\s+float64\s+numpy-loop\s+(\S+)\s+(\S+)"
                    r"\s+(\S+)\s+ok$", out, flags=re.M)
    assert row, out
    # the reference itself: zero error, and no gradients of its own ("-")
    assert (float(row.group(1)), float(row.group(2)), row.group(3)) == (0.0, 0.0, "-")


def test_import_registers_a_family_before_reading(tmp_path, capsys, monkeypatch):
    """``--import`` runs the user's definitions (a module on the working directory, or a
    .py file) first, so a file naming a user family reads; without it, the error names
    the family and says how."""
    (tmp_path / "cli_cells.py").write_text(
        "import unirnn\nfrom unirnn._cells import RNNCell\n"
        "unirnn.register_family('cli_rnn', gates=('h',), activations={'h': 'tanh'}, "
        "cell=RNNCell, overwrite=True)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import cli_cells  # noqa: F401

    spec = unirnn.Spec("cli_rnn", 2, 3)
    unirnn.save(tmp_path / "m.safetensors", spec, unirnn.init_weights(spec))
    from unirnn import _families

    del _families._REGISTRY["cli_rnn"]
    del sys.modules["cli_cells"]
    assert main(["info", "m.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "'cli_rnn' is not registered" in err and "--import" in err
    assert main(["info", "m.safetensors", "--import", "cli_cells"]) == 0
    assert "cli_rnn 2->3" in capsys.readouterr().out
    del _families._REGISTRY["cli_rnn"]
    assert main(["info", "m.safetensors", "--import", str(tmp_path / "cli_cells.py")]) == 0
    assert main(["info", "m.safetensors", "--import", "no_such_module_here"]) == 2
    assert "--import no_such_module_here" in capsys.readouterr().err
    assert main(["info", "m.safetensors", "--import", "missing.py"]) == 2
    assert "--import missing.py: no such Python file" in capsys.readouterr().err
