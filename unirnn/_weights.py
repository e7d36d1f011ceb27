"""Canonical weights: numpy arrays under names every backend and file agrees on.

Per layer ``k`` and direction ``forward``/``backward``, with ``G`` gates (rnn 1, lstm 4,
gru 3), hidden size ``H``, emitted size ``P`` (``proj_size`` or ``H``) and layer input
size ``I_k`` (``I`` for layer 0, ``D*P`` above)::

    layer{k}.{direction}.w_x  (G*H, I_k)   input weights, row blocks in gate order
    layer{k}.{direction}.w_h  (G*H, P)     recurrent weights
    layer{k}.{direction}.b_x  (G*H,)       input-side bias        (bias=True)
    layer{k}.{direction}.b_h  (G*H,)       recurrent-side bias    (bias=True)
    layer{k}.{direction}.p    (3*H,)       LSTM peepholes i, f, o (peepholes=True)
    layer{k}.{direction}.w_r  (P, H)       LSTM projection        (proj_size>0)

Gate order: lstm ``i, f, g, o``; gru ``r, z, n``; rnn ``h``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ._errors import SpecError, WeightsError
from ._families import check_params, get_family
from ._spec import Spec

__all__ = ["Weights", "check_weights", "init_weights", "weight_shapes"]

TENSOR_NAMES = ("w_x", "w_h", "b_x", "b_h", "p", "w_r")


def weight_name(layer: int, direction: str, tensor: str) -> str:
    return f"layer{layer}.{direction}.{tensor}"


def layer_shapes(spec: Spec, input_size: int) -> dict[str, tuple[int, ...]]:
    """One layer and direction's tensors by short name (``w_x``...) for ``input_size``."""
    return {name: shape for name, (shape, _) in _layer_tensors(spec, input_size).items()}


def layer_inits(spec: Spec, input_size: int) -> dict[str, str]:
    """How each of one layer and direction's tensors starts (short name -> ``"uniform"``,
    ``"ones"`` or ``"zeros"``): uniform in ``±1/sqrt(H)`` except a family's extra
    parameters that say otherwise (layer-norm scales start at one, offsets at zero)."""
    return {name: init for name, (_, init) in _layer_tensors(spec, input_size).items()}


