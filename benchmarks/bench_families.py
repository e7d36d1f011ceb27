"""Cell families: minGRU's parallel form against the same cell stepped, and a user-defined
family against the built-in family with the same GEMMs per step; ratios of time in one
process, interleaved rounds (alternating order), medians.

Run::

    python benchmarks/bench_families.py                   # torch, and jax when installed
    python benchmarks/bench_families.py --rounds 7 --frameworks torch --json out.json

Rows (forward under ``no_grad``/``jit``; forward+backward of ``sum(outputs)``):

- minGRU N=32, T=512, I=H=256: the layer's parallel form; the same cell stepped by the
  layer's own time loop (a family identical to minGRU but without its parallel form);
  the cell module stepped from Python (streaming); ``nn.GRU`` (torch).
- a user-defined family (registered here, its step a copy of the built-in's) against the
  built-in: Elman RNN (the built-in on its custom path) and the GRU without a reset gate,
  N=32, T=100, I=H=256.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import unirnn
from unirnn._cell_families import MinGRUCell

MIN_SIZE = (32, 512, 256)  # N, T, I=H
USER_SIZE = (32, 100, 256)


class SteppedMinGRUCell(MinGRUCell):
    """minGRU without its parallel form: the layer steps it like any cell."""

    def has_parallel_form(self) -> bool:
        return False

    def linear_recurrence(self, p: Any, xp: Any, log_space: bool = False) -> None:
        return None


class UserRNNCell(unirnn.Cell):
    """What a user writes for an Elman RNN."""

    def step(self, p: Mapping[str, Any], xp: Any, carry: Any) -> Any:
        h = self.act["h"](xp + self._recurrent(p, "w_h", carry[0]))
        return (h,), h


class UserNoResetGRUCell(unirnn.Cell):
    """What a user writes for the tutorials' GRU without a reset gate."""

    def step(self, p: Mapping[str, Any], xp: Any, carry: Any) -> Any:
        (h,) = carry
        x_z, x_n = self.ops.split(xp, 2)
        h_z, h_n = self.ops.split(self._recurrent(p, "w_h", h), 2)
        z = self.act["z"](x_z + h_z)
        n = self.act["n"](x_n + h_n)
        h = self.ops.lerp(n, h, z)
        return (h,), h


def register() -> None:
    unirnn.register_family("bench_stepped_mingru", gates=("z", "h"),
                           activations={"z": "sigmoid", "h": "min_g"}, cell=SteppedMinGRUCell,
                           recurrent=False, overwrite=True)
    unirnn.register_family("bench_user_rnn", gates=("h",), activations={"h": "tanh"},
                           cell=UserRNNCell, overwrite=True)
    unirnn.register_family("bench_user_gru_none", gates=("z", "n"),
                           activations={"z": "sigmoid", "n": "tanh"}, cell=UserNoResetGRUCell,
                           overwrite=True)


