"""Canonical weights to and from Keras 3: ``unirnn.to_keras`` and ``unirnn.from_keras``.

``from_keras`` reads Keras' own ``SimpleRNN``, ``LSTM``, ``GRU`` (both ``reset_after``),
``Bidirectional``, a ``Sequential``/model or list stacking them, ``.weights.h5`` and
``.keras`` files, and unirnn's own Keras layers; the spec is inferred from the layers'
configs. ``to_keras`` gives Keras' own layers when they compute the spec exactly, else
unirnn's custom layer. Layouts are in :mod:`unirnn.layouts.keras`: Keras' one-bias
layers fold ``b_x + b_h`` on export and import the sum into ``b_x`` (``b_h`` = 0).

:func:`read_file` and :func:`write_file` are ``unirnn.read``/``unirnn.write`` for Keras'
files: a ``.keras`` model file, or a ``.weights.h5`` file of the model :func:`keras_model`
builds, whose HDF5 root attributes carry the spec (:data:`unirnn.layouts.SPEC_KEY`) and
the path its layers took (:data:`unirnn.layouts.keras.KERAS_PATH_KEY`).

Example:
    >>> import unirnn
    >>> spec = unirnn.lstm(3, 8, activation="relu")
    >>> layer = unirnn.to_keras(spec, unirnn.init_weights(spec))
    >>> type(layer).__name__
    'LSTM'
    >>> unirnn.from_keras(layer)[0] == spec
    True
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .._assumed import SpecAndWeights, assumed_standard
from .._errors import FileFormatError, SpecError, WeightsError
from .._spec import Spec, same_spec
from .._weights import Weights, check_weights, init_weights, weight_name
from ..backends.keras import PATHS, UniRNN, UniRNNCell, check_dtype, native_problem_here
from ..backends.keras import build as build_keras
from ..layouts import SPEC_KEY
from ..layouts.keras import (
    CELL_VARS,
    FAMILIES,
    KERAS_PATH_KEY,
    NATIVE_CLASSES,
    from_native_arrays,
    layer_keywords,
    native_config,
    spec_from_arrays,
    to_native_arrays,
)
from ..layouts.kernels import to_canonical_array

__all__ = ["from_keras", "keras_model", "read_file", "to_keras", "write_file"]


def to_keras(
    spec: Spec,
    weights: Mapping[str, Any],
    *,
    path: str = "auto",
    dtype: str = "float32",
    return_sequences: bool = True,
) -> keras.layers.Layer:
    """A built Keras layer holding ``weights``.

    Where Keras' own layers compute ``spec`` exactly (``path="auto"`` or ``"native"``):
    one layer -> ``keras.layers.LSTM`` / ``GRU`` / ``SimpleRNN``; bidirectional ->
    ``keras.layers.Bidirectional`` of it; stacked -> a ``keras.Sequential`` of those
    (``keras.layers.Dropout(spec.dropout)`` between them). ``return_sequences`` applies to
    the last layer (the ones below always return sequences). Otherwise (or
    ``path="custom"``) unirnn's :class:`~unirnn.backends.keras.UniRNN` with the custom cell.

    Exactly means in ``dtype`` on Keras' current backend too: in float64 Keras' own layers
    compute float32 on jax and torch, and TensorFlow's ``gelu``/``leaky_relu`` are not
    float64-exact, so there ``"auto"`` gives the custom layer and ``"native"`` raises (the
    same choice :func:`unirnn.build` makes).

    Raises:
        ValueError: ``path`` not ``"auto"``, ``"native"`` or ``"custom"``; ``dtype`` not
            float32 or float64; ``path="native"`` where Keras' layers cannot compute the
            spec exactly (the message names the field and the frameworks that take it);
            weights not matching ``spec``.
    """
    if path not in PATHS:
        raise SpecError(f"to_keras: path: expected one of {', '.join(PATHS)}; "
                         f"received {path!r}")
    dtype = check_dtype(dtype)
    weights = check_weights(spec, weights)
    problem = native_problem_here(spec, dtype)
    if path == "native" and problem is not None:
        raise SpecError(f"to_keras(path='native'): {problem}; use path='auto' or 'custom'")
    if path == "custom" or problem is not None:
        return build_keras(spec, weights, path="custom", dtype=dtype,
                           return_sequences=return_sequences)
    cls = getattr(keras.layers, NATIVE_CLASSES[spec.family])
    layers = []
    for k in range(spec.num_layers):
        last = k == spec.num_layers - 1
        layer = cls(**native_config(spec), return_sequences=return_sequences or not last,
                    dtype=dtype)
        if spec.bidirectional:
            layer = keras.layers.Bidirectional(layer, dtype=dtype)
        layer.build((None, None, spec.layer_input_size(k)))
        directions = [layer.forward_layer, layer.backward_layer] if spec.bidirectional \
            else [layer]
        for target, direction in zip(directions, spec.directions):
            # upcast before folding b_x + b_h (float32 weights in a float64 layer)
            arrays = to_native_arrays(spec, {name: np.asarray(value, dtype) for name, value
                                             in weights.layer(k, direction).items()})
            target.set_weights([a.astype(dtype) for a in arrays])
        layers.append(layer)
    if spec.num_layers == 1:
        return layers[0]
    stack: list[Any] = [keras.Input((None, spec.input_size), dtype=dtype)]
    for k, layer in enumerate(layers):
        stack.append(layer)
        if spec.dropout and k < spec.num_layers - 1:
            stack.append(keras.layers.Dropout(spec.dropout, dtype=dtype))
    return keras.Sequential(stack)


def from_keras(
    obj: Any,
    *,
    model: Any = None,
    spec: Spec | None = None,
    drop: Iterable[str] = (),
) -> tuple[Spec, Weights]:
    """The spec and canonical weights of a Keras layer, model, list of layers or file.

    Args:
        obj: ``keras.layers.LSTM`` / ``GRU`` / ``SimpleRNN`` (built), ``Bidirectional`` of
            one (``merge_mode="concat"``), a ``Sequential``/model or list stacking them
            (``Dropout`` between them sets ``spec.dropout``; ``InputLayer`` and ``Masking``
            are skipped), unirnn's :class:`~unirnn.backends.keras.UniRNN`, or a path: a
            ``.keras`` file, or a ``.weights.h5`` file.
        model: for a ``.weights.h5`` file, the model (or layer) it belongs to; the file is
            loaded into it and the model read.
        spec: for a ``.weights.h5`` file without ``model``: the spec to read it as. When
            neither is given, a file holding one recurrent layer (or one ``Bidirectional``) is
            inferred from the arrays' shapes with Keras' default activations (tanh, sigmoid),
            since a weights file stores no activations.
        drop: options of the layers that a spec cannot hold, to read the weights without
            them: ``"recurrent_dropout"``, ``"dropout"`` (Keras' dropout on each step's
            input), ``"go_backwards"`` (outside ``Bidirectional``) and ``"merge_mode"``
            (a last ``Bidirectional`` with another merge than ``"concat"``). Without it
            they are a ``SpecError`` naming them, since leaving them behind changes the
            layer: :func:`unirnn.port` carries them where the target holds them.

    Returns:
        ``(spec, weights)``; one-bias layouts give ``b_x`` = bias, ``b_h`` = 0.

    Raises:
        ValueError: an unsupported layer or configuration, or a file whose architecture
            cannot be inferred (the message says what to pass).
    """
    if isinstance(obj, (str, os.PathLike)):
        return _from_file(os.fspath(obj), model, spec)
    dropped = {"input_dropout" if name == "dropout" else name for name in drop}
    if isinstance(obj, UniRNN):
        _check_dropouts(obj, dropped)
        return obj.spec, obj.canonical_weights()
    if isinstance(obj, UniRNNCell):
        return _from_cell(obj)
    if isinstance(obj, (list, tuple)):
        return _from_stack(list(obj), dropped)
    if isinstance(obj, keras.Model):
        return _from_stack(list(obj.layers), dropped)
    return _from_stack([obj], dropped)


def _from_cell(cell: UniRNNCell) -> tuple[Spec, Weights]:
    """unirnn's one-step Keras cell (``build(..., module="cell")``): its one layer."""
    spec = cell.spec
    if spec.num_layers != 1 or spec.bidirectional:
        raise SpecError(f"from_keras: a UniRNNCell of layer {cell.layer_index} of a "
                        f"{spec.num_layers}-layer spec is one part of a stack; read the "
                        "UniRNN layer instead")
    arrays = {weight_name(0, "forward", name): np.ascontiguousarray(to_canonical_array(
        name, keras.ops.convert_to_numpy(variable)))
        for name, variable in cell.variables_by_canonical_name().items()}
    return spec, check_weights(spec, arrays)


