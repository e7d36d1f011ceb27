"""Benchmark: onnxruntime running unirnn's ``Scan`` graph of a custom cell against ONNX's
native ``LSTM``/``GRU`` op of the same family and size, same process, interleaved rounds.

Reported (N=32, T=100, I=H=256, float32, onnxruntime's CPU provider; ratio = median over
rounds of contender time / native time measured in the same round; target <= 2x):

- ``gru-gelu-z``: a GRU with a GELU update gate (Scan) against the standard GRU (native);
- ``lstm-peephole-clip``: an LSTM with peepholes and a cell clip (Scan) against the standard
  LSTM (native);
- ``gru-scan`` / ``lstm-scan``: the standard cell forced onto the Scan graph;

and the export (``unirnn.to_onnx``) and import (``unirnn.from_onnx``) time of a 2-layer
bidirectional LSTM with I=H=512 (target < 1 s each), medians of 5.

Run: ``python benchmarks/bench_onnx.py`` (``--quick`` for a smoke run; ``--json PATH``
writes the figures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort

import unirnn
from unirnn.porting import onnx as onnx_porting


def _session(spec, weights, native, lengths):
    model = onnx_porting.to_onnx(spec, weights, native=native, lengths=lengths)
    print(f"{spec.describe():70s} {onnx_porting.kernel(model)}")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def speed(N: int, T: int, size: int, rounds: int, lengths: bool) -> dict[str, float]:
    """Ratios to the native op; ``lengths``: the graphs take ragged lengths (the mask)."""
    x = np.random.default_rng(0).standard_normal((N, T, size)).astype(np.float32)
    feed = {"x": x}
    if lengths:
        feed["lengths"] = np.random.default_rng(1).integers(T // 2, T + 1, N).astype(np.int64)
    specs = {
        "lstm": (unirnn.lstm(size, size), None),
        "gru": (unirnn.gru(size, size), None),
        "gru-gelu-z": (unirnn.gru(size, size, activations={"z": "gelu"}), None),
        "lstm-peephole-clip": (unirnn.lstm(size, size, peepholes=True, cell_clip=3.0), None),
        "gru-scan": (unirnn.gru(size, size), False),
        "lstm-scan": (unirnn.lstm(size, size), False),
    }
    baseline = {"gru-gelu-z": "gru", "lstm-peephole-clip": "lstm", "gru-scan": "gru",
                "lstm-scan": "lstm"}
    sessions = {name: _session(spec, unirnn.init_weights(spec, seed=1), native, lengths)
                for name, (spec, native) in specs.items()}
    for session in sessions.values():  # warm up
        session.run(None, feed)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append(time.perf_counter() - start)
    ratios = {name: statistics.median(a / b for a, b in zip(times[name], times[base]))
              for name, base in baseline.items()}
    return {**ratios, **{f"{name} ms": 1e3 * statistics.median(t) for name, t in times.items()}}


def export_import(size: int, repeats: int = 5) -> dict[str, float]:
    spec = unirnn.lstm(size, size, num_layers=2, bidirectional=True)
    weights = unirnn.init_weights(spec)
    exports, imports = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        model = unirnn.to_onnx(spec, weights)
        exports.append(time.perf_counter() - start)
        data = model.SerializeToString()
        start = time.perf_counter()
        unirnn.from_onnx(data)
        imports.append(time.perf_counter() - start)
    return {"export s": statistics.median(exports), "import s": statistics.median(imports),
            "file MB": len(data) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    shape = (8, 20, 64, 3) if args.quick else (32, 100, 256, 15)
    figures = speed(*shape, lengths=False)
    figures.update({f"{k} (lengths)": v for k, v in speed(*shape, lengths=True).items()})
    figures.update(export_import(64 if args.quick else 512))
    for key, value in figures.items():
        print(f"{key:24s} {value:8.3f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
