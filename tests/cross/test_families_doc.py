"""docs/families.md as written: the family defined in its first block, used in all three
frameworks by the second, saved, loaded, and checked by ``unirnn check --import``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from support import framework

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "families.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_page_defines_a_family_in_about_20_lines():
    lines = [ln for ln in BLOCKS[0].splitlines() if ln.strip()]
    assert len(lines) <= 25, len(lines)


def test_families_page_runs_and_checks(tmp_path, monkeypatch):
    for name in ("torch", "jax", "flax", "keras"):
        framework(name)
    (tmp_path / "leaky_cells.py").write_text(BLOCKS[0])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    exec(compile(BLOCKS[1], str(PAGE), "exec"), {})
    assert (tmp_path / "leaky.safetensors").exists()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "unirnn", "check", "leaky.safetensors", "--import",
         "leaky_cells", "--dtypes", "float64"],
        cwd=tmp_path, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [ln for ln in done.stdout.splitlines() if "leaky.safetensors" in ln]
    backends = " ".join(rows)
    for backend in ("torch", "flax", "keras", "onnx"):
        assert backend in backends, done.stdout


def test_a_file_of_an_unregistered_family_names_it(tmp_path):
    (tmp_path / "leaky_cells.py").write_text(BLOCKS[0])
    code = ("import sys; sys.path.insert(0, '.'); import leaky_cells, unirnn; "
            "s = unirnn.Spec('leaky_rnn', 2, 3); "
            "unirnn.save('f.safetensors', s, unirnn.init_weights(s))")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    done = subprocess.run([sys.executable, "-m", "unirnn", "info", "f.safetensors"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "'leaky_rnn' is not registered" in done.stderr
    assert "--import" in done.stderr or "register_family" in done.stderr
