"""unirnn's torch backend against nn.LSTM / nn.GRU, as ratios of time in the same process.

For each size and cell, the native module and the unirnn module run in interleaved rounds
(alternating which goes first); the figure is the median over rounds of
``time(unirnn) / time(native)``, for forward (``torch.no_grad``) and forward+backward.
Peak memory of forward+backward is reported as a ratio too: on CPU through the torch
profiler's memory accounting, on CUDA via ``torch.cuda.max_memory_allocated``.

Run::

    python benchmarks/bench_torch.py                      # both sizes, table + JSON
    python benchmarks/bench_torch.py --sizes 32,100,256 --rounds 15 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import unirnn

CELLS: dict[str, tuple[Callable[[int], unirnn.Spec], str]] = {
    "lstm (standard)": (lambda h: unirnn.lstm(h, h), "lstm"),
    "gru (standard)": (lambda h: unirnn.gru(h, h), "gru"),
    "relu lstm": (lambda h: unirnn.preset("relu_lstm", h, h), "lstm"),
    "gru gelu z": (lambda h: unirnn.preset("gelu_update_gru", h, h), "gru"),
    "d2l gru (reset before)": (lambda h: unirnn.preset("d2l_gru", h, h), "gru"),
}


# (forward, forward+backward, peak memory) bounds of the targets, as ratios to the native
# module; the speed bounds for custom cells hold at the first size (N=32, T=100, I=H=256)
TARGETS = {"standard": (1.05, 1.05, None), "custom": (1.25, 1.2, 1.5)}
FIRST_SIZE = (32, 100, 256)


def _targets(row: dict[str, Any]) -> dict[str, bool]:
    """Which targets the row meets (only the targets that apply to its size)."""
    standard = row["kernel"].startswith("torch._VF")
    fwd, fwd_bwd, memory = TARGETS["standard" if standard else "custom"]
    met = {}
    if standard or (row["N"], row["T"], row["H"]) == FIRST_SIZE:
        met["forward"] = row["forward"] <= fwd
        met["forward+backward"] = row["forward+backward"] <= fwd_bwd
    if memory is not None:
        met["peak memory (fwd+bwd)"] = row["peak memory (fwd+bwd)"] <= memory
    return met


def _native(family: str, size: int, device: str) -> nn.Module:
    cls = nn.LSTM if family == "lstm" else nn.GRU
    return cls(size, size).to(device)


def _step(module: nn.Module, x: torch.Tensor, backward: bool) -> None:
    if backward:
        out = module(x)[0]
        out.sum().backward()
    else:
        with torch.no_grad():
            module(x)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(module: nn.Module, x: torch.Tensor, backward: bool, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    _step(module, x, backward)
    _sync(device)
    return time.perf_counter() - start


def _peak_memory(module: nn.Module, x: torch.Tensor, device: str) -> int:
    """Peak bytes allocated during one forward+backward, beyond what existed before."""
    module.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _step(module, x, True)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        _step(module, x, True)
    # the profiler's raw "[memory]" records: +bytes on allocation, -bytes on free
    records = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
        if event.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in records:
        current += nbytes
        peak = max(peak, current)
    return peak


def measure(size: tuple[int, int, int], rounds: int, device: str) -> list[dict[str, Any]]:
    batch, steps, hidden = size
    torch.manual_seed(0)
    x = torch.randn(steps, batch, hidden, device=device)
    rows = []
    for name, (make_spec, family) in CELLS.items():
        native = _native(family, hidden, device)
        spec = make_spec(hidden)
        model = unirnn.build(spec, backend="torch", device=device)
        if model.kernel.startswith("torch._VF"):
            model.load_state_dict(native.state_dict())
        row: dict[str, Any] = {"cell": name, "N": batch, "T": steps, "I": hidden, "H": hidden,
                               "kernel": model.kernel, "native": type(native).__name__}
        for mode, backward in (("forward", False), ("forward+backward", True)):
            for module in (native, model):  # warm-up
                _step(module, x, backward)
            ratios = []
            for r in range(rounds):
                order = (native, model) if r % 2 == 0 else (model, native)
                times = {id(m): _time(m, x, backward, device) for m in order}
                ratios.append(times[id(model)] / times[id(native)])
            row[mode] = statistics.median(ratios)
        row["peak memory (fwd+bwd)"] = (
            _peak_memory(model, x, device) / max(1, _peak_memory(native, x, device))
        )
        row["targets met"] = _targets(row)
        rows.append(row)
        print(f"  {name:24s} {row['kernel']:20s} fwd {row['forward']:.3f}x  "
              f"fwd+bwd {row['forward+backward']:.3f}x  "
              f"mem {row['peak memory (fwd+bwd)']:.2f}x", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["32,100,256", "64,100,512"],
                        help="N,T,H triples (I = H)")
    parser.add_argument("--rounds", type=int, default=11, help="rounds at the first size")
    parser.add_argument("--rounds-large", type=int, default=5,
                        help="rounds at later (larger) sizes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default="benchmarks/bench_torch.json")
    args = parser.parse_args(argv)
    results = {"device": args.device, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "rows": []}
    for index, text in enumerate(args.sizes):
        size = tuple(int(v) for v in text.split(","))
        rounds = args.rounds if index == 0 else args.rounds_large
        print(f"N={size[0]} T={size[1]} I=H={size[2]} ({rounds} rounds, {args.device})")
        results["rows"].extend(measure(size, rounds, args.device))  # type: ignore[union-attr]
    print()
    print("| cell | N | T | I=H | kernel | fwd ratio | fwd+bwd ratio | peak mem ratio | "
          "targets missed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in results["rows"]:  # type: ignore[union-attr]
        missed = ", ".join(k for k, ok in row["targets met"].items() if not ok) or "none"
        print(f"| {row['cell']} | {row['N']} | {row['T']} | {row['H']} | {row['kernel']} | "
              f"{row['forward']:.3f} | {row['forward+backward']:.3f} | "
              f"{row['peak memory (fwd+bwd)']:.2f} | {missed} |")
    with open(args.json, "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
