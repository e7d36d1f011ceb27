"""The linear scans of unirnn's Keras cell: ``h_t = a_t h_{t-1} + b_t`` over a whole sequence
(minGRU, minLSTM: :meth:`unirnn._cells.Cell.linear_recurrence`), on every Keras backend.

Private to :mod:`unirnn.backends.keras`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

__all__ = ["associative_scan", "computes_on_cpu", "on_cpu_only", "sequential_scan",
           "static_steps"]


def on_cpu_only() -> bool:
    """Whether Keras' backend has no accelerator: there minGRU and minLSTM step their cell,
    which measured faster than their parallel form."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return not torch.cuda.is_available()
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    return not _tensorflow_gpus()


def computes_on_cpu(x: Any) -> bool:
    """Whether Keras' backend computes ``x`` on the CPU."""
    backend = keras.backend.backend()
    if backend == "torch":
        return x.device.type == "cpu"
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    return not _tensorflow_gpus()


@functools.cache
def _tensorflow_gpus() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def static_steps(x: Any) -> bool:
    """Whether the number of steps is known where jax traces (Keras' shape inference of
    a functional model traces a symbolic one, which ``lax.associative_scan`` cannot
    split); tensorflow's and torch's scans take any."""
    return keras.backend.backend() != "jax" or isinstance(x.shape[0], int)


def sequential_scan(a: Any, b: Any, h0: Any) -> Any:
    """Every ``h_t = a_t h_{t-1} + b_t`` over axis 0 by one multiply-add per step:
    ``lax.scan`` (jax), ``tf.scan`` (tensorflow, any number of steps), a loop of
    ``torch.addcmul`` over the steps (torch, eager: as unirnn's torch backend on the CPU)."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        outputs, h = [], h0
        for a_t, b_t in zip(a.unbind(0), b.unbind(0)):
            h = torch.addcmul(b_t, a_t, h)
            outputs.append(h)
        return torch.stack(outputs)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.scan(lambda h, ab: ab[0] * h + ab[1], (a, b), initializer=h0)
    import jax

    def step(h: Any, ab: tuple[Any, Any]) -> tuple[Any, Any]:
        h = ab[0] * h + ab[1]
        return h, h

    return jax.lax.scan(step, h0, (a, b))[1]


def _combine(earlier: tuple[Any, Any], later: tuple[Any, Any]) -> tuple[Any, Any]:
    """Two consecutive steps of ``h -> a h + b`` as one: ``later`` after ``earlier``."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def associative_scan(a: Any, b: Any) -> Any:
    """Every ``B_t`` of the inclusive scan of ``(a_t, b_t)`` under :func:`_combine` over
    axis 0 (with ``b_0`` holding the initial state: every ``h_t``), ``log2 T`` rounds deep.

    jax: ``keras.ops.associative_scan`` (``lax.associative_scan``, work-efficient). Keras'
    own on the other backends does not serve: on torch it builds float32 CPU buffers
    (float64 is lost, other devices fail), on tensorflow it compares the inputs' lengths
    as a Python bool (an unknown number of steps, a functional model's ``(None, None, I)``
    input, fails) and its dynamic form takes seconds to trace and loses the static shape.
    There a doubling scan (Hillis-Steele: each round combines every step with the one
    ``k`` before it, ``k = 1, 2, 4, ...``), a Python loop on torch (eager: the length is
    known), a ``tf.while_loop`` on tensorflow.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return ops.associative_scan(_combine, (a, b), axis=0)[1]
    if backend == "tensorflow":
        return _tf_doubling_scan(a, b)
    steps = a.shape[0]
    t = ops.reshape(ops.arange(steps), (steps,) + (1,) * (len(a.shape) - 1))
    k = 1
    while k < steps:
        a, b = _doubling_round(a, b, k, ops.cast(t >= k, a.dtype), last=2 * k >= steps)
        k *= 2
    return b


def _doubling_round(a: Any, b: Any, k: Any, keep: Any, last: bool = False,
                    roll: Callable[[Any, Any], Any] | None = None) -> tuple[Any, Any]:
    """One round of the doubling scan: step ``t`` combined with ``t - k`` (``keep`` is 1
    where ``t >= k``, else 0: the identity ``(1, 0)``)."""
    roll = roll or (lambda x, shift: ops.roll(x, shift, axis=0))
    b = a * (roll(b, k) * keep) + b
    if not last:
        a = a * (roll(a, k) * keep + (1.0 - keep))
    return a, b


def _tf_doubling_scan(a: Any, b: Any) -> Any:
    """The doubling scan as a ``tf.while_loop`` (any number of steps, known or not)."""
    import tensorflow as tf

    steps = tf.shape(a)[0]
    t = tf.reshape(tf.range(steps), tf.concat([[steps], tf.ones([tf.rank(a) - 1], tf.int32)],
                                              0))

    def body(k: Any, a: Any, b: Any) -> tuple[Any, Any, Any]:
        keep = tf.cast(t >= k, a.dtype)
        a, b = _doubling_round(a, b, k, keep,
                               roll=lambda x, shift: tf.roll(x, shift, axis=0))
        return k * 2, a, b

    _, _, b = tf.while_loop(lambda k, a, b: k < steps, body, (tf.constant(1), a, b))
    return b
