"""to_torch / from_torch: spec inference, bit-exact round trips, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from cases import SPECS
from support import framework, nonzero_weights

import unirnn

torch = framework("torch")
nn = torch.nn


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: nn.RNN(3, 4, nonlinearity="relu", bias=False),
         unirnn.rnn(3, 4, activation="relu", bias=False)),
        (lambda: nn.LSTM(3, 5, proj_size=2, num_layers=2, bidirectional=True, dropout=0.25),
         unirnn.lstm(3, 5, proj_size=2, num_layers=2, bidirectional=True, dropout=0.25)),
        (lambda: nn.GRU(3, 4, num_layers=3), unirnn.gru(3, 4, num_layers=3)),
    ],
    ids=["rnn-relu-nobias", "lstm-proj-bidir-dropout", "gru-3layer"],
)
def test_spec_is_inferred_from_native_module(make, expected):
    native = make()
    spec, weights = unirnn.from_torch(native)
    assert spec == expected
    for name, tensor in native.state_dict().items():
        assert any(np.array_equal(tensor.numpy(), w) for w in weights.values()), name
    native.load_state_dict(unirnn.to_torch(spec, weights))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_round_trip_is_bit_identical(spec, dtype):
    weights = nonzero_weights(spec).astype(dtype)
    state = unirnn.to_torch(spec, weights)
    _, back = unirnn.from_torch(state, spec=spec)
    module = unirnn.build(spec, backend="torch", dtype=torch.from_numpy(np.zeros(1, dtype)).dtype)
    module.load_state_dict(state)
    spec2, from_module = unirnn.from_torch(module)
    assert spec2 == spec
    for name in weights:
        assert back[name].dtype == dtype
        np.testing.assert_array_equal(back[name], weights[name])
        np.testing.assert_array_equal(from_module[name], weights[name])


def test_state_dict_names_are_torch_names():
    spec = unirnn.lstm(3, 5, proj_size=2, bidirectional=True, peepholes=True)
    names = set(unirnn.to_torch(spec, unirnn.init_weights(spec)))
    assert {"weight_ih_l0", "weight_hh_l0_reverse", "bias_ih_l0", "bias_hh_l0_reverse",
            "weight_hr_l0", "weight_peephole_l0_reverse"} <= names


@pytest.mark.parametrize(
    "native",
    [nn.GRU(3, 4, num_layers=2, bidirectional=True), nn.LSTM(3, 5, proj_size=2, bias=False),
     nn.RNN(2, 3, num_layers=3)],
    ids=["gru-2layer-bidir", "lstm-proj-nobias", "rnn-3layer"],
)
def test_state_dict_spec_is_inferred_for_torch_layers(native):
    spec, weights = unirnn.from_torch(native.state_dict())
    assert spec == unirnn.from_torch(native)[0]
    for name, array in unirnn.from_torch(native)[1].items():
        np.testing.assert_array_equal(weights[name], array)


def test_state_dict_that_only_a_spec_can_describe():
    module = unirnn.build(unirnn.lstm(3, 4, peepholes=True), backend="torch")
    assert unirnn.from_torch(module.state_dict())[0] == module.spec  # carries its spec
    with pytest.raises(ValueError, match="pass spec="):
        unirnn.from_torch(dict(module.state_dict()))  # a plain dict: entries only
    with pytest.raises(ValueError, match="expected a state dict of nn.RNN/LSTM/GRU"):
        unirnn.from_torch({"linear.weight": torch.zeros(2, 2)})


def test_wrong_shape_names_tensor_and_shapes():
    spec = unirnn.gru(3, 4)
    state = nn.GRU(3, 5).state_dict()
    with pytest.raises(ValueError, match=r"layer0.forward.w_x.*\(15, 3\).*\(12, 3\)"):
        unirnn.from_torch(state, spec=spec)


def test_extra_and_missing_entries_are_named():
    spec = unirnn.gru(3, 4, bias=False)
    with pytest.raises(ValueError, match="bias_ih_l0"):
        unirnn.from_torch(nn.GRU(3, 4).state_dict(), spec=spec)
    with pytest.raises(ValueError, match="bias_ih_l0"):
        unirnn.from_torch(nn.GRU(3, 4, bias=False).state_dict(), spec=unirnn.gru(3, 4))


def test_spec_disagreeing_with_module_is_refused():
    with pytest.raises(ValueError, match="different spec"):
        unirnn.from_torch(nn.GRU(3, 4), spec=unirnn.gru(3, 4, reset="before"))


def test_unsupported_object_is_refused():
    with pytest.raises(ValueError, match="expected nn.RNN"):
        unirnn.from_torch(nn.Linear(3, 4))


@pytest.mark.parametrize("spec", [unirnn.lstm(3, 4, activation="relu"),
                                  unirnn.gru(3, 4, reset="before", bidirectional=True)],
                         ids=["relu-lstm", "gru-before-bidir"])
def test_module_state_dict_file_reads_back_as_its_custom_cell(spec, tmp_path):
    """torch.save(model.state_dict()) of a custom cell carries the spec: from_torch does not
    mistake it for the standard cell with the same layout, and nn.* still loads it."""
    model = unirnn.build(spec, backend="torch", weights=nonzero_weights(spec))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    read_spec, weights = unirnn.from_torch(state)
    assert read_spec == spec
    for name, tensor in model.canonical_names().items():
        np.testing.assert_array_equal(weights[name], getattr(model, tensor).detach().numpy())
    native = (nn.LSTM(3, 4) if spec.family == "lstm" else nn.GRU(3, 4, bidirectional=True))
    native.load_state_dict(state)
