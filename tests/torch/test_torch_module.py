"""The torch module as a drop-in for nn.LSTM: attributes, layouts, dropout, errors, devices."""

from __future__ import annotations

import numpy as np
import pytest
from support import framework, max_rel_error, nonzero_weights

import unirnn

torch = framework("torch")
nn = torch.nn

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_constructor_visible_attributes_match_native():
    spec = unirnn.lstm(3, 5, proj_size=2, num_layers=2, bidirectional=True, dropout=0.1)
    model = unirnn.build(spec, backend="torch")
    native = nn.LSTM(3, 5, proj_size=2, num_layers=2, bidirectional=True, dropout=0.1)
    for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size"):
        assert getattr(model, name) == getattr(native, name), name
    assert model.batch_first is False
    assert isinstance(model, nn.Module) and model.spec == spec


@pytest.mark.parametrize("spec", [unirnn.lstm(3, 4, peepholes=True), unirnn.gru(3, 4)],
                         ids=["custom-lstm", "native-gru"])
def test_batch_first_and_unbatched_layouts(spec):
    weights = nonzero_weights(spec)
    tm = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64)
    bf = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                      batch_first=True)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    y_tm, s_tm = tm(x)
    y_bf, s_bf = bf(x.transpose(0, 1))
    torch.testing.assert_close(y_bf.transpose(0, 1), y_tm)
    y_one, s_one = tm(x[:, 0])
    assert y_one.shape == (6, 4)
    torch.testing.assert_close(y_one, y_tm[:, 0])
    h_one = s_one[0] if isinstance(s_one, tuple) else s_one
    assert h_one.shape == (1, 4)


@pytest.mark.parametrize("spec", [unirnn.gru(3, 4, num_layers=3, dropout=0.5),
                                  unirnn.gru(3, 4, num_layers=3, dropout=0.5, reset="before")],
                         ids=["native", "custom"])
def test_dropout_between_layers_in_training_only(spec):
    model = unirnn.build(spec, backend="torch", dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])
    model.train()
    torch.manual_seed(0)
    a = model(x)[0]
    torch.manual_seed(1)
    b = model(x)[0]
    assert not torch.allclose(a, b)
    # layer 0's state is untouched by dropout (it applies to the layers' outputs)
    torch.manual_seed(2)
    h_train = model(x)[1]
    model.eval()
    torch.testing.assert_close(h_train[0], model(x)[1][0])


def test_padded_outputs_are_zero_and_state_is_last_valid():
    spec = unirnn.gru(3, 4, bidirectional=True, reset="before")
    model = unirnn.build(spec, backend="torch", dtype=torch.float64, batch_first=True)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    out, h = model(x, lengths=[5, 2])
    assert torch.all(out[1, 2:] == 0)
    alone, h_alone = model(x[1:, :2])
    torch.testing.assert_close(out[1, :2], alone[0])
    torch.testing.assert_close(h[:, 1], h_alone[:, 0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m(torch.zeros(2, 5, 4)), "expected 3 features"),
        (lambda m: m(torch.zeros(5)), "rank-3"),
        (lambda m: m(torch.zeros(5, 2, 3), lengths=[5, 0]), r"\[1, 5\]"),
        (lambda m: m(torch.zeros(5, 2, 3), lengths=[5]), r"shape \(2,\)"),
        (lambda m: m(torch.zeros(5, 2, 3), torch.zeros(1, 2, 4)), "pair"),
        (lambda m: m(torch.zeros(5, 2, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))),
         r"h0: expected shape \(1, 2, 4\)"),
        (lambda m: m(np.zeros((5, 2, 3))), "torch.Tensor"),
        (lambda m: m(torch.zeros(5, 2, 3, dtype=torch.float64)),
         "expected dtype torch.float32.*received torch.float64"),
        (lambda m: m(torch.zeros(5, 3), (torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))),
         r"2-D states.*\(1, 1, 4\)"),
    ],
    ids=["features", "rank", "length-zero", "lengths-shape", "lstm-pair", "h0-shape", "numpy",
         "dtype", "unbatched-hx-rank"],
)
def test_bad_input_is_a_clear_error(call, message):
    model = unirnn.build(unirnn.lstm(3, 4), backend="torch")
    with pytest.raises(ValueError, match=message):
        call(model)


