"""`unirnn convert` and `unirnn check`, run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from equivalence import KERAS_BACKEND
from support import framework

import unirnn
from unirnn.porting.port import keras_model, read
from unirnn.tools.cli import main

FORMATS = {"unirnn": "model.safetensors", "torch": "model.pt", "keras": "model.keras",
           "keras-weights": "model.weights.h5", "flax": "model.msgpack"}


def _difference(output: str) -> float:
    match = re.search(r"against the source on a probe input: ([0-9.e+-]+)", output)
    assert match, output
    return float(match.group(1))


@pytest.fixture
def lstm_file(tmp_path):
    spec = unirnn.lstm(3, 4, num_layers=2)
    weights = unirnn.init_weights(spec, seed=2)
    path = tmp_path / "src.safetensors"
    unirnn.save(path, spec, weights)
    (tmp_path / "spec.json").write_text(spec.to_json())
    return path, spec, weights


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_convert_from_unirnn_and_back(tmp_path, lstm_file, fmt, capsys):
    src, spec, weights = lstm_file
    for name in ("torch", "keras", "flax"):
        framework(name)
    dst = tmp_path / f"out-{FORMATS[fmt]}"
    assert main(["convert", str(src), str(dst)]) == 0
    assert _difference(capsys.readouterr().out) <= 1e-6  # float32 weights, float64 run
    back = tmp_path / "back.safetensors"
    assert main(["convert", str(dst), str(back), "--spec", str(tmp_path / "spec.json")]) == 0
    spec2, weights2 = unirnn.load(back)
    assert spec2 == spec
    for name in ("layer0.forward.w_x", "layer1.forward.w_h"):
        np.testing.assert_array_equal(weights2[name], weights[name])
    # one-bias formats (Keras LSTM) fold b_h into b_x; the sum is kept
    np.testing.assert_allclose(weights2["layer0.forward.b_x"] + weights2["layer0.forward.b_h"],
                               weights["layer0.forward.b_x"] + weights["layer0.forward.b_h"],
                               atol=1e-6)


def test_convert_torch_state_dict_needs_no_spec_for_torch_cells(tmp_path, capsys):
    torch = framework("torch")
    native = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)
    src = tmp_path / "gru.pt"
    torch.save(native.state_dict(), src)
    assert main(["convert", str(src), str(tmp_path / "gru.safetensors")]) == 0
    spec, _ = unirnn.load(tmp_path / "gru.safetensors")
    assert (spec.family, spec.num_layers, spec.bidirectional) == ("gru", 2, True)


def test_convert_refuses_overwrite_and_code_in_pickles(tmp_path, lstm_file, capsys):
    torch = framework("torch")
    src, _, _ = lstm_file
    dst = tmp_path / "exists.pt"
    dst.write_bytes(b"keep me")
    assert main(["convert", str(src), str(dst)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert dst.read_bytes() == b"keep me"
    assert main(["convert", str(src), str(dst), "--force"]) == 0

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pt"
    torch.save({"weight_ih_l0": Payload()}, evil)
    assert main(["convert", str(evil), str(tmp_path / "x.safetensors"), "--spec",
                 str(tmp_path / "spec.json")]) == 2
    captured = capsys.readouterr()
    assert "weights_only=True" in captured.err and "code ran" not in captured.out
    assert not (tmp_path / "x.safetensors").exists()


def test_convert_unknown_format(tmp_path, lstm_file, capsys):
    src, _, _ = lstm_file
    assert main(["convert", str(src), str(tmp_path / "model.tflite")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err


def test_check_spec_file_passes(tmp_path, capsys):
    framework("torch")
    spec_path = tmp_path / "gru.json"
    spec_path.write_text(unirnn.gru(3, 4, activations={"z": "gelu"}).to_json())
    assert main(["check", str(spec_path), "--no-keras"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "flax linen" in out
    assert re.search(r"^(\d+) of \1 within tolerance$", out, flags=re.M), out


def test_check_fails_when_a_backend_is_wrong(tmp_path, capsys, monkeypatch):
    torch_backend = pytest.importorskip("unirnn.backends.torch")
    original = torch_backend.evaluate

    def off_by_a_little(*args, **kwargs):
        result = original(*args, **kwargs)
        result.outputs = result.outputs + 1e-6
        return result

    monkeypatch.setattr(torch_backend, "evaluate", off_by_a_little)
    spec_path = tmp_path / "lstm.json"
    spec_path.write_text(unirnn.lstm(2, 3).to_json())
    assert main(["check", str(spec_path), "--no-keras", "--no-grad"]) == 1
    assert "FAIL" in capsys.readouterr().out


# -- custom cells through every format: the spec travels in the file --------------------

CUSTOM = {
    "gelu-z-gru": unirnn.gru(3, 4, activations={"z": "gelu"}),
    "relu-lstm": unirnn.lstm(3, 4, activation="relu"),
    "reset-before-gru": unirnn.gru(3, 4, reset="before", num_layers=2),
}


def _outputs(spec, weights, x):
    return unirnn.build(spec, "numpy", weights, dtype=np.float64)(x)[0]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", list(CUSTOM))
def test_custom_cell_survives_every_format_without_spec(tmp_path, name, fmt, capsys):
    """A custom cell written to any format reads back (no --spec) as itself, not as the
    standard cell its tensors also fit; converting it back gives the same function."""
    for framework_name in ("torch", "keras", "flax"):
        framework(framework_name)
    spec = CUSTOM[name]
    weights = unirnn.init_weights(spec, seed=3)
    src = tmp_path / "src.safetensors"
    unirnn.save(src, spec, weights)
    dst = tmp_path / FORMATS[fmt]
    assert main(["convert", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "read back without --spec" in out and _difference(out) <= 1e-6
    spec2, weights2 = read(dst)  # as a user reads it: no spec
    assert spec2 == spec
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    np.testing.assert_allclose(_outputs(spec2, weights2, x), _outputs(spec, weights, x),
                               atol=1e-6)
    back = tmp_path / "back.safetensors"
    assert main(["convert", str(dst), str(back)]) == 0
    assert unirnn.load(back)[0] == spec


def test_carried_spec_leaves_native_loading_intact(tmp_path, capsys):
    """The spec rides where torch's, Flax's and Keras' own loaders ignore it."""
    torch = framework("torch")
    jax = framework("jax")
    framework("flax")
    keras = framework("keras")
    from flax import linen, serialization

    spec = unirnn.gru(3, 4)
    weights = unirnn.init_weights(spec, seed=1)
    src = tmp_path / "src.safetensors"
    unirnn.save(src, spec, weights)
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    want = _outputs(spec, weights, x)

    assert main(["convert", str(src), str(tmp_path / "m.pt")]) == 0
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert json.loads(state._metadata[""]["unirnn.spec"]) == spec.to_dict()
    native = torch.nn.GRU(3, 4, batch_first=True)
    native.load_state_dict(state)  # strict: the metadata is no entry
    with torch.no_grad():
        got = native(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)

    assert main(["convert", str(src), str(tmp_path / "m.msgpack"), "--cell", "GRUCell"]) == 0
    data = (tmp_path / "m.msgpack").read_bytes()
    cell = linen.GRUCell(4)
    carry = cell.initialize_carry(jax.random.key(0), x[:, 0].shape)
    template = jax.tree_util.tree_map(np.asarray, cell.init(jax.random.key(0), carry, x[:, 0]))
    restored = serialization.from_bytes(template, data)  # the "unirnn" entry is ignored
    rnn = linen.RNN(cell)  # nn.RNN keeps the cell's params under "cell"
    got = rnn.apply({"params": {"cell": restored["params"]}}, x)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    variables = serialization.msgpack_restore(data)
    assert bytes(variables["unirnn"]["spec"]).decode() == spec.to_json()
    # an array leaf, not a string: the whole restored tree still goes through jax.jit
    step = jax.jit(cell.apply)(variables, carry, x[:, 0])[1]
    np.testing.assert_allclose(np.asarray(step), want[:, 0], atol=1e-5)

    assert main(["convert", str(src), str(tmp_path / "m.weights.h5")]) == 0
    model = keras_model(spec, unirnn.init_weights(spec, seed=9))
    model.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), want, atol=1e-5)


