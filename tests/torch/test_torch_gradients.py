"""Gradients of the custom path: torch.autograd.gradcheck in float64, and evaluate()'s grads."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from cases import SPECS
from support import example_inputs, framework, nonzero_weights

import unirnn

torch = framework("torch")
torch_backend = importlib.import_module("unirnn.backends.torch")
torch_layout = importlib.import_module("unirnn.layouts.torch")

CUSTOM = {name: spec for name, spec in SPECS.items()
          if torch_layout.native_problem(spec) is not None}


def _small(spec):
    return spec.replace(input_size=2, hidden_size=3, proj_size=min(spec.proj_size, 2))


@pytest.mark.parametrize("spec", CUSTOM.values(), ids=list(CUSTOM))
def test_gradcheck_custom_cells(spec):
    """Inputs, initial state and every weight, with ragged lengths, in float64."""
    spec = _small(spec)
    weights = nonzero_weights(spec, scale=0.4)
    model = unirnn.build(spec, backend="torch", weights=weights, dtype=torch.float64,
                         batch_first=True)
    assert model.kernel == "unirnn.torch-loop"
    x, state, lengths = example_inputs(spec, batch=2, steps=3)
    xt = torch.tensor(x, requires_grad=True)
    states = [torch.tensor(s, requires_grad=True)
              for s in (state if isinstance(state, tuple) else (state,))]
    names = list(model.canonical_names().values())
    params = [getattr(model, n).detach().clone().requires_grad_(True) for n in names]

    def run(xt, *args):
        hx_args, p_args = args[: len(states)], args[len(states):]
        out, final = torch.func.functional_call(model, dict(zip(names, p_args)), (
            xt, tuple(hx_args) if spec.family == "lstm" else hx_args[0]),
            {"lengths": lengths})
        final = final if isinstance(final, tuple) else (final,)
        return (out, *final)

    assert torch.autograd.gradcheck(run, (xt, *states, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_evaluate_grads_match_finite_differences(spec):
    """d sum(outputs * cotangent) w.r.t. x and a few weight entries, central differences."""
    spec = _small(spec)
    weights = nonzero_weights(spec, scale=0.4)
    x, state, lengths = example_inputs(spec, batch=2, steps=3)
    rng = np.random.default_rng(5)
    result = torch_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths)
    cot = rng.standard_normal(result.outputs.shape)
    result = torch_backend.evaluate(spec, weights, x, initial_state=state, lengths=lengths,
                                    cotangent=cot)
    assert set(result.grads) == {"x", *unirnn.weight_shapes(spec)}

    def loss(w, xx):
        out = torch_backend.evaluate(spec, w, xx, initial_state=state, lengths=lengths).outputs
        return float((out * cot).sum())

    eps = 1e-6
    for name in ["x", *list(unirnn.weight_shapes(spec))]:
        base = x if name == "x" else np.array(weights[name])
        assert result.grads[name].shape == base.shape
        flat_index = int(rng.integers(base.size))
        plus, minus = base.copy(), base.copy()
        plus.flat[flat_index] += eps
        minus.flat[flat_index] -= eps
        if name == "x":
            numeric = (loss(weights, plus) - loss(weights, minus)) / (2 * eps)
        else:
            numeric = (loss(unirnn.Weights({**weights, name: plus}), x)
                       - loss(unirnn.Weights({**weights, name: minus}), x)) / (2 * eps)
        assert abs(result.grads[name].flat[flat_index] - numeric) <= 1e-6 * max(1, abs(numeric))
