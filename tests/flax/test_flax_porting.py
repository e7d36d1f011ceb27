"""to_flax / from_flax: unirnn's layer trees round-trip bit for bit, and Flax's own cells
(linen and nnx) agree with the oracle on imported and exported weights."""

from __future__ import annotations

import importlib

import numpy as np
import oracle
import pytest
from cases import SPECS
from support import framework, max_rel_error, nonzero_weights

import unirnn

jax = framework("jax")
framework("flax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy
nn = importlib.import_module("flax.linen")
nnx = importlib.import_module("flax.nnx")
flax_layout = importlib.import_module("unirnn.layouts.flax")

CELLS = {
    "LSTMCell": unirnn.lstm(3, 4),
    "OptimizedLSTMCell": unirnn.lstm(3, 4),
    "GRUCell": unirnn.gru(3, 4),
    "SimpleCell": unirnn.rnn(3, 4),
}
X = np.random.default_rng(0).standard_normal((2, 5, 3))


def _nnx_weights(cell, spec):
    """nnx's GRUCell has no b_hn: zero it so its export is exact."""
    weights = nonzero_weights(spec)
    if cell != "GRUCell":
        return weights
    b_h = weights["layer0.forward.b_h"].copy()
    b_h[8:] = 0.0
    return unirnn.Weights({**weights, "layer0.forward.b_h": b_h})


def _nnx_run(module):
    carry = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                   module.initialize_carry((2, 3), nnx.Rngs(0)))
    return nnx.RNN(module)(X, initial_carry=carry)


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_unirnn_tree_round_trips_bit_identically(spec):
    weights = nonzero_weights(spec)
    params = unirnn.to_flax(spec, weights)
    spec2, weights2 = unirnn.from_flax(params, spec=spec)
    assert spec2 == spec
    assert set(weights2) == set(weights)
    for name in weights:
        np.testing.assert_array_equal(weights2[name], weights[name])
    inferred, _ = unirnn.from_flax(params)  # sizes and options inferred from the shapes
    assert (inferred.family, inferred.input_size, inferred.hidden_size, inferred.num_layers,
            inferred.bidirectional, inferred.bias, inferred.peepholes, inferred.proj_size) == (
        spec.family, spec.input_size, spec.hidden_size, spec.num_layers, spec.bidirectional,
        spec.bias, spec.peepholes, spec.proj_size)


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("cell", CELLS)
def test_layout_names_and_shapes_are_flax_own(cell, api):
    """unirnn.layouts.flax's tree of each cell is the one Flax itself initialises."""
    spec = CELLS[cell]
    if api == "linen":
        native = getattr(nn, cell)(4).init(jax.random.key(0), jnp.zeros((2, 4)),
                                           jnp.zeros((2, 3)))["params"]
    else:
        native = nnx.to_pure_dict(nnx.state(getattr(nnx, cell)(3, 4, rngs=nnx.Rngs(0)),
                                            nnx.Param))
    shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), dict(native))
    assert shapes == flax_layout.cell_tree_shapes(spec, cell, api)


@pytest.mark.parametrize("cell", CELLS)
def test_export_to_linen_cell_matches_oracle(cell):
    spec = CELLS[cell]
    weights = nonzero_weights(spec)
    params = unirnn.to_flax(spec, weights, cell=cell)
    native = nn.RNN(getattr(nn, cell)(4, param_dtype=jnp.float64))
    template = native.init(jax.random.key(0), X)
    assert jax.tree_util.tree_structure(template["params"]["cell"]) == \
        jax.tree_util.tree_structure(params["params"])
    out = native.apply({"params": {"cell": params["params"]}}, X)
    assert max_rel_error(out, oracle.run(spec, weights, X)[0]) <= 1e-12


@pytest.mark.parametrize("cell", CELLS)
def test_import_from_linen_cell_matches_native_outputs(cell):
    """A Flax-initialised cell (random biases too) loads into unirnn with equal outputs."""
    native = nn.RNN(getattr(nn, cell)(4, param_dtype=jnp.float64,
                                      bias_init=nn.initializers.normal(0.5)))
    variables = native.init(jax.random.key(1), X)
    spec, weights = unirnn.from_flax(variables)  # nn.RNN's {"params": {"cell": ...}}
    assert spec == CELLS[cell]
    expected = native.apply(variables, X)
    assert max_rel_error(oracle.run(spec, weights, X)[0], expected) <= 1e-12
    model = unirnn.build(spec, backend="flax", weights=weights, dtype=np.float64,
                         param_dtype=np.float64)
    out = model.apply(model.init(jax.random.key(0), X), X)
    assert max_rel_error(out, expected) <= 1e-12


