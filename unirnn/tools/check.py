"""``unirnn check``: run the same weights and inputs on every installed backend.

Each backend's outputs and final state are compared with the float64 numpy backend;
gradients (of ``sum(outputs * cotangent)`` with respect to the input and every canonical
weight) with central finite differences of the float64 numpy backend. Keras runs once
per Keras backend, each in its own subprocess (Keras picks its backend once per process).

This is a consistency check between unirnn's backends, which share the cell math of
:mod:`unirnn._cells`: it cannot see a bug in that shared math. The test suite is the
judge of correctness: it compares every backend, numpy included, with an independent
float64 oracle written from the equations (``tests/oracle.py``) and with golden values.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._evaluation import Evaluation
from .._spec import Spec, gru, lstm, rnn
from .._weights import Weights, check_fits, check_weights, weight_shapes
from ..backends import framework_installed
from ..backends import numpy as numpy_backend
from ._console import is_startup_noise
from ._targets import Target, in_process_targets, keras_backends, keras_device
from ._targets import onnxruntime_targets as _onnxruntime_targets  # noqa: F401 (tests use it)

__all__ = [
    "Case", "CheckRow", "default_cases", "finite_difference_gradients", "format_rows", "make_case",
    "run_check",
]

Progress = Callable[[int, int, str], None]
"""``progress(step, total, what)``, told before each step of :func:`run_check` starts."""

TOLERANCE = {
    # outputs and state, relative to the output scale (DESIGN.md)
    "float64": 1e-10,
    "float32": 1e-5,
}
GRAD_TOLERANCE = {
    # central differences in float64 are good to about 1e-9 of the gradient scale
    "float64": 1e-7,
    "float32": 1e-4,
}


@dataclass
class Case:
    """One spec with weights and a probe input."""

    name: str
    spec: Spec
    weights: Weights  # float64
    x: np.ndarray
    state: Any
    lengths: np.ndarray
    cotangent: np.ndarray


@dataclass
class CheckRow:
    case: str
    backend: str
    device: str
    dtype: str
    kernel: str
    outputs: float
    state: float
    grads: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        if self.error is not None:
            return False
        within = self.outputs <= TOLERANCE[self.dtype] and self.state <= TOLERANCE[self.dtype]
        return within and (self.grads is None or self.grads <= GRAD_TOLERANCE[self.dtype])


def make_case(name: str, spec: Spec, weights: Mapping[str, Any] | None = None, seed: int = 0,
              batch: int = 3, steps: int = 5) -> Case:
    """A probe for ``spec``: ragged lengths, non-zero initial state and biases."""
    rng = np.random.default_rng(seed)
    if weights is None:
        check_fits(spec, np.float64)
        weights = Weights({
            n: 0.6 * rng.uniform(-1, 1, size=s) for n, s in weight_shapes(spec).items()
        })
    weights = check_weights(spec, weights).astype(np.float64)
    x = rng.standard_normal((batch, steps, spec.input_size))
    rows = spec.num_layers * spec.num_directions
    h0 = 0.5 * rng.standard_normal((rows, batch, spec.output_size))
    state: Any = h0
    if spec.has_cell_state:
        state = (h0, 0.5 * rng.standard_normal((rows, batch, spec.hidden_size)))
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    cotangent = rng.standard_normal((batch, steps, spec.num_directions * spec.output_size))
    return Case(name, spec, weights, x, state, lengths, cotangent)


def default_cases() -> list[Case]:
    specs = {
        "torch LSTM": lstm(3, 4),
        "torch GRU": gru(3, 4),
        "ReLU RNN": rnn(3, 4, activation="relu"),
        "ReLU LSTM (Keras activation='relu')": lstm(3, 4, activation="relu"),
        "GELU-update GRU, bidirectional": gru(3, 4, activations={"z": "gelu"},
                                              bidirectional=True),
        "d2l GRU (reset before), 2 layers": gru(3, 4, reset="before", num_layers=2),
        "LSTM peepholes+proj+clip, bidir": lstm(3, 5, peepholes=True, proj_size=3,
                                                cell_clip=1.0, bidirectional=True),
        "minGRU, bidirectional": Spec("mingru", 3, 4, bidirectional=True),
        "layer-norm LSTM (haste)": Spec("ln_lstm", 3, 4),
    }
    return [make_case(name, spec, seed=i) for i, (name, spec) in enumerate(specs.items())]


def _loss(spec: Spec, weights: Mapping[str, np.ndarray], case: Case, x: np.ndarray) -> float:
    out = numpy_backend.evaluate(spec, weights, x, initial_state=case.state,
                                 lengths=case.lengths).outputs
    return float(np.sum(out * case.cotangent))


def finite_difference_gradients(case: Case, step: float = 1e-5) -> dict[str, np.ndarray]:
    """Central differences of ``sum(outputs * cotangent)`` on the float64 numpy backend."""
    grads: dict[str, np.ndarray] = {}
    base = dict(case.weights)
    x = case.x
    gx = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        gx[index] = (_loss(case.spec, base, case, plus) - _loss(case.spec, base, case, minus)) \
            / (2 * step)
    grads["x"] = gx
    for name, array in case.weights.items():
        g = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            plus, minus = array.copy(), array.copy()
            plus[index] += step
            minus[index] -= step
            g[index] = (_loss(case.spec, {**base, name: plus}, case, x)
                        - _loss(case.spec, {**base, name: minus}, case, x)) / (2 * step)
        grads[name] = g
    return grads


def _rel(actual: Any, expected: Any) -> float:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


def _non_finite(whose: str, outputs: Any, state: Any,
                grads: Mapping[str, Any] | None) -> str | None:
    """``"<whose> outputs: 3 non-finite (NaN/inf) values"`` (or state, or a gradient)."""
    parts = [("outputs", outputs), *(("final state", s) for s in state),
             *((f"gradient of {n}", g) for n, g in (grads or {}).items())]
    for what, array in parts:
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(np.asarray(array, float))))
        if bad:
            return f"{whose} {what}: {bad} non-finite (NaN/inf) value{'s' if bad > 1 else ''}"
    return None


def compare(case: Case, reference: Evaluation, ref_grads: Mapping[str, np.ndarray] | None,
            got: Evaluation, backend: str, device: str, dtype: str) -> CheckRow:
    problem = _non_finite("the float64 reference's", reference.outputs, reference.state,
                          ref_grads) or _non_finite("its", got.outputs, got.state, got.grads)
    if problem is not None:  # NaN compares as neither within nor out of tolerance: say so
        return CheckRow(case.name, backend, device, dtype, got.kernel, np.inf, np.inf,
                        None if got.grads is None else np.inf, problem)
    state = max(_rel(g, r) for g, r in zip(got.state, reference.state))
    grads = None
    if got.grads is not None and ref_grads is not None:
        missing = set(ref_grads) - set(got.grads)
        if missing:
            return CheckRow(case.name, backend, device, dtype, got.kernel, np.inf, np.inf, None,
                            f"no gradient for {sorted(missing)[0]}")
        grads = max(_rel(got.grads[n], ref_grads[n]) for n in ref_grads)
    return CheckRow(case.name, backend, device, dtype, got.kernel,
                    _rel(got.outputs, reference.outputs), state, grads)


def _evaluate(module: str, case: Case, dtype: str, **options: Any) -> Evaluation:
    # onnxruntime runs the graph unirnn.to_onnx writes (unirnn.porting.onnx.evaluate)
    backend = importlib.import_module("unirnn.porting.onnx" if module == "onnx"
                                      else f"unirnn.backends.{module}")
    cotangent = None if module == "numpy" else case.cotangent
    state = case.state
    return backend.evaluate(  # type: ignore[no-any-return]
        case.spec, case.weights.astype(dtype), case.x.astype(dtype), initial_state=state,
        lengths=case.lengths, dtype=dtype, cotangent=cotangent, **options,
    )


def _run_targets(cases: list[Case], targets: Iterable[Target], dtypes: Iterable[str],
                 references: list[tuple[Evaluation, Any]],
                 step: Callable[[str], None] = lambda what: None) -> list[CheckRow]:
    rows = []
    for case, (reference, ref_grads) in zip(cases, references):
        for label, module, device, options in targets:
            step(f"checking {label} ({device}) on {case.name}")
            for dtype in dtypes:
                if module == "onnx" and _onnx_float64_problem(case.spec, dtype):
                    continue  # onnxruntime has no float64 kernel of an op the graph needs
                try:
                    got = _evaluate(module, case, dtype, **options)
                except Exception as err:  # a failing backend is a row, not a crash
                    rows.append(CheckRow(case.name, label, device, dtype, "-", np.inf, np.inf,
                                         None, f"{type(err).__name__}: {err}"))
                    continue
                rows.append(compare(case, reference, ref_grads, got, label, device, dtype))
    return rows


def _onnx_float64_problem(spec: Spec, dtype: str) -> str | None:
    from ..porting.onnx import float64_problem

    return float64_problem(spec) if dtype == "float64" else None


def _save_cases(cases: list[Case], path: Path) -> None:
    arrays: dict[str, Any] = {}
    for k, case in enumerate(cases):
        arrays[f"{k}/spec"] = np.array(case.spec.to_json())
        arrays[f"{k}/name"] = np.array(case.name)
        arrays[f"{k}/x"] = case.x
        arrays[f"{k}/lengths"] = case.lengths
        arrays[f"{k}/cotangent"] = case.cotangent
        for i, s in enumerate(case.state if isinstance(case.state, tuple) else (case.state,)):
            arrays[f"{k}/state{i}"] = s
        for name, w in case.weights.items():
            arrays[f"{k}/w/{name}"] = w
    np.savez(path, **arrays)


def _load_cases(path: Path) -> list[Case]:
    data = np.load(path)
    count = len({key.split("/")[0] for key in data.files})
    cases = []
    for k in range(count):
        spec = Spec.from_json(str(data[f"{k}/spec"]))
        states = tuple(data[f"{k}/state{i}"] for i in range(2) if f"{k}/state{i}" in data.files)
        weights = Weights({key.split("/", 2)[2]: data[key] for key in data.files
                           if key.startswith(f"{k}/w/")})
        cases.append(Case(str(data[f"{k}/name"]), spec, weights, data[f"{k}/x"],
                          states if spec.has_cell_state else states[0],
                          data[f"{k}/lengths"], data[f"{k}/cotangent"]))
    return cases


def _keras_worker(cases_path: str, dtypes: str, imports: str = "") -> None:
    """Subprocess entry: evaluate every case with Keras' current backend; print JSON rows.
    ``imports``: the ``--import`` modules (comma-separated), imported first."""
    if imports:
        from ._imports import import_definitions

        import_definitions(imports.split(","))
    cases = _load_cases(Path(cases_path))
    keras = importlib.import_module("keras")
    label = f"keras {keras.backend.backend()}"
    device = keras_device()
    out = []
    for case in cases:
        for path in ("auto", "custom"):
            for dtype in dtypes.split(","):
                try:
                    got = _evaluate("keras", case, dtype, path=path)
                    result = {"outputs": got.outputs.tolist(),
                              "state": [s.tolist() for s in got.state], "kernel": got.kernel,
                              "grads": None if got.grads is None
                              else {n: g.tolist() for n, g in got.grads.items()}}
                except Exception as err:
                    result = {"error": f"{type(err).__name__}: {err}"}
                out.append({"case": case.name, "backend": label + (" custom" if path == "custom"
                                                                    else ""),
                            "device": device, "dtype": dtype, **result})
    print("UNIRNN-ROWS " + json.dumps(out))


def _keras_rows(cases: list[Case], dtypes: list[str], references: list[tuple[Evaluation, Any]],
                step: Callable[[str], None] = lambda what: None,
                imports: Sequence[str] = ()) -> list[CheckRow]:
    rows: list[CheckRow] = []
    by_name = {case.name: (case, ref) for case, ref in zip(cases, references)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.npz"
        _save_cases(cases, path)
        for keras_backend in keras_backends():
            step(f"checking keras {keras_backend} (a subprocess)")
            env = {"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ, "KERAS_BACKEND": keras_backend,
                   "JAX_ENABLE_X64": "1"}
            result = subprocess.run(
                [sys.executable, "-c",
                 "import sys; from unirnn.tools.check import _keras_worker; "
                 "_keras_worker(sys.argv[1], sys.argv[2], sys.argv[3])", str(path),
                 ",".join(dtypes), ",".join(imports)],
                capture_output=True, text=True, env=env, check=False,
            )
            lines = [ln for ln in result.stdout.splitlines() if ln.startswith("UNIRNN-ROWS ")]
            if result.returncode != 0 or not lines:
                said = [line for line in (result.stderr or result.stdout).splitlines()
                        if line.strip() and not is_startup_noise(line)]
                tail = said[-1:] or ["?"]
                rows.append(CheckRow("*", f"keras {keras_backend}", "-", dtypes[0], "-",
                                     np.inf, np.inf, None, f"worker failed: {tail[0]}"))
                continue
            for item in json.loads(lines[-1][len("UNIRNN-ROWS "):]):
                case, (reference, ref_grads) = by_name[item["case"]]
                device = item["device"]
                if "error" in item:
                    rows.append(CheckRow(item["case"], item["backend"], device, item["dtype"],
                                         "-", np.inf, np.inf, None, item["error"]))
                    continue
                got = Evaluation(np.array(item["outputs"]),
                                 tuple(np.array(s) for s in item["state"]), item["kernel"],
                                 None if item["grads"] is None else
                                 {n: np.array(g) for n, g in item["grads"].items()})
                rows.append(compare(case, reference, ref_grads, got, item["backend"], device,
                                    item["dtype"]))
    return rows


def run_check(cases: list[Case], dtypes: Iterable[str] = ("float64", "float32"),
              gradients: bool = True, keras: bool = True, keras_in_process: bool = False,
              progress: Progress | None = None, imports: Sequence[str] = ()
              ) -> list[CheckRow]:
    """Every installed backend on every case; one row per (case, backend, device, dtype).

    ``keras`` runs Keras on each installed Keras backend, one subprocess each;
    ``keras_in_process`` runs it here instead, on this process's Keras backend only.
    ``progress(step, total, what)`` is told before each step starts (the command line's
    status line, :class:`unirnn.tools._console.StatusLine`). ``imports`` are the modules
    that register user families and activations (``unirnn check --import``), imported in
    the Keras subprocesses too.
    """
    dtypes = list(dtypes)
    targets = in_process_targets()
    if keras_in_process and framework_installed("keras"):
        import keras as keras_module

        label = f"keras {keras_module.backend.backend()}"
        device = keras_device()
        targets += [(label, "keras", device, {}),
                    (label + " custom", "keras", device, {"path": "custom"})]
    total = len(cases) * (1 + len(targets)) + (len(keras_backends()) if keras else 0)
    done = iter(range(1, total + 1))

    def step(what: str) -> None:
        if progress is not None:
            progress(next(done, total), total, what)

    references = []
    for case in cases:
        step(f"float64 reference{' and finite differences' if gradients else ''} of "
             f"{case.name}")
        reference = _evaluate("numpy", case, "float64")
        references.append((reference, finite_difference_gradients(case) if gradients else None))
    rows = _run_targets(cases, targets, dtypes, references, step)
    if keras:
        rows += _keras_rows(cases, dtypes, references, step, imports)
    return rows


def format_rows(rows: list[CheckRow]) -> str:
    header = ("case", "backend", "device", "dtype", "kernel", "outputs", "state", "grads", "")
    table = [header]
    for row in rows:
        table.append((
            row.case, row.backend, row.device, row.dtype, row.kernel,
            f"{row.outputs:.1e}", f"{row.state:.1e}",
            "-" if row.grads is None else f"{row.grads:.1e}",
            "ok" if row.ok else f"FAIL {row.error or ''}".strip(),
        ))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
