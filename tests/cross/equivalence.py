"""What the cross-backend tests share: the backends under test and the gradient oracle."""

from __future__ import annotations

import os

import numpy as np
import oracle
from support import framework

KERAS_BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")

# test id -> (unirnn backend module, evaluate options, frameworks it needs)
BACKENDS = {
    "numpy": ("numpy", {}, ()),
    "torch": ("torch", {}, ("torch",)),
    "torch-custom-path": ("torch", {"path": "custom"}, ("torch",)),
    "flax-linen": ("flax", {"api": "linen"}, ("jax", "flax")),
    "flax-nnx": ("flax", {"api": "nnx"}, ("jax", "flax")),
    f"keras-{KERAS_BACKEND}": ("keras", {}, ("keras",)),
    f"keras-{KERAS_BACKEND}-custom-path": ("keras", {"path": "custom"}, ("keras",)),
}


def evaluate(backend_id, spec, weights, x, state, lengths, dtype, cotangent=None):
    import importlib

    module, options, frameworks = BACKENDS[backend_id]
    for name in frameworks:
        framework(name)
    backend = importlib.import_module(f"unirnn.backends.{module}")
    if module == "numpy":
        cotangent = None
    return backend.evaluate(
        spec, weights, x, initial_state=state, lengths=lengths, dtype=dtype,
        cotangent=cotangent, **options,
    )


_GRADIENTS: dict = {}


def oracle_gradients(spec, weights, x, state, lengths, cotangent):
    states = () if state is None else state if isinstance(state, tuple) else (state,)
    key = (spec.to_json(), state is None, lengths is None,
           *(np.asarray(a).tobytes() for a in (x, cotangent, *states)),
           *(() if lengths is None else (np.asarray(lengths).tobytes(),)),
           *(w.tobytes() for w in weights.values()))
    if key not in _GRADIENTS:
        _GRADIENTS[key] = _oracle_gradients(spec, weights, x, state, lengths, cotangent)
    return _GRADIENTS[key]


def _oracle_gradients(spec, weights, x, state, lengths, cotangent):
    """d sum(outputs * cotangent) / d{x, every weight}, by JAX autodiff of the oracle.

    The oracle (tests/oracle.py) shares no code with unirnn, so this is an independent
    float64 reference for every backend's gradients.
    """
    jax = framework("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    names = list(weights)

    def loss(x_, *tensors):
        out, _ = oracle.run(spec, dict(zip(names, tensors)), x_, state, lengths, xp=jnp)
        return jnp.sum(out * cotangent)

    grads = jax.grad(loss, argnums=tuple(range(len(names) + 1)))(
        jnp.asarray(x), *(jnp.asarray(weights[n]) for n in names)
    )
    return {"x": np.asarray(grads[0]), **{n: np.asarray(g) for n, g in zip(names, grads[1:])}}
