"""The ``unirnn`` command line: ``info``, ``demo``, ``check``, ``convert``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from .._errors import FileFormatError, SpecError, UnirnnError
from .._file import destination, load
from .._spec import Spec
from .._weights import Weights
from ..backends import build, framework_installed
from ..porting.port import FILE_FORMATS, file_format_of
from ._console import StatusLine, quiet_frameworks
from ._imports import import_definitions

__all__ = ["main"]


def _cmd_info(args: argparse.Namespace) -> int:
    fmt = _format_of(args.file, None)
    if fmt == "onnx":
        from ..porting.onnx import describe_file

        print(f"{args.file}: ONNX model; recurrent nodes and what each maps to:")
        for line in describe_file(args.file):
            print(line)
        return 0
    assumed = None
    if fmt == "unirnn":
        spec, weights = load(args.file)
    else:
        found = _read_source(args.file, None, None)
        spec, weights = found
        assumed = getattr(found, "assumed", None)  # the file carries no spec (unirnn._assumed)
    print(f"{args.file}: {'unirnn' if fmt == 'unirnn' else fmt} file")
    print(f"spec: {spec.describe()}")
    if assumed is not None:
        print(f"assumed: {assumed}")
    print(f"json: {spec.to_json()}")
    print("weights:")
    width = max(len(name) for name in weights)
    for name, array in weights.items():
        print(f"  {name:<{width}}  {str(array.shape):<14} {array.dtype}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _prepare_frameworks()
    return run_demo()


def _read_source(source: str, spec_path: str | None, cell: str | None
                 ) -> tuple[Spec, Weights]:
    from ..porting.port import read

    return read(source, spec=_spec_file(spec_path), cell=cell)


def _dtypes(text: str) -> list[str]:
    """``--dtypes``: a comma-separated list of the dtypes ``check`` has tolerances for."""
    from .check import TOLERANCE

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TOLERANCE]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(TOLERANCE)}; received {text!r}"
            + (f" ({unknown[0]!r} has no tolerance in unirnn check)" if unknown else "")
        )
    return names


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import default_cases, format_rows, make_case, run_check

    if args.source is None:
        cases = default_cases()
    elif args.source.lower().endswith(".json"):
        spec = _read_spec(args.source, "spec file")
        cases = [make_case(Path(args.source).name, spec)]
    else:
        spec, weights = _read_source(args.source, args.spec, args.cell)
        cases = [make_case(Path(args.source).name, spec, weights)]
    with StatusLine() as status:  # "checking torch (cpu) on torch GRU (9/60)..." on a terminal
        status.show("loading the installed frameworks...")
        _prepare_frameworks()
        rows = run_check(cases, dtypes=args.dtypes, gradients=not args.no_grad,
                         keras=not args.no_keras, progress=status.progress,
                         imports=args.imports)
    print("Max error against the float64 numpy backend, relative to the output scale "
          "(outputs, final state);")
    print("gradients of sum(outputs * cotangent) w.r.t. input and every weight, against "
          "central differences of it.")
    print(format_rows(rows))
    failed = [row for row in rows if not row.ok]
    print(f"{len(rows) - len(failed)} of {len(rows)} within tolerance")
    return 1 if failed else 0


FORMATS = FILE_FORMATS

PROBE_TOLERANCE = 1e-5
"""Max difference of a converted file's outputs from the source's, relative to the output
scale: files hold float32, and one-bias formats add two biases in it."""


def _format_of(path: str, explicit: str | None) -> str:
    try:
        return file_format_of(path, explicit)
    except ValueError as err:
        raise FileFormatError(f"{err}, or pass --to") from None


def _cmd_convert(args: argparse.Namespace) -> int:
    from ..porting.port import read, write

    fmt = _format_of(args.dst, args.to)
    if fmt == "keras" and not args.dst.lower().endswith(FORMATS["keras"]):
        raise FileFormatError(f"{args.dst!r}: Keras loads only files named *.keras (a model) "
                              "or *.weights.h5 (weights); name the destination so")
    if destination(args.dst).exists() and not args.force:
        raise FileExistsError(f"{args.dst!r} exists; pass --force to overwrite it")
    given = _spec_file(args.spec)
    spec, weights = read(args.src, spec=given, cell=args.cell)
    _prepare_frameworks()
    probes: list[_Probe] = []

    def reproduces_source(staged: Path) -> None:
        # read the staged file back as a user would and compare: only a file that
        # reproduces the source is moved into place; the destination is untouched otherwise
        probe = _probe(spec, weights, staged, fmt, given, args.cell, shown_as=args.dst)
        if probe.problem is not None:
            raise FileFormatError(f"{probe.problem}; nothing was written to {args.dst!r}")
        probes.append(probe)

    where = write(args.dst, spec, weights, file_format=fmt, cell=args.cell,
                  overwrite=args.force, before_publish=reproduces_source)
    probe = probes[0]
    print(f"wrote {args.dst} ({fmt}) from {args.src}: {spec.describe()}")
    print(f"the spec travels in {where}; reading {args.dst} back needs no --spec")
    print(f"max |difference| of outputs against the source on a probe input: "
          f"{probe.difference:.2e} ({probe.backend}, float64; read back "
          f"{'with --spec' if given is not None else 'without --spec'})")
    return 0


def _spec_file(path: str | None) -> Spec | None:
    """The spec of ``--spec PATH``, or None."""
    return None if path is None else _read_spec(path, "--spec")


def _read_spec(path: str, label: str) -> Spec:
    try:
        return Spec.from_json(Path(path).read_text())
    except ValueError as err:
        raise SpecError(f"{label} {path!r}: {err}") from None


@dataclass
class _Probe:
    difference: float
    backend: str
    problem: str | None


def _probe(spec: Spec, weights: Weights, path: Path, fmt: str, given: Spec | None,
           cell: str | None, shown_as: str) -> _Probe:
    """Read ``path`` back as a user would (no spec unless ``--spec`` was given), run it on
    its framework in float64 and compare with the source run on the numpy backend."""
    from ..backends import backend_module
    from ..porting.port import read

    backend = {"unirnn": "numpy"}.get(fmt, fmt)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, spec.input_size))
    lengths = np.array([7, 4])
    reference = build(spec, "numpy", weights, dtype=np.float64)(x, lengths=lengths)[0]
    source = f"the source is {spec.describe()}"
    try:
        spec2, weights2 = read(path, spec=given, cell=cell, file_format=fmt)
    except ValueError as err:
        text = str(err).replace(str(path), shown_as)
        return _Probe(np.inf, backend, f"the converted file does not read back: {text}")
    problems = []
    if spec2 != spec:
        old, new = spec.to_dict(), spec2.to_dict()
        fields = [name for name in old if old[name] != new.get(name)]
        problems.append(f"read back{' without --spec' if given is None else ''} it is "
                        f"{spec2.describe()}, where {source} (it differs in "
                        f"{', '.join(fields)})")
    difference = np.inf
    try:
        if fmt == "onnx":
            backend, outputs = "onnxruntime", _run_onnx_file(path, x, lengths)
        else:
            outputs = backend_module(backend).evaluate(
                spec2, weights2.astype(np.float64), x, lengths=lengths, dtype="float64").outputs
        difference = float(np.abs(outputs - reference).max())
    except Exception as err:  # a spec that no longer fits the input is a failed probe
        problems.append(f"running it on {backend} failed ({type(err).__name__}: {err})")
    scale = max(1.0, float(np.abs(reference).max()))
    if not difference <= PROBE_TOLERANCE * scale:
        problems.append(f"max |difference| of its outputs against the source on a probe "
                        f"input is {difference:.2e} ({backend}, float64), above "
                        f"{PROBE_TOLERANCE * scale:.0e}")
    if not problems:
        return _Probe(difference, backend, None)
    return _Probe(difference, backend, "the converted file does not reproduce the source: "
                  + "; ".join(problems))


def _run_onnx_file(path: Path, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The outputs of the ``.onnx`` file itself, run by onnxruntime (it holds float32)."""
    from ..porting.onnx import run

    return run(path, x, lengths=lengths)[0]


