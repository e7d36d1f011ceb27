"""The call options of unirnn's Keras layer beyond its spec: Keras' own meanings.

``merge_mode`` (``Bidirectional``'s: how the two directions' outputs combine), ``unroll``
(Keras' unrolled loop), ``recurrent_dropout`` and ``input_dropout`` (Keras' ``dropout``
on each step's input, training only), ``stateful`` (the final states of a call are the
next call's initial states, for a fixed ``batch_size``; ``layer.reset_state()`` zeroes
them). The dropouts and ``stateful`` exist only in Keras' own layers, so a layer on
unirnn's custom cell refuses them rather than compute differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from .._errors import SpecError
from .._spec import Spec

__all__ = ["MERGE_MODES", "LayerInterface", "check_dtype"]

MERGE_MODES = ("concat", "sum", "mul", "ave", None)
"""``keras.layers.Bidirectional``'s merge modes."""


@dataclass(frozen=True)
class LayerInterface:
    """A :class:`~unirnn.backends.keras.UniRNN`'s options beyond its spec (module docstring)."""

    merge_mode: str | None = "concat"
    unroll: bool = False
    recurrent_dropout: float = 0.0
    input_dropout: float = 0.0
    stateful: bool = False
    batch_size: int | None = None

    def check(self, spec: Spec, path: str) -> None:
        """Refuse what ``spec`` on ``path`` (``"native"`` or ``"custom"``) cannot hold."""
        if self.merge_mode not in MERGE_MODES:
            raise SpecError(f"merge_mode: expected one of {', '.join(map(repr, MERGE_MODES))}; "
                            f"received {self.merge_mode!r}")
        if self.merge_mode != "concat" and not spec.bidirectional:
            raise SpecError(f"merge_mode={self.merge_mode!r}: merges the two directions of a "
                            "bidirectional spec; received bidirectional=False")
        if self.stateful and (path == "custom" or not isinstance(self.batch_size, int)
                              or self.batch_size < 1):
            raise SpecError(
                "stateful=True: Keras' own layers keep the state between calls, for a fixed "
                f"batch size; expected batch_size >= 1 and a spec they compute; received "
                f"batch_size={self.batch_size!r}"
                + (" and a spec on unirnn's custom Keras cell" if path == "custom" else "")
            )
        if self.stateful and spec.bidirectional:
            raise SpecError("stateful=True: unirnn's Keras layer keeps the states of "
                            "unidirectional specs only; received bidirectional=True")
        for name in ("recurrent_dropout", "input_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise SpecError(f"{name}: expected a rate in [0, 1); received {rate!r}")
            if rate and path == "custom":
                raise SpecError(
                    f"{name}={rate}: only Keras' own layers have it, and this spec runs on "
                    "unirnn's custom Keras cell; train with Keras' own layer, or build "
                    "without it"
                )

    def native_options(self) -> dict[str, Any]:
        """Keywords of Keras' own ``LSTM``/``GRU``/``SimpleRNN``."""
        return {"unroll": self.unroll, "recurrent_dropout": self.recurrent_dropout,
                "dropout": self.input_dropout, "stateful": self.stateful}

    def config(self) -> dict[str, Any]:
        return asdict(self)

    def outputs(self, spec: Spec, y: Any, finals: Sequence[Any], return_sequences: bool
                ) -> list[Any]:
        """The layer's outputs, as a list (two for ``merge_mode=None``): every step's
        (``return_sequences``) or the top layer's final ``h`` per direction, merged."""
        D = spec.num_directions
        if return_sequences:
            parts = ops.split(y, D, axis=-1) if D == 2 else [y]
        else:
            parts = [carry[0] for carry in finals[-D:]]
        if D == 1 or self.merge_mode == "concat":
            return [parts[0] if D == 1 else ops.concatenate(parts, axis=-1)]
        forward, backward = parts
        if self.merge_mode == "sum":
            return [forward + backward]
        if self.merge_mode == "mul":
            return [forward * backward]
        if self.merge_mode == "ave":
            return [(forward + backward) / 2]
        return [forward, backward]


def check_dtype(dtype: Any) -> str:
    """``dtype``'s name, float32 or float64 (float64 on jax: with x64 switched on)."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = repr(dtype)
    if name not in ("float32", "float64"):
        raise SpecError(f"dtype: expected float32 or float64; received {name}")
    if name == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.read("jax_enable_x64"):
            raise SpecError("dtype float64 on Keras' jax backend needs x64: set "
                             "JAX_ENABLE_X64=1 before importing jax; received x64 disabled")
    return name