def test_bad_weights_and_options_are_clear_errors():
    spec = unirnn.gru(3, 4)
    weights = dict(unirnn.init_weights(spec))
    weights["layer0.forward.w_h"] = np.zeros((12, 5), np.float32)
    with pytest.raises(ValueError, match=r"w_h.*\(12, 5\).*\(12, 4\)"):
        unirnn.build(spec, backend="torch", weights=weights)
    with pytest.raises(ValueError, match="path"):
        unirnn.build(spec, backend="torch", path="fast")
    with pytest.raises(ValueError, match="dtype"):
        unirnn.build(spec, backend="torch", dtype="int32")


@pytest.mark.parametrize("spec", [unirnn.lstm(3, 4, activation="relu"), unirnn.lstm(3, 4)],
                         ids=["custom", "native"])
def test_to_dtype_bfloat16(spec):
    model = unirnn.build(spec, backend="torch", weights=nonzero_weights(spec),
                         dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    expected = model(x)[0]
    model = model.to(torch.bfloat16)
    actual = model(x.to(torch.bfloat16))[0]
    assert actual.dtype == torch.bfloat16
    assert max_rel_error(actual.float().detach().numpy(), expected.detach().numpy()) < 5e-2


def test_runs_inside_torch_compile():
    """The custom path under torch.compile gives the eager numbers (small, fast)."""
    spec = unirnn.gru(2, 3, activations={"z": "gelu"})
    model = unirnn.build(spec, backend="torch", weights=nonzero_weights(spec),
                         dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x)[0], model(x)[0])
    lengths = torch.tensor([3, 1])
    got = compiled(x, lengths=lengths)[0]
    want = model(x, lengths=lengths)[0]
    torch.testing.assert_close(got, want)
    (grad_got,) = torch.autograd.grad(got.sum(), x)
    (grad_want,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(grad_got, grad_want)


def test_native_path_inside_torch_compile():
    spec = unirnn.lstm(2, 3)
    model = unirnn.build(spec, backend="torch", weights=nonzero_weights(spec))
    assert model.kernel == "torch._VF.lstm"
    x = torch.randn(3, 2, 2)
    torch.testing.assert_close(torch.compile(model, backend="eager")(x)[0], model(x)[0])


def test_second_order_gradients():
    """The custom path's fast backward is first-order: create_graph=True through it says so
    instead of giving wrong numbers, and under torch.func (plain autograd ops) the Hessian
    equals the native module's."""
    spec = unirnn.gru(2, 3)
    weights = nonzero_weights(spec, scale=0.4)
    custom = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                          path="custom")
    native = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="first-order gradients only.*torch.func"):
        torch.autograd.grad(custom(x)[0].pow(2).sum(), x, create_graph=True)

    def loss(module, params):
        return torch.func.functional_call(module, params, (x,))[0].pow(2).sum()

    params = {name: p.detach() for name, p in custom.named_parameters()}
    hess_custom = torch.func.hessian(lambda p: loss(custom, {"weight_hh_l0": p}))(
        params["weight_hh_l0"])
    hess_native = torch.func.hessian(lambda p: loss(native, {"weight_hh_l0": p}))(
        params["weight_hh_l0"])
    torch.testing.assert_close(hess_custom, hess_native)


@pytest.mark.parametrize("spec", [unirnn.gru(3, 4, activations={"n": "leaky_relu(0.2)"}),
                                  unirnn.lstm(3, 4, activations={"o": "gelu_tanh"}),
                                  unirnn.lstm(3, 4)], ids=["gru-leaky", "lstm-gelu-tanh",
                                                           "lstm-native"])
