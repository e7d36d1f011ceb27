"""The ``unirnn`` command line: ``unirnn info FILE``, ``unirnn demo``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__
from ._file import load, save_file
from ._spec import Spec, gru, lstm
from ._weights import init_weights
from .backends import build

__all__ = ["main"]


def _cmd_info(args: argparse.Namespace) -> int:
    spec, weights = load(args.file)
    print(f"{args.file}: unirnn file")
    print(f"spec: {_describe(spec)}")
    print(f"json: {spec.to_json()}")
    print("weights:")
    width = max(len(name) for name in weights)
    for name, array in weights.items():
        print(f"  {name:<{width}}  {str(array.shape):<14} {array.dtype}")
    return 0


def _describe(spec: Spec) -> str:
    parts = [f"{spec.family} {spec.input_size}->{spec.hidden_size}"]
    parts.append(", ".join(f"{role}={name}" for role, name in spec.activations.items()))
    if spec.family == "gru":
        parts.append(f"reset={spec.reset}, update={spec.update}")
    if spec.peepholes:
        parts.append("peepholes")
    if spec.proj_size:
        parts.append(f"proj_size={spec.proj_size}")
    if spec.cell_clip is not None:
        parts.append(f"cell_clip={spec.cell_clip}")
    if not spec.bias:
        parts.append("no bias")
    parts.append(f"layers={spec.num_layers}" + (" bidirectional" if spec.bidirectional else ""))
    return "; ".join(parts)


def _cmd_demo(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(0)
    specs = {
        "ReLU LSTM (Keras LSTM(activation='relu'))": lstm(8, 16, activation="relu"),
        "GRU with a GELU update gate, bidirectional": gru(
            8, 16, activations={"z": "gelu"}, bidirectional=True
        ),
    }
    x = rng.standard_normal((4, 12, 8))
    lengths = np.array([12, 9, 5, 1])
    with tempfile.TemporaryDirectory() as tmp:
        for title, spec in specs.items():
            weights = init_weights(spec, seed=1)
            print(f"== {title}")
            print(f"   spec: {_describe(spec)}")
            ref, _ = build(spec, "numpy", weights, dtype=np.float64)(x, lengths=lengths)
            out32, _ = build(spec, "numpy", weights)(x.astype(np.float32), lengths=lengths)
            print(f"   numpy float32 vs float64: max |diff| = {np.abs(out32 - ref).max():.2e}")
            path = Path(tmp) / "model.safetensors"
            save_file(path, spec, weights)
            spec2, weights2 = load(path)
            out2, _ = build(spec2, "numpy", weights2, dtype=np.float64)(x, lengths=lengths)
            print(f"   saved to one .safetensors file and loaded back: spec equal = "
                  f"{spec2 == spec}, max |diff| = {np.abs(out2 - ref).max():.2e}")
    print("Backends installed here:", ", ".join(_installed_backends()))
    return 0


def _installed_backends() -> list[str]:
    import importlib.util

    from .backends import BACKENDS

    return [
        name for name, info in BACKENDS.items()
        if info.framework is None or importlib.util.find_spec(info.framework) is not None
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unirnn",
        description="Describe a recurrent cell once; run and port it across PyTorch, Keras "
        "and Flax.",
    )
    parser.add_argument("--version", action="version", version=f"unirnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print the spec and weight shapes of a unirnn file")
    info.add_argument("file", help="a .safetensors file written by unirnn.save")
    info.set_defaults(func=_cmd_info)
    demo = sub.add_parser("demo", help="show unirnn's main job on the installed backends")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"unirnn {args.command}: error: {err}", file=sys.stderr)
        return 2
