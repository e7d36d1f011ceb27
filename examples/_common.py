"""Helpers shared by the examples (not an example itself: the leading underscore keeps it
out of tests/cross/test_examples.py).

Each example runs its models in PyTorch, then ports the recurrent layer with
``unirnn.port`` and moves the small output head (an ``nn.Linear``) by hand, in numpy: a
``Dense`` kernel is the transposed ``nn.Linear.weight``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


def quiet_frameworks(keras_backend: str = "tensorflow") -> None:
    """Pick Keras' backend (unless the caller set one) and silence TensorFlow's C++ logs.

    Call it before Keras is imported: unirnn imports Keras on the first Keras port.
    """
    os.environ.setdefault("KERAS_BACKEND", keras_backend)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global state, for code that reads it
    torch.manual_seed(seed)


def linear_to_numpy(linear: Any) -> tuple[np.ndarray, np.ndarray]:
    """An ``nn.Linear``'s ``(weight (out, in), bias (out,))`` as float32 numpy arrays."""
    weight = linear.weight.detach().cpu().numpy().astype(np.float32)
    bias = linear.bias.detach().cpu().numpy().astype(np.float32)
    return weight, bias


def keras_dense(weight: np.ndarray, bias: np.ndarray) -> Any:
    """A built ``keras.layers.Dense`` computing ``x @ weight.T + bias``."""
    import keras

    dense = keras.layers.Dense(weight.shape[0])
    dense.build((None, weight.shape[1]))
    dense.set_weights([weight.T, bias])
    return dense


def flax_dense_params(weight: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
    """The parameters of a ``flax.linen.Dense`` computing ``x @ weight.T + bias``."""
    return {"kernel": np.ascontiguousarray(weight.T), "bias": bias}


@contextmanager
def stopwatch(times: list[float]) -> Iterator[None]:
    """Append the wall time of the ``with`` block (``time.perf_counter``) to ``times``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times.append(time.perf_counter() - start)
