"""``.onnx`` everywhere else: ``port``, ``read``/``write``, ``unirnn convert``, ``info`` and
``check`` (numpy, onnx and onnxruntime only)."""

from __future__ import annotations

import numpy as np
import oracle
import pytest
from cases import SPECS
from support import TOL, framework, max_rel_error, nonzero_weights

onnx = framework("onnx")
framework("onnxruntime")

import unirnn  # noqa: E402
from unirnn.porting import onnx as onnx_porting  # noqa: E402
from unirnn.porting import port as port_module  # noqa: E402
from unirnn.tools import check as check_module  # noqa: E402
from unirnn.tools.cli import main  # noqa: E402


def test_port_to_and_from_onnx():
    spec = SPECS["gru-gelu-z"]
    weights = nonzero_weights(spec).astype(np.float32)
    model = unirnn.port((spec, weights), to="onnx")
    assert isinstance(model, onnx.ModelProto)
    assert onnx_porting.kernel(model) == "onnx.Scan"
    module = unirnn.port(model, to="numpy")
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    want, _ = oracle.run(spec, weights, x)
    assert max_rel_error(module(x)[0], want) <= TOL["float32"]
    assert max_rel_error(onnx_porting.run(model, x)[0], want) <= TOL["float32"]
    assert unirnn.port(model, to="onnx", native=False).SerializeToString() == \
        model.SerializeToString()


def test_write_and_read_files(tmp_path):
    spec = SPECS["lstm-proj-bidir-2layer"]
    weights = nonzero_weights(spec)
    path = tmp_path / "model.onnx"
    where = port_module.write(path, spec, weights)
    assert "metadata_props" in where
    spec2, weights2 = port_module.read(path)
    assert spec2 == spec
    for key, value in weights.items():  # files hold float32
        np.testing.assert_array_equal(weights2[key], value.astype(np.float32))
    with pytest.raises(unirnn.SpecError, match="holds"):
        port_module.read(path, spec=unirnn.lstm(3, 5))
    assert port_module.file_format_of("a.ONNX") == "onnx"


def test_to_onnx_writes_atomically(tmp_path):
    spec = SPECS["lstm"]
    path = tmp_path / "m.onnx"
    model = onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float32), path)
    assert path.read_bytes() == model.SerializeToString()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary left behind
    with pytest.raises(unirnn.WeightsError, match="float16"):
        onnx_porting.to_onnx(spec, nonzero_weights(spec).astype(np.float16))


def test_cli_convert_both_ways_and_info(tmp_path, capsys):
    spec = SPECS["gru-before"]
    unirnn.save(tmp_path / "a.safetensors", spec, nonzero_weights(spec).astype(np.float32))
    assert main(["convert", str(tmp_path / "a.safetensors"), str(tmp_path / "b.onnx")]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "metadata_props" in out
    assert main(["convert", str(tmp_path / "b.onnx"), str(tmp_path / "c.safetensors")]) == 0
    assert unirnn.load(tmp_path / "c.safetensors")[0] == spec
    capsys.readouterr()
    assert main(["info", str(tmp_path / "b.onnx")]) == 0
    out = capsys.readouterr().out
    assert "GRU node 'layer0.GRU'" in out and "linear_before_reset=0" in out
    assert "maps to: gru 3->4" in out and "reset=before" in out
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    assert main(["info", str(tmp_path / "bad.onnx")]) == 2
    assert "not" in capsys.readouterr().err


def test_check_has_onnxruntime_rows():
    case = check_module.make_case("lstm", unirnn.lstm(3, 4, bidirectional=True))
    gelu = check_module.make_case("gelu", unirnn.gru(3, 4, activations={"z": "gelu"}))
    cases = [case, gelu]
    references = [(check_module._evaluate("numpy", c, "float64"), None) for c in cases]
    targets = check_module._onnxruntime_targets()  # only these: the other backends are slow
    assert [t[:3] for t in targets][:1] == [("onnxruntime", "onnx", "cpu")]
    ort_rows = check_module._run_targets(cases, targets, ("float64", "float32"), references)
    assert {(r.case, r.dtype, r.kernel) for r in ort_rows} == {
        ("lstm", "float64", "onnx.Scan"), ("lstm", "float32", "onnx.LSTM"),
        ("gelu", "float32", "onnx.Scan")}  # onnxruntime has no float64 Erf
    assert all(r.ok and r.device == "cpu" for r in ort_rows)
