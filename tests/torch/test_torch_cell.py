"""unirnn's torch cell module (module="cell"), torch cells as sources, per-gate nn.Linear
weights, float64 from float32 weights: judged by the oracle and torch's own cells."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from cases import SPECS
from support import framework, max_rel_error, nonzero_weights

import unirnn

torch = framework("torch")
nn = torch.nn

CELL_SPECS = {name: spec for name, spec in SPECS.items()
              if spec.num_layers == 1 and not spec.bidirectional}
NATIVE_CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}


def _step_loop(cell, x, state=None):
    """A tutorial's loop over time with a one-step module; x (N, T, I) numpy."""
    outputs = []
    for x_t in torch.from_numpy(x).unbind(1):
        state = cell(x_t, state)
        outputs.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(outputs, 1).detach().numpy()


@pytest.mark.parametrize("name", list(CELL_SPECS), ids=list(CELL_SPECS))
def test_cell_step_loop_matches_oracle(name):
    spec = CELL_SPECS[name]
    weights = nonzero_weights(spec, seed=1)
    cell = unirnn.build(spec, backend="torch", module="cell", weights=weights,
                        dtype=torch.float64)
    x = np.random.default_rng(2).standard_normal((3, 4, spec.input_size))
    want, _ = oracle.run(spec, weights, x)
    assert max_rel_error(_step_loop(cell, x), want) <= 1e-12
    standard = unirnn.layouts.torch.cell_native_problem(spec) is None
    assert cell.kernel == (f"torch._VF.{unirnn.layouts.torch.cell_vf_kernel(spec)}" if standard
                           else "unirnn.torch-cell")


@pytest.mark.parametrize("family", ["lstm", "gru", "rnn"])
def test_native_cell_state_dict_loads_both_ways(family):
    torch.manual_seed(0)
    native = NATIVE_CELLS[family](3, 4)
    spec, _ = unirnn.from_torch(native)
    cell = unirnn.build(spec, backend="torch", module="cell", path="custom")
    cell.load_state_dict(native.state_dict())
    x = torch.randn(2, 3)
    want = native(x)
    got = cell(x)
    for g, w in zip(*(v if isinstance(v, tuple) else (v,) for v in (got, want))):
        torch.testing.assert_close(g, w)
    native.load_state_dict(cell.state_dict())  # unirnn's metadata is ignored by torch


def test_unbatched_input_and_hx():
    spec = unirnn.lstm(3, 4)
    cell = unirnn.build(spec, backend="torch", module="cell")
    x = torch.randn(3)
    h, c = cell(x, (torch.zeros(4), torch.ones(4)))
    hb, cb = cell(x[None], (torch.zeros(1, 4), torch.ones(1, 4)))
    assert h.shape == (4,) and c.shape == (4,)
    torch.testing.assert_close(h, hb[0])
    with pytest.raises(unirnn.InputError, match=r"hx: c: expected shape \(4,\)"):
        cell(x, (torch.zeros(4), torch.ones(5)))
    with pytest.raises(unirnn.InputError, match=r"expected \(N, 3\) or \(3,\)"):
        cell(torch.randn(2, 5, 3))


def test_cell_refuses_stacks():
    with pytest.raises(unirnn.SpecError, match="one layer in one direction"):
        unirnn.build(unirnn.gru(3, 4, num_layers=2), backend="torch", module="cell")


class ReLULSTMCell(nn.LSTMCell):
    """A tutorial's ReLU LSTM: nn.LSTMCell's weights, relu for g and c."""

    def forward(self, x, hx=None):
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            hx = (zeros, zeros)
        h, c = hx
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.relu(g)
        return torch.sigmoid(o) * torch.relu(c), c


def test_subclass_with_spec_ports_exactly():
    torch.manual_seed(1)
    source = ReLULSTMCell(3, 4).double()
    spec = unirnn.lstm(3, 4, activation="relu")
    read = unirnn.from_torch(source, spec=spec)
    assert read.spec == spec and read.assumed is None
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    want = _step_loop(source, x)
    assert max_rel_error(oracle.run(spec, read.weights, x)[0], want) <= 1e-12
    ported = unirnn.port(source, to="torch", spec=spec)
    assert type(ported).__name__ == "TorchRNNCell" and ported.kernel == "unirnn.torch-cell"
    assert max_rel_error(_step_loop(ported, x), want) <= 1e-12


def test_subclass_without_spec_says_what_was_assumed():
    read = unirnn.from_torch(ReLULSTMCell(3, 4))
    assert read.spec == unirnn.lstm(3, 4)
    assert "ReLULSTMCell, a subclass of nn.LSTMCell" in read.assumed
    assert "needs spec=" in read.assumed
    assert unirnn.from_torch(nn.LSTMCell(3, 4)).assumed is None  # its own class says it


@pytest.mark.parametrize("family", ["lstm", "gru", "rnn"])
def test_cell_state_dict_reads_without_l0(family):
    native = NATIVE_CELLS[family](3, 4, bias=family != "rnn")
    read = unirnn.from_torch(native.state_dict())
    assert read.spec.family == family and read.spec.bias == (family != "rnn")
    assert "a plain nn." in read.assumed and "state dict (it carries no spec)" in read.assumed
    np.testing.assert_array_equal(read.weights["layer0.forward.w_x"],
                                  native.weight_ih.detach().numpy())


