"""The float32 CPU fast path: oneDNN's packed GEMMs, used and exact to the suite's bounds.

In float32 on CPU the custom path runs its input projection and recurrent GEMMs through
oneDNN (``unirnn.backends._torch_kernels``); float64 and other devices use ``addmm``. These
tests check that the oneDNN path is really taken, that its outputs match the oracle with it
and without it, and that its hand-written backward matches the float64 ``addmm`` path, which
``torch.autograd.gradcheck`` validates in test_torch_gradients.py.
"""

from __future__ import annotations

import importlib

import numpy as np
import oracle
import pytest
from cases import SPECS
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights

import unirnn

torch = framework("torch")
torch_backend = importlib.import_module("unirnn.backends.torch")
kernels = importlib.import_module("unirnn.backends._torch_kernels")
cells = importlib.import_module("unirnn._cells")
torch_layout = importlib.import_module("unirnn.layouts.torch")

CUSTOM = {name: spec for name, spec in SPECS.items()
          if torch_layout.native_problem(spec) is not None}
CUSTOM["lstm-relu-wide"] = unirnn.lstm(24, 40, activation="relu", num_layers=2)
CUSTOM["gru-before-wide"] = unirnn.gru(24, 40, reset="before", bidirectional=True)

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                  reason="this torch build has no oneDNN")


def _record_onednn(monkeypatch):
    """The oneDNN GEMMs the custom path issues from now on: ``(rows, packed)`` per call,
    ``packed`` true for a weight reordered once per scan (the recurrent GEMMs)."""
    calls = []
    packed_ids = set()
    real_pack, real_linear = kernels._onednn_pack, kernels._onednn_linear

    def packing(w, batch, steps):
        packed = real_pack(w, batch, steps)
        if packed is not None:
            packed_ids.add(id(packed))
        return packed

    def counting(x, w, *args):
        calls.append((x.shape[0], id(w) in packed_ids))
        return real_linear(x, w, *args)

    monkeypatch.setattr(kernels, "_onednn_pack", packing)
    monkeypatch.setattr(kernels, "_onednn_linear", counting)
    return calls


@pytest.fixture
def onednn_calls(monkeypatch):
    """:func:`_record_onednn` with every recurrent weight packed, whatever its width and
    steps (the suite's specs are small)."""
    monkeypatch.setitem(kernels._ONEDNN, "min_inner", 1)
    monkeypatch.setitem(kernels._ONEDNN, "min_steps", 1)
    return _record_onednn(monkeypatch)


def _recurrent_gemms(spec, steps):
    """Step GEMMs a run must issue: one per step, layer, direction and recurrent weight
    the cell declares."""
    cell = cells.make_cell(spec, torch_backend.TorchOps())
    return steps * spec.num_layers * spec.num_directions * len(cell.recurrent_weights())


@needs_onednn
@pytest.mark.parametrize("enabled", [True, False], ids=["onednn", "addmm"])
@pytest.mark.parametrize("spec", CUSTOM.values(), ids=list(CUSTOM))
def test_float32_matches_oracle_with_and_without_onednn(spec, enabled, onednn_calls,
                                                        monkeypatch):
    monkeypatch.setitem(kernels._ONEDNN, "available", enabled)
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    result = torch_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                    dtype="float32")
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    ref_final = ref_final if isinstance(ref_final, tuple) else (ref_final,)
    assert max_rel_error(result.outputs, ref_out) <= TOL["float32"]
    for actual, expected in zip(result.state, ref_final):
        assert max_rel_error(actual, expected) <= TOL["float32"]
    recurrent = [rows for rows, packed in onednn_calls if packed]
    projections = [rows for rows, packed in onednn_calls if not packed]
    if enabled:
        # every step's recurrent GEMM on a packed weight, with the state's N rows; the
        # input projections (T*N rows) alone must not satisfy this
        assert recurrent == [x.shape[0]] * _recurrent_gemms(spec, x.shape[1])
        assert len(projections) == spec.num_layers * spec.num_directions
    else:
        assert onednn_calls == []


@needs_onednn
@pytest.mark.parametrize("spec", CUSTOM.values(), ids=list(CUSTOM))
def test_float32_onednn_gradients_match_float64_path(spec, onednn_calls):
    """Gradients w.r.t. the input and every weight through oneDNN's GEMMs (float32) against
    the float64 addmm path; relative to each gradient's scale."""
    weights = nonzero_weights(spec, scale=0.4)
    x, state, lengths = example_inputs(spec)
    cot = np.random.default_rng(3).standard_normal(
        (x.shape[0], x.shape[1], spec.num_directions * spec.output_size))
    fast = torch_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                  dtype="float32", cotangent=cot)
    assert sum(packed for _, packed in onednn_calls) == _recurrent_gemms(spec, x.shape[1]), \
        "the float32 CPU path did not run its recurrent GEMMs through oneDNN"
    exact = torch_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                   dtype="float64", cotangent=cot)
    assert set(fast.grads) == set(exact.grads) == {"x", *unirnn.weight_shapes(spec)}
    for name, expected in exact.grads.items():
        assert max_rel_error(fast.grads[name], expected) <= 1e-4, name


@needs_onednn
@pytest.mark.parametrize(("hidden", "steps", "packs"), [
    (384, 16, True),   # wide state, enough steps: the packed GEMM is the faster one
    (256, 16, False),  # narrow state: addmm is as fast or faster
    (384, 15, False),  # too few steps to pay for the packing
], ids=["wide", "narrow", "short"])
def test_recurrent_weights_are_packed_where_packing_pays(hidden, steps, packs, monkeypatch):
    """The default rule (``_ONEDNN``'s ``min_inner`` and ``min_steps``): which step GEMMs run
    on a packed weight, and the outputs match the oracle either way."""
    calls = _record_onednn(monkeypatch)
    spec = unirnn.lstm(4, hidden, activation="relu")
    weights = nonzero_weights(spec, scale=0.1)
    x = np.random.default_rng(0).standard_normal((2, steps, 4))
    result = torch_backend.evaluate(spec, weights, x, dtype="float32")
    ref_out, _ = oracle.run(spec, weights, x, None, None)
    assert max_rel_error(result.outputs, ref_out) <= TOL["float32"]
    assert sum(packed for _, packed in calls) == (steps if packs else 0)
