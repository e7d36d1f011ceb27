"""unirnn's torch backend against nn.LSTM / nn.GRU, as ratios of time in the same process.

For each size and cell, the native module and the unirnn module run in interleaved rounds
(alternating which goes first); the figure is the median over rounds of
``time(unirnn) / time(native)``, for forward (``torch.no_grad``) and forward+backward.
Peak memory of forward+backward is reported as a ratio too: on CPU through the torch
profiler's memory accounting, on CUDA via ``torch.cuda.max_memory_allocated``.

Run::

    python benchmarks/bench_torch.py                      # both sizes, table + JSON
    python benchmarks/bench_torch.py --sizes 32,100,256 --rounds 15 --json out.json
    python benchmarks/bench_torch.py --replaced           # d2l's setting, tutorials' loops
"""

from __future__ import annotations

import argparse
import json
import os
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
    # kineto logs each profile's start and stop ("USDT: ... profiler_start", "STAGE:") to
    # stderr; level 6 is above all of its levels (read when the profiler first starts)
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
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


# -- what users replace: the tutorials' own loops, at d2l's setting ---------------------

D2L_SIZE = (32, 35, 28, 256)
"""d2l's GRU chapter: batch 32, 35 steps, one-hot input of 28 characters, hidden 256."""


class NaiveD2LGRU(nn.Module):
    """d2l's scratch GRU (``gru(inputs, state, params)``): one matmul per gate and side,
    parameters ``W_xz, W_hz, b_z, ...`` in (in, out) layout, reset applied before the
    recurrent matmul, ``H = Z * H + (1 - Z) * H_tilde``."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        def p(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape) * 0.01)
        self.W_xz, self.W_hz, self.b_z = p(inputs, hidden), p(hidden, hidden), p(hidden)
        self.W_xr, self.W_hr, self.b_r = p(inputs, hidden), p(hidden, hidden), p(hidden)
        self.W_xh, self.W_hh, self.b_h = p(inputs, hidden), p(hidden, hidden), p(hidden)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        H = x.new_zeros(x.shape[1], self.hidden)
        outputs = []
        for X in x:
            Z = torch.sigmoid(X @ self.W_xz + H @ self.W_hz + self.b_z)
            R = torch.sigmoid(X @ self.W_xr + H @ self.W_hr + self.b_r)
            H_tilde = torch.tanh(X @ self.W_xh + (R * H) @ self.W_hh + self.b_h)
            H = Z * H + (1 - Z) * H_tilde
            outputs.append(H)
        return torch.stack(outputs), H


class FusedGateGRU(nn.Module):
    """A hand-written loop with the gates fused: the input projection of all steps in one
    GEMM, then per step one GEMM for the z and r rows and one for the candidate."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.w_x = nn.Linear(inputs, 3 * hidden)
        self.w_zr = nn.Linear(hidden, 2 * hidden, bias=False)
        self.w_n = nn.Linear(hidden, hidden, bias=False)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        H = x.new_zeros(x.shape[1], self.hidden)
        gx = self.w_x(x)
        outputs = []
        for t in range(x.shape[0]):
            xz, xr, xn = gx[t].chunk(3, dim=1)
            hz, hr = self.w_zr(H).chunk(2, dim=1)
            Z = torch.sigmoid(xz + hz)
            R = torch.sigmoid(xr + hr)
            H = Z * H + (1 - Z) * torch.tanh(xn + self.w_n(R * H))
            outputs.append(H)
        return torch.stack(outputs), H


class LSTMCellLoop(nn.Module):
    """The tutorials' ``nn.LSTMCell`` step loop with ReLU in place of tanh (one GEMM per
    step for each side, the gate math in eager ops)."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(inputs, hidden)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = c = x.new_zeros(x.shape[1], self.hidden)
        outputs = []
        for X in x:
            gates = X @ self.cell.weight_ih.T + h @ self.cell.weight_hh.T \
                + self.cell.bias_ih + self.cell.bias_hh
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.relu(g)
            h = torch.sigmoid(o) * torch.relu(c)
            outputs.append(h)
        return torch.stack(outputs), h


def measure_replaced(size: tuple[int, int, int, int], rounds: int, device: str
                     ) -> list[dict[str, Any]]:
    """Each contender's time over the vendor module's, interleaved, median of rounds: the
    row "faster than the code it replaces" is unirnn over the tutorial's loop."""
    batch, steps, inputs, hidden = size
    torch.manual_seed(0)
    x = torch.randn(steps, batch, inputs, device=device)
    contenders = {
        "gru": (nn.GRU(inputs, hidden).to(device), {
            "unirnn d2l gru (reset before)":
                unirnn.build(unirnn.preset("d2l_gru", inputs, hidden), "torch", device=device),
            "naive d2l loop": NaiveD2LGRU(inputs, hidden).to(device),
            "fused-gate gru loop": FusedGateGRU(inputs, hidden).to(device),
        }),
        "lstm": (nn.LSTM(inputs, hidden).to(device), {
            "unirnn relu lstm":
                unirnn.build(unirnn.preset("relu_lstm", inputs, hidden), "torch", device=device),
            "relu LSTMCell loop": LSTMCellLoop(inputs, hidden).to(device),
        }),
    }
    rows = []
    for family, (native, others) in contenders.items():
        for mode, backward in (("forward", False), ("forward+backward", True)):
            modules = [native, *others.values()]
            for module in modules:  # warm-up
                _step(module, x, backward)
            ratios: dict[str, list[float]] = {name: [] for name in others}
            for r in range(rounds):
                order = modules if r % 2 == 0 else modules[::-1]
                times = {id(m): _time(m, x, backward, device) for m in order}
                for name, module in others.items():
                    ratios[name].append(times[id(module)] / times[id(native)])
            for name in others:
                rows.append({"family": family, "contender": name, "mode": mode,
                             "N": batch, "T": steps, "I": inputs, "H": hidden,
                             f"ratio to nn.{native.__class__.__name__}":
                                 statistics.median(ratios[name])})
                print(f"  {mode:16s} {name:30s} "
                      f"{statistics.median(ratios[name]):.3f}x nn.{type(native).__name__}",
                      flush=True)
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
    parser.add_argument("--replaced", action="store_true",
                        help="only the d2l setting: unirnn against nn.GRU/nn.LSTM and the "
                        "tutorials' own loops (the code unirnn replaces)")
    args = parser.parse_args(argv)
    if args.replaced:
        print(f"d2l setting N={D2L_SIZE[0]} T={D2L_SIZE[1]} I={D2L_SIZE[2]} "
              f"H={D2L_SIZE[3]} ({args.rounds} rounds, {args.device})")
        rows = measure_replaced(D2L_SIZE, args.rounds, args.device)
        with open(args.json, "w") as handle:
            json.dump({"device": args.device, "torch": torch.__version__, "rows": rows},
                      handle, indent=2)
        print(f"\nwrote {args.json}")
        return
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