def test_convert_to_a_name_without_suffix(tmp_path, capsys):
    torch = framework("torch")
    spec = unirnn.gru(3, 4, activations={"z": "gelu"})
    src = tmp_path / "src.safetensors"
    unirnn.save(src, spec, unirnn.init_weights(spec, seed=0))
    dst = tmp_path / "model.bin"
    assert main(["convert", str(src), str(dst), "--to", "torch"]) == 0
    assert _difference(capsys.readouterr().out) <= 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "src.safetensors"]
    assert "weight_ih_l0" in torch.load(dst, weights_only=True)
    assert read(dst, file_format="torch")[0] == spec
    # Keras itself reads only *.keras and *.weights.h5, so such a name is refused up front
    assert main(["convert", str(src), str(tmp_path / "model.h5x"), "--to", "keras"]) == 2
    assert "Keras loads only files named *.keras" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "src.safetensors"]


def test_converted_file_has_the_mode_open_gives(tmp_path, capsys):
    framework("torch")
    spec = unirnn.lstm(3, 4)
    src = tmp_path / "src.safetensors"
    unirnn.save(src, spec, unirnn.init_weights(spec))
    previous = os.umask(0o027)
    try:
        assert main(["convert", str(src), str(tmp_path / "m.pt")]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == 0o640


# -- a conversion that would lose something writes nothing ------------------------------


@pytest.fixture
def gelu_file(tmp_path):
    spec = unirnn.gru(3, 4, activations={"z": "gelu"})
    path = tmp_path / "gelu.safetensors"
    unirnn.save(path, spec, unirnn.init_weights(spec, seed=5))
    return path


def _drop_carried_spec(monkeypatch):
    """torch files as they were before they carried the spec: tensors only."""
    torch_porting = pytest.importorskip("unirnn.porting.torch")
    original = torch_porting.to_torch
    monkeypatch.setattr(torch_porting, "to_torch", lambda *a, **k: dict(original(*a, **k)))


def test_lossy_conversion_fails_and_writes_nothing(tmp_path, gelu_file, monkeypatch, capsys):
    framework("torch")
    _drop_carried_spec(monkeypatch)
    dst = tmp_path / "gelu.pt"
    assert main(["convert", str(gelu_file), str(dst)]) == 2
    err = capsys.readouterr().err
    assert "does not reproduce the source" in err and "differs in activations" in err
    assert "z=gelu" in err and "z=sigmoid" in err
    difference = float(re.search(r"probe input is ([0-9.e+-]+)", err).group(1))
    assert difference > 1e-3  # a GELU update gate read as a sigmoid one: outputs differ
    assert "nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gelu.safetensors"]


