"""unirnn's modules on the frameworks' own distributed engines, on CPU (docs/scaling.md).

Each engine runs in a fresh process (tests/cross/distributed_workers.py), because the
environment that gives jax two host devices (``XLA_FLAGS``), Keras' backend and float32
jax must be set before the frameworks are imported:

- torch: ``DistributedDataParallel`` and FSDP2 (``fully_shard``), 2 processes on gloo,
  around a custom cell (a GELU-update GRU, 2 layers, bidirectional: unirnn's loop with
  its custom autograd functions and oneDNN-packed GEMMs), a standard LSTM on torch's
  fused kernel and a linear head, with ragged lengths;
- jax/Flax: linen and nnx models with a custom cell under ``jax.jit``, the batch sharded
  over a 2-device mesh, parameters replicated;
- Keras 3: ``keras.distribution.DataParallel`` on the jax backend, 2 devices, one
  ``train_on_batch`` of a model holding unirnn's layer on its custom cell.

Each distributed step is judged against the same step on one device and the full batch:
loss, every gradient and every parameter after one SGD step, in float32, to 1e-6 (a
gradient relative to its own scale). Every gradient is checked to be non-zero and every
parameter to have moved, so an engine that dropped a tensor would fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import framework

import unirnn

WORKERS = Path(__file__).with_name("distributed_workers.py")
ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-6
"""float32: a distributed step differs from the one-device step only in the order of the
batch reductions (measured: gradients within 4e-7 of their scale, parameters 3e-8)."""
TWO_HOST_DEVICES = "--xla_force_host_platform_device_count=2"


def run_worker(case: str, out: Path, **env: str) -> Path:
    """Run one case of the workers in a fresh process with ``env``; its output folder."""
    environment = {
        **os.environ,
        "JAX_ENABLE_X64": "0",  # tests/cross/conftest.py switches it on for this process
        "OMP_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        **env,
    }
    result = subprocess.run([sys.executable, str(WORKERS), case, str(out)], cwd=ROOT,
                            env=environment, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, f"{case} worker failed:\n{result.stderr[-4000:]}"
    return out


def xla_flags() -> str:
    return f"{os.environ.get('XLA_FLAGS', '')} {TWO_HOST_DEVICES}".strip()


def load(folder: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(folder / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}


def assert_same_step(got: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str
                     ) -> int:
    """``got`` (a distributed step) equals ``want`` (one device): gradients to ``TOL`` of
    their scale, parameters and loss to ``TOL``; returns how many tensors were compared."""
    assert sorted(got) == sorted(want), f"{what}: different tensors"
    compared = 0
    for key, expected in want.items():
        error = float(np.abs(got[key].astype(np.float64) - expected).max())
        if key.startswith("grad"):
            scale = float(np.abs(expected).max())
            assert scale > 1e-5, f"{what}: {key} has no gradient (max |g| = {scale})"
            assert error <= TOL * scale, f"{what}: {key} off by {error} (scale {scale})"
        else:
            assert error <= TOL * max(1.0, float(np.abs(expected).max())), (
                f"{what}: {key} off by {error}")
        compared += 1
    return compared


def assert_moved(after: dict[str, np.ndarray], before: dict[str, np.ndarray]) -> None:
    """Every parameter changed in the step (a parameter left out of the step would not)."""
    for key, value in before.items():
        assert float(np.abs(after[key] - value).max()) > 1e-5, f"{key} did not move"


# -- torch --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_runs(tmp_path_factory):
    framework("torch")
    return run_worker("torch", tmp_path_factory.mktemp("torch"))


def _params(step: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in step.items() if k.startswith("param.")}


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_torch_engine_step_equals_one_process_step(torch_runs, engine):
    """DDP and FSDP2 on 2 gloo processes, each with half the batch: after one SGD step every
    rank's gradients and parameters (FSDP2: gathered with ``full_tensor()``) are those of
    one process stepping on the full batch, and the mean of the ranks' losses is its loss.
    The custom GRU runs unirnn's loop, the LSTM torch's fused kernel; FSDP2 really shards
    (each rank holds about half the elements, every recurrent tensor a shard of it), and
    the trained GRU comes out through ``get_model_state_dict(full_state_dict=True)`` and
    ``unirnn.from_torch(..., spec=)`` as the gathered parameters."""
    reference = load(torch_runs, "reference")
    init = _params(load(torch_runs, "init"))
    assert_moved(_params(reference), init)
    ranks = [load(torch_runs, f"{engine}_rank{rank}") for rank in (0, 1)]
    losses = [float(rank.pop("loss")) for rank in ranks]
    want_loss = float(reference.pop("loss"))
    assert abs(losses[0] - losses[1]) > 1e-3, "the ranks saw the same data"
    assert abs(np.mean(losses) - want_loss) <= TOL * max(1.0, want_loss), (losses, want_loss)
    for rank, step in enumerate(ranks):
        assert assert_same_step(step, reference, f"{engine} rank {rank}") == 44
    meta = json.loads((torch_runs / "meta_rank0.json").read_text())
    assert meta["kernels"] == ["unirnn.torch-loop", "torch._VF.lstm"]
    if engine == "fsdp":
        sharded = meta["fsdp_sharded"]
        assert all(sharded[name] for name in sharded if not name.startswith("head.")), sharded
        assert meta["fsdp_local_numel"] < 0.55 * meta["numel"], meta
        assert meta["fsdp_from_torch_sharded"].startswith(
            "WeightsError: from_torch: parameter 'weight_ih_l0': expected a plain tensor; "
            "received a DTensor"), meta["fsdp_from_torch_sharded"]
        # the trained GRU leaves FSDP2 through its full state dict, as unirnn weights
        ported = load(torch_runs, "fsdp_ported")
        assert len(ported) == 16
        for key, value in ported.items():
            np.testing.assert_array_equal(value, ranks[0][key], err_msg=key)


def test_torch_dataparallel_replica_and_flatten_parameters():
    """``nn.DataParallel`` (on GPUs) runs replicas whose parameters are plain tensors
    computed from the originals (``nn.parallel.replicate``: ``_replicate_for_data_parallel``
    then ``setattr``). unirnn's module reads its parameters at every call, on the custom
    path and on torch's fused kernel, so a replica computes with its own tensors and the
    gradients reach the originals. ``flatten_parameters()`` (which DataParallel code calls)
    leaves the parameters where they are on CPU, on both paths."""
    torch = framework("torch")
    specs = [unirnn.preset("gelu_update_gru", 3, 4, bidirectional=True), unirnn.lstm(3, 4)]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((5, 2, 3)))
    for spec in specs:
        weights = unirnn.init_weights(spec, seed=1)
        model = unirnn.build(spec, backend="torch", weights=weights, dtype="float64")
        pointers = {name: p.data_ptr() for name, p in model.named_parameters()}
        model.flatten_parameters()
        assert {name: p.data_ptr() for name, p in model.named_parameters()} == pointers

        replica = model._replicate_for_data_parallel()
        for name, param in model.named_parameters():
            setattr(replica, name, 2.0 * param)  # what replicate() sets: non-leaf copies
        replica.flatten_parameters()
        doubled = unirnn.Weights({k: 2.0 * v for k, v in weights.items()})
        twin = unirnn.build(spec, backend="torch", weights=doubled, dtype="float64")
        y, _ = replica(x)
        y_twin, _ = twin(x)
        with torch.no_grad():
            assert float((y - y_twin).abs().max()) <= 1e-12, spec
            assert float((y - model(x)[0]).abs().max()) > 1e-3, "the replica used the originals"
        y.square().sum().backward()
        y_twin.square().sum().backward()
        for name, param in model.named_parameters():
            want = 2.0 * getattr(twin, name).grad  # d/dw of f(2w) = 2 f'(2w)
            assert param.grad is not None, name
            assert float((param.grad - want).abs().max()) <= 1e-10 * max(
                1.0, float(want.abs().max())), (spec, name)


# -- jax / Flax ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flax_runs(tmp_path_factory):
    framework("jax")
    framework("flax")
    return run_worker("flax", tmp_path_factory.mktemp("flax"), XLA_FLAGS=xla_flags())


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_flax_sharded_batch_step_equals_one_device(flax_runs, api):
    """A model holding unirnn's linen ``UniRNN`` (GELU-update GRU, 2 layers, bidirectional)
    or nnx ``UniRNNNNX`` (ReLU LSTM with peepholes, bidirectional) and a Dense head, with
    ragged ``seq_lengths``: under ``jax.jit`` with the batch sharded over 2 devices
    (parameters replicated), loss, gradients and one SGD step's parameters equal the
    single-device step. The computation really is split: each device holds half the
    batch, the outputs stay batch-sharded and the compiled step all-reduces gradients."""
    single, sharded = load(flax_runs, f"{api}_single"), load(flax_runs, f"{api}_sharded")
    want_loss = float(single.pop("loss"))
    assert abs(float(sharded.pop("loss")) - want_loss) <= TOL * max(1.0, want_loss)
    assert assert_same_step(sharded, single, api) == {"linen": 36, "nnx": 24}[api]
    assert_moved({k: v for k, v in single.items() if k.startswith("param")},
                 load(flax_runs, f"{api}_init"))
    meta = json.loads((flax_runs / "meta.json").read_text())
    assert meta[api] == {"x_shard_shape": [4, 6, 5], "x_devices": 2, "pred_shard_shape": [4, 6],
                         "all_reduce": True, "grad_devices": 2}, meta[api]
    assert meta[f"{api}_kernel"].startswith("unirnn-scan")


# -- Keras 3 on jax -----------------------------------------------------------------------


def test_distribution_data_parallel_step_equals_one_device(tmp_path):
    """Keras 3's ``keras.distribution.DataParallel`` on the jax backend over 2 devices: a
    model with unirnn's Keras layer on its custom cell (GELU-update GRU, bidirectional,
    behind a ``Masking`` layer) and a Dense head, built in the distribution's scope with
    the same initial weights, takes one ``train_on_batch`` step to the weights (and loss)
    of the same model trained without a distribution. Its variables are replicated over
    both devices and the data layout shards the batch axis.

    (Named without "keras": the cross session reruns ``-k keras`` per Keras backend, and
    this test always runs Keras on jax in its own process.)"""
    framework("keras")
    framework("jax")
    out = run_worker("keras", tmp_path / "keras", KERAS_BACKEND="jax", XLA_FLAGS=xla_flags())
    single, distributed = load(out, "keras_single"), load(out, "keras_distributed")
    want_loss = float(single.pop("loss"))
    assert abs(float(distributed.pop("loss")) - want_loss) <= TOL * max(1.0, want_loss)
    assert assert_same_step(distributed, single, "keras") == 10
    assert_moved(single, load(out, "keras_init"))
    meta = json.loads((out / "meta.json").read_text())
    assert meta == {"kernel": "unirnn.keras-cell", "single_kernel": "unirnn.keras-cell",
                    "variable_devices": 2, "single_variable_devices": 1,
                    "data_layout": "('batch', None, None)", "mesh_shape": [2]}, meta
