"""The torch backend against torch's own nn.RNN / nn.LSTM / nn.GRU with the same weights."""

from __future__ import annotations

import pytest
from support import example_inputs, framework, nonzero_weights

import unirnn

torch = framework("torch")
nn = torch.nn

NATIVE = {
    "rnn-tanh": (lambda: nn.RNN(3, 4), "torch._VF.rnn_tanh"),
    "rnn-relu-nobias": (lambda: nn.RNN(3, 4, nonlinearity="relu", bias=False),
                        "torch._VF.rnn_relu"),
    "rnn-2layer-bidir": (lambda: nn.RNN(3, 4, num_layers=2, bidirectional=True),
                         "torch._VF.rnn_tanh"),
    "lstm": (lambda: nn.LSTM(3, 4), "torch._VF.lstm"),
    "lstm-proj-bidir-2layer": (lambda: nn.LSTM(3, 5, proj_size=2, num_layers=2,
                                               bidirectional=True), "torch._VF.lstm"),
    "gru": (lambda: nn.GRU(3, 4), "torch._VF.gru"),
    "gru-nobias-bidir-2layer": (lambda: nn.GRU(3, 4, bias=False, num_layers=2,
                                               bidirectional=True), "torch._VF.gru"),
}


def _native(name):
    torch.manual_seed(0)
    return NATIVE[name][0]().double()


def _hx(spec, state):
    if spec.family == "lstm":
        return tuple(torch.tensor(s, requires_grad=True) for s in state)
    return torch.tensor(state, requires_grad=True)


def _flat(out, state):
    return [out, *(state if isinstance(state, tuple) else (state,))]


def _run_and_grad(module, spec, x, state, lengths=None):
    xt = torch.tensor(x, requires_grad=True)
    hx = _hx(spec, state)
    if lengths is None:
        out, final = module(xt, hx)
    else:
        packed = nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths),
                                                   enforce_sorted=False)
        out, final = module(packed, hx)
        out = nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])[0]
    flat = _flat(out, final)
    gen = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in flat)
    inputs = [xt, *(hx if isinstance(hx, tuple) else (hx,)), *module.parameters()]
    grads = torch.autograd.grad(loss, inputs)
    return [t.detach() for t in flat], grads


@pytest.mark.parametrize("path", ["auto", "custom"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("name", list(NATIVE))
def test_outputs_state_and_gradients_match_native(name, packed, path):
    """Weights loaded from the native module's state_dict; grads w.r.t. x, hx and weights."""
    native = _native(name)
    spec, _ = unirnn.from_torch(native)
    model = unirnn.build(spec, backend="torch", dtype=torch.float64, path=path)
    model.load_state_dict(native.state_dict())
    x, state, lengths = example_inputs(spec)
    x = x.transpose(1, 0, 2).copy()  # (T, N, I)
    expected, expected_grads = _run_and_grad(native, spec, x, state, lengths if packed else None)
    actual, actual_grads = _run_and_grad(model, spec, x, state, lengths if packed else None)
    for a, e in zip(actual + list(actual_grads), expected + list(expected_grads)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(NATIVE))
def test_dispatches_to_fused_kernel(name):
    native = _native(name)
    spec, weights = unirnn.from_torch(native)
    model = unirnn.build(spec, backend="torch", weights=weights)
    assert model.kernel == NATIVE[name][1]
    assert unirnn.build(spec, backend="torch", path="custom").kernel == "unirnn.torch-loop"


@pytest.mark.parametrize("name", list(NATIVE))
def test_fused_kernel_is_called(name, monkeypatch):
    """The module really calls torch._VF.<kernel> (not just reports it)."""
    native = _native(name)
    spec, weights = unirnn.from_torch(native)
    model = unirnn.build(spec, backend="torch", weights=weights)
    fn_name = NATIVE[name][1].rsplit(".", 1)[1]
    calls = []
    original = getattr(torch._VF, fn_name)

    def spy(*args, **kwargs):
        calls.append(fn_name)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch._VF, fn_name, spy)
    model(torch.zeros(2, 3, 3))
    assert calls == [fn_name]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (unirnn.lstm(3, 4, activation="relu"), "activations"),
        (unirnn.lstm(3, 4, peepholes=True), "peepholes"),
        (unirnn.lstm(3, 4, cell_clip=1.0), "cell_clip"),
        (unirnn.gru(3, 4, reset="before"), "reset='before'"),
        (unirnn.gru(3, 4, update="new"), "update='new'"),
        (unirnn.gru(3, 4, activations={"z": "gelu"}), "activations"),
        (unirnn.rnn(3, 4, activation="gelu"), "activation 'gelu'"),
    ],
    ids=["relu-lstm", "peepholes", "clip", "reset-before", "update-new", "gelu-z", "gelu-rnn"],
)
def test_custom_specs_use_unirnn_loop_and_native_path_refuses(spec, reason):
    assert unirnn.build(spec, backend="torch").kernel == "unirnn.torch-loop"
    with pytest.raises(ValueError, match=reason):
        unirnn.build(spec, backend="torch", path="native")


@pytest.mark.parametrize("name", list(NATIVE))
def test_state_dict_loads_both_ways(name):
    native = _native(name)
    spec, _ = unirnn.from_torch(native)
    model = unirnn.build(spec, backend="torch", weights=nonzero_weights(spec),
                         dtype=torch.float64)
    assert set(model.state_dict()) == set(native.state_dict())
    native.load_state_dict(model.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(model(x)[0], native(x)[0], rtol=1e-12, atol=1e-12)


def test_custom_cell_with_same_gate_count_loads_native_state_dict():
    native = _native("gru")
    model = unirnn.build(unirnn.gru(3, 4, reset="before"), backend="torch",
                         dtype=torch.float64)
    model.load_state_dict(native.state_dict())
    torch.testing.assert_close(model.weight_hh_l0, native.weight_hh_l0)


def test_lengths_argument_equals_packed_native():
    native = _native("lstm-proj-bidir-2layer")
    spec, weights = unirnn.from_torch(native)
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         batch_first=True)
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    lengths = [6, 2, 4]
    out, (h, c) = model(x, lengths=torch.tensor(lengths))
    packed = nn.utils.rnn.pack_padded_sequence(x.transpose(0, 1), torch.tensor(lengths),
                                               enforce_sorted=False)
    ref, (rh, rc) = native(packed)
    ref = nn.utils.rnn.pad_packed_sequence(ref, batch_first=True, total_length=6)[0]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, rh, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, rc, rtol=1e-12, atol=1e-12)
