"""Every malformed file, in every format unirnn reads, gets a documented error with a
message (exit 2 from the CLI), never a traceback; hostile files execute nothing and write
nothing outside the destination.

The fuzz test mutates and truncates valid files of each format (hypothesis, bounded by the
profile in tests/conftest.py); the hostile ones are crafted: pickles with globals, zip
members named ``../``, huge length claims.
"""

from __future__ import annotations

import io
import itertools
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unirnn
from unirnn.porting.port import read, write
from unirnn.tools.cli import main

SPEC = unirnn.lstm(3, 4, activation="relu")
FORMATS = {"safetensors": "m.safetensors", "pt": "m.pt", "keras": "m.keras",
           "weights.h5": "m.weights.h5", "msgpack": "m.msgpack", "onnx": "m.onnx"}
ALLOWED = (unirnn.UnirnnError, OSError, ImportError)
"""What reading a malformed file may raise: unirnn's types, or the OS's (a file that is
not there or cannot be opened)."""


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("valid")
    weights = unirnn.init_weights(SPEC, seed=4)
    out = {}
    for key, name in FORMATS.items():
        write(folder / name, SPEC, weights)
        out[key] = (folder / name).read_bytes()
    return out


def _outcome(path: Path) -> str:
    """Read ``path`` through the API and through ``unirnn info``; both must agree on
    whether it is readable, and fail only with a documented error."""
    try:
        read(path)
        api = "read"
    except ALLOWED as err:
        assert str(err), f"{type(err).__name__} without a message"
        api = "error"
    code = main(["info", str(path)])
    assert code in (0, 2), f"unirnn info exited {code} on a mutated {path.name}"
    if path.suffix == ".onnx":
        # info lists an ONNX model's every recurrent node, readable or not (it says why)
        assert code == 0 or api == "error"
    else:
        assert (code == 0) == (api == "read")
    return api


_EXAMPLES = itertools.count()

_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.tuples(st.floats(0, 1), st.binary(min_size=1,
                                                                      max_size=64))),
)


def _mutate(data: bytes, mutation) -> bytes:
    kind, arg = mutation
    if kind == "truncate":
        return data[: int(arg * (len(data) - 1))]
    if kind == "flip":
        out = bytearray(data)
        for where, xor in arg:
            out[int(where * (len(out) - 1))] ^= xor
        return bytes(out)
    where, junk = arg
    cut = int(where * len(data))
    return data[:cut] + junk + data[cut:]


