"""Every example script in examples/ runs with ``--quick`` as a user runs it: in a fresh
process, from another directory, with Keras on TensorFlow. Each example asserts its own
equivalences (torch against Keras and Flax) and exits non-zero when one fails; this test
checks the exit code and, for the examples it knows, the lines that report the checks.

Scripts whose name starts with ``_`` are helpers, not examples. A new example is picked up
by the glob; add its key output lines to ``EXPECTED_LINES``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = sorted(p for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))

TIMEOUT_S = 300
"""A generous bound per example: a hung script fails instead of blocking the suite."""

EXPECTED_LINES: dict[str, list[str]] = {
    "char_lm.py": [
        r"^final perplexity: unirnn d2l GRU [\d.]+, nn\.GRU [\d.]+, scratch loop [\d.]+$",
        r"^unirnn d2l GRU vs scratch loop .*: [+-]\d+\.\d+% \(within 1%\)$",
        r"tokens/s",
        r"^  speed ratio unirnn d2l GRU / scratch loop: [\d.]+x",
        r"^torch, flax and keras generated identical text$",
    ],
    "bigru_classifier.py": [
        r"^nn\.GRU +test accuracy +[\d.]+%",
        r"^unirnn GELU-update GRU +test accuracy +[\d.]+% .*kernel unirnn\.torch-loop\)$",
        r"^  keras max \|logits - torch logits\| = ",
        r"^  flax  max \|logits - torch logits\| = ",
        r"^keras and flax logits equal torch's \(atol 1e-5 x [\d.]+\)$",
    ],
}


def test_examples_are_found():
    names = {p.name for p in EXAMPLES}
    assert {"char_lm.py", "bigru_classifier.py"} <= names, names


def run_quick(script: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python script --quick`` in ``cwd``, as a user runs it."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "MPLBACKEND": "Agg"}
    try:
        return subprocess.run([sys.executable, str(script), "--quick"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        output = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
        pytest.fail(f"{script.name} --quick did not finish within {TIMEOUT_S} s; "
                    f"its output so far:\n{output}")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory):
    """Each example's ``--quick`` run, once per module (later tests read its output)."""
    runs: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(script: Path) -> subprocess.CompletedProcess[str]:
        if script.name not in runs:
            runs[script.name] = run_quick(script, tmp_path_factory.mktemp(script.stem))
        return runs[script.name]
    return run


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_quick_run(script: Path, quick_run):
    result = quick_run(script)
    assert result.returncode == 0, (
        f"{script.name} --quick exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
    for pattern in EXPECTED_LINES.get(script.name, []):
        assert re.search(pattern, result.stdout, re.MULTILINE), (
            f"{script.name}: no output line matches {pattern!r}\nstdout:\n{result.stdout}")


def test_char_lm_prints_three_identical_samples(quick_run):
    """The greedy samples of torch, Flax and Keras are printed, and are one string that
    starts with the prefix."""
    result = quick_run(EXAMPLES_DIR / "char_lm.py")
    assert result.returncode == 0, result.stderr[-3000:]
    samples = dict(re.findall(r"^  (torch|flax|keras) +('.*')$", result.stdout, re.MULTILINE))
    assert set(samples) == {"torch", "flax", "keras"}, result.stdout
    assert len(set(samples.values())) == 1, samples
    prefix = re.search(r"greedy generation from '(.*?)' \(", result.stdout).group(1)
    assert samples["torch"].startswith("'" + prefix), (prefix, samples["torch"])
    assert len(samples["torch"]) > len(prefix) + 2  # something was generated


def test_bigru_logits_are_close(quick_run):
    """The printed differences of the Keras and Flax logits to torch's are finite and
    within 1e-5 of the logits' scale."""
    result = quick_run(EXAMPLES_DIR / "bigru_classifier.py")
    assert result.returncode == 0, result.stderr[-3000:]
    largest = float(re.search(r"largest \|logit\| (\S+):$", result.stdout, re.MULTILINE).group(1))
    diffs = re.findall(r"^  (keras|flax) +max \|logits - torch logits\| = (\S+)$",
                       result.stdout, re.MULTILINE)
    assert {name for name, _ in diffs} == {"keras", "flax"}, result.stdout
    assert all(float(value) <= 1e-5 * max(1.0, largest) for _, value in diffs), diffs
