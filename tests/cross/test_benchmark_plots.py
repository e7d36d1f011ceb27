"""benchmarks/plot.py as a user runs it: ``--quick`` writes valid PNGs of the documented size
and the data behind them; without matplotlib it says what to install; the benchmarks print
no profiler lines. No time is asserted: only that every ratio is a positive number."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import REQUIRED

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
CELL = "gru gelu z"  # unirnn's custom path in every framework; one cell keeps the run short
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROFILER_NOISE = ("USDT:", "STAGE:", "profiler_start", "profiler_stop")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _need(*names: str) -> None:
    """Skip unless every package is installed (fail when the run requires it)."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            if name in REQUIRED:
                pytest.fail(f"{name} is required in this run (UNIRNN_REQUIRE) but missing")
            pytest.skip(f"{name} is not installed")


def _run(args: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=environment, cwd=ROOT, timeout=timeout, check=False)


def test_quick_plots_are_valid_pngs_with_their_data(tmp_path):
    _need("torch", "keras", "tensorflow", "jax", "flax")
    pytest.importorskip("matplotlib")  # the optional extra unirnn[plot]
    import matplotlib.image

    plot, sweep = _load("plot"), _load("sweep")
    result = _run([str(BENCHMARKS / "plot.py"), "--quick", "--threads", "1",
                   "--cells", CELL, "--out", str(tmp_path)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for noise in PROFILER_NOISE:
        assert noise not in result.stdout + result.stderr

    width, height = (round(v * plot.DPI) for v in plot.FIGSIZE)
    data = json.loads((tmp_path / plot.DATA_FILE).read_text())
    assert set(data["reports"]) == set(plot.FRAMEWORKS)
    points = sweep.points(sweep.SWEEPS["quick"])
    assert len(points) == 4  # the base point and one more value on each of the three axes
    for framework in plot.FRAMEWORKS:
        path = tmp_path / plot.image_name(framework)
        assert path.read_bytes()[:8] == PNG_MAGIC, path
        assert matplotlib.image.imread(path).shape[:2] == (height, width)
        assert data["images"][path.name] == {"framework": framework, "width": width,
                                             "height": height}
        report = data["reports"][framework]
        rows = report["rows"]
        assert [(row["N"], row["T"], row["H"]) for row in rows] == [
            (p["N"], p["T"], p["H"]) for p in points]
        for row in rows:
            assert row["framework"] == framework and row["cell"] == CELL
            assert row["family"] == "gru" and row["I"] == row["H"]
            assert row["kernel"].startswith("unirnn"), row  # no framework computes a GELU z
            for mode in plot.MODES:
                assert math.isfinite(row[mode]) and row[mode] > 0, row
                assert set(row["ms"][mode]) == {"unirnn", "native"}
        assert report["machine"]["threads"] == 1
    assert "| torch | gru gelu z | unirnn.torch-loop | nn.GRU |" in result.stdout


def test_plot_without_matplotlib_says_what_to_install(tmp_path):
    out = tmp_path / "never"
    code = ("import runpy, sys; sys.modules['matplotlib'] = None; "  # import fails
            f"sys.argv = ['plot.py', '--out', {str(out)!r}]; "
            f"runpy.run_path({str(BENCHMARKS / 'plot.py')!r}, run_name='__main__')")
    result = _run(["-c", code], timeout=60)
    assert result.returncode != 0
    assert 'pip install "unirnn[plot]"' in result.stderr
    assert not out.exists()  # refused before measuring anything


def test_bench_torch_memory_measurement_prints_no_profiler_lines(tmp_path):
    _need("torch")
    result = _run([str(BENCHMARKS / "bench_torch.py"), "--sizes", "2,3,8", "--rounds", "1",
                   "--json", str(tmp_path / "bench_torch.json")], OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "peak mem ratio" in result.stdout  # the profiler did run
    for noise in PROFILER_NOISE:
        assert noise not in result.stdout + result.stderr
