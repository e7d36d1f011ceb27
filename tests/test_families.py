"""Cell families: the registry, the spec's fields for them, and the numpy backend against
the independent oracle on every built-in family and structural option."""

from __future__ import annotations

import json

import numpy as np
import oracle
import pytest
from cases import FAMILY_SPECS
from support import TOL, example_inputs, max_rel_error, nonzero_weights

import unirnn
from unirnn._cells import RNNCell


@pytest.mark.parametrize("variant", ["plain", "state+lengths"])
@pytest.mark.parametrize("spec", FAMILY_SPECS.values(), ids=list(FAMILY_SPECS))
def test_numpy_backend_matches_oracle(spec, variant):
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, with_state=variant != "plain",
                                       with_lengths=variant != "plain")
    out, final = unirnn.build(spec, backend="numpy", weights=weights, dtype=np.float64)(
        x, initial_state=state, lengths=lengths)
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert max_rel_error(out, ref_out) <= TOL["float64"]
    for a, b in zip(final if isinstance(final, tuple) else (final,),
                    ref_final if isinstance(ref_final, tuple) else (ref_final,), strict=True):
        assert max_rel_error(a, b) <= TOL["float64"]


@pytest.mark.parametrize("spec", FAMILY_SPECS.values(), ids=list(FAMILY_SPECS))
def test_spec_json_round_trip_and_describe(spec):
    assert unirnn.Spec.from_json(spec.to_json()) == spec
    assert spec.family in spec.describe()


def test_family_names_lists_builtins_with_docs():
    names = unirnn.family_names()
    assert list(names)[:8] == ["rnn", "lstm", "gru", "ln_lstm", "ln_gru", "indrnn", "mingru",
                               "minlstm"]
    assert all(names[n] for n in list(names)[:8])


def test_gate_orders_and_weight_shapes():
    assert unirnn.gru(3, 4, reset="none").gate_order == ("z", "n")
    assert unirnn.lstm(3, 4, coupled=True).gate_order == ("f", "g", "o")
    assert unirnn.weight_shapes(unirnn.gru(3, 4, reset="none"))["layer0.forward.w_h"] == (8, 4)
    shapes = unirnn.weight_shapes(unirnn.Spec("mingru", 3, 4))
    assert shapes == {"layer0.forward.w_x": (8, 3), "layer0.forward.b_x": (8,)}
    shapes = unirnn.weight_shapes(unirnn.Spec("indrnn", 3, 4, bias=False))
    assert shapes == {"layer0.forward.w_x": (4, 3), "layer0.forward.u": (4,)}
    ln = unirnn.weight_shapes(unirnn.Spec("ln_lstm", 3, 4))
    assert ln["layer0.forward.ln_x"] == (16,) and ln["layer0.forward.ln_c_offset"] == (4,)


def test_layer_norm_parameters_start_at_one_and_zero():
    weights = unirnn.init_weights(unirnn.Spec("ln_lstm", 3, 4, bidirectional=True))
    for direction in ("forward", "backward"):
        for name in ("ln_x", "ln_h", "ln_c"):
            assert np.all(weights[f"layer0.{direction}.{name}"] == 1.0)
        assert np.all(weights[f"layer0.{direction}.ln_c_offset"] == 0.0)
    assert np.ptp(weights["layer0.forward.w_x"]) > 0


def test_shorthands_skip_the_gate_an_option_removes():
    spec = unirnn.gru(3, 4, reset="none", recurrent_activation="hard_sigmoid")
    assert dict(spec.activations) == {"z": "hard_sigmoid", "n": "tanh"}
    spec = unirnn.lstm(3, 4, coupled=True, recurrent_activation="hard_sigmoid",
                       activation="relu")
    assert dict(spec.activations) == {"f": "hard_sigmoid", "g": "relu", "o": "hard_sigmoid",
                                      "c": "relu"}


@pytest.mark.parametrize("make, message", [
    (lambda: unirnn.gru(3, 4, reset="none", activations={"r": "tanh"}),
     "role 'r' does not exist for family 'gru'; expected roles z, n"),
    (lambda: unirnn.lstm(3, 4, coupled=True, peepholes=True), "coupled=True with peepholes"),
    (lambda: unirnn.gru(3, 4, coupled=True), "coupled: applies to family 'lstm' only"),
    (lambda: unirnn.Spec("mingru", 3, 4, reset="before"), "reset: applies to family 'gru'"),
    (lambda: unirnn.Spec("indrnn", 3, 4, activations={"z": "relu"}),
     "role 'z' does not exist for family 'indrnn'"),
    (lambda: unirnn.Spec("nosuch", 3, 4), "family: 'nosuch' is not registered"),
    (lambda: unirnn.Spec(3, 3, 4), "family: expected a family name"),
])
def test_spec_errors_name_field_and_value(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_coupled_written_only_when_set():
    assert "coupled" not in json.loads(unirnn.lstm(3, 4).to_json())
    assert json.loads(unirnn.lstm(3, 4, coupled=True).to_json())["coupled"] is True


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "1bad"}, "a family name must be an identifier"),
    ({"name": "gru"}, "'gru' is already registered.*built-in"),
    ({"gates": ()}, "gates must be distinct non-empty names"),
    ({"gates": ("h", "h")}, "gates must be distinct"),
    ({"activations": {}}, "activations must map each role"),
    ({"cell": object}, "cell must be a subclass of unirnn.Cell"),
    ({"state": ("c",)}, r"state must be \('h',\) or \('h', 'c'\)"),
    ({"recurrent": 1}, "recurrent must be True or False"),
    ({"params": {"u": (4,)}}, "params must be a function of the spec"),
])
def test_register_family_errors(kwargs, message):
    given = {"name": "test_bad_family", "gates": ("h",), "activations": {"h": "tanh"},
             "cell": RNNCell, **kwargs}
    with pytest.raises(ValueError, match=message):
        unirnn.register_family(given.pop("name"), **given)
    assert "test_bad_family" not in unirnn.family_names()


def test_user_family_reregistration_needs_overwrite():
    unirnn.register_family("test_once", gates=("h",), activations={"h": "tanh"}, cell=RNNCell,
                           overwrite=True)
    with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
        unirnn.register_family("test_once", gates=("h",), activations={"h": "tanh"},
                               cell=RNNCell)


@pytest.mark.parametrize("params, message", [
    (lambda spec: {"w_h": unirnn.Param((4,))}, "may not be named 'w_h'"),
    (lambda spec: {"u": unirnn.Param((4,), "normal")}, "u.init: expected one of"),
    (lambda spec: {"u": unirnn.Param((0,))}, "u.shape: expected positive integers"),
    (lambda spec: {"u": (4,)}, r"must be a unirnn.Param\(shape, init\)"),
])
def test_bad_extra_parameters_are_named(params, message):
    unirnn.register_family("test_params", gates=("h",), activations={"h": "tanh"},
                           cell=RNNCell, params=params, overwrite=True)
    with pytest.raises(ValueError, match=message):
        unirnn.weight_shapes(unirnn.Spec("test_params", 2, 4))


def test_unknown_family_in_a_json_spec_names_it():
    text = unirnn.rnn(2, 3).to_json().replace('"rnn"', '"my_cell"')
    with pytest.raises(ValueError, match="'my_cell' is not registered.*register_family"):
        unirnn.Spec.from_json(text)