def test_failed_probe_keeps_an_existing_file_with_force(tmp_path, gelu_file, monkeypatch,
                                                        capsys):
    framework("jax")
    flax_porting = pytest.importorskip("unirnn.porting.flax")
    original = flax_porting.to_flax

    def off(spec, weights, *args, **kwargs):  # a writer that gets one number wrong
        tree = original(spec, weights, *args, **kwargs)
        first = tree["params"]["layer0_forward"]
        name = next(iter(first))
        first[name] = first[name] + 0.01
        return tree

    monkeypatch.setattr(flax_porting, "to_flax", off)
    dst = tmp_path / "gelu.msgpack"
    dst.write_bytes(b"the previous file")
    assert main(["convert", str(gelu_file), str(dst), "--force"]) == 2
    err = capsys.readouterr().err
    assert "max |difference| of its outputs" in err and "nothing was written" in err
    assert dst.read_bytes() == b"the previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gelu.msgpack", "gelu.safetensors"]


def test_given_spec_contradicting_the_carried_one_is_an_error(tmp_path, gelu_file, capsys):
    framework("torch")
    dst = tmp_path / "gelu.pt"
    assert main(["convert", str(gelu_file), str(dst)]) == 0
    other = tmp_path / "other.json"
    other.write_text(unirnn.gru(3, 4).to_json())
    assert main(["convert", str(dst), str(tmp_path / "x.safetensors"), "--spec",
                 str(other)]) == 2
    err = capsys.readouterr().err
    assert "holds" in err and "received a different spec" in err
    assert not (tmp_path / "x.safetensors").exists()