def _check_dropouts(layer: Any, dropped: AbstractSet[str]) -> None:
    """Keras' dropout on the recurrent state and on each step's input are not part of a
    spec: reading the weights without them would change the layer silently."""
    inner = getattr(layer, "forward_layer", layer)
    for neutral, attribute in (("recurrent_dropout", "recurrent_dropout"),
                               ("input_dropout", "input_dropout" if isinstance(layer, UniRNN)
                                else "dropout")):
        rate = float(getattr(inner, attribute, 0.0) or 0.0)
        if rate and neutral not in dropped:
            raise SpecError(
                f"layer {layer.name!r}: {attribute}={rate} is not part of a unirnn spec (the "
                f"weights and equations); unirnn.port keeps it where the target holds it "
                f"(unirnn's Keras layer), or pass drop=[{attribute!r}] to read the weights "
                "without it"
            )


def _recurrent_config(layer: Any, dropped: AbstractSet[str] = frozenset()
                      ) -> tuple[Any, dict[str, Any]]:
    """``(inner layer, spec keywords)`` of a native recurrent layer or Bidirectional."""
    _check_dropouts(layer, dropped)
    if not isinstance(layer, keras.layers.Bidirectional):
        inner = _native_inner(layer, layer)
        if inner.go_backwards and "go_backwards" not in dropped:
            raise SpecError(f"layer {inner.name!r}: go_backwards=True outside Bidirectional "
                            "has no unirnn spec; expected go_backwards=False (unirnn.port "
                            "keeps it where the target holds it; drop=['go_backwards'] reads "
                            "the weights alone)")
        return inner, _inner_keywords(inner, bidirectional=False)
    if layer.merge_mode != "concat" and "merge_mode" not in dropped:
        raise SpecError(f"Bidirectional {layer.name!r}: expected merge_mode='concat'; "
                        f"received {layer.merge_mode!r} (unirnn.port keeps it where the "
                        "target holds it; drop=['merge_mode'] reads the weights alone)")
    forward = _native_inner(layer, layer.forward_layer)
    backward = _native_inner(layer, layer.backward_layer)
    if forward.go_backwards:
        raise SpecError(f"Bidirectional {layer.name!r}: expected a forward layer with "
                         "go_backwards=False (unirnn's forward direction reads time forwards); "
                         f"received {forward.name!r} with go_backwards=True")
    keywords = _inner_keywords(forward, bidirectional=True)
    # Keras lets backward_layer be any layer; unirnn's spec has one configuration for both
    # directions, so a differing backward layer cannot be imported as the forward one's.
    backward_keywords = _inner_keywords(backward, bidirectional=True)
    different = {k: (keywords.get(k), backward_keywords.get(k)) for k in
                 sorted(set(keywords) | set(backward_keywords))
                 if keywords.get(k) != backward_keywords.get(k)}
    if different:
        raise SpecError(
            f"Bidirectional {layer.name!r}: expected a backward layer configured like the "
            f"forward one (a unirnn spec has one configuration for both directions); the "
            f"backward layer {backward.name!r} differs in "
            + "; ".join(f"{k}: forward {f!r}, backward {b!r}" for k, (f, b) in different.items())
        )
    return forward, keywords


