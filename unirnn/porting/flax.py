"""Canonical weights to and from Flax: unirnn's own Flax modules, Flax's cells and files.

``to_flax(spec, weights, cell=None)`` gives the params of unirnn's Flax layer, or of one of
Flax's own cells (``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``);
``from_flax(obj, cell=None, spec=None)`` reads either back, from a tree or a module;
:func:`read_file` and :func:`write_file` read and write ``.msgpack`` files. The layouts
themselves (names, shapes, bias folding, what each cell can compute) are
:mod:`unirnn.layouts.flax`; this module holds what needs jax or flax objects: unwrapping
modules and naming their ``gate_fn``/``activation_fn``.

Flax's cells have one bias per gate where unirnn keeps two: export sums them
(``b_x + b_h``; GRU's ``b_hn`` stays apart in linen, where ``hn`` has a bias); import puts
the sum in ``b_x`` and zeros in ``b_h``. nnx's ``GRUCell`` has no ``b_hn`` at all, so
weights with a non-zero ``b_hn`` raise rather than lose it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._assumed import SpecAndWeights, assumed_standard
from .._errors import FileFormatError, SpecError, WeightsError
from .._extras import require
from .._spec import Spec, same_spec
from .._weights import Weights, check_weights
from ..layouts.flax import (
    CELL_FAMILY,
    FLAX_CELLS,
    SPEC_ENTRY,
    carried_spec,
    cell_activations,
    cell_name,
    detect_cell,
    from_cell_tree,
    from_layer_tree,
    infer_cell_spec,
    infer_layer_spec,
    native_problem,
    spec_entry,
    to_cell_tree,
    to_layer_tree,
    unknown_cell,
)

__all__ = ["FLAX_CELLS", "from_flax", "read_file", "to_flax", "write_file"]


def to_flax(spec: Spec, weights: Mapping[str, Any], cell: str | None = None, *,
            api: str = "linen") -> dict[str, Any]:
    """Canonical weights as Flax parameters (numpy arrays, dtype kept).

    Args:
        spec: the weights' spec.
        weights: canonical weights (checked against ``spec``).
        cell: ``None``: unirnn's Flax layer (:class:`unirnn.backends.flax.UniRNN`, or its
            nnx twin); or Flax's ``"LSTMCell"``, ``"OptimizedLSTMCell"``, ``"GRUCell"``,
            ``"SimpleCell"`` (single layer and direction, and a spec that cell computes:
            otherwise a ValueError names the field).
        api: ``"linen"``: the variables ``{"params": {...}}`` for ``module.apply``;
            ``"nnx"``: the pure dict of the nnx module's ``nnx.Param`` state, to load with
            ``nnx.replace_by_pure_dict(state, params)`` and ``nnx.update(module, state)``.

    Example:
        >>> import numpy as np, unirnn
        >>> spec = unirnn.gru(3, 4)
        >>> params = unirnn.to_flax(spec, unirnn.init_weights(spec), cell="GRUCell")
        >>> sorted(params["params"]), params["params"]["hn"]["bias"].shape
        (['hn', 'hr', 'hz', 'in', 'ir', 'iz'], (4,))
    """
    weights = check_weights(spec, weights)
    if api not in ("linen", "nnx"):
        raise SpecError(f"api: expected 'linen' or 'nnx'; received {api!r}")
    if cell is None:
        params = {name: {k: np.asarray(v) for k, v in tensors.items()}
                  for name, tensors in to_layer_tree(spec, weights).items()}
    else:
        params = to_cell_tree(spec, weights.layer(0), cell, api)
    return {"params": params} if api == "linen" else params


# -- reading ------------------------------------------------------------------------------


def _activation_names() -> dict[Callable[..., Any], str]:
    """Flax/jax activation functions users pass as ``gate_fn``/``activation_fn``."""
    import jax
    import jax.numpy as jnp

    names: dict[Callable[..., Any], str] = {
        jax.nn.sigmoid: "sigmoid", jnp.tanh: "tanh", jax.nn.relu: "relu",
        jax.nn.gelu: "gelu_tanh",  # jax's gelu defaults to approximate=True
        jax.nn.silu: "silu", jax.nn.hard_sigmoid: "hard_sigmoid", jax.nn.soft_sign: "softsign",
        jax.nn.softplus: "softplus", jax.nn.elu: "elu", jax.nn.leaky_relu: "leaky_relu",
    }
    try:
        from flax import linen, nnx

        for module in (linen, nnx):
            names.setdefault(module.sigmoid, "sigmoid")
            names.setdefault(module.tanh, "tanh")
    except ImportError:  # pragma: no cover - flax is installed with this backend
        pass
    return names


def _cell_activations(obj: Any, cell: str) -> dict[str, str]:
    """The spec activations of a Flax cell object from its ``gate_fn``/``activation_fn``."""
    known = _activation_names()

    def name(attr: str) -> str:
        fn = getattr(obj, attr)
        if fn not in known:
            raise SpecError(
                f"{cell}.{attr}={fn!r}: expected a known jax activation "
                f"({', '.join(sorted(set(known.values())))}); pass spec= to say what it is"
            )
        return known[fn]

    if CELL_FAMILY[cell] == "rnn":
        if getattr(obj, "residual", False):
            raise SpecError("SimpleCell(residual=True): unirnn's rnn has no residual "
                             "connection; expected residual=False")
        return cell_activations(cell, None, name("activation_fn"))
    return cell_activations(cell, name("gate_fn"), name("activation_fn"))


def _to_numpy_tree(tree: Any) -> Any:
    """Numpy arrays; ml_dtypes' narrow floats (bfloat16, float8_*) widened to float32,
    which holds each of their values exactly."""
    if isinstance(tree, Mapping):
        return {str(k): _to_numpy_tree(v) for k, v in tree.items()}
    array = np.asarray(getattr(tree, "value", tree))  # nnx.Param and friends
    if array.dtype.kind == "V" and array.dtype.name.startswith(("bfloat16", "float8")):
        return array.astype(np.float32)
    return array


def _refuse_reversed(obj: Any) -> None:
    """Flax's ``RNN(cell, reverse=True)`` runs right to left; the spec read off its cell
    cannot say so, and a forward run of the weights would give other outputs."""
    if getattr(obj, "reverse", False):
        raise SpecError(
            f"{type(obj).__name__}(reverse=True): expected a left-to-right layer; the spec "
            "has no direction of its own. Read its cell (from_flax of the cell or of the "
            "variables) and run unirnn's layer with reverse=True"
        )


def _unwrap(obj: Any, cell: str | None, spec: Spec | None, reversed_ok: bool = False
            ) -> tuple[dict[str, Any], str | None, Spec | None, dict[str, str] | None]:
    """(params dict, cell kind, spec, activations read off a Flax cell object)."""
    activations = None
    try:
        from flax import linen as nn
        from flax import nnx
    except ImportError:  # pragma: no cover
        nn = nnx = None  # type: ignore[assignment]
    if nnx is not None and isinstance(obj, nnx.RNN):  # Flax's layer around a cell
        if not reversed_ok:
            _refuse_reversed(obj)
        obj = obj.cell
    if nnx is not None and isinstance(obj, nnx.Module):
        from ..backends._flax_nnx import UniCellNNX, UniRNNNNX

        if isinstance(obj, (UniRNNNNX, UniCellNNX)):
            spec = spec or obj.spec
            if isinstance(obj, UniCellNNX):
                tree = {cell_name(0, "forward"): obj.tensors}
                return _to_numpy_tree(tree), None, spec, None
        else:
            kind = type(obj).__name__
            if kind not in FLAX_CELLS:
                raise WeightsError(f"from_flax: expected a unirnn nnx module, one of Flax's "
                                 f"{', '.join(FLAX_CELLS)} or an nnx.RNN of one; received "
                                 f"{kind}")
            if cell is not None and cell != kind:
                raise WeightsError(f"cell: the module is a {kind}; received cell={cell!r}")
            cell = kind
            if spec is None:
                activations = _cell_activations(obj, kind)
        state = nnx.state(obj, nnx.Param)
        tree = nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()
        return _to_numpy_tree(tree), cell, spec, activations
    if nn is not None and isinstance(obj, nn.Module):
        if obj.scope is None:
            raise WeightsError("from_flax: a linen module holds no parameters until bound; pass "
                             "its variables (from_flax(variables, spec=...)) or "
                             "module.bind(variables)")
        from ..backends.flax import UniCell, UniRNN

        params = _to_numpy_tree(obj.variables["params"])
        if isinstance(obj, nn.RNN):  # Flax's layer around a cell: its params sit under "cell"
            if not reversed_ok:
                _refuse_reversed(obj)
            obj, params = obj.cell, params["cell"]
        if isinstance(obj, (UniRNN, UniCell)):
            spec = spec or obj.spec
            if isinstance(obj, UniCell):
                params = {cell_name(0, "forward"): params}
            return params, None, spec, None
        kind = type(obj).__name__
        if kind not in FLAX_CELLS:
            raise WeightsError(f"from_flax: expected a unirnn linen module, one of Flax's "
                             f"{', '.join(FLAX_CELLS)} or an nn.RNN of one; received {kind}")
        cell = kind
        if spec is None:
            activations = _cell_activations(obj, kind)
        return params, cell, spec, activations
    if not isinstance(obj, Mapping):
        raise WeightsError(f"from_flax: expected a params tree, a bound linen module or an nnx "
                         f"module; received {type(obj).__name__}")
    tree = _to_numpy_tree(obj)
    if set(tree) == {"params"}:
        tree = tree["params"]
    if set(tree) == {"cell"}:  # nn.RNN(cell) nests the cell's params under "cell"
        tree = tree["cell"]
    return tree, cell, spec, activations


def from_flax(obj: Any, cell: str | None = None, spec: Spec | None = None, *,
              drop: Iterable[str] = ()) -> tuple[Spec, Weights]:
    """Read Flax parameters as ``(spec, canonical weights)``.

    Args:
        obj: a params tree (``{"params": ...}`` or the inner dict, from linen's ``init``
            or :func:`to_flax`; an nnx module's pure dict ``nnx.to_pure_dict(state)``;
            bfloat16 arrays are read as float32), a bound linen module
            (``module.bind(variables)``), or an nnx module: unirnn's own modules (their
            spec is used), Flax's ``LSTMCell``/``OptimizedLSTMCell``/``GRUCell``/
            ``SimpleCell`` (linen or nnx), or Flax's ``nn.RNN``/``nnx.RNN`` layer around
            one of these (``reverse=True`` is refused, since the spec has no direction,
            unless ``drop`` names ``"reverse"``: :func:`unirnn.port` carries it).
        cell: which Flax cell the tree belongs to; ``None`` detects it from the keys
            (unirnn's layer, or one of Flax's cells). linen's ``LSTMCell`` and
            ``OptimizedLSTMCell`` share one layout.
        spec: the spec, when the parameters alone cannot say it: non-default activations
            (a Flax cell's ``gate_fn``/``activation_fn`` in a bare tree) or a unirnn tree's
            activations and GRU options. Checked against the tensor shapes. Without it,
            sizes are read from the kernels and activations are Flax's defaults (or read
            off a cell object's ``gate_fn``/``activation_fn``).

    Returns:
        ``(spec, weights)``. From Flax's cells the bias sum goes to ``b_x`` and ``b_h`` is
        zero (GRU's ``b_hn`` stays in ``b_h``).

    Example:
        >>> import unirnn
        >>> spec = unirnn.lstm(3, 4)
        >>> w = unirnn.init_weights(spec)
        >>> spec2, w2 = unirnn.from_flax(unirnn.to_flax(spec, w))
        >>> spec2 == spec, all((w2[k] == w[k]).all() for k in w)
        (True, True)
    """
    if isinstance(obj, Mapping):
        obj, carried = carried_spec(obj)  # a file's "unirnn" entry: the spec it holds
        if carried is not None:
            spec = same_spec(spec, carried, "the Flax tree")
    if getattr(obj, "scope", True) is None and getattr(obj, "weights", None) is not None:
        # an unbound unirnn linen module, as build()/port() return it: its weights are the
        # canonical ones it initialises its parameters from
        from ..backends.flax import UniRNN

        if isinstance(obj, UniRNN) and obj.weights is not None:
            same_spec(spec, obj.spec, "the module")
            return obj.spec, check_weights(obj.spec, obj.weights)
    reversed_ok = bool({"reverse", "go_backwards"} & set(drop))
    tree, cell, spec, activations = _unwrap(obj, cell, spec, reversed_ok)
    if cell is None:
        cell = detect_cell(tree)
    if cell is None:
        assumed = None
        if spec is None:
            spec = infer_layer_spec(tree)
            assumed = assumed_standard(spec, "a unirnn Flax layer tree that carries no spec")
        return SpecAndWeights(spec, check_weights(spec, from_layer_tree(spec, tree)), assumed)
    if unknown_cell(cell) is not None:
        raise SpecError(unknown_cell(cell))
    layer = from_cell_tree(tree, cell)
    assumed = None
    if spec is None:
        spec = infer_cell_spec(layer, cell, activations)
        if activations is None:  # a bare tree: no gate_fn/activation_fn to read
            assumed = assumed_standard(spec, f"a Flax {cell} parameter tree (it carries no "
                                       "gate_fn/activation_fn)")
    problem = native_problem(spec, cell)
    if problem is not None:
        raise SpecError(problem)
    if not spec.bias:
        if np.any(layer.pop("b_x") != 0) or np.any(layer.pop("b_h") != 0):
            raise WeightsError(f"spec.bias=False, but the {cell}'s biases are non-zero; "
                             "expected a spec with bias=True")
    return SpecAndWeights(spec, check_weights(
        spec, {f"layer0.forward.{k}": v for k, v in layer.items()}), assumed)


# -- files ------------------------------------------------------------------------------


def read_file(path: Path, spec: Spec | None, cell: str | None) -> tuple[Spec, Weights]:
    """``(spec, weights)`` of a ``.msgpack`` file (``flax.serialization`` bytes of a tree).

    The spec the tree carries (:data:`unirnn.layouts.flax.SPEC_ENTRY`) is used, after
    checking a given ``spec`` against it; ``cell`` as in :func:`from_flax`.
    """
    serialization = require("flax.serialization", f"reading {str(path)!r} (a Flax file)")
    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises its own exception types
        raise FileFormatError(
            f"{str(path)!r} is not a Flax parameter file: expected msgpack bytes written by "
            f"flax.serialization.msgpack_serialize / to_bytes; could not read it "
            f"({type(err).__name__}: {err})"
        ) from None
    if not isinstance(tree, Mapping):
        raise FileFormatError(f"{str(path)!r}: expected a msgpack'd parameter tree (a mapping); "
                         f"received a {type(tree).__name__}")
    tree, carried = carried_spec(tree)
    if carried is not None:
        spec = same_spec(spec, carried, repr(str(path)))
    return from_flax(tree, cell=cell, spec=spec)


def write_file(path: Path, spec: Spec, weights: Mapping[str, Any], cell: str | None) -> str:
    """Write ``{"params": to_flax(spec, weights, cell), "unirnn": {"spec": ...}}`` to
    ``path`` as ``flax.serialization`` msgpack bytes; returns where the spec travels."""
    serialization = require("flax.serialization", "writing a Flax file")
    tree = dict(to_flax(spec, weights, cell=cell))
    tree[SPEC_ENTRY] = spec_entry(spec)
    path.write_bytes(serialization.msgpack_serialize(tree))
    return f"the tree's {SPEC_ENTRY!r} entry, beside 'params'"
