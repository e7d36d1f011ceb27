"""Backend registry: ``unirnn.build(spec, backend=...)``.

Each backend lives in its own module, which imports its framework; the module is
imported on first use only, so ``import unirnn`` loads no framework.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .._errors import SpecError
from .._evaluation import Evaluation
from .._extras import installed, missing
from .._spec import Spec
from .._weights import check_fits

__all__ = ["BACKENDS", "Backend", "backend_module", "build", "explain", "framework_installed"]


@dataclass(frozen=True)
class BackendInfo:
    module: str
    framework: str | None  # top-level package it needs, None for numpy


BACKENDS: Mapping[str, BackendInfo] = {
    "numpy": BackendInfo("unirnn.backends.numpy", None),
    "torch": BackendInfo("unirnn.backends.torch", "torch"),
    "keras": BackendInfo("unirnn.backends.keras", "keras"),
    "flax": BackendInfo("unirnn.backends.flax", "flax"),
}


class Backend(Protocol):
    """What every backend module provides (``unirnn.backends.<name>``).

    ``build(spec, weights=None, **options)`` gives the framework's native module;
    ``evaluate(spec, weights, x, *, initial_state=None, lengths=None, dtype="float64",
    cotangent=None, **options)`` runs it on numpy inputs (:class:`unirnn._evaluation.Evaluation`);
    ``KERNELS`` names every path a built module's ``.kernel`` may say.
    """

    KERNELS: tuple[str, ...]

    def build(self, spec: Spec, weights: Mapping[str, Any] | None = None,
              **options: Any) -> Any: ...

    def evaluate(self, spec: Spec, weights: Mapping[str, Any], x: Any, *,
                 initial_state: Any = None, lengths: Any = None, dtype: Any = "float64",
                 cotangent: Any = None, **options: Any) -> Evaluation: ...


framework_installed = installed
"""Whether a framework can be imported, without importing it (a namespace package such as
``tests/torch`` does not count): :func:`unirnn._extras.installed`."""


def backend_module(backend: str) -> Backend:
    """Import a backend's module, with a clear error when it or its framework is missing."""
    try:
        info = BACKENDS[backend]
    except (KeyError, TypeError):
        raise SpecError(
            f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}"
        ) from None
    if info.framework is not None and not framework_installed(info.framework):
        raise missing(f"backend {backend!r}", info.framework)
    module: Backend = importlib.import_module(info.module)  # type: ignore[assignment]
    return module


def build(spec: Spec, backend: str = "numpy", weights: Mapping[str, Any] | None = None,
          **options: Any) -> Any:
    """Build ``spec`` as a native module of ``backend``.

    Args:
        spec: what to build.
        backend: ``"numpy"``, ``"torch"``, ``"keras"`` or ``"flax"``.
        weights: canonical weights (:class:`unirnn.Weights` or a mapping of the same
            names); ``None`` initialises them as the framework would.
        options: passed to the backend (``dtype``, ``batch_first``, ``api``, ...).

    Returns:
        numpy: :class:`unirnn.backends.numpy.NumpyRNN`; torch: a ``torch.nn.Module``;
        keras: a Keras layer; flax: a Flax module.
    """
    if not isinstance(spec, Spec):
        raise SpecError(f"build: expected a unirnn.Spec; received {type(spec).__name__}")
    if weights is None:
        check_fits(spec)  # before the framework tries to allocate them
    return backend_module(backend).build(spec, weights=weights, **options)


def explain(module: Any) -> str:
    """Which kernel a module built by :func:`build` runs, and for which spec; for a module
    ``unirnn.port`` built from a source that carries no spec (a plain state dict), also
    the standard cell that was assumed (its ``spec_assumed``, :mod:`unirnn._assumed`).

    Example:
        >>> import unirnn
        >>> unirnn.explain(unirnn.build(unirnn.gru(3, 4, reset="before"), backend="numpy"))
        'NumpyRNN runs numpy-loop for gru 3->4; r=sigmoid, z=sigmoid, n=tanh; reset=before, \
update=old; layers=1'
    """
    kernel = getattr(module, "kernel", None)
    spec = getattr(module, "spec", None)
    if not isinstance(kernel, str) or not isinstance(spec, Spec):
        raise SpecError(
            f"explain: expected a module built by unirnn.build (with .kernel and .spec); "
            f"received {type(module).__name__}"
        )
    text = f"{type(module).__name__} runs {kernel} for {spec.describe()}"
    assumed = getattr(module, "spec_assumed", None)  # set by unirnn.port (unirnn._assumed)
    return text if not isinstance(assumed, str) else f"{text}. Assumed: {assumed}"
