"""unirnn -> ONNX -> onnxruntime, judged by the independent float64 oracle (tests/oracle.py).

Every spec of tests/cases.py and the drawn specs of the equivalence suite, with and without
lengths and initial states: float32 within 1e-5 and float64 within 1e-10 of the output
scale, on the graph ``unirnn.to_onnx`` writes (native op or ``Scan``), run by onnxruntime's
CPU provider. The golden values of tests/golden.py hold on onnxruntime too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import oracle
import pytest
from cases import SPECS
from golden import CASES, IDS, assert_golden
from hypothesis import given
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights

framework("onnx")
framework("onnxruntime")

# the equivalence suite's drawn specs, the same strategy every backend is held to
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cross"))
from test_equivalence import equivalence_cases  # noqa: E402

from unirnn.porting import onnx as onnx_porting  # noqa: E402


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def check_against_oracle(spec, weights, x, state, lengths, dtype, **options):
    """Run the exported graph in onnxruntime and hold it to the oracle; returns the kernel."""
    want_out, want_state = oracle.run(spec, weights, x, state, lengths)
    got = onnx_porting.evaluate(spec, weights, x.astype(dtype), initial_state=state,
                                lengths=lengths, dtype=dtype, **options)
    assert got.outputs.dtype == np.dtype(dtype)
    assert got.outputs.shape == want_out.shape
    assert max_rel_error(got.outputs, want_out) <= TOL[dtype], "outputs"
    assert len(got.state) == len(_as_tuple(want_state))
    for name, g, want in zip(("h_n", "c_n"), got.state, _as_tuple(want_state)):
        assert g.shape == want.shape, name
        assert max_rel_error(g, want) <= TOL[dtype], name
    return got.kernel


def _erf_missing(spec, dtype, x, state, lengths):
    """float64 GELU: onnxruntime has no float64 Erf kernel. Pin that it says so (the float32
    graph of the same spec is held to the oracle); True when that is the case here."""
    if dtype != "float64" or onnx_porting.float64_problem(spec) is None:
        return False
    with pytest.raises(Exception, match="Erf"):
        onnx_porting.evaluate(spec, nonzero_weights(spec), x, initial_state=state,
                              lengths=lengths, dtype=dtype)
    return True


@pytest.mark.parametrize("inputs", ["state+lengths", "plain"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_every_case_matches_oracle(spec, dtype, inputs):
    weights = nonzero_weights(spec, seed=7)
    full = inputs == "state+lengths"
    x, state, lengths = example_inputs(spec, batch=3, steps=5, seed=3, with_state=full,
                                       with_lengths=full)
    if _erf_missing(spec, dtype, x, state, lengths):
        return
    check_against_oracle(spec, weights, x, state, lengths, dtype)


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_every_case_as_scan_graph_matches_oracle(spec):
    """The Scan graph of specs the native op also computes, in float32 (where the export
    would pick the native op): the two graphs compute the same function."""
    weights = nonzero_weights(spec, seed=2)
    x, state, lengths = example_inputs(spec, batch=3, steps=4, seed=5)
    assert check_against_oracle(spec, weights, x, state, lengths, "float32",
                                native=False) == "onnx.Scan"


@given(case=equivalence_cases())
def test_drawn_specs_match_oracle(case):
    spec, batch, steps, seed, dtype, with_state, with_lengths = case
    if onnx_porting.float64_problem(spec):
        dtype = "float32"  # float64 GELU does not run in onnxruntime (pinned above)
    weights = nonzero_weights(spec, seed=seed)
    x, state, lengths = example_inputs(spec, batch, steps, seed, with_state, with_lengths)
    check_against_oracle(spec, weights, x, state, lengths, dtype)


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-major", "time-major"])
def test_time_major_graph(batch_first):
    spec = SPECS["gru-new-bidir-2layer"]
    weights = nonzero_weights(spec, seed=1).astype(np.float32)
    x, _, lengths = example_inputs(spec, batch=2, steps=4, seed=1, with_state=False)
    model = onnx_porting.to_onnx(spec, weights, batch_first=batch_first)
    feed = x if batch_first else x.transpose(1, 0, 2)
    y, (h_n,) = onnx_porting.run(model, feed, lengths=lengths)
    want, want_h = oracle.run(spec, weights, x, None, lengths)
    got = y if batch_first else y.transpose(1, 0, 2)
    assert max_rel_error(got, want) <= TOL["float32"]
    assert max_rel_error(h_n, want_h) <= TOL["float32"]


def test_dynamic_batch_and_time():
    """One exported graph serves any batch and time."""
    spec = SPECS["lstm-proj-bidir-2layer"]
    weights = nonzero_weights(spec, seed=4).astype(np.float32)
    model = onnx_porting.to_onnx(spec, weights)
    for batch, steps in ((1, 2), (5, 9)):
        x, _, lengths = example_inputs(spec, batch, steps, seed=batch, with_state=False)
        y, (h_n, c_n) = onnx_porting.run(model, x, lengths=lengths)
        want, (want_h, want_c) = oracle.run(spec, weights, x, None, lengths)
        assert max_rel_error(y, want) <= TOL["float32"]
        assert max_rel_error(h_n, want_h) <= TOL["float32"]
        assert max_rel_error(c_n, want_c) <= TOL["float32"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden_onnxruntime(case):
    """Hand-checkable constants, float64 within 1e-15, on onnxruntime's float64 graph."""
    assert_golden(onnx_porting.evaluate, case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_golden_onnxruntime_native_float32(case):
    _, spec, weights, x, expected = case
    result = onnx_porting.evaluate(spec, weights, x, dtype="float32")
    assert result.kernel.startswith("onnx.") and result.kernel != "onnx.Scan" or \
        spec.update == "new"
    np.testing.assert_allclose(result.outputs[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("opset", [14, 25])
@pytest.mark.parametrize("name", ["lstm-peephole-clip", "gru-before"])
def test_oldest_and_newer_opsets(name, opset):
    """Opset 14 (LSTM/GRU/RNN version 14) and a newer one run with the oracle's numbers."""
    spec = SPECS[name]
    weights = nonzero_weights(spec, seed=8).astype(np.float32)
    x, _, lengths = example_inputs(spec, batch=2, steps=4, seed=8, with_state=False)
    model = onnx_porting.to_onnx(spec, weights, opset=opset)
    assert model.opset_import[0].version == opset
    y, _ = onnx_porting.run(model, x, lengths=lengths)
    assert max_rel_error(y, oracle.run(spec, weights, x, None, lengths)[0]) <= TOL["float32"]
