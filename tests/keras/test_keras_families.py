"""The cell families beyond Keras' own on the Keras backend, against the float64 oracle.

gru reset="none", lstm coupled=True, ln_lstm, ln_gru, indrnn, mingru, minlstm (and mingru
with an identity candidate): stacked and bidirectional, with an initial state and a mask,
in float64 (1e-10) and float32 (1e-5); gradients against finite differences of the oracle;
the cell module stepped one input at a time (``keras.layers.RNN``, stateful too) equal to
the whole sequence; minGRU and minLSTM as one parallel scan (their ``kernel`` says so),
masks with holes included; initialisation, saving and the native path's refusal.
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from conftest import require_float64
from support import (
    TOL,
    directional_gradient_error,
    example_inputs,
    framework,
    max_rel_error,
    nonzero_weights,
)

import unirnn
from unirnn._families import get_family
from unirnn._weights import layer_inits

keras = framework("keras")
from unirnn.backends import keras as keras_backend_module  # noqa: E402

CELL = "unirnn.keras-cell"
PARALLEL = "unirnn.keras-parallel-scan"


def _spec(family, input_size=3, hidden_size=4, **options):
    if family in ("gru", "lstm"):
        return getattr(unirnn, family)(input_size, hidden_size, **options)
    return unirnn.Spec(family, input_size, hidden_size, **options)


FAMILIES = {
    "gru-reset-none": ("gru", {"reset": "none"}),
    "lstm-coupled": ("lstm", {"coupled": True}),
    "ln_lstm": ("ln_lstm", {}),
    "ln_gru": ("ln_gru", {}),
    "indrnn": ("indrnn", {}),
    "mingru": ("mingru", {}),
    "minlstm": ("minlstm", {}),
    "mingru-identity": ("mingru", {"activations": {"h": "identity"}}),
}
STACKED = {name: _spec(family, num_layers=2, bidirectional=True, **options)
           for name, (family, options) in FAMILIES.items()}
BIDIRECTIONAL = {name: _spec(family, bidirectional=True, **options)
                 for name, (family, options) in FAMILIES.items()}
SINGLE = {name: _spec(family, **options) for name, (family, options) in FAMILIES.items()}
PARALLEL_FAMILIES = [name for name, (family, _) in FAMILIES.items()
                     if family in ("mingru", "minlstm")]
EXPECTED_KERNEL = {name: PARALLEL if family in ("mingru", "minlstm") else CELL
                   for name, (family, _) in FAMILIES.items()}


@pytest.fixture(autouse=True)
def parallel_form_on_cpu(monkeypatch):
    """minGRU and minLSTM run their parallel form on accelerators only; these tests run it
    on the CPU too (test_cpu_steps_mingru checks the CPU's own choice)."""
    from unirnn.backends import _keras_strategies

    monkeypatch.setattr(_keras_strategies, "PARALLEL_ON_CPU", True)


def _flat(state):
    return np.concatenate([np.ravel(s) for s in (state if isinstance(state, tuple) else (state,))])


def _np(value):
    return np.asarray(keras.ops.convert_to_numpy(value), np.float64)


# stacked and bidirectional with an initial state and a mask of lengths; without them
# (no mask: the parallel scan's other path) for minGRU and minLSTM. (Keras' jax backend
# compiles every scan: the other tests take smaller stacks.)
FLOAT64_CASES = [(name, "state+lengths") for name in STACKED] + [
    (name, "plain") for name in PARALLEL_FAMILIES]


@pytest.mark.parametrize(("name", "variant"), FLOAT64_CASES,
                         ids=[f"{name}-{variant}" for name, variant in FLOAT64_CASES])
def test_float64_matches_oracle(keras_backend, name, variant):
    require_float64(keras_backend)
    spec = STACKED[name]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, with_state=variant != "plain",
                                with_lengths=variant != "plain")
    result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           lengths=lengths, dtype="float64")
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert result.kernel == EXPECTED_KERNEL[name]
    assert result.outputs.dtype == np.float64 and result.outputs.shape == ref_out.shape
    assert max_rel_error(result.outputs, ref_out) <= TOL["float64"]
    assert max_rel_error(_flat(result.state), _flat(ref_final)) <= TOL["float64"]