def _prepare_frameworks() -> None:
    """float64 for JAX (checks run in float64) and a Keras backend that is installed.

    The frameworks' start-up messages are kept off stderr by :func:`main`
    (:func:`unirnn.tools._console.quiet_frameworks`)."""
    if "KERAS_BACKEND" not in os.environ and not framework_installed("tensorflow"):
        for name in ("jax", "torch"):
            if framework_installed(name):
                os.environ["KERAS_BACKEND"] = name
                break
    if framework_installed("jax"):
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
    info = sub.add_parser("info", help="print the spec and weight shapes of a model file")
    info.add_argument("file", help="a .safetensors file written by unirnn.save, any model "
                      "file unirnn reads (.pt, .keras, .weights.h5, .msgpack), or an .onnx "
                      "model (its recurrent nodes and what each maps to)")
    info.set_defaults(func=_cmd_info)
    demo = sub.add_parser("demo", help="show unirnn's main job on the installed backends")
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser(
        "check",
        help="check every installed backend's consistency with the float64 numpy backend",
        description="Run one spec (or file) or a default set of specs on every installed "
        "backend (each Keras backend in its own subprocess, CUDA when present) and print "
        "max errors against the float64 numpy backend: a consistency check between "
        "unirnn's backends, which share the cell math (the test suite judges every backend, "
        "numpy included, against an independent oracle). Exits 1 when a backend is out of "
        "tolerance.",
    )
    check.add_argument("source", nargs="?", help="a spec .json file, or any model file "
                       "unirnn reads (.safetensors, .pt, .keras, .msgpack)")
    check.add_argument("--spec", help="spec .json for a source that does not determine it")
    check.add_argument("--cell", help="Flax cell name for a .msgpack of Flax's own cell")
    check.add_argument("--dtypes", default="float64,float32", type=_dtypes,
                       help="comma-separated, of float64, float32; default: %(default)s")
    check.add_argument("--no-grad", action="store_true", help="skip the gradient column")
    check.add_argument("--no-keras", action="store_true", help="skip the Keras subprocesses")
    check.set_defaults(func=_cmd_check)

    convert = sub.add_parser(
        "convert",
        help="convert a model file between unirnn, torch, Keras and Flax formats",
        description="Convert SRC to DST; the format of each is read from its name: "
        ".safetensors (unirnn), .pt/.pth (torch state_dict), .keras/.weights.h5 (Keras), "
        ".msgpack (Flax parameters), .onnx (ONNX model). DST carries the spec (where the "
        "framework's own loaders ignore it), so a custom cell reads back as itself. DST is "
        "staged beside "
        "its final name and read back as a user would (without --spec unless given); only "
        "when it computes the source's cell with the source's outputs on a probe input "
        "is it renamed into place. Otherwise nothing is written and the exit code is 2.",
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
    for command in (info, check, convert):
        command.add_argument(
            "--import", dest="imports", action="append", default=[], metavar="MODULE",
            help="import MODULE (or a .py file) first: user code registering the families "
            "and activations a file names (unirnn.register_family); repeatable")
    return parser


def _raise_on_signal(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP end the command as Ctrl-C does: staging is cleaned on the way."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line. Exit codes: 0 done; 1 ``check`` found a backend out of
    tolerance, or a bug in unirnn (shown with its traceback); 2 input unirnn cannot
    accept (a message, no traceback).

    The frameworks' start-up messages (TensorFlow's C++ log, absl, JAX's platform
    warnings) are kept off stderr while the command runs, unless the user asked for
    them (``TF_CPP_MIN_LOG_LEVEL=0``, ``JAX_LOGGING_LEVEL``): see
    :mod:`unirnn.tools._console`."""
    args = _parser().parse_args(argv)
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and threading.current_thread() is threading.main_thread():
            previous[number] = signal.signal(number, _raise_on_signal)
    try:
        with quiet_frameworks():
            import_definitions(getattr(args, "imports", ()))
            return int(args.func(args))
    except BrokenPipeError:
        # the reader closed the pipe (`unirnn info f | head -1`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (UnirnnError, OSError, ImportError) as err:
        print(f"unirnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unirnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"unirnn {args.command}: error: out of memory", file=sys.stderr)
        return 2
    except Exception:
        print(f"unirnn {args.command}: this is a bug in unirnn; please report it with the "
              "traceback below", file=sys.stderr)
        traceback.print_exc()
        return 1
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