@pytest.mark.parametrize("fmt", list(FORMATS))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=_mutation)
def test_mutated_files_get_a_documented_error(tmp_path, valid_files, fmt, mutation, capsys):
    folder = tmp_path / f"fuzz-{next(_EXAMPLES)}"
    folder.mkdir()
    path = folder / FORMATS[fmt]
    path.write_bytes(_mutate(valid_files[fmt], mutation))
    _outcome(path)
    assert "Traceback" not in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == [path.name]  # nothing else written


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_truncation_point_class(tmp_path, valid_files, fmt, capsys):
    """Empty, one byte, half, all but one byte: each a clear error."""
    data = valid_files[fmt]
    for n, cut in enumerate((0, 1, len(data) // 2, len(data) - 1)):
        path = tmp_path / f"{n}{FORMATS[fmt]}"
        path.write_bytes(data[:cut])
        assert _outcome(path) == "error", (fmt, cut)
    assert "Traceback" not in capsys.readouterr().err


# -- hostile files ---------------------------------------------------------------------


class _Runs:
    """Pickles to a call of ``os.system``: what a hostile .pt carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_globals_runs_nothing_and_says_why(tmp_path, capsys):
    import torch

    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight_ih_l0": _Runs(marker)}, path)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"weight_ih_l0": _Runs(marker)}, protocol=2))
    for hostile in (path, legacy):
        with pytest.raises(unirnn.FileFormatError) as info:
            read(hostile)
        assert not marker.exists()
        message = str(info.value)
        assert "weights_only=False" not in message  # torch's advice would run the code
        if hostile == path:
            assert "GLOBAL posix.system" in message and "no code from the file ran" in message
        assert main(["convert", str(hostile), str(tmp_path / "out.safetensors")]) == 2
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    assert "Traceback" not in capsys.readouterr().err


def _zip_with(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["keras", "pt"])
def test_zip_members_named_dotdot_write_nothing_outside(tmp_path, valid_files, fmt, capsys):
    inner = tmp_path / "inner"
    inner.mkdir()
    with zipfile.ZipFile(io.BytesIO(valid_files[fmt])) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members["../escaped.txt"] = b"outside"
    members["/tmp/unirnn-absolute-escape.txt"] = b"outside"
    path = inner / FORMATS[fmt]
    path.write_bytes(_zip_with(members))
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        read(path)
    except ALLOWED:
        pass
    assert main(["info", str(path)]) in (0, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/unirnn-absolute-escape.txt").exists()
    assert "Traceback" not in capsys.readouterr().err


def test_huge_length_claims(tmp_path, valid_files, capsys):
    # safetensors: a header length of 2**62 bytes
    claims = {"m.safetensors": struct.pack("<Q", 2**62) + valid_files["safetensors"][8:]}
    # a torch zip whose tensor storage claims far more bytes than the archive holds
    with zipfile.ZipFile(io.BytesIO(valid_files["pt"])) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    data = next(name for name in members if "/data/" in name)
    members[data] = members[data][:4]
    claims["short.pt"] = _zip_with(members)
    # msgpack: an array header claiming 2**32 - 1 entries
    claims["m.msgpack"] = b"\xdd\xff\xff\xff\xff" + b"\x00" * 16
    # onnx (protobuf): field 7 (the graph) claiming a length of 2**62 bytes
    claims["m.onnx"] = b"\x08\x08\x3a" + b"\xff" * 8 + b"\x3f" + b"\x00" * 16
    for name, payload in claims.items():
        path = tmp_path / name
        path.write_bytes(payload)
        assert _outcome(path) == "error", name
        assert main(["info", str(path)]) == 2, name
    assert "Traceback" not in capsys.readouterr().err


def test_a_file_of_another_format_under_a_name(tmp_path, valid_files, capsys):
    """Each format's bytes under every other format's name: a clear error each time."""
    for src in FORMATS:
        for dst, name in FORMATS.items():
            if src == dst:
                continue
            path = tmp_path / f"{src}-as-{name}"
            path.write_bytes(valid_files[src])
            assert _outcome(path) == "error", (src, dst)
    assert "Traceback" not in capsys.readouterr().err


def test_state_dicts_that_are_not_a_cell(tmp_path, capsys):
    import torch

    cases = {
        "hidden 0": {"weight_ih_l0": torch.zeros(0, 3), "weight_hh_l0": torch.zeros(0, 0)},
        "1-D weight_hh": {"weight_ih_l0": torch.zeros(12, 3), "weight_hh_l0": torch.zeros(12)},
        "layer X": {"weight_ih_lX": torch.zeros(12, 3), "weight_hh_lX": torch.zeros(12, 4)},
        "5 gate rows": {"weight_ih_l0": torch.zeros(5, 3), "weight_hh_l0": torch.zeros(5, 4)},
        "ints": {"weight_ih_l0": torch.zeros(12, 3, dtype=torch.int64),
                 "weight_hh_l0": torch.zeros(12, 4, dtype=torch.int64)},
        "a list": [torch.zeros(3)],
    }
    for label, state in cases.items():
        path = tmp_path / f"{label.replace(' ', '_')}.pt"
        torch.save(state, path)
        assert _outcome(path) == "error", label
        assert main(["convert", str(path), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (tmp_path / "x.safetensors").exists()


def test_cell_name_that_does_not_fit_the_tree(tmp_path, valid_files, capsys):
    path = tmp_path / "m.msgpack"
    path.write_bytes(valid_files["msgpack"])
    for cell in ("LSTMCell", "GRUCell", "SimpleCell", "OptimizedLSTMCell"):
        with pytest.raises(unirnn.WeightsError, match=f"{cell}: expected params"):
            read(path, cell=cell)
        assert main(["convert", str(path), str(tmp_path / "x.pt"), "--cell", cell]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_weights_h5_with_groups_of_something_else(tmp_path, capsys):
    import h5py

    path = tmp_path / "w.weights.h5"
    with h5py.File(path, "w") as handle:
        handle.create_group("layers/dense").create_dataset("vars/0", data=np.zeros((3, 2)))
    assert _outcome(path) == "error"
    assert "Traceback" not in capsys.readouterr().err