@pytest.mark.parametrize("name", list(BIDIRECTIONAL))
def test_float32_matches_oracle(keras_backend, name):
    spec = BIDIRECTIONAL[name]
    weights = nonzero_weights(spec).astype(np.float32)
    x, state, lengths = example_inputs(spec)
    result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           lengths=lengths, dtype="float32")
    ref_out, ref_final = oracle.run(spec, weights, x, state, lengths)
    assert result.outputs.dtype == np.float32
    assert max_rel_error(result.outputs, ref_out) <= TOL["float32"]
    assert max_rel_error(_flat(result.state), _flat(ref_final)) <= TOL["float32"]


@pytest.mark.parametrize("name", list(BIDIRECTIONAL))
def test_gradients_match_finite_differences(keras_backend, name):
    require_float64(keras_backend)
    spec = BIDIRECTIONAL[name]
    weights = nonzero_weights(spec)
    x, state, lengths = example_inputs(spec, batch=2, steps=5)
    cotangent = np.random.default_rng(7).standard_normal(
        (x.shape[0], x.shape[1], spec.num_directions * spec.output_size))
    result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           lengths=lengths, cotangent=cotangent)
    assert set(result.grads) == {"x", *unirnn.weight_shapes(spec)}
    for key, shape in unirnn.weight_shapes(spec).items():
        assert result.grads[key].shape == shape, key
    assert directional_gradient_error(spec, weights, x, state, lengths, cotangent,
                                      result.grads) <= 1e-7


@pytest.mark.parametrize("name", list(SINGLE))
def test_cell_stepped_one_input_at_a_time_is_the_whole_sequence(keras_backend, name):
    """The cell module in keras.layers.RNN, stateful fed one step per call, and the cell
    called by hand from an initial state all give the layer's whole-sequence outputs (for
    minGRU and minLSTM: the parallel scan's) and the oracle's."""
    spec = SINGLE[name]
    weights = nonzero_weights(spec, seed=3).astype(np.float32)
    x, state, _ = example_inputs(spec, batch=2, steps=5, with_lengths=False)
    x = x.astype(np.float32)
    layer = unirnn.build(spec, backend="keras", weights=weights, return_state=True)
    assert layer.kernel == EXPECTED_KERNEL[name]
    given = [s[0] for s in (state if isinstance(state, tuple) else (state,))]
    whole = [_np(v) for v in layer(x, initial_state=given)]
    ref_out, ref_final = oracle.run(spec, weights, x, state)
    assert max_rel_error(whole[0], ref_out) <= TOL["float32"]
    assert max_rel_error(_flat(tuple(whole[1:])), _flat(ref_final)) <= TOL["float32"]

    cell = unirnn.build(spec, backend="keras", module="cell", weights=weights)
    assert type(cell).__name__ == "UniRNNCell"
    states = [keras.ops.convert_to_tensor(s.astype(np.float32)) for s in given]
    outputs = []
    for t in range(x.shape[1]):
        y, states = cell(x[:, t], states)
        outputs.append(_np(y))
    assert max_rel_error(np.stack(outputs, 1), whole[0]) <= 1e-6
    assert max_rel_error(_flat(tuple(_np(s) for s in states)), _flat(tuple(whole[1:]))) <= 1e-6

    zero_ref, _ = oracle.run(spec, weights, x)
    sequence = _np(keras.layers.RNN(cell, return_sequences=True)(x))
    assert max_rel_error(sequence, zero_ref) <= TOL["float32"]
    stateful = keras.layers.RNN(cell, return_sequences=True, stateful=True)
    streamed = np.concatenate([_np(stateful(x[:, t:t + 1])) for t in range(x.shape[1])], 1)
    assert max_rel_error(streamed, sequence) <= 1e-6
    stateful.reset_state()
    assert max_rel_error(_np(stateful(x[:, :1])), sequence[:, :1]) <= 1e-6


