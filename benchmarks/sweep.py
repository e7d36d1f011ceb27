"""Sweeps of unirnn's speed against each framework's own layer, the data behind the plots.

For one framework and each cell of ``CELLS``, unirnn's module and the framework's own layer
of the same family and size run in interleaved rounds (each round times both, the order
alternating between rounds); the figure is the median over rounds of
``time(unirnn) / time(native)``, for forward and for forward+backward. Three sweeps vary
one of batch size ``N``, hidden size ``H`` (input size ``I = H``) and sequence length ``T``
around a base point with the other two held at the base.

The native layers, as in benchmarks/bench_*.py:

- torch: ``nn.LSTM`` / ``nn.GRU`` (time-major, forward under ``torch.no_grad``);
- keras: ``keras.layers.LSTM`` / ``GRU`` with ``use_cudnn=False`` (bench_keras.py's baseline),
  run the way each Keras backend runs a training step (``tf.function`` on tensorflow);
- flax: ``nn.RNN(nn.OptimizedLSTMCell)`` / ``nn.RNN(nn.GRUCell)``, jitted.

``benchmarks/plot.py`` runs this script once per framework, each in its own process, and
draws the figures. By hand::

    python benchmarks/sweep.py --framework torch --json /tmp/sweep_torch.json
    python benchmarks/sweep.py --framework flax --quick
    KERAS_BACKEND=jax python benchmarks/sweep.py --framework keras
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import unirnn

FRAMEWORKS = ("torch", "keras", "flax")
MODES = ("forward", "forward+backward")

CELLS: dict[str, tuple[str, Callable[[int], unirnn.Spec]]] = {
    # the cells of benchmarks/bench_torch.py's CELLS, by the same names: name -> (family, spec)
    "lstm (standard)": ("lstm", lambda h: unirnn.lstm(h, h)),
    "gru (standard)": ("gru", lambda h: unirnn.gru(h, h)),
    "relu lstm": ("lstm", lambda h: unirnn.preset("relu_lstm", h, h)),
    "gru gelu z": ("gru", lambda h: unirnn.preset("gelu_update_gru", h, h)),
    "d2l gru (reset before)": ("gru", lambda h: unirnn.preset("d2l_gru", h, h)),
}

SWEEPS: dict[str, dict[str, Any]] = {
    # base point (N, T, H), the values of each swept axis, rounds and calls per round
    "default": {"base": {"N": 32, "T": 50, "H": 128},
                "axes": {"N": [8, 32, 128], "H": [64, 128, 256], "T": [25, 50, 100]},
                "rounds": 7, "repeat": 2},
    "quick": {"base": {"N": 4, "T": 8, "H": 16},
              "axes": {"N": [2, 4], "H": [8, 16], "T": [4, 8]},
              "rounds": 2, "repeat": 1},
}
AXIS_NAMES = {"N": "batch size N", "H": "hidden size H (= input size I)",
              "T": "sequence length T"}


def limit_threads(threads: int) -> None:
    """Run the frameworks on ``threads`` threads; call it before any framework is imported.

    On a shared machine a framework's default (one thread per core) can spend its time in
    barriers, waiting for threads that other processes keep off the cores. torch and
    TensorFlow take any count; XLA (Flax, Keras on jax) is only made single-threaded.
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                 "TF_NUM_INTEROP_THREADS"):
        os.environ[name] = str(threads)
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


def points(sweep: dict[str, Any]) -> list[dict[str, int]]:
    """The distinct (N, T, H) points of the three sweeps, the base point first."""
    base = sweep["base"]
    out = [dict(base)]
    for axis, values in sweep["axes"].items():
        for value in values:
            point = {**base, axis: value}
            if point not in out:
                out.append(point)
    return out


def measure_pair(runners: dict[str, Callable[[], Any]], rounds: int, repeat: int
                 ) -> tuple[float, dict[str, float]]:
    """Median over interleaved rounds of time(unirnn) / time(native), and median times (s).

    ``runners`` holds "unirnn" and "native", zero-argument callables that finish their
    work before returning (synchronised). Each is warmed up first (compilation, caches:
    at least twice and for 0.1 s, at most 10 calls); each round times ``repeat`` calls of
    each, the order alternating.
    """
    for run in runners.values():
        start = time.perf_counter()
        for calls in range(1, 11):
            run()
            if calls >= 2 and time.perf_counter() - start > 0.1:
                break
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            run = runners[name]
            start = time.perf_counter()
            for _ in range(repeat):
                run()
            times[name].append((time.perf_counter() - start) / repeat)
    ratio = statistics.median(u / n for u, n in zip(times["unirnn"], times["native"]))
    return ratio, {name: statistics.median(values) for name, values in times.items()}


