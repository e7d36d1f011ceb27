"""LSTM against GRU, timed the right way, in PyTorch, Keras and Flax, native and unirnn.

"Is a GRU faster than an LSTM?" is usually answered with one ``time.time()`` around one call,
which measures compilation, caches warming up and whatever else the machine was doing. This
script times, per framework, four contenders of the same size in the same process:

- the framework's own layers: ``nn.LSTM`` / ``nn.GRU``, ``keras.layers.LSTM`` / ``GRU``,
  ``flax.linen.RNN(OptimizedLSTMCell)`` / ``RNN(GRUCell)``;
- unirnn's module for the same cell (``unirnn.build(spec, backend=...)``), carrying the
  native layer's weights: the script first asserts it computes the native layer's outputs.

How: every function is compiled the way the framework runs it (``torch`` eager,
``tf.function`` for Keras on TensorFlow, ``jax.jit`` for Flax and Keras on jax) and warmed
up; then each round times every contender of a framework once (``--repeat`` calls), in
reversed order every other round, so that drift in the machine's speed hits all of them
alike. Reported: the median time per call over rounds, and the GRU/LSTM ratio as the median
over rounds of the two times taken in the same round, for forward and forward+backward
(gradient of ``sum(outputs)`` w.r.t. the input and every weight).

Run it (from the repository root)::

    python examples/lstm_vs_gru.py                    # N=32, T=100, I=H=256, 9 rounds
    python examples/lstm_vs_gru.py --quick            # tiny sizes, 2 rounds: a smoke run
    python examples/lstm_vs_gru.py --threads 1        # on a machine shared with other jobs

Figures measured on the development machine are in docs/examples.md ("LSTM against GRU").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before Keras is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FAMILIES = ("lstm", "gru")
MODES = ("forward", "forward+backward")
Runner = Callable[[], Any]  # one call, finished (synchronised) when it returns


def limit_threads(threads: int) -> None:
    """Every framework on ``threads`` threads (before any of them is imported)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                 "TF_NUM_INTEROP_THREADS"):
        os.environ[name] = str(threads)
    if threads == 1:  # XLA's CPU runtime: single-threaded Eigen
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