@pytest.mark.parametrize("cell", CELLS)
def test_nnx_cell_both_directions(cell):
    spec = CELLS[cell]
    weights = _nnx_weights(cell, spec)
    module = getattr(nnx, cell)(3, 4, dtype=jnp.float64, param_dtype=jnp.float64,
                                rngs=nnx.Rngs(0))
    state = nnx.state(module, nnx.Param)
    nnx.replace_by_pure_dict(state, unirnn.to_flax(spec, weights, cell=cell, api="nnx"))
    nnx.update(module, state)
    assert max_rel_error(_nnx_run(module), oracle.run(spec, weights, X)[0]) <= 1e-12
    spec2, weights2 = unirnn.from_flax(module)  # the module object: activations read off it
    assert spec2 == spec
    assert max_rel_error(oracle.run(spec2, weights2, X)[0], _nnx_run(module)) <= 1e-12


def test_nnx_gru_refuses_a_recurrent_candidate_bias():
    spec = CELLS["GRUCell"]
    with pytest.raises(ValueError, match="b_hn.*flax.nnx.GRUCell has no recurrent bias"):
        unirnn.to_flax(spec, nonzero_weights(spec), cell="GRUCell", api="nnx")


@pytest.mark.parametrize(
    ("spec", "cell", "field"),
    [
        (unirnn.gru(3, 4, reset="before"), "GRUCell", "reset='before'"),
        (unirnn.gru(3, 4, update="new"), "GRUCell", "update='new'"),
        (unirnn.gru(3, 4, activations={"z": "gelu"}), "GRUCell", "activations"),
        (unirnn.lstm(3, 4, peepholes=True), "LSTMCell", "peepholes=True"),
        (unirnn.lstm(3, 4, proj_size=2), "OptimizedLSTMCell", "proj_size=2"),
        (unirnn.lstm(3, 4, activations={"c": "relu"}), "LSTMCell", "activations"),
        (unirnn.lstm(3, 4, num_layers=2), "LSTMCell", "num_layers/bidirectional"),
        (unirnn.rnn(3, 4), "GRUCell", "family='rnn'"),
    ],
    ids=["gru-before", "gru-new", "gru-gelu-z", "lstm-peepholes", "lstm-proj", "lstm-relu-c",
         "lstm-2layer", "rnn-as-gru"],
)
def test_export_refuses_what_the_cell_cannot_compute(spec, cell, field):
    with pytest.raises(ValueError, match=f"{field}.*Flax's {cell} cannot express it"):
        unirnn.to_flax(spec, nonzero_weights(spec), cell=cell)


def test_non_default_activations_from_cell_objects_and_spec():
    relu_gru = nn.GRUCell(4, activation_fn=nn.relu, param_dtype=jnp.float64)
    variables = relu_gru.init(jax.random.key(0), jnp.zeros((2, 4)), X[:, 0])
    spec, _ = unirnn.from_flax(relu_gru.bind(variables))
    assert spec.activations == {"r": "sigmoid", "z": "sigmoid", "n": "relu"}
    # A bare tree cannot say it: the spec says it, and is held to the cell.
    spec, _ = unirnn.from_flax(variables, spec=unirnn.gru(3, 4, activation="relu"))
    assert spec.activations["n"] == "relu"
    with pytest.raises(ValueError, match="reset='before'"):
        unirnn.from_flax(variables, spec=unirnn.gru(3, 4, reset="before"))
    gelu_lstm = nnx.LSTMCell(3, 4, activation_fn=jax.nn.gelu, rngs=nnx.Rngs(0))
    spec, _ = unirnn.from_flax(gelu_lstm)
    assert spec.activations["g"] == spec.activations["c"] == "gelu_tanh"  # jax's default


def test_reads_unirnn_modules():
    spec = unirnn.gru(3, 4, reset="before", num_layers=2, bidirectional=True)
    weights = nonzero_weights(spec)
    model = unirnn.build(spec, backend="flax", weights=weights, param_dtype=np.float64)
    bound = model.bind(model.init(jax.random.key(0), X))
    nnx_model = unirnn.build(spec, backend="flax", api="nnx", weights=weights,
                             param_dtype=np.float64)
    for obj in (bound, nnx_model):
        spec2, weights2 = unirnn.from_flax(obj)
        assert spec2 == spec  # the module's spec, reset="before" included
        for name in weights:
            np.testing.assert_array_equal(weights2[name], weights[name])


def test_unknown_tree_is_refused():
    with pytest.raises(ValueError, match="cannot tell which cell"):
        unirnn.from_flax({"params": {"dense": {"kernel": np.zeros((3, 4))}}})
    with pytest.raises(ValueError, match="expected a params tree"):
        unirnn.from_flax(42)


def _bf16_tree(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), tree)


@pytest.mark.parametrize("cell", CELLS)
def test_import_bfloat16_params_of_linen_cell(cell):
    """A Flax cell's bfloat16 parameters import as float32 (exact); the oracle on them gives
    the native cell's outputs with those same bfloat16 parameters."""
    native = nn.RNN(getattr(nn, cell)(4, param_dtype=jnp.float64,
                                      bias_init=nn.initializers.normal(0.5)))
    variables = _bf16_tree(native.init(jax.random.key(1), X))
    spec, weights = unirnn.from_flax(variables)
    assert spec == CELLS[cell]
    assert all(w.dtype == np.float32 for w in weights.values())
    expected = native.apply(variables, X)  # float64 inputs: computed in float64
    assert max_rel_error(oracle.run(spec, weights, X)[0], expected) <= 1e-12


