"""Canonical weights to and from Flax: unirnn's own Flax modules and Flax's cells.

``to_flax(spec, weights, cell=None)`` gives the params of unirnn's Flax layer, or of one of
Flax's own cells (``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``);
``from_flax(obj, cell=None, spec=None)`` reads either back. Layouts (verified against
flax/linen/recurrent.py and flax/nnx/nn/recurrent.py; kernels ``(in, out)``):

- ``LSTMCell``: linen ``ii, if, ig, io`` kernel (I, H); ``hi, hf, hg, ho`` kernel (H, H) +
  bias (H); carry ``(c, h)``. nnx: the same with ``if_`` for ``if``.
- ``OptimizedLSTMCell``: linen the same names and shapes as ``LSTMCell``; nnx ``dense_i``
  kernel (I, 4H), ``dense_h`` kernel (H, 4H) + bias (4H), columns i, f, g, o.
- ``GRUCell``: linen ``ir, iz, in`` kernel + bias; ``hr, hz`` kernel; ``hn`` kernel + bias
  (= ``b_hn``); ``h' = (1-z)*n + z*h``, reset after. nnx ``dense_i`` kernel (I, 3H) + bias,
  ``dense_h`` kernel (H, 3H), no bias; columns r, z, n.
- ``SimpleCell``: linen ``i`` kernel + bias, ``h`` kernel; nnx ``dense_i`` + bias, ``dense_h``.

Flax's cells have one bias per gate where unirnn keeps two: export sums them
(``b_x + b_h``; GRU's ``b_hn`` stays apart in linen, where ``hn`` has a bias); import puts
the sum in ``b_x`` and zeros in ``b_h``. nnx's ``GRUCell`` has no ``b_hn`` at all, so
weights with a non-zero ``b_hn`` raise rather than lose it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._spec import Spec
from .._weights import Weights, check_weights, from_kernel_layout, to_kernel_layout

__all__ = ["FLAX_CELLS", "from_flax", "to_flax"]

FLAX_CELLS = ("LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell")

_FAMILY = {"LSTMCell": "lstm", "OptimizedLSTMCell": "lstm", "GRUCell": "gru", "SimpleCell": "rnn"}
_LSTM = ("i", "f", "g", "o")
_GRU = ("r", "z", "n")


def _check_cell(spec: Spec, cell: str) -> None:
    """Raise unless ``spec`` is exactly what Flax's ``cell`` computes (with some gate_fn /
    activation_fn)."""
    if cell not in FLAX_CELLS:
        raise ValueError(f"cell: expected None (unirnn's layer) or one of "
                         f"{', '.join(FLAX_CELLS)}; received {cell!r}")
    family = _FAMILY[cell]

    def refuse(field: str, value: Any, why: str) -> ValueError:
        return ValueError(
            f"{field}={value!r}: Flax's {cell} cannot express it ({why}); use unirnn's own "
            f"Flax layer (to_flax(spec, weights) with cell=None), which computes every spec"
        )

    if spec.family != family:
        raise refuse("family", spec.family, f"it is a {family} cell")
    if spec.num_layers != 1 or spec.bidirectional:
        raise refuse("num_layers/bidirectional", (spec.num_layers, spec.bidirectional),
                     "it is one layer in one direction; convert each layer separately")
    acts = spec.activations
    if family == "lstm":
        if spec.peepholes or spec.proj_size or spec.cell_clip is not None:
            field = "peepholes" if spec.peepholes else "proj_size" if spec.proj_size else \
                "cell_clip"
            raise refuse(field, getattr(spec, field), "it has no such option")
        if not acts["i"] == acts["f"] == acts["o"]:
            raise refuse("activations", dict(acts), "one gate_fn for i, f and o")
        if acts["g"] != acts["c"]:
            raise refuse("activations", dict(acts), "one activation_fn for g and c")
    elif family == "gru":
        if spec.reset != "after":
            raise refuse("reset", spec.reset, "it resets after: n = act(W_in x + b_in + "
                         "r*(W_hn h + b_hn))")
        if spec.update != "old":
            raise refuse("update", spec.update, "h' = (1-z)*n + z*h")
        if acts["r"] != acts["z"]:
            raise refuse("activations", dict(acts), "one gate_fn for r and z")


def _blocks(array: np.ndarray, gates: int) -> list[np.ndarray]:
    return np.split(array, gates, axis=0)


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
        raise ValueError(f"api: expected 'linen' or 'nnx'; received {api!r}")
    if cell is None:
        from ..backends.flax import cell_name

        params = {
            cell_name(layer, direction): {
                name: np.asarray(value)
                for name, value in to_kernel_layout(weights.layer(layer, direction)).items()
            }
            for layer in range(spec.num_layers)
            for direction in spec.directions
        }
        return {"params": params} if api == "linen" else params
    _check_cell(spec, cell)
    layer = weights.layer(0)
    H = spec.hidden_size
    G = spec.num_gates
    w_x, w_h = layer["w_x"], layer["w_h"]
    zero = np.zeros(G * H, w_x.dtype)
    b_x, b_h = layer.get("b_x", zero), layer.get("b_h", zero)
    if cell in ("LSTMCell", "OptimizedLSTMCell"):
        bias = b_x + b_h
        if api == "nnx" and cell == "OptimizedLSTMCell":
            return {"dense_i": {"kernel": w_x.T.copy()},
                    "dense_h": {"kernel": w_h.T.copy(), "bias": bias}}
        out: dict[str, Any] = {}
        for k, (wx, wh, b) in enumerate(zip(_blocks(w_x, 4), _blocks(w_h, 4), _blocks(bias, 4))):
            gate = _LSTM[k]
            in_name = f"i{gate}" if not (api == "nnx" and gate == "f") else "if_"
            out[in_name] = {"kernel": wx.T.copy()}
            out[f"h{gate}"] = {"kernel": wh.T.copy(), "bias": b}
        return {"params": out} if api == "linen" else out
    if cell == "GRUCell":
        b_in = b_x.copy()
        b_in[: 2 * H] += b_h[: 2 * H]  # r and z biases fold; b_hn sits inside r*(...)
        b_hn = b_h[2 * H :]
        if api == "nnx":
            if np.any(b_hn != 0):
                raise ValueError(
                    "b_hn (layer0.forward.b_h[2H:]): flax.nnx.GRUCell has no recurrent bias, "
                    "and b_hn cannot fold into the input bias (it is multiplied by r); "
                    "received non-zero values. Use flax.linen.GRUCell (its 'hn' has a bias) "
                    "or unirnn's own Flax layer (cell=None)"
                )
            return {"dense_i": {"kernel": w_x.T.copy(), "bias": b_in},
                    "dense_h": {"kernel": w_h.T.copy()}}
        out = {}
        for k, (wx, wh, b) in enumerate(zip(_blocks(w_x, 3), _blocks(w_h, 3), _blocks(b_in, 3))):
            gate = _GRU[k]
            out[f"i{gate}"] = {"kernel": wx.T.copy(), "bias": b}
            out[f"h{gate}"] = {"kernel": wh.T.copy()}
        out["hn"]["bias"] = b_hn.copy()
        return {"params": out}
    # SimpleCell
    names = ("dense_i", "dense_h") if api == "nnx" else ("i", "h")
    out = {names[0]: {"kernel": w_x.T.copy(), "bias": b_x + b_h},
           names[1]: {"kernel": w_h.T.copy()}}
    return {"params": out} if api == "linen" else out


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
            raise ValueError(
                f"{cell}.{attr}={fn!r}: expected a known jax activation "
                f"({', '.join(sorted(set(known.values())))}); pass spec= to say what it is"
            )
        return known[fn]

    family = _FAMILY[cell]
    if family == "lstm":
        gate, act = name("gate_fn"), name("activation_fn")
        return {"i": gate, "f": gate, "o": gate, "g": act, "c": act}
    if family == "gru":
        gate, act = name("gate_fn"), name("activation_fn")
        return {"r": gate, "z": gate, "n": act}
    if getattr(obj, "residual", False):
        raise ValueError("SimpleCell(residual=True): unirnn's rnn has no residual connection; "
                         "expected residual=False")
    return {"h": name("activation_fn")}


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
        raise ValueError(
            f"{type(obj).__name__}(reverse=True): expected a left-to-right layer; the spec "
            "has no direction of its own. Read its cell (from_flax of the cell or of the "
            "variables) and run unirnn's layer with reverse=True"
        )


def _same_spec(given: Spec | None, held: Spec) -> None:
    if given is not None and given != held:
        raise ValueError(f"spec: the source holds {held.describe()}; received a different "
                         f"spec={given.describe()}")


def _unwrap(obj: Any, cell: str | None, spec: Spec | None
            ) -> tuple[dict[str, Any], str | None, Spec | None, dict[str, str] | None]:
    """(params dict, cell kind, spec, activations read off a Flax cell object)."""
    activations = None
    try:
        from flax import linen as nn
        from flax import nnx
    except ImportError:  # pragma: no cover
        nn = nnx = None  # type: ignore[assignment]
    if nnx is not None and isinstance(obj, nnx.RNN):  # Flax's layer around a cell
        _refuse_reversed(obj)
        obj = obj.cell
    if nnx is not None and isinstance(obj, nnx.Module):
        from ..backends._flax_nnx import UniCellNNX, UniRNNNNX

        if isinstance(obj, (UniRNNNNX, UniCellNNX)):
            spec = spec or obj.spec
            if isinstance(obj, UniCellNNX):
                tree = {"layer0_forward": obj.tensors}
                return _to_numpy_tree(tree), None, spec, None
        else:
            kind = type(obj).__name__
            if kind not in FLAX_CELLS:
                raise ValueError(f"from_flax: expected a unirnn nnx module, one of Flax's "
                                 f"{', '.join(FLAX_CELLS)} or an nnx.RNN of one; received "
                                 f"{kind}")
            if cell is not None and cell != kind:
                raise ValueError(f"cell: the module is a {kind}; received cell={cell!r}")
            cell = kind
            if spec is None:
                activations = _cell_activations(obj, kind)
        state = nnx.state(obj, nnx.Param)
        tree = nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()
        return _to_numpy_tree(tree), cell, spec, activations
    if nn is not None and isinstance(obj, nn.Module):
        if obj.scope is None:
            raise ValueError("from_flax: a linen module holds no parameters until bound; pass "
                             "its variables (from_flax(variables, spec=...)) or "
                             "module.bind(variables)")
        from ..backends.flax import UniCell, UniRNN

        params = _to_numpy_tree(obj.variables["params"])
        if isinstance(obj, nn.RNN):  # Flax's layer around a cell: its params sit under "cell"
            _refuse_reversed(obj)
            obj, params = obj.cell, params["cell"]
        if isinstance(obj, (UniRNN, UniCell)):
            spec = spec or obj.spec
            if isinstance(obj, UniCell):
                params = {"layer0_forward": params}
            return params, None, spec, None
        kind = type(obj).__name__
        if kind not in FLAX_CELLS:
            raise ValueError(f"from_flax: expected a unirnn linen module, one of Flax's "
                             f"{', '.join(FLAX_CELLS)} or an nn.RNN of one; received {kind}")
        cell = kind
        if spec is None:
            activations = _cell_activations(obj, kind)
        return params, cell, spec, activations
    if not isinstance(obj, Mapping):
        raise ValueError(f"from_flax: expected a params tree, a bound linen module or an nnx "
                         f"module; received {type(obj).__name__}")
    tree = _to_numpy_tree(obj)
    if set(tree) == {"params"}:
        tree = tree["params"]
    if set(tree) == {"cell"}:  # nn.RNN(cell) nests the cell's params under "cell"
        tree = tree["cell"]
    return tree, cell, spec, activations


def _detect_cell(tree: Mapping[str, Any]) -> str | None:
    keys = set(tree)
    if keys and all(k.startswith("layer") and "_" in k for k in keys):
        return None
    if "input_kernel" in keys:
        return None
    if {"ii", "hi"} <= keys:
        return "LSTMCell"
    if {"ir", "hn"} <= keys:
        return "GRUCell"
    if keys == {"i", "h"}:
        return "SimpleCell"
    if keys == {"dense_i", "dense_h"}:
        G = tree["dense_h"]["kernel"].shape[1] // tree["dense_h"]["kernel"].shape[0]
        return {4: "OptimizedLSTMCell", 3: "GRUCell", 1: "SimpleCell"}.get(G)
    raise ValueError(f"from_flax: cannot tell which cell these params belong to (keys "
                     f"{sorted(keys)}); pass cell= (None for unirnn's layer, or one of "
                     f"{', '.join(FLAX_CELLS)})")


def _infer_unirnn_spec(tree: Mapping[str, Any]) -> Spec:
    """Sizes and options of a unirnn layer tree (activations default: pass spec= otherwise)."""
    first = tree["layer0_forward"]
    P, GH = first["recurrent_kernel"].shape
    H = first["projection_kernel"].shape[0] if "projection_kernel" in first else P
    family = {1: "rnn", 3: "gru", 4: "lstm"}.get(GH // H if GH % H == 0 else 0)
    if family is None:
        raise ValueError(f"recurrent_kernel: expected (P, G*H) with G in 1, 3, 4; received "
                         f"{(P, GH)}")
    layers = sum(1 for k in tree if k.endswith("_forward"))
    options: dict[str, Any] = {
        "bias": "input_bias" in first,
        "num_layers": layers,
        "bidirectional": "layer0_backward" in tree,
    }
    if family == "lstm":
        options.update(peepholes="peepholes" in first, proj_size=P if P != H else 0)
    return Spec(family, first["input_kernel"].shape[0], H, **options)


def from_flax(obj: Any, cell: str | None = None, spec: Spec | None = None
              ) -> tuple[Spec, Weights]:
    """Read Flax parameters as ``(spec, canonical weights)``.

    Args:
        obj: a params tree (``{"params": ...}`` or the inner dict, from linen's ``init``
            or :func:`to_flax`; an nnx module's pure dict ``nnx.to_pure_dict(state)``;
            bfloat16 arrays are read as float32), a bound linen module
            (``module.bind(variables)``), or an nnx module: unirnn's own modules (their
            spec is used), Flax's ``LSTMCell``/``OptimizedLSTMCell``/``GRUCell``/
            ``SimpleCell`` (linen or nnx), or Flax's ``nn.RNN``/``nnx.RNN`` layer around
            one of these (``reverse=True`` is refused: the spec has no direction).
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
        from .port import flax_carried_spec

        obj, carried = flax_carried_spec(obj)  # a file's "unirnn" entry: the spec it holds
        if carried is not None:
            _same_spec(spec, carried)
            spec = carried
    if getattr(obj, "scope", True) is None and getattr(obj, "weights", None) is not None:
        # an unbound unirnn linen module, as build()/port() return it: its weights are the
        # canonical ones it initialises its parameters from
        from ..backends.flax import UniRNN

        if isinstance(obj, UniRNN) and obj.weights is not None:
            _same_spec(spec, obj.spec)
            return obj.spec, check_weights(obj.spec, obj.weights)
    tree, cell, spec, activations = _unwrap(obj, cell, spec)
    if cell is None:
        cell = _detect_cell(tree)
    if cell is None:

        if "input_kernel" in tree:
            tree = {"layer0_forward": tree}
        spec = spec or _infer_unirnn_spec(tree)
        arrays: dict[str, Any] = {}
        for layer in range(spec.num_layers):
            for direction in spec.directions:
                key = f"layer{layer}_{direction}"
                if key not in tree:
                    raise ValueError(f"params: missing {key!r} required by the spec "
                                     f"(num_layers={spec.num_layers}, "
                                     f"bidirectional={spec.bidirectional})")
                for name, value in from_kernel_layout(tree[key]).items():
                    arrays[f"layer{layer}.{direction}.{name}"] = np.asarray(value)
        return spec, check_weights(spec, arrays)
    if cell not in FLAX_CELLS:
        raise ValueError(f"cell: expected None or one of {', '.join(FLAX_CELLS)}; "
                         f"received {cell!r}")
    family = _FAMILY[cell]
    nnx_layout = "dense_i" in tree
    if family == "lstm":
        if nnx_layout:
            w_x, w_h = tree["dense_i"]["kernel"].T, tree["dense_h"]["kernel"].T
            bias = tree["dense_h"]["bias"]
        else:
            w_x = np.concatenate([tree["if_" if g == "f" and "if_" in tree else f"i{g}"]["kernel"]
                                  for g in _LSTM], axis=1).T
            w_h = np.concatenate([tree[f"h{g}"]["kernel"] for g in _LSTM], axis=1).T
            bias = np.concatenate([tree[f"h{g}"]["bias"] for g in _LSTM])
        b_h = np.zeros_like(bias)
    elif family == "gru":
        if nnx_layout:
            w_x, w_h = tree["dense_i"]["kernel"].T, tree["dense_h"]["kernel"].T
            bias = tree["dense_i"]["bias"]
            b_h = np.zeros_like(bias)
        else:
            w_x = np.concatenate([tree[f"i{g}"]["kernel"] for g in _GRU], axis=1).T
            w_h = np.concatenate([tree[f"h{g}"]["kernel"] for g in _GRU], axis=1).T
            bias = np.concatenate([tree[f"i{g}"]["bias"] for g in _GRU])
            b_h = np.concatenate([np.zeros_like(bias[: 2 * len(bias) // 3]),
                                  tree["hn"]["bias"]])
    else:
        i_name, h_name = ("dense_i", "dense_h") if nnx_layout else ("i", "h")
        w_x, w_h = tree[i_name]["kernel"].T, tree[h_name]["kernel"].T
        bias = tree[i_name]["bias"]
        b_h = np.zeros_like(bias)
    H = w_h.shape[1]
    if spec is None:
        spec = Spec(family, w_x.shape[1], H, activations or {})
    _check_cell(spec, cell)
    weights = {"layer0.forward.w_x": w_x, "layer0.forward.w_h": w_h}
    if spec.bias:
        weights.update({"layer0.forward.b_x": bias, "layer0.forward.b_h": b_h})
    elif np.any(bias != 0) or np.any(b_h != 0):
        raise ValueError(f"spec.bias=False, but the {cell}'s biases are non-zero; expected a "
                         "spec with bias=True")
    return spec, check_weights(spec, weights)