# -- one framework each: pairs of runners at one point ------------------------------------


class _Torch:
    def __init__(self, device: str | None, threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.info = {"torch": torch.__version__, "device": self.device,
                     "threads": torch.get_num_threads()}

    def native_name(self, family: str) -> str:
        return "nn.LSTM" if family == "lstm" else "nn.GRU"

    def setup(self, point: dict[str, int]) -> None:
        torch = self.torch
        torch.manual_seed(0)
        self.x = torch.randn(point["T"], point["N"], point["H"], device=self.device)
        self.natives: dict[str, Any] = {}

    def _runner(self, module: Any, backward: bool) -> Callable[[], Any]:
        torch, x, cuda = self.torch, self.x, self.device.startswith("cuda")

        def run() -> None:
            if backward:
                module(x)[0].sum().backward()
            else:
                with torch.no_grad():
                    module(x)
            if cuda:
                torch.cuda.synchronize()

        return run

    def pair(self, family: str, spec: unirnn.Spec) -> tuple[str, dict[str, Any]]:
        nn = self.torch.nn
        if family not in self.natives:
            cls = nn.LSTM if family == "lstm" else nn.GRU
            self.natives[family] = cls(spec.input_size, spec.hidden_size).to(self.device)
        native = self.natives[family]
        model = unirnn.build(spec, backend="torch", device=self.device)
        if model.kernel.startswith("torch._VF"):
            model.load_state_dict(native.state_dict())
        return model.kernel, {mode: {"unirnn": self._runner(model, mode != "forward"),
                                     "native": self._runner(native, mode != "forward")}
                              for mode in MODES}


class _Keras:
    def __init__(self, device: str | None, threads: int | None) -> None:
        import keras

        if threads and keras.backend.backend() == "torch":
            import torch

            torch.set_num_threads(threads)
        if threads and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)

        # bench_keras.py's runner (tf.function / jit over stateless_call / eager torch)
        # and baseline (Keras' own layer, use_cudnn=False)
        from bench_keras import _native_baseline, _runner

        self.native_baseline, self.runner = _native_baseline, _runner
        self.info = {"keras": keras.__version__, "keras_backend": keras.backend.backend(),
                     "threads": threads}

    def native_name(self, family: str) -> str:
        return "keras.layers." + ("LSTM" if family == "lstm" else "GRU") + "(use_cudnn=False)"

    def setup(self, point: dict[str, int]) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((point["N"], point["T"], point["H"])).astype(np.float32)
        self.natives: dict[tuple[str, str], Any] = {}

    def pair(self, family: str, spec: unirnn.Spec) -> tuple[str, dict[str, Any]]:
        layer = unirnn.build(spec, backend="keras")
        runners = {}
        for mode in MODES:
            backward = mode != "forward"
            if (family, mode) not in self.natives:  # one traced baseline per family and mode
                base = self.native_baseline(family, spec.hidden_size)
                self.natives[family, mode] = self.runner(base, self.x, backward)
            runners[mode] = {"unirnn": self.runner(layer, self.x, backward),
                             "native": self.natives[family, mode]}
        return layer.kernel, runners