def _native_inner(layer: Any, inner: Any) -> Any:
    """``inner`` (``layer`` itself or a direction of it), checked to be a built Keras RNN."""
    name = type(inner).__name__
    if name not in FAMILIES or not isinstance(inner, getattr(keras.layers, name)):
        raise WeightsError(
            f"expected keras.layers.LSTM, GRU, SimpleRNN or Bidirectional of one; received "
            f"{type(inner).__name__} {getattr(inner, 'name', '')!r}"
            + (f" in {type(layer).__name__} {layer.name!r}" if inner is not layer else "")
        )
    if not inner.built:
        raise WeightsError(f"layer {inner.name!r} is not built; call it on an input (or "
                         "build it) so its weights exist")
    return inner


def _inner_keywords(inner: Any, bidirectional: bool) -> dict[str, Any]:
    """The spec keywords a built Keras ``SimpleRNN``/``LSTM``/``GRU`` computes."""
    return layer_keywords(type(inner).__name__, inner.get_config(),
                          int(inner.cell.kernel.shape[0]), bidirectional)


def _from_stack(layers: Sequence[Any], dropped: AbstractSet[str] = frozenset()
                ) -> tuple[Spec, Weights]:
    recurrent: list[tuple[Any, dict[str, Any]]] = []
    dropouts: list[float] = []
    ours = [layer for layer in layers if isinstance(layer, UniRNN)]
    if ours:
        others = [layer for layer in layers if not isinstance(
            layer, (UniRNN, keras.layers.InputLayer, keras.layers.Masking))]
        if len(ours) > 1 or others:
            raise WeightsError("from_keras: expected one unirnn UniRNN layer alone (with Input "
                             "or Masking); received it among other layers, pass it directly")
        _check_dropouts(ours[0], dropped)
        return ours[0].spec, ours[0].canonical_weights()
    for layer in layers:
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.Masking)):
            continue
        if isinstance(layer, keras.layers.Dropout):
            dropouts.append(float(layer.rate))
            continue
        recurrent.append((layer, _recurrent_config(layer, dropped)[1]))
    for layer, _ in recurrent[:-1]:
        if getattr(layer, "merge_mode", "concat") != "concat":
            raise SpecError(f"Bidirectional {layer.name!r}: expected merge_mode='concat' "
                            f"below the last layer (the next layer reads both directions); "
                            f"received {layer.merge_mode!r}")
    if not recurrent:
        raise WeightsError("from_keras: expected at least one LSTM, GRU, SimpleRNN or "
                         "Bidirectional layer; received none")
    first = recurrent[0][1]
    for layer, keywords in recurrent[1:]:
        different = [k for k in ("family", "hidden_size", "bias", "bidirectional",
                                 "activations", "reset") if keywords.get(k) != first.get(k)]
        if different:
            raise SpecError(
                f"from_keras: stacked layers must share one configuration to form one spec; "
                f"layer {layer.name!r} differs in {', '.join(different)}"
            )
    if len(set(dropouts)) > 1:
        raise SpecError(f"from_keras: expected one dropout rate between layers; received "
                         f"{sorted(set(dropouts))}")
    spec = Spec(**{**first, "num_layers": len(recurrent),
                   "dropout": dropouts[0] if dropouts and len(recurrent) > 1 else 0.0})
    for k, (layer, keywords) in enumerate(recurrent):
        if keywords["input_size"] != spec.layer_input_size(k):
            raise SpecError(f"from_keras: layer {layer.name!r} takes {keywords['input_size']} "
                             f"input features; expected {spec.layer_input_size(k)}")
    out: dict[str, np.ndarray] = {}
    for k, (layer, _) in enumerate(recurrent):
        directions = [layer.forward_layer, layer.backward_layer] if spec.bidirectional \
            else [layer]
        for inner, direction in zip(directions, spec.directions):
            for tensor, array in from_native_arrays(spec, inner.get_weights()).items():
                out[weight_name(k, direction, tensor)] = array
    return spec, check_weights(spec, out)


