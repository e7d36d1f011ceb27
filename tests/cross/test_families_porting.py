"""Families beyond rnn, lstm and gru through every file format: ``unirnn convert`` writes
each, reads it back without ``--spec`` and compares outputs before renaming it into place;
``port`` moves a trained torch module to Keras and Flax with equal outputs."""

from __future__ import annotations

import numpy as np
import pytest
from cases import FAMILY_SPECS
from support import framework, nonzero_weights

import unirnn
from unirnn.tools.cli import main


@pytest.mark.parametrize("fmt", ["pt", "keras", "msgpack", "onnx"])
@pytest.mark.parametrize("name", ["ln_lstm", "minlstm-bidir", "lstm-coupled", "indrnn-2layer"])
def test_convert_round_trips_a_family(name, fmt, tmp_path, capsys):
    for needed in {"pt": ["torch"], "keras": ["keras"], "msgpack": ["jax", "flax"],
                   "onnx": ["onnx", "onnxruntime"]}[fmt]:
        framework(needed)
    spec = FAMILY_SPECS[name]
    weights = nonzero_weights(spec)
    src = tmp_path / "m.safetensors"
    unirnn.save(src, spec, weights)
    dst = tmp_path / f"m.{fmt}"
    assert main(["convert", str(src), str(dst)]) == 0, capsys.readouterr().err
    assert "read back without --spec" in capsys.readouterr().out
    assert dst.exists()


def test_port_a_trained_torch_family_to_keras_and_flax():
    torch = framework("torch")
    keras = framework("keras")
    framework("flax")
    spec = FAMILY_SPECS["ln_gru-bidir"]
    module = unirnn.build(spec, backend="torch", batch_first=True, dtype=torch.float64)
    x = np.random.default_rng(0).standard_normal((2, 5, spec.input_size))
    with torch.no_grad():
        want = module(torch.tensor(x))[0].numpy()
    weights = unirnn.backends.torch.canonical_weights(module)
    keras_layer = unirnn.to_keras(spec, weights, dtype="float64")
    got_keras = keras.ops.convert_to_numpy(keras_layer(x))
    flax_model = unirnn.build(spec, backend="flax")
    got_flax = np.asarray(flax_model.apply(unirnn.to_flax(spec, weights), x))
    assert np.abs(got_keras - want).max() < 1e-5
    assert np.abs(got_flax - want).max() < 1e-5
