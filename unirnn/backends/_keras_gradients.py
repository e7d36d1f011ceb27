"""Gradients of a :class:`~unirnn.backends.keras.UniRNN` on each Keras backend.

Keras 3 has no backend-neutral gradient call, so this is the one place that speaks each
backend's autodiff: ``tf.GradientTape``, ``jax.grad`` over ``stateless_call``, and
``torch.autograd.grad``. The loss is ``sum(outputs * cotangent)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from .._errors import SpecError

__all__ = ["gradients"]

Grads = dict[tuple[int, str], list[np.ndarray]]


def gradients(layer: Any, run: Callable[[Any], list[Any]], x: np.ndarray,
              cotangent: np.ndarray) -> tuple[list[Any], np.ndarray, Grads]:
    """``(results of run(x), d loss/dx, {(layer, direction): [d loss/d variable, ...]})``.

    The variables are :meth:`UniRNN.direction_variables`, in that order.
    """
    groups = layer.direction_variables()
    variables = [v for vs in groups.values() for v in vs]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        result, dx, dvars = _tensorflow(run, x, cotangent, variables)
    elif backend == "jax":
        result, dx, dvars = _jax(layer, run, x, cotangent, variables)
    elif backend == "torch":
        result, dx, dvars = _torch(run, x, cotangent, variables)
    else:
        raise SpecError(f"gradients: expected Keras backend tensorflow, jax or torch; "
                         f"received {backend!r}")
    out: Grads = {}
    i = 0
    for key, vs in groups.items():
        out[key] = [
            np.zeros(tuple(v.shape), np.dtype(v.dtype)) if g is None else np.asarray(g)
            for v, g in zip(vs, dvars[i:i + len(vs)])
        ]
        i += len(vs)
    return result, np.asarray(dx), out


def _tensorflow(run: Callable[[Any], list[Any]], x: np.ndarray, cot: np.ndarray,
                variables: list[Any]) -> tuple[list[Any], Any, list[Any]]:
    import tensorflow as tf

    xv = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xv)
        result = run(xv)
        loss = tf.reduce_sum(result[0] * tf.constant(cot))
    grads = tape.gradient(loss, [xv] + [v.value for v in variables])
    grads = [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads]
    return result, grads[0], grads[1:]


def _torch(run: Callable[[Any], list[Any]], x: np.ndarray, cot: np.ndarray,
           variables: list[Any]) -> tuple[list[Any], Any, list[Any]]:
    import torch

    xv = ops.convert_to_tensor(x)
    xv.requires_grad_(True)
    result = run(xv)
    loss = (result[0] * ops.convert_to_tensor(cot)).sum()
    raw = torch.autograd.grad(loss, [xv] + [v.value for v in variables], allow_unused=True)
    grads = [None if g is None else g.detach().cpu().numpy() for g in raw]
    return [r.detach() for r in result], grads[0], grads[1:]


def _jax(layer: Any, run: Callable[[Any], list[Any]], x: np.ndarray, cot: np.ndarray,
         variables: list[Any]) -> tuple[list[Any], Any, list[Any]]:
    import jax

    trainable = list(layer.trainable_variables)
    non_trainable = [v.value for v in layer.non_trainable_variables]
    position = {id(v): i for i, v in enumerate(trainable)}

    def loss(values: list[Any], xv: Any) -> tuple[Any, list[Any]]:
        mapping = list(zip(trainable, values)) + list(
            zip(layer.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping):
            result = run(xv)
        return (result[0] * cot).sum(), result

    (_, result), (dvalues, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        [v.value for v in trainable], x)
    dvars = [dvalues[position[id(v)]] if id(v) in position else None for v in variables]
    return result, dx, dvars