def check(name: str, got: Any, want: Any, atol: float) -> None:
    """Assert unirnn's outputs equal the native layer's (relative to the output scale)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    error = float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))
    print(f"  {name:34s} max |unirnn - native| / scale = {error:.1e}")
    if not error <= atol:
        raise SystemExit(f"{name}: unirnn's outputs differ from the native layer's by "
                         f"{error:.2e} (tolerance {atol:.0e})")


# -- the contenders of each framework: {(implementation, family, mode): runner} ----------


def torch_contenders(x: np.ndarray, size: int, threads: int | None
                     ) -> tuple[dict[tuple[str, str, str], Runner], dict[str, str]]:
    import torch

    import unirnn

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    xt = torch.from_numpy(x.transpose(1, 0, 2).copy())  # (T, N, I): torch's default layout
    runners, kernels = {}, {}
    for family in FAMILIES:
        native = (torch.nn.LSTM if family == "lstm" else torch.nn.GRU)(size, size)
        ours = unirnn.port(native, to="torch")  # unirnn's module with the native weights
        kernels[f"unirnn {family}"] = ours.kernel
        with torch.no_grad():
            check(f"torch {family}", ours(xt)[0], native(xt)[0], 1e-6)
        for impl, module in (("native", native), ("unirnn", ours)):
            for mode in MODES:
                runners[impl, family, mode] = _torch_runner(torch, module, xt, mode)
    return runners, kernels


def _torch_runner(torch: Any, module: Any, x: Any, mode: str) -> Runner:
    def run() -> None:
        if mode == "forward":
            with torch.no_grad():
                module(x)
        else:
            xg = x.detach().requires_grad_(True)
            module(xg)[0].sum().backward()
            module.zero_grad(set_to_none=True)

    return run


def keras_contenders(x: np.ndarray, size: int, threads: int | None
                     ) -> tuple[dict[tuple[str, str, str], Runner], dict[str, str]]:
    import keras

    import unirnn

    backend = keras.backend.backend()
    if threads and backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if threads and backend == "torch":
        import torch

        torch.set_num_threads(threads)
    keras.utils.set_random_seed(0)
    runners, kernels = {}, {}
    for family in FAMILIES:
        cls = keras.layers.LSTM if family == "lstm" else keras.layers.GRU
        native = cls(size, return_sequences=True, dtype="float32")
        want = keras.ops.convert_to_numpy(native(x))  # builds its weights
        ours = unirnn.port(native, to="keras")
        kernels[f"unirnn {family}"] = ours.kernel
        check(f"keras ({backend}) {family}", keras.ops.convert_to_numpy(ours(x)), want, 1e-6)
        for impl, layer in (("native", native), ("unirnn", ours)):
            for mode in MODES:
                runners[impl, family, mode] = _keras_runner(backend, layer, x, mode)
    return runners, kernels


def _keras_runner(backend: str, layer: Any, x: np.ndarray, mode: str) -> Runner:
    backward = mode != "forward"
    if backend == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # one tf.function per contender: no retracing notes
        xt = tf.constant(x)
        weights = [v.value for v in layer.trainable_variables]

        @tf.function
        def step() -> Any:
            if not backward:
                return layer(xt)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                loss = tf.reduce_sum(layer(xt))
            return tape.gradient(loss, [xt, *weights])

        return lambda: [t.numpy() for t in tf.nest.flatten(step())]
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        others = [v.value for v in layer.non_trainable_variables]

        def forward(tv: Any, xv: Any) -> Any:
            out = layer.stateless_call(tv, others, xv)[0]
            return out.sum() if backward else out

        fn = jax.jit(jax.grad(forward, argnums=(0, 1)) if backward else forward)
        xj = jax.numpy.asarray(x)
        return lambda: jax.block_until_ready(fn(trainable, xj))
    import torch

    xt = torch.from_numpy(x)

    def run() -> None:
        if not backward:
            with torch.no_grad():
                layer(xt)
            return
        xg = xt.clone().requires_grad_(True)
        layer(xg).sum().backward()
        for v in layer.trainable_variables:
            v.value.grad = None

    return run


def flax_contenders(x: np.ndarray, size: int, threads: int | None
                    ) -> tuple[dict[tuple[str, str, str], Runner], dict[str, str]]:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    import unirnn

    xj = jnp.asarray(x, jnp.float32)
    runners, kernels = {}, {}
    for index, family in enumerate(FAMILIES):
        cell = "OptimizedLSTMCell" if family == "lstm" else "GRUCell"
        native = nn.RNN(getattr(nn, cell)(size, param_dtype=jnp.float32))
        native_vars = native.init(jax.random.key(index), xj)
        spec, weights = unirnn.from_flax(native_vars["params"]["cell"], cell=cell)
        ours = unirnn.build(spec, backend="flax", weights=weights)
        ours_vars = jax.tree.map(jnp.asarray, unirnn.to_flax(spec, weights))
        kernels[f"unirnn {family}"] = ours.kernel
        check(f"flax {family}", ours.apply(ours_vars, xj), native.apply(native_vars, xj), 2e-5)
        for impl, module, variables in (("native", native, native_vars),
                                        ("unirnn", ours, ours_vars)):
            forward = jax.jit(lambda v, x, m=module: m.apply(v, x))
            grad = jax.jit(jax.grad(lambda v, x, m=module: m.apply(v, x).sum(), argnums=(0, 1)))
            for mode, fn in zip(MODES, (forward, grad)):
                runners[impl, family, mode] = (
                    lambda fn=fn, v=variables: jax.block_until_ready(fn(v, xj)))
    return runners, kernels


# -- timing ---------------------------------------------------------------------------------


def time_interleaved(runners: dict[Any, Runner], rounds: int, repeat: int
                     ) -> dict[Any, list[float]]:
    """Seconds per call of every runner in each round (warmed up first; the order of the
    runners reversed every other round)."""
    for run in runners.values():  # compile, warm caches: at least twice and for 0.1 s
        start = time.perf_counter()
        for calls in range(1, 11):
            run()
            if calls >= 2 and time.perf_counter() - start > 0.1:
                break
    times: dict[Any, list[float]] = {key: [] for key in runners}
    keys = list(runners)
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            start = time.perf_counter()
            for _ in range(repeat):
                runners[key]()
            times[key].append((time.perf_counter() - start) / repeat)
    return times


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| framework | implementation | kernel (LSTM / GRU) | LSTM fwd ms | GRU fwd ms | "
             "GRU/LSTM fwd | LSTM fwd+bwd ms | GRU fwd+bwd ms | GRU/LSTM fwd+bwd |",
             "|---|---|---|---|---|---|---|---|---|"]
    for framework, result in results.items():
        times, kernels = result["times"], result["kernels"]
        for impl in ("native", "unirnn"):
            cells = []
            for mode in MODES:
                lstm, gru = times[impl, "lstm", mode], times[impl, "gru", mode]
                ratio = statistics.median(g / s for g, s in zip(gru, lstm))
                cells += [f"{1e3 * statistics.median(lstm):.2f}",
                          f"{1e3 * statistics.median(gru):.2f}", f"{ratio:.2f}"]
            kernel = (result["native"] if impl == "native" else
                      f"{kernels['unirnn lstm']} / {kernels['unirnn gru']}")
            lines.append(f"| {framework} | {impl} | {kernel} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="input and hidden size")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=2, help="calls per contender and round")
    parser.add_argument("--threads", type=int, help="threads per framework (default: theirs)")
    parser.add_argument("--frameworks", nargs="+", default=["torch", "keras", "flax"],
                        choices=["torch", "keras", "flax"])
    parser.add_argument("--quick", action="store_true", help="N=4, T=10, I=H=32, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.size, args.rounds, args.repeat = 4, 10, 32, 2, 1
    if args.threads:
        limit_threads(args.threads)

    x = np.random.default_rng(0).standard_normal((args.batch, args.steps, args.size))
    x = x.astype(np.float32)  # float32 everywhere, also when JAX_ENABLE_X64 is set
    print(f"N={args.batch} T={args.steps} I=H={args.size} float32, {args.rounds} interleaved "
          f"rounds x {args.repeat} calls, {os.cpu_count()} CPUs, threads "
          f"{args.threads or 'default'}")
    build = {"torch": torch_contenders, "keras": keras_contenders, "flax": flax_contenders}
    natives = {"torch": "nn.LSTM / nn.GRU",
               "keras": "keras.layers.LSTM / GRU",
               "flax": "nn.RNN(OptimizedLSTMCell) / nn.RNN(GRUCell)"}
    results: dict[str, dict[str, Any]] = {}
    for framework in args.frameworks:
        print(f"{framework}: unirnn's module holds the native layer's weights")
        runners, kernels = build[framework](x, args.size, args.threads)
        name = framework
        if framework == "keras":
            import keras

            name = f"keras ({keras.backend.backend()})"
        started = time.perf_counter()
        results[name] = {"times": time_interleaved(runners, args.rounds, args.repeat),
                         "kernels": kernels, "native": natives[framework]}
        print(f"  timed {len(runners)} contenders in {time.perf_counter() - started:.1f} s")
    print()
    print(table(results))
    print("\nms: median time per call; GRU/LSTM: median over rounds of the ratio of the two "
          "times in the same round (below 1: the GRU is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
