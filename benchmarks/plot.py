"""PNG plots of unirnn's speed against each framework's own layers (data: benchmarks/sweep.py).

One figure per framework (torch, Keras, Flax): ``time(unirnn) / time(native layer)``, the
median over interleaved rounds, against batch size, hidden size and sequence length (the
other two held at the sweep's base point), forward on the top row and forward+backward on
the bottom row, one line per cell (standard LSTM and GRU, ReLU LSTM, GELU-update GRU,
d2l's reset-before GRU). Each framework is measured in its own process (``sweep.py``);
the merged data is written next to the images as ``speed.json``.

Regenerate the images of docs/benchmarks.md (a few minutes on 2 CPU cores)::

    python benchmarks/plot.py --out docs/images

Other uses::

    python benchmarks/plot.py --quick --out /tmp/plots    # tiny sizes, 2 rounds: a smoke run
    python benchmarks/plot.py --frameworks torch flax --cells "relu lstm" --out /tmp/plots
    python benchmarks/plot.py --from-json docs/images/speed.json --out /tmp/plots  # redraw

Needs matplotlib (``pip install "unirnn[plot]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
FRAMEWORKS = ("torch", "keras", "flax")
MODES = ("forward", "forward+backward")
AXES = ("N", "H", "T")
AXIS_LABELS = {"N": "batch size N", "H": "hidden size H (= input size I)",
               "T": "sequence length T"}
FRAMEWORK_TITLES = {"torch": "PyTorch", "keras": "Keras", "flax": "Flax (linen)"}
CELL_STYLES = {  # colour and marker per cell, the same in every figure
    "lstm (standard)": ("#7f7f7f", "o"),
    "gru (standard)": ("#bcbd22", "s"),
    "relu lstm": ("#d62728", "^"),
    "gru gelu z": ("#1f77b4", "D"),
    "d2l gru (reset before)": ("#2ca02c", "v"),
}
FIGSIZE = (12.0, 7.0)  # inches
DPI = 100  # so each image is 1200 x 700 pixels
DATA_FILE = "speed.json"
TICKS = (  # ratio axis ticks (log scale), from fine to coarse
    (0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 1.75, 2),
    (0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4),
    (0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10),
    (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000),
)


def image_name(framework: str) -> str:
    return f"speed_{framework}.png"


def require_matplotlib() -> Any:
    """matplotlib.pyplot on the Agg backend, or exit with how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit(
            "benchmarks/plot.py draws with matplotlib, which is not installed: "
            'pip install "unirnn[plot]" (or pip install matplotlib)') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def measure(framework: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run sweep.py for one framework in its own process; its report.

    The child's stdout (one line per measured row) is passed through; its stderr (the
    frameworks' start-up logs) is kept back and shown only if the child fails.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    if framework == "keras":
        env["KERAS_BACKEND"] = args.keras_backend
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, f"{framework}.json")
        command = [sys.executable, os.path.join(HERE, "sweep.py"), "--framework", framework,
                   "--json", out]
        if args.quick:
            command.append("--quick")
        if args.rounds is not None:
            command += ["--rounds", str(args.rounds)]
        if args.cells:
            command += ["--cells", *args.cells]
        if args.device:
            command += ["--device", args.device]
        if args.threads:
            command += ["--threads", str(args.threads)]
        result = subprocess.run(command, env=env, stdout=None, stderr=subprocess.PIPE,
                                text=True, check=False)
        if result.returncode != 0:
            sys.stderr.write(result.stderr[-6000:])
            raise SystemExit(f"sweep.py --framework {framework} failed "
                             f"(exit {result.returncode})")
        with open(out) as handle:
            return json.load(handle)


def _curve(rows: list[dict[str, Any]], cell: str, axis: str, base: dict[str, int],
           mode: str) -> tuple[list[int], list[float]]:
    held = [a for a in AXES if a != axis]
    picked = sorted((row[axis], row[mode]) for row in rows
                    if row["cell"] == cell and all(row[a] == base[a] for a in held))
    return [p[0] for p in picked], [p[1] for p in picked]


