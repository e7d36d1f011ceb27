"""Every family beyond rnn, lstm and gru exported as a ``Scan`` graph whose body is the
family's own step, run by onnxruntime and held to the float64 oracle; files round-trip."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from cases import FAMILY_SPECS
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights

import unirnn

framework("onnx")
framework("onnxruntime")

from unirnn.porting import onnx as onnx_porting  # noqa: E402


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", ["plain", "state+lengths"])
@pytest.mark.parametrize("spec", FAMILY_SPECS.values(), ids=list(FAMILY_SPECS))
def test_family_scan_graph_matches_oracle(spec, variant, dtype):
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, with_state=variant != "plain",
                                       with_lengths=variant != "plain")
    want_out, want_state = oracle.run(spec, weights, x, state, lengths)
    got = onnx_porting.evaluate(spec, weights, x.astype(dtype), initial_state=state,
                                lengths=lengths, dtype=dtype)
    assert got.kernel == "onnx.Scan"
    assert max_rel_error(got.outputs, want_out) <= TOL[dtype]
    for g, want in zip(got.state, _as_tuple(want_state), strict=True):
        assert max_rel_error(g, want) <= TOL[dtype]


@pytest.mark.parametrize("spec", FAMILY_SPECS.values(), ids=list(FAMILY_SPECS))
def test_family_native_op_refused_by_name(spec):
    with pytest.raises(ValueError, match="native=True") as info:
        onnx_porting.to_onnx(spec, nonzero_weights(spec), native=True)
    message = str(info.value)
    assert spec.family in message or "reset='none'" in message or "coupled=True" in message


@pytest.mark.parametrize("name", ["ln_lstm", "minlstm-bidir", "gru-no-reset"])
def test_family_round_trip_is_bit_exact(name):
    spec = FAMILY_SPECS[name]
    weights = nonzero_weights(spec).astype(np.float32)
    spec2, weights2 = unirnn.from_onnx(onnx_porting.to_onnx(spec, weights))
    assert spec2 == spec
    assert set(weights2) == set(weights)
    for key, value in weights.items():
        np.testing.assert_array_equal(weights2[key], value, err_msg=key)


class _HalfTanhCell(unirnn.Cell):
    """A user family for the export: ``h = act(W_x x + b_x + (W_h h + b_h) / 2)``."""

    def step(self, p, xp, carry):
        h = self.act["h"](xp + self._recurrent(p, "w_h", carry[0]) * 0.5)
        return (h,), h


def test_user_family_with_a_user_activation_exports():
    unirnn.register_family("test_half_rnn", gates=("h",), activations={"h": "tanh"},
                           cell=_HalfTanhCell, overwrite=True)
    unirnn.register_activation(
        "test_onnx_cube", numpy=lambda x: x * x * x, overwrite=True,
        onnx=lambda g, x: g.op("Mul", g.op("Mul", x, x), x))
    spec = unirnn.Spec("test_half_rnn", 2, 3, activations={"h": "test_onnx_cube"})
    weights = nonzero_weights(spec, scale=0.3)
    x, state, lengths = example_inputs(spec, steps=3)
    got = onnx_porting.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                dtype="float64")
    h = state[0]
    expected = np.zeros((x.shape[0], x.shape[1], 3))
    w = {k.split(".")[-1]: v for k, v in weights.items()}
    for n in range(x.shape[0]):
        hn = h[n]
        for t in range(lengths[n]):
            a = w["w_x"] @ x[n, t] + w["b_x"] + 0.5 * (w["w_h"] @ hn + w["b_h"])
            hn = a ** 3
            expected[n, t] = hn
    assert max_rel_error(got.outputs, expected) <= 1e-12
