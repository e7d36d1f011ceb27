"""The ``unirnn`` command line: ``info``, ``demo``, ``check``, ``convert``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._file import load, save_file
from ._spec import Spec
from ._weights import Weights
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
    from ._demo import run_demo

    _prepare_frameworks()
    return run_demo()


def _installed_backends() -> list[str]:
    import importlib.util

    from .backends import BACKENDS

    return [
        name for name, info in BACKENDS.items()
        if info.framework is None or importlib.util.find_spec(info.framework) is not None
    ]


def _read_source(source: str, spec_path: str | None, cell: str | None
                 ) -> tuple[Spec, Weights]:
    from .porting.port import read

    spec = None if spec_path is None else Spec.from_json(Path(spec_path).read_text())
    return read(source, spec=spec, cell=cell)


def _cmd_check(args: argparse.Namespace) -> int:
    from ._check import default_cases, format_rows, make_case, run_check

    if args.source is None:
        cases = default_cases()
    elif args.source.lower().endswith(".json"):
        spec = Spec.from_json(Path(args.source).read_text())
        cases = [make_case(Path(args.source).name, spec)]
    else:
        spec, weights = _read_source(args.source, args.spec, args.cell)
        cases = [make_case(Path(args.source).name, spec, weights)]
    _prepare_frameworks()
    rows = run_check(cases, dtypes=args.dtypes.split(","), gradients=not args.no_grad,
                     keras=not args.no_keras)
    print("Max error against the float64 numpy backend, relative to the output scale "
          "(outputs, final state);")
    print("gradients of sum(outputs * cotangent) w.r.t. input and every weight, against "
          "central differences of it.")
    print(format_rows(rows))
    failed = [row for row in rows if not row.ok]
    print(f"{len(rows) - len(failed)} of {len(rows)} within tolerance")
    return 1 if failed else 0


FORMATS = {
    "unirnn": (".safetensors",),
    "torch": (".pt", ".pth"),
    "keras": (".keras", ".weights.h5"),
    "flax": (".msgpack",),
}


def _format_of(path: str, explicit: str | None) -> str:
    if explicit is not None:
        return explicit
    for name, suffixes in FORMATS.items():
        if path.lower().endswith(suffixes):
            return name
    raise ValueError(
        f"cannot tell the format of {path!r} from its name; expected one of "
        f"{', '.join(s for ss in FORMATS.values() for s in ss)}, or pass --to"
    )


def _cmd_convert(args: argparse.Namespace) -> int:
    from ._file import write_atomic

    target = Path(args.dst)
    fmt = _format_of(args.dst, args.to)
    if target.exists() and not args.force:
        raise ValueError(f"{args.dst!r} exists; pass --force to overwrite it")
    spec, weights = _read_source(args.src, args.spec, args.cell)
    _prepare_frameworks()
    if fmt == "unirnn":
        save_file(target, spec, weights)
    elif fmt == "torch":
        import io

        import torch

        from .porting.torch import to_torch

        buffer = io.BytesIO()
        torch.save(to_torch(spec, weights), buffer)
        write_atomic(target, buffer.getvalue())
    elif fmt == "flax":
        from flax import serialization

        from .porting.flax import to_flax

        write_atomic(target, serialization.msgpack_serialize(
            to_flax(spec, weights, cell=args.cell)))
    else:
        _save_keras(spec, weights, target)
    difference, backend = _probe_difference(spec, weights, str(target), fmt, args.cell)
    print(f"wrote {args.dst} ({fmt}) from {args.src}: {_describe(spec)}")
    print(f"max |difference| of outputs against the source on a probe input: "
          f"{difference:.2e} ({backend}, float64)")
    return 0


def _save_keras(spec: Spec, weights: Weights, target: Path) -> None:
    import os

    model = _keras_model(spec, weights)
    suffix = ".weights.h5" if target.name.lower().endswith(".weights.h5") else ".keras"
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staged = Path(tmp) / f"staged{suffix}"
        if suffix == ".keras":
            model.save(staged)
        else:
            model.save_weights(staged)
        os.replace(staged, target)


def _keras_model(spec: Spec, weights: Weights) -> Any:
    """A Keras Sequential model of ``spec`` (one Input, then the layers to_keras gives)."""
    import keras

    from .porting.keras import to_keras

    layer = to_keras(spec, weights)
    layers = list(layer.layers) if isinstance(layer, keras.Sequential) else [layer]
    return keras.Sequential([keras.Input((None, spec.input_size)), *layers])


def _probe_difference(spec: Spec, weights: Weights, path: str, fmt: str, cell: str | None
                      ) -> tuple[float, str]:
    """Read ``path`` back and run it on its framework; compare with the source (numpy)."""
    from .backends import backend_module
    from .porting.port import read

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, spec.input_size))
    lengths = np.array([7, 4])
    reference = build(spec, "numpy", weights, dtype=np.float64)(x, lengths=lengths)[0]
    if fmt == "keras" and path.lower().endswith(".weights.h5"):
        import keras

        from .porting.keras import from_keras, to_keras

        layer = to_keras(spec, weights)
        model = keras.Sequential([keras.Input((None, spec.input_size)), layer])
        model.load_weights(path)
        spec2, weights2 = from_keras(model)
    else:
        spec2, weights2 = read(path, spec=spec, cell=cell)
    backend = {"unirnn": "numpy"}.get(fmt, fmt)
    result = backend_module(backend).evaluate(spec2, weights2.astype(np.float64), x,
                                              lengths=lengths, dtype="float64")
    return float(np.abs(result.outputs - reference).max()), backend


def _prepare_frameworks() -> None:
    """float64 for JAX (checks run in float64), quiet TensorFlow, a Keras backend present."""
    import importlib.util
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
        for name in ("jax", "torch"):
            if importlib.util.find_spec(name) is not None:
                os.environ["KERAS_BACKEND"] = name
                break
    if importlib.util.find_spec("jax") is not None:
        import jax

        jax.config.update("jax_enable_x64", True)


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

    check = sub.add_parser(
        "check",
        help="run the same weights on every installed backend; table of max errors",
        description="Run one spec (or file) or a default set of specs on every installed "
        "backend (each Keras backend in its own subprocess, CUDA when present) and print "
        "max errors against the float64 numpy backend. Exits 1 when a backend is out of "
        "tolerance.",
    )
    check.add_argument("source", nargs="?", help="a spec .json file, or any model file "
                       "unirnn reads (.safetensors, .pt, .keras, .msgpack)")
    check.add_argument("--spec", help="spec .json for a source that does not determine it")
    check.add_argument("--cell", help="Flax cell name for a .msgpack of Flax's own cell")
    check.add_argument("--dtypes", default="float64,float32", help="default: %(default)s")
    check.add_argument("--no-grad", action="store_true", help="skip the gradient column")
    check.add_argument("--no-keras", action="store_true", help="skip the Keras subprocesses")
    check.set_defaults(func=_cmd_check)

    convert = sub.add_parser(
        "convert",
        help="convert a model file between unirnn, torch, Keras and Flax formats",
        description="Convert SRC to DST; the format of each is read from its name: "
        ".safetensors (unirnn), .pt/.pth (torch state_dict), .keras/.weights.h5 (Keras), "
        ".msgpack (Flax parameters). Writes atomically and reports the max difference of "
        "the converted model's outputs against the source on a probe input.",
    )
    convert.add_argument("src")
    convert.add_argument("dst")
    convert.add_argument("--spec", help="spec .json, when SRC's keys do not determine it")
    convert.add_argument("--to", choices=list(FORMATS), help="DST's format, if its name "
                         "does not say")
    convert.add_argument("--cell", help="Flax cell (LSTMCell, OptimizedLSTMCell, GRUCell, "
                         "SimpleCell) for .msgpack files of Flax's own cells")
    convert.add_argument("--force", action="store_true", help="overwrite DST")
    convert.set_defaults(func=_cmd_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"unirnn {args.command}: error: {err}", file=sys.stderr)
        return 2