class _Flax:
    def __init__(self, device: str | None, threads: int | None) -> None:
        import flax
        import jax

        self.jax = jax
        self.info = {"jax": jax.__version__, "flax": flax.__version__,
                     "device": str(jax.devices()[0]), "threads": threads,
                     "xla_flags": os.environ.get("XLA_FLAGS", "")}

    def native_name(self, family: str) -> str:
        return "nn.RNN(nn.OptimizedLSTMCell)" if family == "lstm" else "nn.RNN(nn.GRUCell)"

    def setup(self, point: dict[str, int]) -> None:
        jax = self.jax
        self.x = jax.random.normal(jax.random.key(0), (point["N"], point["T"], point["H"]),
                                   jax.numpy.float32)
        self.natives: dict[str, dict[str, Any]] = {}

    def _runners(self, module: Any, variables: Any) -> dict[str, Callable[[], Any]]:
        jax, x = self.jax, self.x
        # numpy float32 trees (unirnn.to_flax): no module.init to trace, float32 under x64 too
        variables = jax.tree.map(jax.numpy.asarray, variables)
        forward = jax.jit(lambda v, x: module.apply(v, x))
        backward = jax.jit(jax.grad(lambda v, x: module.apply(v, x).sum()))
        return {"forward": lambda: jax.block_until_ready(forward(variables, x)),
                "forward+backward": lambda: jax.block_until_ready(backward(variables, x))}

    def pair(self, family: str, spec: unirnn.Spec) -> tuple[str, dict[str, Any]]:
        from flax import linen as nn

        if family not in self.natives:
            size = spec.hidden_size
            cell = "OptimizedLSTMCell" if family == "lstm" else "GRUCell"
            standard = unirnn.lstm(size, size) if family == "lstm" else unirnn.gru(size, size)
            params = unirnn.to_flax(standard, unirnn.init_weights(standard, seed=0), cell=cell)
            self.natives[family] = self._runners(nn.RNN(getattr(nn, cell)(size)),
                                                 {"params": {"cell": params["params"]}})
        model = unirnn.build(spec, backend="flax")
        ours = self._runners(model, unirnn.to_flax(spec, unirnn.init_weights(spec, seed=0)))
        return model.kernel, {mode: {"unirnn": ours[mode], "native": self.natives[family][mode]}
                              for mode in MODES}


def run(framework: str, sweep: dict[str, Any], cells: list[str] | None = None,
        device: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """Measure every cell at every point of ``sweep`` for one framework; the JSON report.

    ``threads``: call :func:`limit_threads` first (before the framework is imported).
    """
    bench = {"torch": _Torch, "keras": _Keras, "flax": _Flax}[framework](device, threads)
    names = cells or list(CELLS)
    unknown = sorted(set(names) - set(CELLS))
    if unknown:
        raise SystemExit(f"unknown cell(s) {unknown}; choose from {list(CELLS)}")
    report: dict[str, Any] = {
        "framework": framework, "sweep": sweep,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), **bench.info,
                    "load_average_1min_start": _load()},
        "rows": [],
    }
    started = time.perf_counter()
    for point in points(sweep):
        bench.setup(point)
        for name in names:
            family, make_spec = CELLS[name]
            kernel, runners = bench.pair(family, make_spec(point["H"]))
            row: dict[str, Any] = {"framework": framework, "cell": name, "family": family,
                                   **point, "I": point["H"], "kernel": kernel,
                                   "native": bench.native_name(family), "ms": {}}
            for mode in MODES:
                ratio, medians = measure_pair(runners[mode], sweep["rounds"], sweep["repeat"])
                row[mode] = ratio
                row["ms"][mode] = {k: 1e3 * v for k, v in medians.items()}
            report["rows"].append(row)
            print(f"[{framework}] {name:22s} N={point['N']:<4d} T={point['T']:<4d} "
                  f"H={point['H']:<4d} {kernel:28s} fwd {row['forward']:5.2f}x  "
                  f"fwd+bwd {row['forward+backward']:5.2f}x", flush=True)
    report["machine"]["load_average_1min_end"] = _load()
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=FRAMEWORKS, required=True)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, 2 rounds (a smoke run; the ratios mean little)")
    parser.add_argument("--rounds", type=int, help="rounds per figure (default: the sweep's)")
    parser.add_argument("--cells", nargs="+", metavar="CELL", help=f"a subset of {list(CELLS)}")
    parser.add_argument("--device", help="torch device (default: cuda when available)")
    parser.add_argument("--threads", type=int,
                        help="threads per framework (default: the framework's, one per core)")
    parser.add_argument("--json", default="", help="write the report here ('' for stdout only)")
    args = parser.parse_args(argv)
    sweep = json.loads(json.dumps(SWEEPS["quick" if args.quick else "default"]))  # a copy
    if args.rounds is not None:
        sweep["rounds"] = args.rounds
    sweep["threads"] = args.threads
    if args.threads:
        limit_threads(args.threads)
    report = run(args.framework, sweep, args.cells, args.device, args.threads)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