def interleaved(contenders: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds per contender, each round in a rotated order, after one warm-up."""
    for run in contenders.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def torch_rows(rounds: int) -> list[dict[str, Any]]:
    import torch

    torch.manual_seed(0)
    rows = []
    N, T, H = MIN_SIZE
    spec = unirnn.Spec("mingru", H, H)
    weights = unirnn.init_weights(spec, seed=0)
    layer = unirnn.build(spec, backend="torch", weights=weights, batch_first=True)
    stepped = unirnn.build(spec.replace(family="bench_stepped_mingru"), backend="torch",
                           weights=weights, batch_first=True)
    cell = unirnn.build(spec, backend="torch", weights=weights, module="cell")
    gru = torch.nn.GRU(H, H, batch_first=True)
    x = torch.randn(N, T, H)

    def streamed() -> Any:
        h, out = torch.zeros(N, H), []
        for x_t in x.unbind(1):
            h = cell(x_t, h)
            out.append(h)
        return torch.stack(out, 1)

    runs = {"parallel (" + layer.kernel + ")": lambda: layer(x)[0],
            "stepped by the layer": lambda: stepped(x)[0],
            "cell module stepped (streaming)": streamed,
            "nn.GRU": lambda: gru(x)[0]}
    with torch.no_grad():
        error = float((layer(x)[0] - streamed()).abs().max())
        fwd = interleaved({k: (lambda f=f: f()) for k, f in runs.items()}, rounds)

    def backward(f: Callable[[], Any]) -> Callable[[], None]:
        return lambda: f().sum().backward()

    fwd_bwd = interleaved({k: backward(f) for k, f in runs.items()}, rounds)
    base = next(iter(runs))
    for name in runs:
        rows.append({"framework": "torch", "case": f"minGRU N={N} T={T} I=H={H}",
                     "contender": name, "fwd_ms": 1e3 * fwd[name],
                     "fwd_bwd_ms": 1e3 * fwd_bwd[name],
                     "fwd_vs_parallel": fwd[name] / fwd[base],
                     "fwd_bwd_vs_parallel": fwd_bwd[name] / fwd_bwd[base]})
    rows[0]["parallel_vs_streaming_max_abs_diff"] = error

    N, T, H = USER_SIZE
    x = torch.randn(T, N, H)
    for builtin, user, label in ((unirnn.rnn(H, H), "bench_user_rnn", "Elman RNN"),
                                 (unirnn.gru(H, H, reset="none"), "bench_user_gru_none",
                                  "GRU without reset gate")):
        w = unirnn.init_weights(builtin, seed=1)
        ours = unirnn.build(builtin, backend="torch", weights=w, path="custom")
        theirs = unirnn.build(builtin.replace(family=user, reset=None, update=None),
                              backend="torch", weights=w)
        pair = {"built-in": lambda m=ours: m(x)[0], "user-defined": lambda m=theirs: m(x)[0]}
        with torch.no_grad():
            assert torch.allclose(pair["built-in"](), pair["user-defined"](), atol=1e-6)
            fwd = interleaved(pair, rounds)
        fwd_bwd = interleaved({k: backward(f) for k, f in pair.items()}, rounds)
        rows.append({"framework": "torch", "case": f"{label} N={N} T={T} I=H={H}",
                     "contender": "user-defined / built-in",
                     "fwd_ratio": fwd["user-defined"] / fwd["built-in"],
                     "fwd_bwd_ratio": fwd_bwd["user-defined"] / fwd_bwd["built-in"]})
    return rows


def jax_rows(rounds: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    N, T, H = MIN_SIZE
    spec = unirnn.Spec("mingru", H, H)
    weights = unirnn.init_weights(spec, seed=0)
    x = jnp.asarray(jax.random.normal(jax.random.key(0), (N, T, H)))
    models = {"parallel": unirnn.build(spec, backend="flax", weights=weights),
              "stepped by lax.scan": unirnn.build(spec.replace(family="bench_stepped_mingru"),
                                                  backend="flax", weights=weights)}
    rows = []
    fwds, grads = {}, {}
    for name, model in models.items():
        variables = model.init(jax.random.key(0), x)
        fwd = jax.jit(lambda v, x, m=model: m.apply(v, x))
        grad = jax.jit(jax.grad(lambda v, x, m=model: m.apply(v, x).sum()))
        fwds[name] = lambda f=fwd, v=variables: jax.block_until_ready(f(v, x))
        grads[name] = lambda g=grad, v=variables: jax.block_until_ready(g(v, x))
    fwd_t, grad_t = interleaved(fwds, rounds), interleaved(grads, rounds)
    for name in models:
        rows.append({"framework": "jax (flax linen, jit)", "case": f"minGRU N={N} T={T} I=H={H}",
                     "contender": name + (f" ({models[name].kernel})"
                                          if hasattr(models[name], "kernel") else ""),
                     "fwd_ms": 1e3 * fwd_t[name], "fwd_bwd_ms": 1e3 * grad_t[name],
                     "fwd_vs_parallel": fwd_t[name] / fwd_t["parallel"],
                     "fwd_bwd_vs_parallel": grad_t[name] / grad_t["parallel"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frameworks", default="torch,jax")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    register()
    rows = []
    for name in args.frameworks.split(","):
        rows += {"torch": torch_rows, "jax": jax_rows}[name](args.rounds)
    for row in rows:
        print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
