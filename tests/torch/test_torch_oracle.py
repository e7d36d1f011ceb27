"""The torch backend against the independent float64 oracle (tests/oracle.py)."""

from __future__ import annotations

import importlib

import numpy as np
import oracle
import pytest
from cases import SPECS, STANDARD
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights

import unirnn

torch = framework("torch")
torch_backend = importlib.import_module("unirnn.backends.torch")

VARIANTS = ["plain", "state+lengths"]


def _state_error(actual, expected):
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    return max(max_rel_error(a.detach().double().numpy(), e) for a, e in zip(actual, expected))


def _torch_state(spec, state, dtype):
    if state is None:
        return None
    if spec.family == "lstm":
        return tuple(torch.tensor(s, dtype=dtype) for s in state)
    return torch.tensor(state, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_module_matches_oracle(spec, variant, dtype):
    """Time-major (the default layout), non-zero state, ragged lengths."""
    tdtype = getattr(torch, dtype)
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, with_state=variant != "plain",
                                       with_lengths=variant != "plain")
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=tdtype)
    xt = torch.tensor(x, dtype=tdtype).transpose(0, 1)
    with torch.no_grad():
        out, final = model(xt, _torch_state(spec, state, tdtype), lengths=lengths)
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert out.dtype == tdtype
    assert max_rel_error(out.transpose(0, 1).double().numpy(), ref_out) <= TOL[dtype]
    assert _state_error(final, ref_final) <= TOL[dtype]


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_packed_sequence_matches_oracle(spec):
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, batch=4)
    lengths[2] = lengths[0]  # a tie in the sort
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         batch_first=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.tensor(x), torch.tensor(lengths), batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        out, final = model(packed, _torch_state(spec, state, torch.float64))
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    torch.testing.assert_close(out.sorted_indices, packed.sorted_indices)
    padded, out_lengths = torch.nn.utils.rnn.pad_packed_sequence(
        out, batch_first=True, total_length=x.shape[1]
    )
    np.testing.assert_array_equal(out_lengths.numpy(), lengths)
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert max_rel_error(padded.numpy(), ref_out) <= TOL["float64"]
    assert _state_error(final, ref_final) <= TOL["float64"]


@pytest.mark.parametrize("spec", STANDARD.values(), ids=list(STANDARD))
def test_custom_path_of_standard_spec_matches_oracle(spec):
    """unirnn's loop computes the standard cells too (path='custom')."""
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    result = torch_backend.evaluate(spec, weights, x, initial_state=state,
                                            lengths=lengths, path="custom")
    assert result.kernel == "unirnn.torch-loop"
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert max_rel_error(result.outputs, ref_out) <= TOL["float64"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_evaluate_contract(spec, dtype):
    """evaluate(): numpy in, numpy out, batch-major, torch-ordered state."""
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    result = torch_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                    dtype=dtype)
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    ref_final = ref_final if isinstance(ref_final, tuple) else (ref_final,)
    assert isinstance(result.outputs, np.ndarray) and result.outputs.dtype == np.dtype(dtype)
    assert result.grads is None
    assert max_rel_error(result.outputs, ref_out) <= TOL[dtype]
    assert len(result.state) == len(ref_final)
    for actual, expected in zip(result.state, ref_final):
        assert actual.shape == expected.shape
        assert max_rel_error(actual, expected) <= TOL[dtype]


def test_bfloat16_runs_close_to_oracle():
    spec = SPECS["gru-gelu-z"]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    result = torch_backend.evaluate(spec, weights, x, initial_state=state,
                                            lengths=lengths, dtype="bfloat16")
    ref_out, _ = oracle.run(spec, weights, x, state, lengths)
    assert max_rel_error(result.outputs, ref_out) <= 5e-2
