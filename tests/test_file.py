"""The portable file: spec + weights in one .safetensors file, written atomically."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from safetensors.numpy import save_file as raw_save
from test_spec import specs

import unirnn
import unirnn._file


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs())
def test_save_load_round_trip(tmp_path, spec):
    weights = unirnn.init_weights(spec, seed=1, dtype=np.float64)
    path = tmp_path / "model.safetensors"
    unirnn.save(path, spec, weights)
    spec2, weights2 = unirnn.load(path)
    assert spec2 == spec
    assert list(weights2) == list(weights)
    for name in weights:
        np.testing.assert_array_equal(weights2[name], weights[name])
        assert weights2[name].dtype == np.float64


def test_not_a_unirnn_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is not a unirnn file"):
        unirnn.load(text)
    other = tmp_path / "other.safetensors"
    raw_save({"a": np.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a unirnn file"):
        unirnn.load(other)
    with pytest.raises(FileNotFoundError, match="no unirnn file"):
        unirnn.load(tmp_path / "absent.safetensors")


def _write(path, tensors, **metadata):
    raw_save(tensors, str(path), metadata={"format": "unirnn", **metadata})


def test_newer_version_is_refused(tmp_path):
    spec = unirnn.rnn(2, 3)
    path = tmp_path / "new.safetensors"
    _write(path, dict(unirnn.init_weights(spec)), format_version="2", spec=spec.to_json())
    with pytest.raises(unirnn.FileFormatError,
                       match="format_version '2'; this unirnn reads versions 1 to 1: upgrade"):
        unirnn.load(path)


def test_shapes_disagreeing_with_spec(tmp_path):
    spec = unirnn.rnn(2, 3)
    weights = dict(unirnn.init_weights(spec))
    weights["layer0.forward.w_h"] = np.zeros((3, 4), np.float32)
    path = tmp_path / "bad.safetensors"
    _write(path, weights, format_version="1", spec=spec.to_json())
    with pytest.raises(unirnn.FileFormatError,
                       match=r"'layer0.forward.w_h' has shape \(3, 4\); the file's spec expects"):
        unirnn.load(path)


def test_metadata_holds_spec_json(tmp_path):
    from safetensors import safe_open

    spec = unirnn.lstm(3, 4, activation="relu")
    path = tmp_path / "m.safetensors"
    unirnn.save(path, spec, unirnn.init_weights(spec))
    with safe_open(str(path), framework="np") as handle:
        meta = handle.metadata()
    assert meta["format"] == "unirnn" and meta["format_version"] == "1"
    assert json.loads(meta["spec"])["activations"]["g"] == "relu"


def test_save_refuses_bad_weights_and_leaves_no_file(tmp_path):
    spec = unirnn.rnn(2, 3)
    path = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="missing tensor"):
        unirnn.save(path, spec, {})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    spec = unirnn.rnn(2, 3)
    path = tmp_path / "m.safetensors"
    unirnn.save(path, spec, unirnn.init_weights(spec, seed=0))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(unirnn._file.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        unirnn.save(path, spec, unirnn.init_weights(spec, seed=1))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]  # no temporary left behind


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_saved_file_has_the_mode_open_gives(tmp_path, umask):
    """Not mkstemp's private 0o600: 0o666 less the umask, as open(path, "wb") gives."""
    spec = unirnn.rnn(2, 3)
    previous = os.umask(umask)
    try:
        unirnn.save(tmp_path / "m.safetensors", spec, unirnn.init_weights(spec))
        with open(tmp_path / "plain.bin", "wb") as handle:
            handle.write(b"x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode)
    assert mode == 0o666 & ~umask
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode)
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "plain.bin"]