def test_import_bfloat16_unirnn_tree_is_the_rounded_weights():
    spec = unirnn.gru(3, 4, reset="before", num_layers=2, bidirectional=True)
    weights = nonzero_weights(spec)
    _, read = unirnn.from_flax(_bf16_tree(unirnn.to_flax(spec, weights)), spec=spec)
    for name, value in weights.items():
        np.testing.assert_array_equal(read[name], np.asarray(jnp.asarray(value, jnp.bfloat16),
                                                             np.float32))


def test_reads_flax_rnn_layers():
    """Flax's own layers around a cell (bound linen nn.RNN, nnx.RNN) read as their cell."""
    layer = nn.RNN(nn.GRUCell(4, activation_fn=nn.relu, param_dtype=jnp.float64,
                              bias_init=nn.initializers.normal(0.5)))
    variables = layer.init(jax.random.key(0), X)
    spec, weights = unirnn.from_flax(layer.bind(variables))
    assert spec == unirnn.gru(3, 4, activation="relu")
    assert max_rel_error(oracle.run(spec, weights, X)[0], layer.apply(variables, X)) <= 1e-12

    nnx_layer = nnx.RNN(nnx.LSTMCell(3, 4, activation_fn=jax.nn.gelu, dtype=jnp.float64,
                                     param_dtype=jnp.float64, rngs=nnx.Rngs(0)))
    spec, weights = unirnn.from_flax(nnx_layer)
    assert spec == unirnn.lstm(3, 4, activation="gelu_tanh")
    assert max_rel_error(oracle.run(spec, weights, X)[0], _nnx_run(nnx_layer.cell)) <= 1e-12

    uni = unirnn.gru(3, 4, reset="before")
    uni_weights = nonzero_weights(uni)
    cell = unirnn.build(uni, backend="flax", module="cell", weights=uni_weights,
                        param_dtype=jnp.float64)
    wrapped = nn.RNN(cell)
    spec, weights = unirnn.from_flax(wrapped.bind(wrapped.init(jax.random.key(0), X)))
    assert spec == uni
    for name in uni_weights:
        np.testing.assert_array_equal(weights[name], uni_weights[name])

    reversed_layer = nn.RNN(nn.GRUCell(4, param_dtype=jnp.float64), reverse=True,
                            keep_order=True)
    bound = reversed_layer.bind(reversed_layer.init(jax.random.key(0), X))
    with pytest.raises(ValueError, match=r"RNN\(reverse=True\).*unirnn's layer with reverse"):
        unirnn.from_flax(bound)
    with pytest.raises(ValueError, match=r"RNN\(reverse=True\)"):
        unirnn.from_flax(nnx.RNN(nnx.GRUCell(3, 4, rngs=nnx.Rngs(0)), reverse=True))


@pytest.mark.parametrize("cell", CELLS)
def test_import_from_bare_nnx_pure_dict(cell):
    """nnx.to_pure_dict(nnx.state(cell, nnx.Param)) alone: layout detected, oracle outputs
    equal to the nnx cell's."""
    module = getattr(nnx, cell)(3, 4, dtype=jnp.float64, param_dtype=jnp.float64,
                                bias_init=nnx.initializers.normal(0.5), rngs=nnx.Rngs(0))
    pure = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    spec, weights = unirnn.from_flax(pure)
    assert spec == CELLS[cell]
    assert max_rel_error(oracle.run(spec, weights, X)[0], _nnx_run(module)) <= 1e-12


def test_import_unirnn_nnx_pure_dict():
    spec = unirnn.lstm(3, 5, proj_size=2, peepholes=True, num_layers=2, bidirectional=True)
    weights = nonzero_weights(spec)
    model = unirnn.build(spec, backend="flax", api="nnx", weights=weights,
                         param_dtype=jnp.float64)
    spec2, weights2 = unirnn.from_flax(nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                                       spec=spec)
    assert spec2 == spec
    for name in weights:
        np.testing.assert_array_equal(weights2[name], weights[name])


def test_reads_unbound_module_with_weights_and_carried_spec():
    """port()'s unbound module chains into the next port, and a tree that carries its spec
    (as unirnn's msgpack files do) reads back as that spec, a custom cell included."""
    spec = unirnn.gru(3, 4, activations={"z": "gelu"}, reset="before")
    weights = nonzero_weights(spec)
    module = unirnn.build(spec, backend="flax", weights=weights)
    read_spec, read = unirnn.from_flax(module)
    assert read_spec == spec
    for name in weights:
        np.testing.assert_array_equal(read[name], weights[name])
    tree = {**unirnn.to_flax(spec, weights),
            "unirnn": {"spec": np.frombuffer(spec.to_json().encode(), np.uint8)}}
    assert unirnn.from_flax(tree)[0] == spec
    with pytest.raises(ValueError, match="different spec"):
        unirnn.from_flax(tree, spec=unirnn.gru(3, 4))
