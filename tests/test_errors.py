"""Bad input gets one of unirnn's public error types with a message, never a traceback or
a silent change; the CLI tells input errors (exit 2) from bugs (exit 1, traceback)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save as safetensors_bytes

import unirnn
import unirnn._extras
import unirnn.tools.check as check
from unirnn.tools.cli import main

SPEC = unirnn.gru(3, 4)


@pytest.mark.parametrize("name, base", [
    ("SpecError", ValueError), ("WeightsError", ValueError), ("InputError", ValueError),
    ("FileFormatError", ValueError),
])
def test_public_error_types(name, base):
    error = getattr(unirnn, name)
    assert issubclass(error, base) and issubclass(error, unirnn.UnirnnError)
    assert name in unirnn.__all__


def test_each_layer_raises_its_type():
    with pytest.raises(unirnn.SpecError, match="hidden_size"):
        unirnn.lstm(3, 0)
    with pytest.raises(unirnn.WeightsError, match="missing tensor"):
        unirnn.check_weights(SPEC, {})
    with pytest.raises(unirnn.InputError, match="rank-3"):
        unirnn.build(SPEC, "numpy")(np.zeros((2, 3)))


# -- silent changes that are errors now -------------------------------------------------


def test_activation_none_is_not_silently_tanh():
    for make in (lambda: unirnn.lstm(3, 4, activation=None),
                 lambda: unirnn.gru(3, 4, recurrent_activation=None),
                 lambda: unirnn.rnn(3, 4, activation=None)):
        with pytest.raises(unirnn.SpecError, match="received None.*'identity'"):
            make()


@pytest.mark.parametrize("dtype", [object, np.complex64, np.complex128, bool, "U3"])
def test_numpy_input_of_no_real_dtype(dtype):
    model = unirnn.build(SPEC, "numpy")
    x = np.ones((2, 5, 3)).astype(dtype)
    with pytest.raises(unirnn.InputError, match=r"expected real numbers .*received dtype"):
        model(x)


def test_integer_input_is_cast_exactly():
    model = unirnn.build(SPEC, "numpy", dtype=np.float64)
    x = np.arange(30).reshape(2, 5, 3) % 3
    np.testing.assert_array_equal(model(x)[0], model(x.astype(np.float64))[0])


@pytest.mark.parametrize("dtype", [object, np.complex64, np.int32, bool])
def test_weights_of_no_float_dtype(dtype):
    weights = {k: v.astype(dtype) for k, v in unirnn.init_weights(SPEC).items()}
    with pytest.raises(unirnn.WeightsError, match="expected a floating-point array"):
        unirnn.build(SPEC, "numpy", weights)


def test_weights_that_are_not_arrays():
    weights = dict(unirnn.init_weights(SPEC))
    weights["layer0.forward.w_x"] = [[1, 2], [3]]
    with pytest.raises(unirnn.WeightsError, match="'layer0.forward.w_x'"):
        unirnn.build(SPEC, "numpy", weights)


def test_huge_lengths_are_reported_as_given():
    model = unirnn.build(SPEC, "numpy")
    with pytest.raises(unirnn.InputError, match="received lengths\\[0\\]=1099511627776"):
        model(np.ones((2, 5, 3), np.float32), lengths=np.array([2**40, 3]))


# -- resources ---------------------------------------------------------------------------


def test_a_spec_too_big_for_memory_is_refused_with_its_size():
    huge = unirnn.lstm(10, 10**6)
    for make in (lambda: unirnn.init_weights(huge), lambda: unirnn.build(huge, "numpy"),
                 lambda: check.make_case("huge", huge)):
        with pytest.raises(unirnn.SpecError, match=r"4,000,048,000,000 values \(.* TiB"):
            make()


def test_cli_check_on_a_huge_spec(tmp_path, capsys):
    path = tmp_path / "huge.json"
    path.write_text(unirnn.gru(3, 10**6).to_json())
    assert main(["check", str(path), "--no-keras", "--no-grad"]) == 2
    assert "memory available" in capsys.readouterr().err


def test_check_reports_non_finite_outputs_as_a_failed_row():
    case = check.make_case("relu", unirnn.rnn(3, 4, activation="relu"))
    reference = check._evaluate("numpy", case, "float64")
    got = check._evaluate("numpy", case, "float64")
    got.outputs[0, 1, 2] = np.nan
    row = check.compare(case, reference, None, got, "numpy", "cpu", "float64")
    assert not row.ok and row.error == "its outputs: 1 non-finite (NaN/inf) value"
    assert "FAIL its outputs: 1 non-finite" in check.format_rows([row])
    clean = check.compare(case, reference, None, reference, "numpy", "cpu", "float64")
    assert clean.ok and clean.outputs == 0.0


# -- files -------------------------------------------------------------------------------


def _unirnn_file(path, tensors, **metadata):
    meta = {"format": "unirnn", "format_version": "1", "spec": SPEC.to_json(), **metadata}
    path.write_bytes(safetensors_bytes(tensors, metadata=meta))
    return path


def _bfloat16_file(path, weights):
    """A unirnn file holding bfloat16 tensors, written by hand (numpy has no bfloat16):
    each float32 is cut to its top 16 bits, which a float32 -> bfloat16 truncation is."""
    header: dict = {"__metadata__": {"format": "unirnn", "format_version": "1",
                                     "spec": SPEC.to_json()}}
    data, offset = b"", 0
    for name, array in weights.items():
        raw = (np.ascontiguousarray(array, np.float32).view(np.uint32) >> 16).astype("<u2")
        header[name] = {"dtype": "BF16", "shape": list(array.shape),
                        "data_offsets": [offset, offset + raw.nbytes]}
        data += raw.tobytes()
        offset += raw.nbytes
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_bfloat16_file_is_decoded_exactly_or_refused_clearly(tmp_path):
    weights = unirnn.init_weights(SPEC)
    path = _bfloat16_file(tmp_path / "bf16.safetensors", weights)
    if not unirnn._extras.installed("torch"):
        with pytest.raises(unirnn.FileFormatError, match=r"bfloat16.*install torch"):
            unirnn.load(path)
        return
    spec, loaded = unirnn.load(path)
    assert spec == SPEC
    for name, array in weights.items():
        expected = ((array.view(np.uint32) >> 16) << 16).view(np.float32)
        np.testing.assert_array_equal(loaded[name], expected)
        assert loaded[name].dtype == np.float32


@pytest.mark.parametrize("version", ["-5", "0", "x", "", "2"])
def test_format_versions_outside_the_known_range(tmp_path, version):
    path = _unirnn_file(tmp_path / "v.safetensors", dict(unirnn.init_weights(SPEC)),
                        format_version=version)
    with pytest.raises(unirnn.FileFormatError, match="this unirnn reads versions 1 to 1"):
        unirnn.load(path)


def test_bad_spec_json_names_the_file(tmp_path, capsys):
    path = _unirnn_file(tmp_path / "j.safetensors", dict(unirnn.init_weights(SPEC)),
                        spec="{not json")
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "j.safetensors" in err and "spec in its metadata is not valid" in err


def test_header_is_checked_before_data_is_read(tmp_path):
    weights = dict(unirnn.init_weights(SPEC))
    weights["layer0.forward.w_h"] = np.zeros((12, 5), np.float32)
    path = _unirnn_file(tmp_path / "s.safetensors", weights)
    with pytest.raises(unirnn.FileFormatError, match=r"'layer0.forward.w_h' has shape \(12, 5\)"):
        unirnn.load(path)
    weights = dict(unirnn.init_weights(SPEC), extra=np.zeros(3, np.float32))
    with pytest.raises(unirnn.FileFormatError, match="'extra' does not belong"):
        unirnn.load(_unirnn_file(tmp_path / "e.safetensors", weights))
    weights = dict(unirnn.init_weights(SPEC))
    weights["layer0.forward.b_x"] = np.zeros(12, np.int64)
    with pytest.raises(unirnn.FileFormatError, match="dtype I64; expected one of"):
        unirnn.load(_unirnn_file(tmp_path / "i.safetensors", weights))


def test_huge_length_claim_in_a_header(tmp_path):
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(unirnn.FileFormatError, match="not a unirnn file"):
        unirnn.load(path)


# -- the CLI: input errors, bugs, pipes ---------------------------------------------------


def test_cli_bug_is_exit_1_with_traceback(monkeypatch, capsys):
    import unirnn.tools.cli as cli

    def broken(args):
        raise KeyError("internal")

    parser = cli._parser
    monkeypatch.setattr(cli, "_parser", lambda: _with_info(parser(), broken))
    assert main(["info", "x.safetensors"]) == 1
    err = capsys.readouterr().err
    assert "this is a bug in unirnn" in err and "Traceback" in err and "KeyError" in err


def _with_info(parser, func):
    for action in parser._subparsers._group_actions:
        action.choices["info"].set_defaults(func=func)
    return parser


def test_cli_input_error_is_exit_2_without_traceback(tmp_path, capsys):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"\x00" * 3)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unirnn info: error: ") and "Traceback" not in err


def test_cli_survives_a_closed_pipe(tmp_path):
    """`unirnn info f | head -1`: the reader is gone before unirnn writes (its end of the
    pipe is closed first), so every write fails with EPIPE."""
    import os

    path = tmp_path / "m.safetensors"
    unirnn.save(path, SPEC, unirnn.init_weights(SPEC))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        run = subprocess.run([sys.executable, "-m", "unirnn", "info", str(path)],
                             stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert run.returncode == 141, run.stderr
    assert run.stderr == ""


def test_docs_errors_examples_run(capsys):
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})
    out = capsys.readouterr().out
    assert "received None" in out and "received dtype complex64" in out
