"""The spec: constructors, presets, validation errors and the JSON round trip."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import unirnn


def test_keras_style_shorthands():
    spec = unirnn.lstm(3, 4, activation="relu", recurrent_activation="hard_sigmoid")
    assert dict(spec.activations) == {
        "i": "hard_sigmoid", "f": "hard_sigmoid", "g": "relu", "o": "hard_sigmoid", "c": "relu"
    }
    assert dict(unirnn.gru(3, 4, activation="relu").activations) == {
        "r": "sigmoid", "z": "sigmoid", "n": "relu"
    }


def test_per_role_override_wins():
    spec = unirnn.gru(3, 4, recurrent_activation="hard_sigmoid", activations={"z": "gelu"})
    assert dict(spec.activations) == {"r": "hard_sigmoid", "z": "gelu", "n": "tanh"}


def test_defaults_and_derived_sizes():
    spec = unirnn.lstm(3, 8, proj_size=2, num_layers=3, bidirectional=True)
    assert (spec.num_gates, spec.num_directions, spec.output_size) == (4, 2, 2)
    assert spec.layer_input_size(0) == 3 and spec.layer_input_size(1) == 4
    gru = unirnn.gru(3, 4)
    assert (gru.reset, gru.update, gru.gate_order) == ("after", "old", ("r", "z", "n"))


def test_activation_canonical_spelling():
    spec = unirnn.gru(3, 4, activations={"n": "leaky_relu(0.01)", "z": " hard_sigmoid (0.2,0.5)"})
    assert spec.activations["n"] == "leaky_relu"
    assert spec.activations["z"] == "hard_sigmoid(0.2, 0.5)"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: unirnn.Spec("transformer", 3, 4), "family: 'transformer' is not registered; "
                                                   "registered families: rnn, lstm, gru"),
        (lambda: unirnn.lstm(0, 4), "input_size: expected an integer >= 1; received 0"),
        (lambda: unirnn.lstm(3, 2.5), "hidden_size: expected an integer >= 1; received 2.5"),
        (lambda: unirnn.gru(3, 4, num_layers=0), "num_layers"),
        (lambda: unirnn.gru(3, 4, dropout=1.0), r"dropout: expected a number in \[0, 1\); "
                                                "received 1.0"),
        (lambda: unirnn.gru(3, 4, dropout=-0.1), "dropout"),
        (lambda: unirnn.lstm(3, 4, activation="swishy"), "unknown activation 'swishy'"),
        (lambda: unirnn.lstm(3, 4, activations={"z": "tanh"}), "role 'z' does not exist for "
                                                               "family 'lstm'"),
        (lambda: unirnn.rnn(3, 4, activations={"h": "leaky_relu(1, 2)"}), "takes 1 parameter"),
        (lambda: unirnn.rnn(3, 4, activations={"h": "leaky_relu(a)"}), "must be numbers"),
        (lambda: unirnn.rnn(3, 4, activations={"h": "tanh(("}), "malformed activation"),
        (lambda: unirnn.gru(3, 4, reset="middle"), "reset: expected 'after', 'before' or 'none'"),
        (lambda: unirnn.gru(3, 4, update="z"), "update: expected 'old'"),
        (lambda: unirnn.lstm(3, 4, proj_size=4), "proj_size: expected less than hidden_size"),
        (lambda: unirnn.lstm(3, 4, proj_size=-1), "proj_size"),
        (lambda: unirnn.lstm(3, 4, cell_clip=0.0), "cell_clip: expected a positive"),
        (lambda: unirnn.Spec("gru", 3, 4, peepholes=True), "peepholes: applies to family "
                                                           "'lstm' only"),
        (lambda: unirnn.Spec("lstm", 3, 4, reset="before"), "reset: applies to family 'gru'"),
        (lambda: unirnn.Spec("rnn", 3, 4, proj_size=2), "proj_size: applies to family 'lstm'"),
        (lambda: unirnn.Spec("rnn", 3, 4, bias="yes"), "bias: expected True or False"),
        (lambda: unirnn.preset("keras_transformer", 3, 4), "unknown preset"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_validation_errors_name_field_and_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: unirnn.lstm(3, 4, reset="after"),
         r"^reset: applies to family 'gru' only; received reset='after' for family 'lstm'$"),
        (lambda: unirnn.lstm(3, 4, update="new"),
         r"^update: applies to family 'gru' only; received update='new' for family 'lstm'$"),
        (lambda: unirnn.gru(3, 4, proj_size=2),
         r"^proj_size: applies to family 'lstm' only; received proj_size=2 for family 'gru'$"),
        (lambda: unirnn.gru(3, 4, peepholes=True),
         r"^peepholes: applies to family 'lstm' only; received peepholes=True for family "
         r"'gru'$"),
        (lambda: unirnn.rnn(3, 4, cell_clip=1.0),
         r"^cell_clip: applies to family 'lstm' only; received cell_clip=1.0 for family "
         r"'rnn'$"),
        (lambda: unirnn.rnn(3, 4, recurrent_activation="hard_sigmoid"),
         r"^recurrent_activation: applies to families 'lstm', 'gru' only; received "
         r"recurrent_activation='hard_sigmoid' for family 'rnn'$"),
        (lambda: unirnn.preset("torch_lstm", 3, 4, reset="after"),
         r"^reset: applies to family 'gru' only; received reset='after' for family 'lstm'$"),
        (lambda: unirnn.preset("d2l_gru", 3, 4, reset="after"),
         r"^reset: preset 'd2l_gru' fixes reset='before'; received reset='after'"),
        (lambda: unirnn.preset("relu_lstm", 3, 4, activation="tanh"),
         r"^activation: preset 'relu_lstm' fixes activation='relu'; received "
         r"activation='tanh'"),
        (lambda: unirnn.preset("gelu_update_gru", 3, 4, activations={"z": "sigmoid"}),
         r"^activations\['z'\]: preset 'gelu_update_gru' fixes it to 'gelu'"),
    ],
    ids=["lstm-reset", "lstm-update", "gru-proj", "gru-peepholes", "rnn-clip",
         "rnn-recurrent-activation", "preset-lstm-reset", "preset-d2l-reset",
         "preset-relu-activation", "preset-gelu-z"],
)
def test_options_of_another_family_are_value_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unknown_keyword_stays_a_type_error():
    with pytest.raises(TypeError, match="lstm\\(\\) got an unexpected keyword argument 'hiden'"):
        unirnn.lstm(3, 4, hiden=5)


def test_preset_options_that_agree_or_add():
    assert unirnn.preset("d2l_gru", 3, 4, reset="before").reset == "before"
    spec = unirnn.preset("gelu_update_gru", 3, 4, activations={"r": "hard_sigmoid"},
                         num_layers=2)
    assert dict(spec.activations) == {"r": "hard_sigmoid", "z": "gelu", "n": "tanh"}
    assert spec.num_layers == 2


def test_numpy_integers_and_floats_are_accepted_as_plain_python_numbers():
    spec = unirnn.lstm(np.int64(3), np.int32(8), num_layers=np.int64(2),
                       proj_size=np.int64(4), cell_clip=np.float32(1.5),
                       dropout=np.float64(0.25))
    assert spec == unirnn.lstm(3, 8, num_layers=2, proj_size=4, cell_clip=1.5, dropout=0.25)
    for name in ("input_size", "hidden_size", "num_layers", "proj_size"):
        assert type(getattr(spec, name)) is int, name
    assert type(spec.cell_clip) is float and type(spec.dropout) is float
    assert json.loads(spec.to_json())["hidden_size"] == 8
    with pytest.raises(ValueError, match="input_size: expected an integer >= 1; received"):
        unirnn.gru(np.bool_(True), 4)
    with pytest.raises(ValueError, match="hidden_size: expected an integer >= 1; received"):
        unirnn.gru(3, np.float64(4.0))


def test_from_json_errors():
    with pytest.raises(ValueError, match="expected JSON text"):
        unirnn.Spec.from_json("{not json")
    with pytest.raises(ValueError, match="unknown field"):
        unirnn.Spec.from_json('{"family": "gru", "input_size": 3, "hidden_size": 4, "gates": 3}')
    with pytest.raises(ValueError, match="missing required field 'hidden_size'"):
        unirnn.Spec.from_json('{"family": "gru", "input_size": 3}')
    with pytest.raises(ValueError, match="newer than this unirnn reads"):
        unirnn.Spec.from_json('{"format": 99, "family": "gru", "input_size": 3, "hidden_size": 4}')
    for bad in ('"1"', "1.0", "true", "0", "null"):
        with pytest.raises(ValueError, match=r"^spec: the format field must be an integer >= 1 "
                                             r"\(the spec format version; this unirnn writes 1\); "
                                             r"received format="):
            unirnn.Spec.from_json(
                f'{{"format": {bad}, "family": "gru", "input_size": 3, "hidden_size": 4}}')


def test_presets():
    names = unirnn.preset_names()
    for name in ("torch_lstm", "torch_gru", "torch_rnn", "keras_lstm", "d2l_gru", "relu_lstm"):
        assert name in names
    d2l = unirnn.preset("d2l_gru", 28, 32)
    assert (d2l.reset, d2l.update) == ("before", "old")
    relu = unirnn.preset("relu_lstm", 3, 4, num_layers=2)
    assert relu.activations["g"] == relu.activations["c"] == "relu" and relu.num_layers == 2


def test_spec_is_frozen_hashable_picklable():
    spec = unirnn.gru(3, 4, activations={"z": "gelu"})
    with pytest.raises(AttributeError):
        spec.hidden_size = 5  # type: ignore[misc]
    assert hash(spec) == hash(unirnn.gru(3, 4, activations={"z": "gelu"}))
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert spec.replace(hidden_size=5).hidden_size == 5


ACTIVATIONS = st.sampled_from(
    ["sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu", "hard_sigmoid",
     "hard_sigmoid(0.2, 0.5)", "softsign", "softplus", "elu(0.5)", "leaky_relu(0.2)", "identity"]
)


@st.composite
def specs(draw):
    family = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    roles = unirnn.ROLES[family]
    common = dict(
        activations=draw(st.dictionaries(st.sampled_from(roles), ACTIVATIONS)),
        bias=draw(st.booleans()),
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        dropout=draw(st.sampled_from([0.0, 0.25, 0.5])),
    )
    sizes = (draw(st.integers(1, 9)), draw(st.integers(2, 9)))
    if family == "rnn":
        return unirnn.rnn(*sizes, **common)
    if family == "gru":
        return unirnn.gru(*sizes, reset=draw(st.sampled_from(["after", "before"])),
                          update=draw(st.sampled_from(["old", "new"])), **common)
    return unirnn.lstm(
        *sizes,
        peepholes=draw(st.booleans()),
        proj_size=draw(st.integers(0, sizes[1] - 1)),
        cell_clip=draw(st.sampled_from([None, 0.5, 3.0])),
        **common,
    )


@given(specs())
def test_json_round_trip(spec):
    assert unirnn.Spec.from_json(spec.to_json()) == spec
    assert unirnn.Spec.from_json(spec.to_json()).to_json() == spec.to_json()