# -- files that are not what their name says --------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("junk.pt", "is not a torch file: expected a state dict saved with torch.save"),
    ("junk.msgpack", "is not a Flax parameter file: expected msgpack bytes"),
    ("junk.keras", "is not a Keras model file: expected a .keras zip archive"),
    ("junk.weights.h5", "is not a Keras weights file: expected an HDF5 file"),
])
def test_garbage_file_says_which_file_and_what_was_expected(tmp_path, name, expected, capsys):
    for framework_name in ("torch", "keras", "flax"):
        framework(framework_name)
    path = tmp_path / name
    path.write_bytes(b"hello, this is not a model")
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        read(path)
    assert str(path) in str(info.value)
    assert main(["convert", str(path), str(tmp_path / "x.safetensors")]) == 2
    assert str(path) in capsys.readouterr().err


# -- unirnn check, with its Keras subprocesses --------------------------------------------


def _expected_keras_devices():
    """Where each Keras backend puts tensors, asked of the frameworks themselves."""
    import importlib.util

    devices = {}
    if importlib.util.find_spec("tensorflow"):
        import tensorflow as tf

        devices["tensorflow"] = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    if importlib.util.find_spec("jax"):
        import jax

        devices["jax"] = jax.default_backend()
    if importlib.util.find_spec("torch"):
        import torch

        devices["torch"] = "cuda" if torch.cuda.is_available() else "cpu"
    return devices


def test_check_spec_file_with_every_subprocess_backend(tmp_path, capsys):
    framework("keras")
    spec_path = tmp_path / "rnn.json"
    spec_path.write_text(unirnn.rnn(2, 3, activation="relu").to_json())
    assert main(["check", str(spec_path), "--dtypes", "float64"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^(\d+) of \1 within tolerance$", out, flags=re.M), out
    for keras_backend, device in _expected_keras_devices().items():
        for label in (f"keras {keras_backend}", f"keras {keras_backend} custom"):
            row = re.search(rf"^rnn\.json\s+{label}\s+(\S+)\s+float64\s+(\S+)\s+(\S+)\s+(\S+)"
                            rf"\s+(\S+)\s+ok$", out, flags=re.M)
            assert row, f"no ok row for {label}:\n{out}"
            assert row.group(1) == device
            assert float(row.group(3)) <= 1e-10 and float(row.group(5)) <= 1e-7


# -- unirnn demo, as a user runs it -------------------------------------------------------


def _console_script():
    script = Path(sys.executable).with_name("unirnn")
    found = str(script) if script.exists() else shutil.which("unirnn")
    assert found, "the unirnn console script is not installed"
    return found


def test_demo_runs_and_every_framework_agrees(tmp_path):
    for framework_name in ("torch", "keras", "jax", "flax"):
        framework(framework_name)
    result = subprocess.run([_console_script(), "demo"], capture_output=True, text=True,
                            cwd=tmp_path, check=False, timeout=300)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    equal = {m.group(1).split(" (")[0].strip(): float(m.group(2)) for m in re.finditer(
        r"^   (.+?)\s+out\[0, -1, :3\] = .*max \|diff\| vs numpy float64 = (\S+)$", out,
        flags=re.M)}
    assert set(equal) == {"numpy float64", "torch, the trained module itself",
                          f"keras/{KERAS_BACKEND}", "flax linen"}, out
    assert all(diff <= 1e-5 for diff in equal.values()), equal
    assert "unirnn.port(torch_module, to=...)" in out
    assert "spec equal True" in out
    for case in ("trained ReLU LSTM", "GELU-update GRU"):
        for label in ("numpy", "torch", "torch custom", "flax linen", "flax nnx",
                      f"keras {KERAS_BACKEND}", f"keras {KERAS_BACKEND} custom"):
            for dtype in ("float64", "float32"):
                assert re.search(rf"^{case}\s+{label}\s+\S+\s+{dtype}\s.*\sok$", out,
                                 flags=re.M), f"no ok row {case} / {label} / {dtype}:\n{out}"
    assert re.search(r"^(\d+) of \1 rows within tolerance", out, flags=re.M), out