def _from_file(path: str, model: Any, spec: Spec | None) -> tuple[Spec, Weights]:
    if path.endswith(".keras"):
        return from_keras(keras.saving.load_model(path))
    if not path.endswith(".h5"):
        raise FileFormatError(f"from_keras: expected a .keras or .weights.h5 file; "
                              f"received {path!r}")
    if model is not None:
        model.load_weights(path)
        return from_keras(model)
    import h5py

    with h5py.File(path, "r") as f:
        groups: list[list[np.ndarray]] = []

        def visit(name: str, item: Any) -> None:
            if name.endswith(CELL_VARS) and len(item):
                groups.append([np.asarray(item[str(i)]) for i in range(len(item))])

        f.visititems(visit)
    inferred = spec or spec_from_arrays(groups, path)
    assumed = None if spec is not None else assumed_standard(
        inferred, f"{path}, a Keras weights file (it stores no activations),")
    if len(groups) != inferred.num_layers * inferred.num_directions:
        raise FileFormatError(
            f"{path}: holds {len(groups)} recurrent layer directions; the spec needs "
            f"{inferred.num_layers * inferred.num_directions}. Pass model= to read it"
        )
    if inferred.num_layers > 1:
        raise FileFormatError(f"{path}: a weights file does not record the order of stacked "
                         "layers; pass model= (the model it was saved from)")
    out: dict[str, np.ndarray] = {}
    # h5py lists groups alphabetically: a Bidirectional's backward_layer before forward_layer.
    ordered = list(reversed(groups)) if inferred.bidirectional else groups
    for arrays, direction in zip(ordered, inferred.directions):
        for tensor, array in from_native_arrays(inferred, arrays).items():
            out[weight_name(0, direction, tensor)] = array
    return SpecAndWeights(inferred, check_weights(inferred, out), assumed)


