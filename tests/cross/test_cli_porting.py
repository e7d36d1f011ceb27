"""`unirnn convert` and `unirnn check`, run as a user runs them."""

from __future__ import annotations

import re

import numpy as np
import pytest
from support import framework

import unirnn
from unirnn.cli import main

FORMATS = {"unirnn": "model.safetensors", "torch": "model.pt", "keras": "model.keras",
           "flax": "model.msgpack"}


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
    assert main(["convert", str(src), str(tmp_path / "model.onnx")]) == 2
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