@pytest.mark.parametrize("name", ["mingru", "minlstm", "mingru-identity"])
def test_parallel_scan_keeps_keras_mask_meaning(keras_backend, name):
    """A mask with holes (and padding at the start): the parallel scan holds the state at a
    masked step and outputs zero there, as Keras' RNN stepping the same cell does."""
    spec = SINGLE[name]
    weights = nonzero_weights(spec, seed=4).astype(np.float32)
    x = np.random.default_rng(5).standard_normal((3, 7, 3)).astype(np.float32)
    mask = np.array([[1, 0, 1, 1, 0, 0, 1], [0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]],
                    bool)
    layer = unirnn.build(spec, backend="keras", weights=weights, return_state=True)
    assert layer.kernel == PARALLEL
    out, h = (_np(v) for v in layer(x, mask=mask))
    cell = unirnn.build(spec, backend="keras", module="cell", weights=weights)
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True,
                           zero_output_for_mask=True)
    want, want_h = (_np(v) for v in rnn(x, mask=mask))
    assert max_rel_error(out, want) <= 1e-6
    assert max_rel_error(h, want_h) <= 1e-6
    assert np.all(out[~mask] == 0)


def test_cpu_steps_mingru(keras_backend, monkeypatch):
    """Without an accelerator minGRU and minLSTM step their cell (faster there), with the
    oracle's numbers; the other tests run the parallel form on the CPU too."""
    from unirnn.backends import _keras_strategies

    monkeypatch.setattr(_keras_strategies, "PARALLEL_ON_CPU", False)
    for name in PARALLEL_FAMILIES:
        spec = BIDIRECTIONAL[name]
        weights = nonzero_weights(spec)
        x, state, lengths = example_inputs(spec)
        result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                               lengths=lengths, dtype="float32")
        assert result.kernel == CELL
        assert max_rel_error(result.outputs, oracle.run(spec, weights, x, state, lengths)[0]) \
            <= TOL["float32"]


def test_parallel_kernel_is_named_and_listed(keras_backend):
    assert PARALLEL in keras_backend_module.KERNELS
    for name, spec in SINGLE.items():
        assert unirnn.build(spec, backend="keras").kernel == EXPECTED_KERNEL[name], name
    # no log-space form without sigmoid gates: stepped, still the oracle's numbers
    spec = unirnn.Spec("mingru", 3, 4, activations={"z": "hard_sigmoid"})
    weights = nonzero_weights(spec).astype(np.float32)
    x, state, lengths = example_inputs(spec)
    result = keras_backend_module.evaluate(spec, weights, x, initial_state=state,
                                           lengths=lengths, dtype="float32")
    assert result.kernel == CELL
    assert max_rel_error(result.outputs, oracle.run(spec, weights, x, state, lengths)[0]) \
        <= TOL["float32"]


@pytest.mark.parametrize("steps", [1, 2, 37])
def test_both_forms_of_the_linear_recurrence(keras_backend, steps):
    """The associative scan (accelerators) and the multiply-add per step (the CPU) of
    KerasOps.linear_scan both give h_t = a_t h_{t-1} + b_t, in float64."""
    require_float64(keras_backend)
    from unirnn.backends._keras_cell import associative_scan, sequential_scan

    rng = np.random.default_rng(steps)
    a = rng.uniform(0.2, 1.0, (steps, 2, 3))
    b = rng.standard_normal((steps, 2, 3))
    h0 = rng.standard_normal((2, 3))
    h, want = h0, []
    for t in range(steps):
        h = a[t] * h + b[t]
        want.append(h)
    tensor = keras.ops.convert_to_tensor
    folded = b.copy()
    folded[0] += a[0] * h0
    got = {"associative": associative_scan(tensor(a), tensor(folded)),
           "sequential": sequential_scan(tensor(a), tensor(b), tensor(h0)),
           "linear_scan": keras_backend_module.KerasOps().linear_scan(
               tensor(np.log(a)), tensor(b), None, tensor(h0))}
    for form, value in got.items():
        assert _np(value).dtype == np.float64
        assert max_rel_error(_np(value), np.array(want)) <= 1e-14, form


