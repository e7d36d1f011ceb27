"""Canonical weights: names, shapes, initialisation and the checks on every use."""

from __future__ import annotations

import numpy as np
import pytest

import unirnn


def test_shapes_follow_design():
    spec = unirnn.lstm(3, 5, proj_size=2, peepholes=True, num_layers=2, bidirectional=True)
    shapes = unirnn.weight_shapes(spec)
    assert shapes["layer0.forward.w_x"] == (20, 3)
    assert shapes["layer0.backward.w_h"] == (20, 2)
    assert shapes["layer1.forward.w_x"] == (20, 4)  # D * P
    assert shapes["layer1.backward.b_h"] == (20,)
    assert shapes["layer0.forward.p"] == (15,)
    assert shapes["layer1.forward.w_r"] == (2, 5)
    assert len(shapes) == 2 * 2 * 6


def test_no_bias_means_no_bias_tensors():
    names = unirnn.weight_shapes(unirnn.gru(3, 4, bias=False))
    assert set(names) == {"layer0.forward.w_x", "layer0.forward.w_h"}


def test_init_like_torch():
    spec = unirnn.gru(3, 16)
    w = unirnn.init_weights(spec, seed=3)
    bound = 1 / np.sqrt(16)
    for array in w.values():
        assert array.dtype == np.float32
        assert np.abs(array).max() <= bound
    w64 = unirnn.init_weights(spec, seed=3, dtype=np.float64)
    np.testing.assert_array_equal(w64["layer0.forward.w_x"].astype(np.float32),
                                  w["layer0.forward.w_x"])
    assert not np.array_equal(unirnn.init_weights(spec, seed=4)["layer0.forward.w_x"],
                              w["layer0.forward.w_x"])


def test_weights_are_read_only():
    w = unirnn.init_weights(unirnn.rnn(2, 2))
    with pytest.raises(ValueError):
        w["layer0.forward.w_x"][0, 0] = 1.0
    with pytest.raises(TypeError):
        w["layer0.forward.w_x"] = np.zeros((2, 2))  # type: ignore[index]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda w: {k: v for k, v in w.items() if k != "layer0.forward.b_h"},
         r"missing tensor 'layer0.forward.b_h' \(shape \(12,\)\)"),
        (lambda w: {**w, "layer0.forward.p": np.zeros(12)}, "unexpected tensor 'layer0.forward.p'"),
        (lambda w: {**w, "layer0.forward.w_h": np.zeros((12, 5))},
         r"tensor 'layer0.forward.w_h' has shape \(12, 5\); expected \(12, 4\)"),
        (lambda w: {**w, "layer0.forward.w_h": np.zeros((12, 4), np.int64)}, "floating-point"),
    ],
    ids=["missing", "unexpected", "shape", "dtype"],
)
def test_check_weights_names_the_tensor(mutate, message):
    spec = unirnn.gru(3, 4)
    bad = mutate(dict(unirnn.init_weights(spec)))
    with pytest.raises(ValueError, match=message):
        unirnn.check_weights(spec, bad)
    with pytest.raises(ValueError, match=message):
        unirnn.build(spec, backend="numpy", weights=bad)


def test_build_errors():
    with pytest.raises(ValueError, match="unknown backend 'mxnet'; expected one of numpy, torch"):
        unirnn.build(unirnn.gru(3, 4), backend="mxnet")
    with pytest.raises(ValueError, match="expected a unirnn.Spec; received dict"):
        unirnn.build({"family": "gru"}, backend="numpy")


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seed_is_a_clear_error(seed):
    with pytest.raises(ValueError, match=r"seed: expected an integer >= 0; received"):
        unirnn.init_weights(unirnn.gru(3, 4), seed=seed)