def test_whole_module_pickles(spec, tmp_path):
    model = unirnn.build(spec, backend="torch", weights=nonzero_weights(spec))
    x = torch.randn(5, 2, 3)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert loaded.kernel == model.kernel
    torch.testing.assert_close(loaded(x)[0], model(x)[0], rtol=0, atol=0)


def test_flatten_parameters_like_native():
    """Present like nn.RNNBase's (DataParallel code calls it); a no-op on CPU."""
    spec = unirnn.lstm(3, 4)
    model = unirnn.build(spec, backend="torch", weights=nonzero_weights(spec))
    x = torch.randn(5, 2, 3)
    before = model(x)[0]
    model.flatten_parameters()
    unirnn.build(unirnn.gru(3, 4, reset="before"), backend="torch").flatten_parameters()
    torch.testing.assert_close(model(x)[0], before, rtol=0, atol=0)


@pytest.mark.slow
def test_runs_inside_torch_compile_inductor():
    spec = unirnn.lstm(2, 3, peepholes=True)
    model = unirnn.build(spec, backend="torch", weights=nonzero_weights(spec))
    x = torch.randn(3, 2, 2)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(x)[0], model(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("spec", [unirnn.lstm(3, 4), unirnn.gru(3, 4, reset="before")],
                         ids=["cudnn-lstm", "custom-gru"])
def test_cuda_matches_cpu(spec):
    weights = nonzero_weights(spec)
    cpu = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64)
    gpu = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                       device="cuda")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(gpu(x.cuda(), lengths=[5, 3])[0].cpu(),
                               cpu(x, lengths=[5, 3])[0])


@pytest.fixture
def exact_cudnn():
    """cuDNN's RNNs may use TF32 for float32 unless told not to; the bounds assume IEEE."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("family", ["rnn", "lstm", "gru"])
def test_cuda_cudnn_matches_native_with_gradients(family, exact_cudnn):
    """Built on CPU then moved with .to("cuda"): cuDNN through unirnn equals nn.* on CUDA,
    packed input and hx included, with no warning about non-contiguous weights."""
    import warnings

    native_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[family]
    native = native_cls(3, 4, num_layers=2, bidirectional=True).cuda()
    model = unirnn.port(native, to="torch").to("cuda")
    assert model.kernel.startswith("torch._VF")
    x = torch.randn(6, 3, 3, device="cuda", requires_grad=True)
    h0 = torch.randn(4, 3, 4, device="cuda")
    hx = (h0, torch.randn(4, 3, 4, device="cuda")) if family == "lstm" else h0
    packed = nn.utils.rnn.pack_padded_sequence(x, [6, 4, 2], enforce_sorted=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, got_state = model(packed, hx)
    want, want_state = native(packed, hx)
    torch.testing.assert_close(got.data, want.data)
    (grad_got,) = torch.autograd.grad(got.data.sum(), x)
    (grad_want,) = torch.autograd.grad(want.data.sum(), x)
    torch.testing.assert_close(grad_got, grad_want)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("spec", [unirnn.lstm(3, 4), unirnn.gru(3, 4, activations={"z": "gelu"})],
                         ids=["cudnn-lstm", "custom-gru"])
def test_cuda_bfloat16_runs_forward_and_backward(spec):
    weights = nonzero_weights(spec)
    exact = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64)
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.bfloat16,
                         device="cuda")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out = model(x.to("cuda", torch.bfloat16))[0]
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert max_rel_error(out.float().cpu().detach().numpy(), exact(x)[0].detach().numpy()) < 5e-2


@pytest.mark.gpu
@cuda
def test_cuda_float32_matches_oracle(exact_cudnn):
    import oracle
    from cases import SPECS

    spec = SPECS["lstm-peephole-clip"]
    weights = nonzero_weights(spec)
    x = np.random.default_rng(0).standard_normal((3, 6, 3))
    from unirnn.backends.torch import evaluate

    result = evaluate(spec, weights, x, dtype="float32", device="cuda")
    assert max_rel_error(result.outputs, oracle.run(spec, weights, x)[0]) <= 1e-5