def _layer_tensors(spec: Spec, input_size: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """One layer and direction's tensors: short name -> (shape, how it is initialised)."""
    family = get_family(spec.family)
    G, H, P = spec.num_gates, spec.hidden_size, spec.output_size
    tensors: dict[str, tuple[tuple[int, ...], str]] = {"w_x": ((G * H, input_size), "uniform")}
    if family.recurrent:
        tensors["w_h"] = ((G * H, P), "uniform")
    if spec.bias:
        tensors["b_x"] = ((G * H,), "uniform")
        if family.recurrent:
            tensors["b_h"] = ((G * H,), "uniform")
    if spec.peepholes:
        tensors["p"] = ((3 * H,), "uniform")
    if spec.proj_size:
        tensors["w_r"] = ((P, H), "uniform")
    for name, param in check_params(family, spec).items():
        tensors[name] = (tuple(param.shape), param.init)
    return tensors


def weight_shapes(spec: Spec) -> dict[str, tuple[int, ...]]:
    """Every canonical tensor of ``spec`` with its shape, in a stable order.

    Names are ``layer{k}.{direction}.{tensor}`` (docs/weights.md); a tensor is listed only
    when the spec has it (``b_x``/``b_h`` with ``bias=True``, ``p`` with peepholes, ``w_r``
    with a projection). Nothing is allocated, so it sizes a checkpoint or a spec that
    would not fit in memory.

    Args:
        spec: the layer stack.

    Returns:
        Name -> shape, layer by layer, ``forward`` before ``backward``, each in the order
        ``w_x``, ``w_h``, ``b_x``, ``b_h``, ``p``, ``w_r``; ``G`` gates (rnn 1, lstm 4,
        gru 3), hidden size ``H``, emitted size ``P`` (``proj_size``, else ``H``): ``w_x``
        ``(G*H, I_k)``, ``w_h`` ``(G*H, P)``, biases ``(G*H,)``, ``p`` ``(3*H,)``, ``w_r``
        ``(P, H)``.

    Example:
        >>> import unirnn
        >>> for name, shape in unirnn.weight_shapes(unirnn.lstm(3, 4, proj_size=2)).items():
        ...     print(name, shape)
        layer0.forward.w_x (16, 3)
        layer0.forward.w_h (16, 2)
        layer0.forward.b_x (16,)
        layer0.forward.b_h (16,)
        layer0.forward.w_r (2, 4)
    """
    return {
        weight_name(layer, direction, tensor): shape
        for layer in range(spec.num_layers)
        for direction in spec.directions
        for tensor, shape in layer_shapes(spec, spec.layer_input_size(layer)).items()
    }


def _as_numpy(name: str, value: Any) -> np.ndarray:
    """A copy of ``value`` (numpy, torch, jax, Keras, TensorFlow) as a numpy array;
    bfloat16 (which numpy lacks) is widened to float32, exactly."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        if hasattr(value, "numpy"):
            value = value.numpy()
    try:
        array = np.array(value, copy=True)
    except (TypeError, ValueError, RuntimeError) as err:
        raise WeightsError(f"weight {name!r}: expected a floating-point array; could not "
                           f"convert a {type(value).__name__} ({err})") from None
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, from jax or TensorFlow
        array = array.astype(np.float32)
    return array


def check_fits(spec: Spec, dtype: DTypeLike = np.float32) -> None:
    """Refuse a spec whose weights would not fit in this machine's available memory.

    Raises:
        SpecError: the size of the weights and the memory available, in bytes.
    """
    count = sum(math.prod(shape) for shape in weight_shapes(spec).values())
    size = count * np.dtype(dtype).itemsize
    available = available_memory()
    if available is not None and size > available:
        raise SpecError(
            f"spec: its weights take {count:,} values ({_human(size)} in "
            f"{np.dtype(dtype).name}); this machine has {_human(available)} of memory "
            f"available (input_size={spec.input_size}, hidden_size={spec.hidden_size}, "
            f"num_layers={spec.num_layers})"
        )


def available_memory() -> int | None:
    """Bytes of memory this machine has available (Linux: MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class Weights(Mapping[str, np.ndarray]):
    """An immutable mapping from canonical names to numpy arrays.

    Build one with :func:`init_weights`, a backend's ``from_*`` converter,
    :func:`unirnn.load`, or directly from a dict of arrays; :func:`check_weights` holds
    it against a spec.

    Example:
        >>> import unirnn
        >>> w = unirnn.init_weights(unirnn.gru(3, 4), seed=0)
        >>> w["layer0.forward.w_x"].shape
        (12, 3)
    """

    __slots__ = ("_arrays",)

    def __init__(self, arrays: Mapping[str, Any]) -> None:
        if not isinstance(arrays, Mapping):
            raise WeightsError(
                f"Weights: expected a mapping of name to array; received {type(arrays).__name__}"
            )
        converted: dict[str, np.ndarray] = {}
        for name, value in arrays.items():
            array = _as_numpy(str(name), value)
            if array.dtype.kind != "f":
                raise WeightsError(
                    f"weight {name!r}: expected a floating-point array; received dtype "
                    f"{array.dtype}"
                )
            array.setflags(write=False)
            converted[str(name)] = array
        self._arrays = converted

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}: {v.shape}" for k, v in self._arrays.items())
        return f"Weights({{{items}}})"

    def astype(self, dtype: DTypeLike) -> Weights:
        """A copy with every array cast to ``dtype``."""
        return Weights({k: v.astype(dtype) for k, v in self._arrays.items()})

    def layer(self, layer: int, direction: str = "forward") -> dict[str, np.ndarray]:
        """The tensors of one layer and direction under their short names (``w_x``, ...)."""
        prefix = f"layer{layer}.{direction}."
        return {k[len(prefix) :]: v for k, v in self._arrays.items() if k.startswith(prefix)}

    @property
    def dtype(self) -> np.dtype[Any]:
        dtypes = {v.dtype for v in self._arrays.values()}
        if len(dtypes) != 1:
            raise WeightsError(f"weights mix dtypes {sorted(map(str, dtypes))}")
        return dtypes.pop()


def check_weights(spec: Spec, weights: Mapping[str, Any]) -> Weights:
    """Return ``weights`` as :class:`Weights`, in canonical order, after checking names and shapes.

    Raises:
        ValueError: a tensor is missing, unexpected, or has the wrong shape; the message
            names the tensor, the expected and the received shape.
    """
    if not isinstance(weights, Weights):
        weights = Weights(weights)
    expected = weight_shapes(spec)
    missing = [n for n in expected if n not in weights]
    if missing:
        raise WeightsError(
            f"weights: missing tensor {missing[0]!r} (shape {expected[missing[0]]}) required by "
            f"the {spec.family} spec" + (f"; {len(missing) - 1} more missing" if len(missing) > 1
                                          else "")
        )
    extra = [n for n in weights if n not in expected]
    if extra:
        raise WeightsError(
            f"weights: unexpected tensor {extra[0]!r} for this {spec.family} spec "
            f"(bias={spec.bias}, peepholes={spec.peepholes}, proj_size={spec.proj_size}, "
            f"num_layers={spec.num_layers}, bidirectional={spec.bidirectional})"
        )
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise WeightsError(
                f"weights: tensor {name!r} has shape {weights[name].shape}; expected {shape}"
            )
    if list(weights) != list(expected):
        weights = Weights({name: weights[name] for name in expected})  # canonical order
    return weights


def init_weights(spec: Spec, seed: int = 0, dtype: DTypeLike = np.float32) -> Weights:
    """Random weights for ``spec``, initialised like torch: uniform in ``±1/sqrt(H)``.

    Values are drawn in float64 and then cast, so the float32 and float64 weights of one
    seed are the same numbers rounded.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise WeightsError(f"seed: expected an integer >= 0; received {seed!r}")
    check_fits(spec, dtype)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(spec.hidden_size)
    weights = {}
    for layer in range(spec.num_layers):
        for direction in spec.directions:
            for tensor, (shape, init) in _layer_tensors(spec,
                                                        spec.layer_input_size(layer)).items():
                if init == "uniform":
                    value = rng.uniform(-bound, bound, size=shape)
                else:
                    value = np.full(shape, 1.0 if init == "ones" else 0.0)
                weights[weight_name(layer, direction, tensor)] = value.astype(dtype)
    return Weights(weights)