def draw(plt: Any, report: dict[str, Any], path: str) -> tuple[int, int]:
    """One framework's figure (2 modes x 3 axes) to ``path``; its size in pixels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    rows, sweep, machine = report["rows"], report["sweep"], report["machine"]
    base = sweep["base"]
    cells = list(dict.fromkeys(row["cell"] for row in rows))
    kernels = {row["cell"]: row["kernel"] for row in rows}
    natives = list(dict.fromkeys(row["native"] for row in rows))  # lstm first, as CELLS
    ratios = [row[mode] for row in rows for mode in MODES]
    low, high = min(min(ratios), 0.8) / 1.1, max(max(ratios), 1.25) * 1.1
    ticks: list[float] = []
    for candidates in TICKS:  # the finest set that puts at most 9 ticks in the range
        ticks = [t for t in candidates if low <= t <= high]
        if len(ticks) <= 9:
            break

    fig, grid = plt.subplots(2, 3, figsize=FIGSIZE, dpi=DPI, sharey=True, layout="constrained")
    for i, mode in enumerate(MODES):
        for j, axis in enumerate(AXES):
            ax = grid[i][j]
            ax.axhline(1.0, color="black", linewidth=1, linestyle="--", alpha=0.6)
            for cell in cells:
                xs, ys = _curve(rows, cell, axis, base, mode)
                color, marker = CELL_STYLES.get(cell, (None, "o"))
                ax.plot(xs, ys, marker=marker, color=color, linewidth=1.6, markersize=5,
                        label=f"{cell}  [{kernels[cell]}]")
            values = sweep["axes"][axis]
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(values))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_yscale("log")
            ax.set_ylim(low, high)
            ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.grid(True, which="major", alpha=0.3)
            others = ", ".join(f"{a}={base[a]}" for a in AXES if a != axis)
            ax.set_title(f"{mode}  ({others})", fontsize=10)
            if i == 1:
                ax.set_xlabel(AXIS_LABELS[axis])
            if j == 0:
                ax.set_ylabel(f"{mode}: unirnn / native")
    where = {"torch": f"torch {machine.get('torch')} on {machine.get('device')}",
             "keras": f"Keras {machine.get('keras')} on {machine.get('keras_backend')}",
             "flax": f"flax {machine.get('flax')} on {machine.get('device')}",
             }[report["framework"]]
    threads = sweep.get("threads") or machine.get("threads")
    threads_text = f"{threads} thread{'s' if threads != 1 else ''}" if threads else ""
    fig.suptitle(
        f"{FRAMEWORK_TITLES[report['framework']]}: time(unirnn) / time({' or '.join(natives)})"
        f"\nmedian of {sweep['rounds']} interleaved rounds x {sweep['repeat']} calls, "
        f"float32, {where}, {machine.get('cpu_count')} CPUs"
        f"{', ' + threads_text if threads_text else ''}; below 1x: unirnn is faster",
        fontsize=11)
    handles, labels = grid[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    width, height = (int(round(v)) for v in fig.get_size_inches() * DPI)
    plt.close(fig)
    return width, height


def table(data: dict[str, Any]) -> str:
    """A markdown table of the ratios at the base point (one row per framework and cell)."""
    lines = ["| framework | cell | kernel | native | forward | forward+backward |",
             "|---|---|---|---|---|---|"]
    for framework, report in data["reports"].items():
        base = report["sweep"]["base"]
        for row in report["rows"]:
            if all(row[a] == base[a] for a in AXES):
                lines.append(f"| {framework} | {row['cell']} | {row['kernel']} | "
                             f"{row['native']} | {row['forward']:.2f} | "
                             f"{row['forward+backward']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images", help="folder for the PNGs and JSON")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, 2 points per axis, 2 rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds per figure (default: the sweep's)")
    parser.add_argument("--cells", nargs="+", metavar="CELL",
                        help="a subset of the cells (names as in sweep.py's CELLS)")
    parser.add_argument("--keras-backend", default="tensorflow",
                        choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--device", help="torch device (default: cuda when available)")
    parser.add_argument("--threads", type=int,
                        help="threads per framework (default: the framework's, one per core)")
    parser.add_argument("--from-json", metavar="PATH",
                        help="redraw from a speed.json written before (no measuring)")
    args = parser.parse_args(argv)
    plt = require_matplotlib()  # before minutes of measuring

    if args.from_json:
        with open(args.from_json) as handle:
            data = json.load(handle)
    else:
        data = {"command": "python benchmarks/plot.py " + " ".join(
                    sys.argv[1:] if argv is None else argv),
                "reports": {}}
        for framework in args.frameworks:
            print(f"== {framework}", flush=True)
            data["reports"][framework] = measure(framework, args)
    os.makedirs(args.out, exist_ok=True)
    data["images"] = {}
    for framework, report in data["reports"].items():
        path = os.path.join(args.out, image_name(framework))
        width, height = draw(plt, report, path)
        data["images"][image_name(framework)] = {"framework": framework, "width": width,
                                                 "height": height}
        print(f"wrote {path} ({width}x{height})")
    data_path = os.path.join(args.out, DATA_FILE)
    with open(data_path, "w") as handle:
        json.dump(data, handle, indent=1)
    print(f"wrote {data_path}")
    print()
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
