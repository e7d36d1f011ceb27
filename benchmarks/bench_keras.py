"""Benchmark: unirnn's Keras layers vs Keras' own LSTM/GRU, per Keras backend.

Keras picks its backend once per process, so this script runs itself once per backend
(``--backend`` picks one). Within a process, every variant is timed in the same
interleaved rounds and the figure is the median over rounds of time / time(baseline),
where the baseline is Keras' own layer of the same family and size on its non-cuDNN path
(``use_cudnn=False``). Shapes default to N=32, T=100, I=H=256.

Variants per family (lstm, gru):

- ``native``: ``unirnn.build(spec)`` for the standard spec, which holds Keras' own layer
  (target 1.0x);
- ``custom-standard``: the same spec forced onto unirnn's custom cell;
- ``custom-<option>``: a spec Keras cannot express (relu-c LSTM with peepholes, GELU-z GRU),
  on the custom cell (target <= 1.15x the native non-cuDNN path).

Modes: ``forward`` and ``forward+backward`` (gradients w.r.t. inputs and all weights),
compiled the way each backend runs training steps: ``tf.function`` (tensorflow),
``jax.jit`` over ``stateless_call`` (jax), eager (torch).

Usage::

    python benchmarks/bench_keras.py                      # all three backends
    python benchmarks/bench_keras.py --backend jax --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

BACKENDS = ("tensorflow", "jax", "torch")


def _specs(size: int) -> dict[str, dict[str, Any]]:
    import unirnn

    return {
        "lstm": {
            "native": unirnn.lstm(size, size),
            "custom-standard": unirnn.lstm(size, size),
            "custom-peephole-relu-c": unirnn.lstm(size, size, peepholes=True,
                                                  activations={"c": "relu"}),
        },
        "gru": {
            "native": unirnn.gru(size, size),
            "custom-standard": unirnn.gru(size, size),
            "custom-gelu-z": unirnn.gru(size, size, activations={"z": "gelu"}),
        },
    }


def _runner(layer: Any, x: Any, backward: bool) -> Any:
    """A zero-argument callable running ``layer`` on ``x`` (and its backward pass)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # one tf.function per variant: retracing is expected
        xt = tf.constant(x)
        variables = [v.value for v in layer.trainable_variables]

        @tf.function
        def step() -> Any:
            if not backward:
                return layer(xt)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                loss = tf.reduce_sum(layer(xt))
            return tape.gradient(loss, [xt] + variables)

        return lambda: [t.numpy() for t in tf.nest.flatten(step())]
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def forward(tv: Any, xv: Any) -> Any:
            out, _ = layer.stateless_call(tv, non_trainable, xv)
            return out.sum() if backward else out

        fn = jax.jit(jax.grad(forward, argnums=(0, 1)) if backward else forward)
        xj = jax.numpy.asarray(x)
        return lambda: jax.block_until_ready(fn(trainable, xj))
    import torch

    xt = torch.tensor(x)

    def run() -> Any:
        if not backward:
            with torch.no_grad():
                return layer(xt)
        xg = xt.clone().requires_grad_(True)
        layer(xg).sum().backward()
        for v in layer.trainable_variables:
            v.value.grad = None
        return xg.grad

    return run


def _native_baseline(family: str, size: int) -> Any:
    import keras

    cls = keras.layers.LSTM if family == "lstm" else keras.layers.GRU
    layer = cls(size, return_sequences=True, use_cudnn=False)
    layer.build((None, None, size))
    return layer


def run_backend(args: argparse.Namespace) -> dict[str, Any]:
    import keras
    import numpy as np

    import unirnn

    backend = keras.backend.backend()
    x = np.random.default_rng(0).standard_normal((args.batch, args.steps, args.size))
    x = x.astype("float32")
    results: dict[str, Any] = {"backend": backend, "shape": {
        "N": args.batch, "T": args.steps, "I": args.size, "H": args.size}, "ratios": {}}
    for family, specs in _specs(args.size).items():
        layers: dict[str, Any] = {"keras-native-no-cudnn": _native_baseline(family, args.size)}
        for name, spec in specs.items():
            path = "auto" if name == "native" else "custom"
            layers[name] = unirnn.build(spec, backend="keras", path=path)
            results.setdefault("kernels", {})[f"{family}/{name}"] = layers[name].kernel
        for mode in ("forward", "forward+backward"):
            runners = {name: _runner(layer, x, mode != "forward")
                       for name, layer in layers.items()}
            for run in runners.values():  # compile / warm up
                run()
                run()
            times: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(args.rounds):
                for name, run in runners.items():  # interleaved
                    start = time.perf_counter()
                    for _ in range(args.repeat):
                        run()
                    times[name].append((time.perf_counter() - start) / args.repeat)
            base = times["keras-native-no-cudnn"]
            for name, values in times.items():
                ratio = statistics.median(v / b for v, b in zip(values, base))
                results["ratios"][f"{family}/{mode}/{name}"] = round(ratio, 3)
                results.setdefault("median_ms", {})[f"{family}/{mode}/{name}"] = round(
                    1e3 * statistics.median(values), 2)
                print(f"[{backend}] {family:4s} {mode:16s} {name:24s} "
                      f"{1e3 * statistics.median(values):8.2f} ms  {ratio:5.2f}x", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, help="one Keras backend (default: all)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", default="bench_keras.json", help="where to write results")
    args = parser.parse_args(argv)
    if args.backend is not None and os.environ.get("KERAS_BACKEND") == args.backend:
        results = run_backend(args)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        return 0
    merged = []
    for backend in [args.backend] if args.backend else list(BACKENDS):
        out = f"{args.json}.{backend}"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [sys.executable, __file__, "--backend", backend, "--json", out,
                   "--batch", str(args.batch), "--steps", str(args.steps),
                   "--size", str(args.size), "--rounds", str(args.rounds),
                   "--repeat", str(args.repeat)]
        subprocess.run(command, env=env, check=True)
        with open(out) as f:
            merged.append(json.load(f))
        os.remove(out)
    with open(args.json, "w") as f:
        json.dump(merged, f, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
