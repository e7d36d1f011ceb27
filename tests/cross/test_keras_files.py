"""A `.keras` file saved on one Keras backend, loaded on another.

Here, not in tests/keras: each Keras session installs one framework only, and this needs
two (the cross session has them all, and runs Keras tests on each Keras backend).
"""

from __future__ import annotations

import json

import numpy as np
import oracle
from support import TOL, example_inputs, framework, max_rel_error, nonzero_weights, run_keras_python

import unirnn

OTHER_BACKEND = {"tensorflow": "jax", "jax": "tensorflow", "torch": "tensorflow"}


def test_float64_keras_file_loads_on_another_keras_backend(tmp_path):
    """The resolved path is saved: a float64 layer saved on jax or torch (custom cell, where
    Keras' own layers compute float32) loads on tensorflow, where `auto` would pick Keras'
    LSTM, with the same variables and numbers; and a native one saved on tensorflow gives a
    clear error on jax instead of a variable-count mismatch."""
    keras = framework("keras")
    keras_backend = keras.backend.backend()
    spec = unirnn.lstm(3, 4, bidirectional=True)
    weights = nonzero_weights(spec)
    x, _, lengths = example_inputs(spec)
    mask = np.arange(6)[None, :] < lengths[:, None]
    np.savez(tmp_path / "inputs.npz", x=x, mask=mask)
    here = tmp_path / "here.keras"
    layer = unirnn.build(spec, backend="keras", weights=weights, dtype="float64")
    keras.Sequential([keras.Input((None, 3), dtype="float64"), layer]).save(here)
    other = OTHER_BACKEND[keras_backend]
    code = (
        "import json, numpy as np, keras, unirnn\n"
        "import unirnn.backends.keras\n"
        "from unirnn.layouts.keras import native_problem\n"
        "data = np.load('inputs.npz')\n"
        "out = {}\n"
        "try:\n"
        "    model = keras.saving.load_model('here.keras')\n"
        "    out['kernel'] = model.layers[-1].kernel\n"
        "    np.save('outputs.npy', keras.ops.convert_to_numpy(model(data['x'], "
        "mask=data['mask'])))\n"
        "except Exception as err:\n"
        "    out['error'] = str(err)\n"
        "spec = unirnn.lstm(3, 4, bidirectional=True)\n"
        "out['auto'] = native_problem(spec, 'float64', keras.backend.backend()) is None\n"
        "print('RESULT', json.dumps(out))\n"
    )
    line = run_keras_python(code, other, tmp_path).split("RESULT ")[-1]
    result = json.loads(line)
    if layer.kernel == "unirnn.keras-cell":  # saved on jax/torch, loaded on tensorflow
        assert result["auto"], "tensorflow's auto path would pick Keras' own LSTM"
        assert result.get("kernel") == "unirnn.keras-cell", result
        ref, _ = oracle.run(spec, weights, x, None, lengths)
        assert max_rel_error(np.load(tmp_path / "outputs.npy"), ref) <= TOL["float64"]
    else:  # Keras' own LSTM saved on tensorflow cannot run float64 on jax
        assert "saved on path 'native'" in result["error"], result
        assert "compute float64 in float32" in result["error"], result