def test_parallel_scan_in_a_functional_model(keras_backend):
    """An unknown number of steps (keras.Input((None, I))): the scan traces and runs."""
    spec = STACKED["minlstm"]
    weights = nonzero_weights(spec).astype(np.float32)
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, unirnn.build(spec, backend="keras", weights=weights)(inputs))
    x, _, _ = example_inputs(spec, with_state=False, with_lengths=False)
    out = _np(model.predict(x.astype(np.float32), verbose=0))
    assert max_rel_error(out, oracle.run(spec, weights, x)[0]) <= TOL["float32"]


@pytest.mark.parametrize("name", list(SINGLE))
def test_initialisation_and_variables(keras_backend, name):
    """Variables in the kernel layout, without recurrent ones where the family has none;
    layer-norm scales start at one, offsets at zero, the rest uniform in ±1/sqrt(H); the
    canonical weights read back are the ones set."""
    spec = SINGLE[name]
    cell = unirnn.build(spec, backend="keras", module="cell")
    recurrent = get_family(spec.family).recurrent
    assert ("recurrent_kernel" in cell.canonical_variables) == recurrent
    inits = layer_inits(spec, spec.input_size)
    bound = 1.0 / np.sqrt(spec.hidden_size)
    for short, variable in cell.variables_by_canonical_name().items():
        value = np.asarray(variable.numpy(), np.float64)
        if inits[short] == "uniform":
            assert np.all(np.abs(value) <= bound) and np.std(value) > 0, short
        else:
            assert np.all(value == (1.0 if inits[short] == "ones" else 0.0)), short
    weights = nonzero_weights(spec)
    layer = unirnn.build(spec, backend="keras", weights=weights, dtype="float32")
    read = layer.canonical_weights()
    assert set(read) == set(unirnn.weight_shapes(spec))
    for key in read:
        assert max_rel_error(read[key], weights[key]) <= 1e-7, key


@pytest.mark.parametrize("name", ["ln_gru", "mingru"])
def test_saved_and_loaded(keras_backend, name, tmp_path):
    spec = BIDIRECTIONAL[name]
    weights = nonzero_weights(spec).astype(np.float32)
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, unirnn.build(spec, backend="keras", weights=weights)(inputs))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    x, _, _ = example_inputs(spec, with_state=False, with_lengths=False)
    x = x.astype(np.float32)
    assert max_rel_error(_np(loaded(x)), _np(model(x))) <= 1e-7
    assert loaded.layers[-1].kernel == EXPECTED_KERNEL[name]
    assert unirnn.from_keras(loaded.layers[-1])[0] == spec


@pytest.mark.parametrize(("name", "field"), [
    ("gru-reset-none", "reset='none'"), ("lstm-coupled", "coupled=True"),
    ("ln_lstm", "family 'ln_lstm'"), ("ln_gru", "family 'ln_gru'"),
    ("indrnn", "family 'indrnn'"), ("mingru", "family 'mingru'"),
    ("minlstm", "family 'minlstm'"),
])
def test_native_path_refuses_these_families(keras_backend, name, field):
    spec = SINGLE[name]
    with pytest.raises(ValueError, match=r"path='native'.*" + field):
        unirnn.build(spec, backend="keras", path="native")
    with pytest.raises(ValueError, match=r"to_keras\(path='native'\).*" + field):
        unirnn.to_keras(spec, nonzero_weights(spec), path="native")
    assert unirnn.build(spec, backend="keras", path="auto").resolved_path == "custom"
    assert isinstance(unirnn.to_keras(spec, nonzero_weights(spec)),
                      keras_backend_module.UniRNN)
