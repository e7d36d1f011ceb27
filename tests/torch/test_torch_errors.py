"""Bad input to the torch backend and torch files: a documented error, never a silent
change or a raw framework error."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import unirnn
from unirnn.porting.port import read

SPEC = unirnn.gru(3, 4)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.int32, torch.bool])
def test_dtype_that_is_not_floating_point(dtype):
    with pytest.raises(unirnn.SpecError, match="expected float32, float64, bfloat16 or float16"):
        unirnn.build(SPEC, "torch", dtype=dtype)


def test_complex_input():
    model = unirnn.build(SPEC, "torch")
    with pytest.raises(unirnn.InputError, match="received torch.complex64"):
        model(torch.ones(5, 2, 3, dtype=torch.complex64))


def test_hx_as_numpy_arrays():
    model = unirnn.build(SPEC, "torch")
    with pytest.raises(unirnn.InputError, match="hx: expected torch tensors; received ndarray"):
        model(torch.ones(5, 2, 3), np.zeros((1, 2, 4), np.float32))


def test_bfloat16_tensors_as_weights_are_widened_exactly():
    weights = unirnn.init_weights(SPEC)
    bf16 = {name: torch.tensor(array).bfloat16().requires_grad_() for name, array in
            weights.items()}
    checked = unirnn.check_weights(SPEC, bf16)
    for name, array in weights.items():
        expected = bf16[name].detach().float().numpy()
        np.testing.assert_array_equal(checked[name], expected)
        assert checked[name].dtype == np.float32
        # and it is the bfloat16 rounding of the float32 weights, not something else
        assert np.abs(checked[name] - array).max() <= 2.0**-8 * np.abs(array).max()


def test_malicious_pickle_is_refused_with_its_cause(tmp_path):
    marker = tmp_path / "ran"

    class Runs:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"weight_ih_l0": Runs()}, path)
    with pytest.raises(unirnn.FileFormatError) as info:
        read(path)
    assert not marker.exists()
    message = str(info.value)
    assert "GLOBAL posix.system" in message and "weights_only=False" not in message


def test_storage_shorter_than_its_tensor(tmp_path):
    """A tampered archive whose tensor data was cut: an error, never garbage values."""
    import io
    import zipfile

    path = tmp_path / "cut.pt"
    torch.save(unirnn.to_torch(SPEC, unirnn.init_weights(SPEC)), path)
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    data = next(name for name in members if "/data/" in name)
    members[data] = members[data][:4]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(unirnn.FileFormatError, match="not a readable torch file"):
        read(path)


@pytest.mark.parametrize("state, match", [
    ({"weight_ih_l0": torch.zeros(0, 3), "weight_hh_l0": torch.zeros(0, 0)}, "non-empty"),
    ({"weight_ih_l0": torch.zeros(12, 3), "weight_hh_l0": torch.zeros(12)}, "2-D"),
    ({"weight_ih_lX": torch.zeros(12, 3), "weight_hh_lX": torch.zeros(12, 4)},
     "expected a state dict of nn.RNN/LSTM/GRU"),
    ({"weight_ih_l0": torch.zeros(5, 3), "weight_hh_l0": torch.zeros(5, 4)}, "gate rows"),
])
def test_state_dicts_that_are_not_a_cell(state, match):
    with pytest.raises(unirnn.WeightsError, match=match):
        unirnn.from_torch(state)
