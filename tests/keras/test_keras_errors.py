"""Bad input to the Keras backend: a documented error, never a raw framework error."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from oracle import run as oracle_run

import unirnn

SPEC = unirnn.gru(3, 4)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int32", "complex64"])
@pytest.mark.parametrize("path", ["auto", "custom"])
def test_dtype_keras_cannot_run_exactly(dtype, path):
    with pytest.raises(unirnn.SpecError, match=f"dtype: expected float32 or float64; "
                                               f"received {dtype}"):
        unirnn.build(SPEC, "keras", unirnn.init_weights(SPEC), dtype=dtype, path=path)


@pytest.mark.parametrize("path", ["auto", "custom"])
def test_a_batch_of_zero_sequences(path):
    """Keras' own layer and unirnn's custom one both give (0, T, H), as the oracle would."""
    layer = unirnn.build(SPEC, "keras", unirnn.init_weights(SPEC), path=path,
                         return_sequences=True)
    out = keras.ops.convert_to_numpy(layer(np.zeros((0, 5, 3), np.float32)))
    assert out.shape == (0, 5, 4)


def test_complex_input_is_refused():
    layer = unirnn.build(SPEC, "keras", unirnn.init_weights(SPEC), path="custom",
                         return_sequences=True)
    layer(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(unirnn.InputError, match="expected real numbers"):
        layer._check_call(np.zeros((1, 2, 3), np.complex64), None, None)


def test_a_lambda_activation_is_named_as_such(tmp_path):
    source = tmp_path / "model.py"
    source.write_text("import keras\nlayer = keras.layers.LSTM(4, activation=lambda x: x)\n")
    namespace: dict = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    layer = namespace["layer"]
    layer.build((None, None, 3))
    with pytest.raises(unirnn.SpecError, match=r"\(a lambda or a function of your own\) has "
                                               r"no identical unirnn activation"):
        unirnn.from_keras(layer)


def test_integer_batch_is_cast_like_floats():
    weights = unirnn.init_weights(SPEC, dtype=np.float64)
    layer = unirnn.build(SPEC, "keras", weights, path="custom", return_sequences=True,
                         dtype="float64")
    x = (np.arange(30).reshape(2, 5, 3) % 3).astype(np.float64)
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out, oracle_run(SPEC, weights, x)[0], rtol=0, atol=1e-12)