def test_plain_layer_state_dict_is_assumed_and_explained():
    state = nn.GRU(3, 4).state_dict()
    read = unirnn.from_torch(state)
    assert "a plain nn.GRU state dict" in read.assumed
    module = unirnn.port(state, to="torch")
    assert "Assumed: a plain nn.GRU state dict" in unirnn.explain(module)
    carried = unirnn.to_torch(read.spec, read.weights)  # carries its spec
    assert unirnn.from_torch(carried).assumed is None
    assert "Assumed" not in unirnn.explain(unirnn.port(carried, to="torch"))


def test_from_gates_with_one_linear_per_gate():
    """A GRU with one nn.Linear per gate and side (x2r, h2r, ...), reset after as torch."""
    torch.manual_seed(2)
    I, H = 3, 4
    x2 = {g: nn.Linear(I, H).double() for g in "rzn"}
    h2 = {g: nn.Linear(H, H).double() for g in "rzn"}

    def step(x, h):
        r = torch.sigmoid(x2["r"](x) + h2["r"](h))
        z = torch.sigmoid(x2["z"](x) + h2["z"](h))
        n = torch.tanh(x2["n"](x) + r * h2["n"](h))
        return z * h + (1 - z) * n

    x = np.random.default_rng(3).standard_normal((2, 5, I))
    with torch.no_grad():
        h, outs = torch.zeros(2, H, dtype=torch.float64), []
        for x_t in torch.from_numpy(x).unbind(1):
            h = step(x_t, h)
            outs.append(h)
    want = torch.stack(outs, 1).numpy()
    spec = unirnn.gru(I, H)
    weights = unirnn.from_gates(spec, {g: {"w_x": x2[g], "w_h": h2[g]} for g in "rzn"})
    assert max_rel_error(oracle.run(spec, weights, x)[0], want) <= 1e-12
    ported = unirnn.build(spec, backend="torch", weights=weights, batch_first=True,
                          dtype=torch.float64)
    assert ported.kernel == "torch._VF.gru"
    with torch.no_grad():
        got = ported(torch.from_numpy(x))[0].numpy()
    assert max_rel_error(got, want) <= 1e-12
    back = unirnn.to_gates(spec, weights)
    np.testing.assert_array_equal(back["n"]["b_h"], h2["n"].bias.detach().numpy())


@pytest.mark.parametrize("module", ["layer", "cell"])
@pytest.mark.parametrize("spec", [unirnn.lstm(3, 4), unirnn.gru(3, 4, reset="before")],
                         ids=["lstm-native", "gru-before-custom"])
def test_float64_from_float32_weights(spec, module):
    """Built in float64 from float32 weights: upcast before any arithmetic (<= 1e-12)."""
    weights = nonzero_weights(spec, seed=5).astype(np.float32)
    x = np.random.default_rng(4).standard_normal((2, 5, 3))
    want, _ = oracle.run(spec, weights, x)  # the float32 values, computed in float64
    built = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         module=module, **({"batch_first": True} if module == "layer" else {}))
    with torch.no_grad():
        got = _step_loop(built, x) if module == "cell" else built(torch.from_numpy(x))[0].numpy()
    assert max_rel_error(got, want) <= 1e-12


@pytest.mark.parametrize("batch_first", [True, False])
def test_port_torch_to_torch_keeps_batch_first_and_dtype(batch_first):
    source = nn.GRU(3, 4, batch_first=batch_first, dtype=torch.float64)
    ported = unirnn.port(source, to="torch")
    assert ported.batch_first is batch_first and ported.weight_ih_l0.dtype == torch.float64
    x = torch.randn((2, 5, 3) if batch_first else (5, 2, 3), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ported(x)[0], source(x)[0])
    assert unirnn.port(source, to="torch", batch_first=not batch_first).batch_first is \
        (not batch_first)  # an explicit option wins


def test_port_refuses_unknown_drop_and_cell_to_numpy():
    with pytest.raises(unirnn.SpecError, match=r"drop: 'colour' is not an interface option"):
        unirnn.port(nn.GRU(3, 4), to="torch", drop=["colour"])
    with pytest.raises(unirnn.SpecError, match=r"numpy backend has layers only.*"
                       r"drop=\['module'\]"):
        unirnn.port(nn.GRUCell(3, 4), to="numpy")
    layer = unirnn.port(nn.GRUCell(3, 4), to="numpy", drop=["module"])
    assert type(layer).__name__ == "NumpyRNN"


def test_info_says_what_a_plain_state_dict_was_read_as(tmp_path, capsys):
    from unirnn.tools.cli import main

    plain, carried = tmp_path / "plain.pt", tmp_path / "carried.pt"
    torch.save(nn.LSTM(3, 4).state_dict(), plain)
    torch.save(unirnn.build(unirnn.lstm(3, 4, activation="relu"), backend="torch")
               .state_dict(), carried)
    assert main(["info", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "assumed: a plain nn.LSTM state dict (it carries no spec)" in out
    assert main(["info", str(carried)]) == 0
    out = capsys.readouterr().out
    assert "assumed:" not in out and "g=relu" in out
