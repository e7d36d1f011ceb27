"""Benchmark: unirnn's Flax layer against Flax's own cells under ``nn.RNN``, same process.

Every function is jitted; each round times every contender once (interleaved, so drift in
the machine's speed hits all of them alike) and figures are medians over rounds. Reported:

- standard LSTM / GRU through unirnn relative to ``nn.RNN(nn.OptimizedLSTMCell)`` /
  ``nn.RNN(nn.GRUCell)`` (target <= 1.0x), and Flax's plain ``LSTMCell`` for scale;
- custom cells (ReLU LSTM, GELU-update GRU, reset-before GRU) relative to the same-size
  standard cell through unirnn (target <= 1.1x);
- forward and forward+backward (gradient of ``sum(outputs)`` w.r.t. the parameters);
- first-call time (trace + compile + one run) beside the steady-state figures.

Run: ``python benchmarks/bench_flax.py`` (N=32, T=100, I=H=256, float32; writes
``benchmarks/bench_flax.json`` with a ``met`` flag per ratio that has a target), ``--json
PATH`` to write elsewhere, ``--quick`` for a smoke run. Each ratio is the median over
rounds of contender time / baseline time measured in the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax import linen as nn

import unirnn

Contender = tuple[Callable[..., Any], Any]  # (jitted function, its variables)
MODES = ("forward", "forward+backward")


def _contenders(size: int, inputs: int) -> dict[str, Any]:
    """name -> linen module; unirnn's as built by unirnn.build (default options)."""
    flax_ = {
        "flax OptimizedLSTMCell": nn.RNN(nn.OptimizedLSTMCell(size)),
        "flax LSTMCell": nn.RNN(nn.LSTMCell(size)),
        "flax GRUCell": nn.RNN(nn.GRUCell(size)),
    }
    specs = {
        "unirnn lstm": unirnn.lstm(inputs, size),
        "unirnn gru": unirnn.gru(inputs, size),
        "unirnn relu lstm": unirnn.lstm(inputs, size, activation="relu"),
        "unirnn gelu-z gru": unirnn.gru(inputs, size, activations={"z": "gelu"}),
        "unirnn reset-before gru": unirnn.gru(inputs, size, reset="before"),
    }
    unirnn_ = {name: unirnn.build(spec, backend="flax") for name, spec in specs.items()}
    # The standard cells with the input GEMM placed explicitly (the default picks one
    # per platform: unirnn_["unirnn lstm"].kernel says which).
    for name in ("unirnn lstm", "unirnn gru"):
        for hoist, label in ((True, "hoisted input"), (False, "input per step")):
            unirnn_[f"{name} ({label})"] = unirnn.build(specs[name], backend="flax",
                                                       hoist_input=hoist)
    return {**flax_, **unirnn_}


# (contender, baseline, what the ratio is held to)
COMPARISONS = [
    ("unirnn lstm", "flax OptimizedLSTMCell", 1.0),
    ("unirnn gru", "flax GRUCell", 1.0),
    ("unirnn relu lstm", "unirnn lstm", 1.1),
    ("unirnn gelu-z gru", "unirnn gru", 1.1),
    ("unirnn reset-before gru", "unirnn gru", 1.1),
    ("flax LSTMCell", "flax OptimizedLSTMCell", None),
    ("unirnn lstm (hoisted input)", "flax OptimizedLSTMCell", None),
    ("unirnn lstm (input per step)", "flax OptimizedLSTMCell", None),
    ("unirnn gru (hoisted input)", "flax GRUCell", None),
    ("unirnn gru (input per step)", "flax GRUCell", None),
]


def _block(tree: Any) -> None:
    jax.block_until_ready(tree)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="input and hidden size")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--reps", type=int, default=3, help="calls per contender per round")
    parser.add_argument("--quick", action="store_true", help="N=4, T=10, size 32, 3 rounds")
    parser.add_argument("--json", default="benchmarks/bench_flax.json",
                        help="write the figures to this path ('' for none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.size, args.rounds, args.reps = 4, 10, 32, 3, 2

    modules = _contenders(args.size, args.size)
    x = jax.random.normal(jax.random.key(0), (args.batch, args.steps, args.size), jnp.float32)
    functions: dict[tuple[str, str], Contender] = {}
    first_call: dict[tuple[str, str], float] = {}
    for name, module in modules.items():
        variables = module.init(jax.random.key(1), x)
        forward = jax.jit(lambda v, x, m=module: m.apply(v, x))
        backward = jax.jit(jax.grad(lambda v, x, m=module: m.apply(v, x).sum()))
        for mode, fn in zip(MODES, (forward, backward)):
            start = time.perf_counter()
            _block(fn(variables, x))
            first_call[name, mode] = time.perf_counter() - start
            functions[name, mode] = (fn, variables)

    # Each round times every contender (in reversed order every other round); a ratio is
    # the median over rounds of the two times taken in the same round.
    times: dict[tuple[str, str], list[float]] = {key: [] for key in functions}
    keys = list(functions)
    for round_ in range(args.rounds):
        for key in keys if round_ % 2 == 0 else keys[::-1]:
            function, variables = functions[key]
            start = time.perf_counter()
            for _ in range(args.reps):
                _block(function(variables, x))
            times[key].append((time.perf_counter() - start) / args.reps)
    median = {key: statistics.median(values) for key, values in times.items()}

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report: dict[str, Any] = {
        "config": {"batch": args.batch, "steps": args.steps, "input_size": args.size,
                   "hidden_size": args.size, "dtype": "float32", "rounds": args.rounds,
                   "reps": args.reps, "device": str(jax.devices()[0]),
                   "jax": jax.__version__, "flax": flax.__version__,
                   "machine": platform.machine(), "cpu_count": os.cpu_count(),
                   "load_average_1min": load,
                   "unirnn_kernel": modules["unirnn lstm"].kernel},
        "median_seconds": {f"{n} | {m}": t for (n, m), t in median.items()},
        "first_call_seconds": {f"{n} | {m}": t for (n, m), t in first_call.items()},
        "ratios": [],
    }
    print(f"N={args.batch} T={args.steps} I=H={args.size} float32 on {jax.devices()[0]}, "
          f"{args.rounds} interleaved rounds, unirnn default kernel "
          f"{modules['unirnn lstm'].kernel!r}, load average {load}")
    print(f"{'contender':30s} {'baseline':24s} {'mode':17s} {'ratio':>6s} {'target':>7s} "
          f"{'met':>4s} {'ms':>8s} {'base ms':>8s} {'first s':>8s} {'base first s':>12s}")
    for contender, baseline, target in COMPARISONS:
        for mode in MODES:
            ratio = statistics.median(
                c / b for c, b in zip(times[contender, mode], times[baseline, mode]))
            met = None if target is None else ratio <= target
            report["ratios"].append({"contender": contender, "baseline": baseline,
                                     "mode": mode, "ratio": ratio, "target": target,
                                     "met": met})
            print(f"{contender:30s} {baseline:24s} {mode:17s} {ratio:6.2f} "
                  f"{'<= ' + str(target) if target else '':>7s} "
                  f"{'' if met is None else 'yes' if met else 'NO':>4s} "
                  f"{1e3 * median[contender, mode]:8.2f} {1e3 * median[baseline, mode]:8.2f} "
                  f"{first_call[contender, mode]:8.2f} {first_call[baseline, mode]:12.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
