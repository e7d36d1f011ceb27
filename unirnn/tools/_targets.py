"""Where ``unirnn check`` runs: the backends installed here and the device each uses.

A target is ``(label, backend module, device, evaluate options)``: ``("torch custom",
"torch", "cuda", {"device": "cuda", "path": "custom"})`` runs unirnn's torch module on
CUDA with the custom path forced. Keras is not a target here: it runs once per Keras
backend, each in its own subprocess (:func:`keras_backends`).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..backends import framework_installed

__all__ = ["Target", "in_process_targets", "keras_backends", "keras_device",
           "onnxruntime_targets"]

Target = tuple[str, str, str, dict[str, Any]]

KERAS_BACKENDS = ("tensorflow", "jax", "torch")


def in_process_targets() -> list[Target]:
    """The targets of the backends installed here (numpy always, CUDA when present)."""
    targets: list[Target] = [("numpy", "numpy", "cpu", {})]
    if framework_installed("torch"):
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            targets.append(("torch", "torch", device, {"device": device}))
            targets.append(("torch custom", "torch", device, {"device": device,
                                                             "path": "custom"}))
    if framework_installed("flax"):
        targets.append(("flax linen", "flax", _jax_device(), {"api": "linen"}))
        targets.append(("flax nnx", "flax", _jax_device(), {"api": "nnx"}))
    targets += onnxruntime_targets()
    return targets


def onnxruntime_targets() -> list[Target]:
    """onnxruntime on its CPU provider, and its CUDA provider when present."""
    if not (framework_installed("onnx") and framework_installed("onnxruntime")):
        return []
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    return [("onnxruntime", "onnx", device, {"provider": provider})
            for device, provider in (("cpu", "CPUExecutionProvider"),
                                     ("cuda", "CUDAExecutionProvider"))
            if provider in providers]


def keras_backends() -> list[str]:
    """The Keras backends installed here, each of which ``unirnn check`` runs Keras on."""
    if not framework_installed("keras"):
        return []
    return [name for name in KERAS_BACKENDS if framework_installed(name)]


def _jax_device() -> str:
    import jax

    return str(jax.default_backend())


def keras_device() -> str:
    """Where Keras puts its tensors on its current backend: ``cpu``, ``gpu``, ``cuda`` ...

    Read off a tensor Keras creates, so the label is the device Keras actually used.
    """
    keras = importlib.import_module("keras")
    tensor = keras.ops.zeros((1,))
    backend = keras.backend.backend()
    if backend == "torch":
        return str(tensor.device.type)
    if backend == "jax":
        return str(next(iter(tensor.devices())).platform)
    if backend == "tensorflow":
        tf = importlib.import_module("tensorflow")
        return str(tf.DeviceSpec.from_string(tensor.device).device_type or "?").lower()
    return "?"