def _h5py(what: str) -> Any:
    try:
        import h5py
    except ModuleNotFoundError as err:
        raise ImportError(f"{what} needs h5py, which is not installed; install it with: "
                          "pip install 'unirnn[keras]'") from err
    return h5py


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def keras_model(spec: Spec, weights: Mapping[str, Any], path: str = "auto") -> keras.Sequential:
    """A Keras ``Sequential`` of ``spec``: one ``Input``, then the layers :func:`to_keras`
    gives (``path`` as there). The model a ``.weights.h5`` file of :func:`write_file`
    belongs to."""
    layer = to_keras(spec, weights, path=path)
    layers = list(layer.layers) if isinstance(layer, keras.Sequential) else [layer]
    return keras.Sequential([keras.Input((None, spec.input_size)), *layers])


def read_file(path: Path, spec: Spec | None) -> tuple[Spec, Weights]:
    """``(spec, weights)`` of a ``.keras`` or ``.weights.h5`` file.

    A weights file written by :func:`write_file` carries its spec and path; it is loaded
    into the model :func:`keras_model` rebuilds from them. Other weights files are read as
    :func:`from_keras` reads them (``spec`` or the arrays' shapes).

    Raises:
        ValueError: not a Keras file; ``spec`` differs from the one the file holds.
    """
    name = str(path)
    if path.name.lower().endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise FileFormatError(f"{name!r} is not a Keras model file: expected a .keras zip "
                             f"archive written by model.save()")
        held, weights = from_keras(name)
        return same_spec(spec, held, repr(name)), weights
    h5py = _h5py(f"reading {name!r} (a Keras weights file)")
    if not h5py.is_hdf5(name):
        raise FileFormatError(f"{name!r} is not a Keras weights file: expected an HDF5 file "
                         f"written by model.save_weights()")
    with h5py.File(name, "r") as handle:
        carried = handle.attrs.get(SPEC_KEY)
        keras_path = handle.attrs.get(KERAS_PATH_KEY)
    if carried is None:
        return from_keras(name, spec=spec)
    carried_spec = same_spec(spec, Spec.from_json(_text(carried)), repr(name))
    model = keras_model(carried_spec, init_weights(carried_spec),
                        path=_text(keras_path) if keras_path is not None else "auto")
    model.load_weights(name)
    read_spec, weights = from_keras(model)
    if read_spec != carried_spec:
        raise FileFormatError(f"{name!r}: the model rebuilt from the file's spec "
                         f"{carried_spec.to_json()} reads as {read_spec.to_json()}")
    return carried_spec, weights


def write_file(path: Path, spec: Spec, weights: Mapping[str, Any]) -> str:
    """Write ``spec`` and ``weights`` as a ``.keras`` model file or a ``.weights.h5`` file
    of :func:`keras_model` (the spec and path in its root attributes), in place.

    Returns:
        Where the spec travels, in words.

    Raises:
        ValueError: a name ending neither in ``.keras`` nor in ``.weights.h5``.
    """
    name = path.name.lower()
    if not name.endswith((".keras", ".weights.h5")):
        raise FileFormatError(f"{str(path)!r}: a Keras file's name must end in .keras (model "
                         f"file) or .weights.h5 (weights file); received {path.name!r}")
    model = keras_model(spec, check_weights(spec, weights))
    if name.endswith(".keras"):
        model.save(path)
        return "the .keras model's layer configs"
    h5py = _h5py("writing a Keras weights file")
    model.save_weights(path)
    layer = model.layers[-1]
    resolved = layer.resolved_path if isinstance(layer, UniRNN) else "native"
    with h5py.File(path, "a") as handle:
        handle.attrs[SPEC_KEY] = spec.to_json()
        handle.attrs[KERAS_PATH_KEY] = resolved
    return f"the weights file's {SPEC_KEY!r} attribute"
