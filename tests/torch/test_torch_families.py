"""The families beyond rnn, lstm and gru on the torch backend, against the float64 oracle:
outputs and states, gradients, streaming, the parallel scan, a user-defined family."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from cases import FAMILY_SPECS
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights

import unirnn

torch = framework("torch")

PARALLEL = {"mingru", "minlstm"}


def _state(spec, state, dtype, grad=False):
    if state is None:
        return None
    parts = state if isinstance(state, tuple) else (state,)
    tensors = tuple(torch.tensor(s, dtype=dtype, requires_grad=grad) for s in parts)
    return tensors if spec.has_cell_state else tensors[0]


def _error(actual, expected):
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    return max(max_rel_error(a.detach().double().numpy(), e) for a, e in zip(actual, expected))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", ["plain", "state+lengths"])
@pytest.mark.parametrize("spec", FAMILY_SPECS.values(), ids=list(FAMILY_SPECS))
def test_family_matches_oracle(spec, variant, dtype):
    tdtype = getattr(torch, dtype)
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, with_state=variant != "plain",
                                       with_lengths=variant != "plain")
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=tdtype, batch_first=True)
    assert model.kernel == "unirnn.torch-loop"  # on the CPU the parallel form is not faster
    with torch.no_grad():
        out, final = model(torch.tensor(x, dtype=tdtype), _state(spec, state, tdtype),
                           lengths=lengths)
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert max_rel_error(out.double().numpy(), ref_out) <= TOL[dtype]
    assert _error(final, ref_final) <= TOL[dtype]


@pytest.mark.parametrize("spec", FAMILY_SPECS.values(), ids=list(FAMILY_SPECS))
def test_family_packed_sequence(spec):
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, batch=4)
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         batch_first=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.tensor(x), torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out, final = model(packed, _state(spec, state, torch.float64))
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                       total_length=x.shape[1])
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert max_rel_error(padded.numpy(), ref_out) <= TOL["float64"]
    assert _error(final, ref_final) <= TOL["float64"]


@pytest.mark.parametrize("spec", FAMILY_SPECS.values(), ids=list(FAMILY_SPECS))
def test_family_gradcheck(spec):
    """Inputs, initial state and every parameter, ragged lengths, float64."""
    spec = spec.replace(input_size=2, hidden_size=3, proj_size=min(spec.proj_size, 2))
    weights = nonzero_weights(spec, scale=0.4)
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         batch_first=True)
    x, state, lengths = example_inputs(spec, batch=2, steps=3)
    xt = torch.tensor(x, requires_grad=True)
    states = list(_state(spec, state, torch.float64, grad=True)) if spec.has_cell_state \
        else [_state(spec, state, torch.float64, grad=True)]
    names = list(model.canonical_names().values())
    params = [getattr(model, n).detach().clone().requires_grad_(True) for n in names]

    def run(xt, *args):
        hx, p = args[: len(states)], args[len(states):]
        out, final = torch.func.functional_call(
            model, dict(zip(names, p)),
            (xt, tuple(hx) if spec.has_cell_state else hx[0]), {"lengths": lengths})
        return (out, *(final if isinstance(final, tuple) else (final,)))

    assert torch.autograd.gradcheck(run, (xt, *states, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", FAMILY_SPECS.values(), ids=list(FAMILY_SPECS))
def test_family_gradients_against_oracle_through_autograd(spec):
    """Backward through the module's own fast path (deferred weight gradients, the
    parallel scan) equals backward through plain autograd ops (torch.func)."""
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         batch_first=True)
    xt = torch.tensor(x, requires_grad=True)
    out, _ = model(xt, _state(spec, state, torch.float64), lengths=lengths)
    cot = torch.tensor(np.random.default_rng(3).standard_normal(tuple(out.shape)))
    grads = torch.autograd.grad((out * cot).sum(), [xt, *model.parameters()])
    params = dict(model.named_parameters())

    def loss(xx, p):
        y, _ = torch.func.functional_call(model, p, (xx, _state(spec, state, torch.float64)),
                                          {"lengths": lengths})
        return (y * cot).sum()

    reference = torch.func.grad(loss, argnums=(0, 1))(xt.detach(), {k: v.detach() for k, v
                                                                    in params.items()})
    assert torch.allclose(grads[0], reference[0], atol=1e-10)
    for grad, name in zip(grads[1:], params):
        assert torch.allclose(grad, reference[1][name], atol=1e-10), name


@pytest.mark.parametrize("spec", FAMILY_SPECS.values(), ids=list(FAMILY_SPECS))
def test_family_streaming_equals_sequence(spec):
    """The cell module stepped one input at a time from a state gives the layer's outputs
    (for minGRU/minLSTM: the sequential step against the parallel scan)."""
    spec = spec.replace(num_layers=1, bidirectional=False, proj_size=0)
    weights = nonzero_weights(spec)
    x, state, _ = example_inputs(spec, with_lengths=False)
    layer = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         batch_first=True)
    cell = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                        module="cell")
    assert cell.kernel == "unirnn.torch-cell"
    with torch.no_grad():
        out, final = layer(torch.tensor(x), _state(spec, state, torch.float64))
        hx = _state(spec, state, torch.float64)
        hx = tuple(s[0] for s in hx) if spec.has_cell_state else hx[0]
        steps = []
        for t in range(x.shape[1]):
            hx = cell(torch.tensor(x[:, t]), hx)
            steps.append(hx[0] if spec.has_cell_state else hx)
    assert torch.allclose(torch.stack(steps, 1), out, atol=1e-12)
    last = hx if spec.has_cell_state else (hx,)
    final = final if isinstance(final, tuple) else (final,)
    for a, b in zip(last, final):
        assert torch.allclose(a, b[0], atol=1e-12)


def test_kernel_follows_the_device(monkeypatch):
    from unirnn.backends import _torch_scans

    model = unirnn.build(unirnn.Spec("minlstm", 3, 4), backend="torch")
    assert model.kernel == "unirnn.torch-loop"
    monkeypatch.setattr(_torch_scans, "PARALLEL_DEVICES", {"cpu"})
    model.to(torch.float64)  # any .to() lays the module out again, kernel included
    assert model.kernel == "unirnn.torch-parallel-scan"


def test_parallel_form_needs_sigmoid_gates(monkeypatch):
    from unirnn.backends import _torch_scans

    monkeypatch.setattr(_torch_scans, "PARALLEL_DEVICES", {"cpu", "cuda"})
    """minGRU with another update activation has no log-space form: it is stepped, and
    still equals the oracle."""
    spec = unirnn.Spec("mingru", 3, 4, activations={"z": "hard_sigmoid"})
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         batch_first=True)
    assert model.kernel == "unirnn.torch-loop"
    with torch.no_grad():
        out, _ = model(torch.tensor(x), torch.tensor(state), lengths=lengths)
    assert max_rel_error(out.numpy(), oracle.run(spec, weights, x, state, lengths)[0]) <= 1e-10


@pytest.fixture(params=["multiply-add", "log-space"])
def scan_kind(request, monkeypatch):
    """The parallel form (CUDA's) on the CPU, with each of the torch backend's linear
    scans: the log-space one runs here when its device set includes the CPU."""
    from unirnn.backends import _torch_scans

    monkeypatch.setattr(_torch_scans, "PARALLEL_DEVICES", {"cpu", "cuda"})
    if request.param == "log-space":
        monkeypatch.setattr(_torch_scans, "LOG_SPACE_DEVICES", {"cpu", "cuda"})
    return request.param


@pytest.mark.parametrize("spec", [s for s in FAMILY_SPECS.values() if s.family in PARALLEL],
                         ids=[k for k, s in FAMILY_SPECS.items() if s.family in PARALLEL])
def test_both_linear_scans_match_oracle(spec, scan_kind):
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec)
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         batch_first=True)
    assert model.kernel == "unirnn.torch-parallel-scan"
    xt = torch.tensor(x, requires_grad=True)
    out, final = model(xt, _state(spec, state, torch.float64), lengths=lengths)
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert max_rel_error(out.detach().numpy(), ref_out) <= TOL["float64"]
    assert _error(final, ref_final) <= TOL["float64"]
    cot = torch.tensor(np.random.default_rng(4).standard_normal(tuple(out.shape)))
    (out * cot).sum().backward()
    stepped = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                           batch_first=True, path="custom")
    from unirnn.backends import _torch_scans

    _torch_scans.PARALLEL_DEVICES.discard("cpu")  # (monkeypatch restores the set)
    stepped._set_kernel()
    assert stepped.kernel == "unirnn.torch-loop"
    xs = torch.tensor(x, requires_grad=True)
    y, _ = stepped(xs, _state(spec, state, torch.float64), lengths=lengths)
    (y * cot).sum().backward()
    assert torch.allclose(xt.grad, xs.grad, atol=1e-10)
    for (name, p), q in zip(model.named_parameters(), stepped.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-10), name


def test_parallel_scan_long_sequence_float32(scan_kind):
    """T=512 in float32: each scan stays within float32 tolerance of the oracle (the
    products of 512 forget coefficients underflow; the chunked log space does not)."""
    spec = unirnn.Spec("mingru", 4, 8)
    weights = nonzero_weights(spec, scale=1.5)
    x = np.random.default_rng(0).standard_normal((2, 512, 4))
    h0 = np.random.default_rng(1).standard_normal((1, 2, 8))
    model = unirnn.build(spec, backend="torch", weights=weights, batch_first=True)
    with torch.no_grad():
        out, _ = model(torch.tensor(x, dtype=torch.float32), torch.tensor(h0, dtype=torch.float32))
    assert max_rel_error(out.double().numpy(), oracle.run(spec, weights, x, h0)[0]) <= 1e-5


@pytest.mark.parametrize("spec", FAMILY_SPECS.values(), ids=list(FAMILY_SPECS))
def test_native_path_refused(spec):
    with pytest.raises(ValueError, match="path='native'") as info:
        unirnn.build(spec, backend="torch", path="native")
    assert ("family" in str(info.value) or "reset='none'" in str(info.value)
            or "coupled=True" in str(info.value))


# -- a user-defined family ---------------------------------------------------------------


class ScaledGRUCell(unirnn.Cell):
    """A test family: a GRU without reset gate whose candidate is scaled per unit
    (``n = tanh(a_n) * s``), exercising an extra parameter and the protocol's ops."""

    def prepare(self, params):
        return {"w_h": params["w_h"], "b_h": params.get("b_h"), "s": params["s"]}

    def step(self, p, xp, carry):
        (h,) = carry
        a_z, a_n = self.ops.split(xp + self._recurrent(p, "w_h", h), 2)
        z = self.act["z"](a_z)
        n = self.act["n"](a_n) * p["s"]
        h = self.ops.lerp(n, h, z)
        return (h,), h


def _register_scaled_gru():
    return unirnn.register_family(
        "test_scaled_gru", gates=("z", "n"), activations={"z": "sigmoid", "n": "tanh"},
        cell=ScaledGRUCell, params=lambda spec: {"s": unirnn.Param((spec.hidden_size,), "ones")},
        doc="a test family", overwrite=True)


def _scaled_gru_oracle(spec, w, x, h0):
    """Straight from the equations, one sample and step at a time."""
    H = spec.hidden_size
    out = np.zeros((x.shape[0], x.shape[1], H))
    for n in range(x.shape[0]):
        h = h0[0, n]
        for t in range(x.shape[1]):
            a = w["layer0.forward.w_x"] @ x[n, t] + w["layer0.forward.b_x"] \
                + w["layer0.forward.w_h"] @ h + w["layer0.forward.b_h"]
            z = 1 / (1 + np.exp(-a[:H]))
            cand = np.tanh(a[H:]) * w["layer0.forward.s"]
            h = z * h + (1 - z) * cand
            out[n, t] = h
    return out


def test_user_family_runs_saves_and_loads(tmp_path):
    _register_scaled_gru()
    spec = unirnn.Spec("test_scaled_gru", 3, 4)
    assert unirnn.weight_shapes(spec)["layer0.forward.s"] == (4,)
    assert np.all(unirnn.init_weights(spec)["layer0.forward.s"] == 1.0)
    weights = nonzero_weights(spec)
    x, h0, _ = example_inputs(spec, with_lengths=False)
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         batch_first=True)
    with torch.no_grad():
        out, _ = model(torch.tensor(x), torch.tensor(h0))
    assert max_rel_error(out.numpy(), _scaled_gru_oracle(spec, weights, x, h0)) <= 1e-12
    path = tmp_path / "scaled.safetensors"
    unirnn.save(path, spec, weights)
    loaded_spec, loaded = unirnn.load(path)
    assert loaded_spec == spec
    assert np.array_equal(loaded["layer0.forward.s"], weights["layer0.forward.s"])


def test_unregistered_family_in_a_file_names_it(tmp_path):
    from unirnn import _families
    from unirnn._cells import RNNCell

    unirnn.register_family("test_transient", gates=("h",), activations={"h": "tanh"},
                           cell=RNNCell, overwrite=True)
    spec = unirnn.Spec("test_transient", 2, 3)
    path = tmp_path / "transient.safetensors"
    unirnn.save(path, spec, unirnn.init_weights(spec))
    del _families._REGISTRY["test_transient"]
    with pytest.raises(ValueError, match="'test_transient' is not registered"):
        unirnn.load(path)
