"""Workers of tests/cross/test_distributed.py: one training step on each framework's own
distributed engine, written to files that the test compares with a one-device step.

``python tests/cross/distributed_workers.py CASE OUT`` with CASE one of

- ``torch``: DistributedDataParallel and FSDP2 (``fully_shard``), 2 processes, gloo;
- ``flax``: linen and nnx under ``jax.jit`` with the batch sharded over a 2-device mesh;
- ``keras``: ``keras.distribution.DataParallel`` on the jax backend, 2 devices.

The environment (``XLA_FLAGS=--xla_force_host_platform_device_count=2``, ``KERAS_BACKEND``,
``JAX_ENABLE_X64=0``) is set by the test before this process starts, because the
frameworks read it when they are imported. Every case writes ``.npz`` files of float32
arrays (and a ``meta.json``) under OUT; the test judges them.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np

import unirnn

N, T, I, H = 8, 6, 5, 8
"""Global batch, steps, input and hidden size (each of 2 shards holds N/2 sequences)."""
LR = 0.1
WORLD = 2


def batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The global batch: inputs ``(N, T, I)``, ragged lengths ``(N,)``, targets ``(N, T)``.

    Inputs past a sequence's length are zero (Keras reads them as its mask)."""
    rng = np.random.default_rng(seed)
    lengths = np.array([6, 3, 5, 6, 2, 4, 6, 1], dtype=np.int64)
    x = rng.standard_normal((N, T, I)).astype(np.float32)
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    y = rng.standard_normal((N, T)).astype(np.float32)
    return x, lengths, y


def nonzero_weights(spec: unirnn.Spec, seed: int) -> unirnn.Weights:
    """Every canonical tensor non-zero (biases too), float32."""
    rng = np.random.default_rng(seed)
    return unirnn.Weights({name: (0.3 * rng.uniform(-1, 1, shape)).astype(np.float32)
                           for name, shape in unirnn.weight_shapes(spec).items()})


def head_weights(features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return ((0.5 * rng.uniform(-1, 1, (1, features))).astype(np.float32),
            np.array([0.1], np.float32))


def save(out: Path, name: str, arrays: dict[str, object]) -> None:
    np.savez(out / f"{name}.npz", **{k: np.asarray(v) for k, v in arrays.items()})


# -- torch: DDP and FSDP2 -----------------------------------------------------------------

GRU_SPEC = unirnn.preset("gelu_update_gru", I, H, num_layers=2, bidirectional=True)
"""A custom cell (unirnn's torch loop, its custom autograd functions, oneDNN packing)."""
LSTM_SPEC = unirnn.lstm(2 * H, H)
"""A standard cell on top of it: torch's fused ``_VF.lstm`` with its flat weights."""


def torch_net():
    """GELU-z GRU (2 layers, bidirectional, custom path) -> LSTM (native path) -> Linear."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = unirnn.build(GRU_SPEC, backend="torch", batch_first=True,
                                    weights=nonzero_weights(GRU_SPEC, 1))
            self.lstm = unirnn.build(LSTM_SPEC, backend="torch", batch_first=True,
                                     weights=nonzero_weights(LSTM_SPEC, 2))
            self.head = nn.Linear(H, 1)
            w, b = head_weights(H, 3)
            with torch.no_grad():
                self.head.weight.copy_(torch.from_numpy(w))
                self.head.bias.copy_(torch.from_numpy(b))

        def forward(self, x, lengths):
            y, h_n = self.gru(x, lengths=lengths)
            z, _ = self.lstm(y, lengths=lengths)
            return self.head(z).squeeze(-1), h_n

    return Net()


def torch_loss(pred, h_n, target):
    # every term a mean over this process's sequences: the mean over 2 equal shards of
    # it is the full batch's
    return ((pred - target) ** 2).mean() + 0.5 * (h_n ** 2).mean()


def torch_step(model, x, lengths, y, names_of):
    """One SGD step; returns (loss, grads, params after), named by ``names_of``."""
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=LR)
    pred, h_n = model(torch.from_numpy(x), torch.from_numpy(lengths))
    loss = torch_loss(pred, h_n, torch.from_numpy(y))
    loss.backward()
    grads = {name: names_of(p.grad) for name, p in model.named_parameters()}
    opt.step()
    params = {name: names_of(p.detach()) for name, p in model.named_parameters()}
    return float(loss.detach()), grads, params


def _plain(t):
    return t.detach().cpu().numpy().copy()


def _full(t):
    from torch.distributed.tensor import DTensor

    return _plain(t.full_tensor() if isinstance(t, DTensor) else t)


def _strip(name: str) -> str:
    """``module.gru.weight_ih_l0`` (DDP's prefix) -> ``gru.weight_ih_l0``."""
    return name.removeprefix("module.")


def torch_rank(rank: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x, lengths, y = batch()
        shard = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        xs, ls, ys = x[shard], lengths[shard], y[shard]
        meta: dict[str, object] = {}

        net = torch_net()
        meta["kernels"] = [net.gru.kernel, net.lstm.kernel]
        ddp = DDP(net)
        loss, grads, params = torch_step(ddp, xs, ls, ys, _plain)
        save(Path(out), f"ddp_rank{rank}",
             {"loss": loss, **{f"grad.{_strip(k)}": v for k, v in grads.items()},
              **{f"param.{_strip(k)}": v for k, v in params.items()}})

        net = torch_net()
        fully_shard(net.gru)
        fully_shard(net.lstm)
        fully_shard(net)
        sharded = {name: isinstance(p, DTensor) and tuple(p.to_local().shape) != tuple(p.shape)
                   for name, p in net.named_parameters()}
        meta["fsdp_sharded"] = sharded
        meta["fsdp_local_numel"] = sum(p.to_local().numel() for p in net.parameters())
        meta["numel"] = sum(p.numel() for p in net.parameters())
        loss, grads, params = torch_step(net, xs, ls, ys, _full)
        save(Path(out), f"fsdp_rank{rank}",
             {"loss": loss, **{f"grad.{k}": v for k, v in grads.items()},
              **{f"param.{k}": v for k, v in params.items()}})
        try:  # a sharded module is refused with unirnn's error, not read as shards
            unirnn.from_torch(net.gru)
            meta["fsdp_from_torch_sharded"] = "no error"
        except ValueError as err:
            meta["fsdp_from_torch_sharded"] = f"{type(err).__name__}: {err}"
        # the trained custom GRU out of FSDP2, as unirnn weights: gather the full state
        # dict (a collective: every rank calls it; with cpu_offload rank 0 receives it)
        full = get_model_state_dict(
            net.gru, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            # torch 2.13's gathered dict drops the ``_metadata`` that carries unirnn's spec:
            # without spec= it would read as the standard GRU (``.assumed`` says so)
            meta["fsdp_full_state_dict_assumed"] = unirnn.from_torch(full).assumed is not None
            spec, weights = unirnn.from_torch(full, spec=GRU_SPEC)
            save(Path(out), "fsdp_ported",
                 {f"param.gru.{k}": _plain(v) for k, v in unirnn.to_torch(spec, weights).items()})
        (Path(out) / f"meta_rank{rank}.json").write_text(json.dumps(meta))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_case(out: Path) -> None:
    import torch
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    x, lengths, y = batch()
    save(out, "init", {f"param.{k}": _plain(p) for k, p in torch_net().named_parameters()})
    loss, grads, params = torch_step(torch_net(), x, lengths, y, _plain)  # one process
    save(out, "reference", {"loss": loss, **{f"grad.{k}": v for k, v in grads.items()},
                            **{f"param.{k}": v for k, v in params.items()}})
    mp.spawn(torch_rank, args=(free_port(), str(out)), nprocs=WORLD, join=True)


# -- jax / Flax: the batch sharded over a 2-device mesh ---------------------------------

LINEN_SPEC = unirnn.preset("gelu_update_gru", I, H, num_layers=2, bidirectional=True)
NNX_SPEC = unirnn.lstm(I, H, activation="relu", peepholes=True, bidirectional=True)


def flax_case(out: Path) -> None:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    devices = jax.devices()
    assert len(devices) == WORLD, f"expected {WORLD} host devices, found {devices}"
    assert not jax.config.read("jax_enable_x64"), "this case is float32"
    mesh = Mesh(np.array(devices), ("batch",))
    data, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
    x, lengths, y = batch()
    lengths = lengths.astype(np.int32)

    def mse(pred, target):
        return jnp.mean((pred - target) ** 2)

    def sgd(params, grads):
        return jax.tree.map(lambda p, g: p - LR * g, params, grads)

    def flat(tree):
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}

    def compare_runs(name, step, forward, params):
        """Run ``step`` on one device and batch-sharded on the mesh; save both."""
        one = jax.device_put((params, x, lengths, y), devices[0])
        loss1, grads1, new1 = jax.jit(step)(*one)
        in_shardings = (replicated, data, data, data)
        sharded_step = jax.jit(step, in_shardings=in_shardings,
                               out_shardings=(replicated, replicated, replicated))
        args = (jax.device_put(params, replicated), *(jax.device_put(a, data)
                                                       for a in (x, lengths, y)))
        loss2, grads2, new2 = sharded_step(*args)
        hlo = sharded_step.lower(*args).compile().as_text()
        pred = jax.jit(forward, in_shardings=(replicated, data, data))(*args[:3])
        meta = {
            "x_shard_shape": list(args[1].sharding.shard_shape(args[1].shape)),
            "x_devices": len(args[1].sharding.device_set),
            "pred_shard_shape": list(pred.sharding.shard_shape(pred.shape)),
            "all_reduce": "all-reduce" in hlo,
            "grad_devices": len(jax.tree.leaves(grads2)[0].sharding.device_set),
        }
        for tag, (loss, grads, new) in {"single": (loss1, grads1, new1),
                                        "sharded": (loss2, grads2, new2)}.items():
            save(out, f"{name}_{tag}", {"loss": loss,
                                        **{f"grad{k}": v for k, v in flat(grads).items()},
                                        **{f"param{k}": v for k, v in flat(new).items()}})
        save(out, f"{name}_init", {f"param{k}": v for k, v in flat(params).items()})
        return meta

    # linen: unirnn's UniRNN inside a model with a Dense head
    class LinenNet(nn.Module):
        @nn.compact
        def __call__(self, x, lengths):
            rnn = unirnn.build(LINEN_SPEC, backend="flax",
                               weights=nonzero_weights(LINEN_SPEC, 1), name="rnn")
            carry, outputs = rnn(x, seq_lengths=lengths, return_carry=True)
            return nn.Dense(1, name="head")(outputs)[..., 0], carry

    linen_net = LinenNet()
    params = linen_net.init(jax.random.key(0), x, lengths)["params"]

    def linen_forward(params, x, lengths):
        return linen_net.apply({"params": params}, x, lengths)[0]

    def linen_step(params, x, lengths, y):
        def loss_fn(params):
            pred, carry = linen_net.apply({"params": params}, x, lengths)
            return mse(pred, y) + 0.5 * sum(jnp.mean(h ** 2) for h in carry)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        return loss, grads, sgd(params, grads)

    meta = {"linen": compare_runs("linen", linen_step, linen_forward, params),
            "linen_kernel": unirnn.build(LINEN_SPEC, backend="flax").kernel}

    # nnx: unirnn's UniRNNNNX inside an nnx.Module with an nnx.Linear head
    class NNXNet(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.rnn = unirnn.build(NNX_SPEC, backend="flax", api="nnx",
                                    weights=nonzero_weights(NNX_SPEC, 2))
            self.head = nnx.Linear(2 * H, 1, rngs=rngs)

        def __call__(self, x, lengths):
            carry, outputs = self.rnn(x, seq_lengths=lengths, return_carry=True)
            return self.head(outputs)[..., 0], carry

    graphdef, state = nnx.split(NNXNet(nnx.Rngs(0)))

    def nnx_forward(state, x, lengths):
        return nnx.merge(graphdef, state)(x, lengths)[0]

    def nnx_step(state, x, lengths, y):
        def loss_fn(state):
            pred, carry = nnx.merge(graphdef, state)(x, lengths)
            return mse(pred, y) + 0.5 * sum(jnp.mean(c ** 2) for c in jax.tree.leaves(carry))

        loss, grads = jax.value_and_grad(loss_fn)(state)
        return loss, grads, sgd(state, grads)

    meta["nnx"] = compare_runs("nnx", nnx_step, nnx_forward, state)
    meta["nnx_kernel"] = nnx.merge(graphdef, state).rnn.kernel
    (out / "meta.json").write_text(json.dumps(meta))


# -- Keras 3: keras.distribution.DataParallel on the jax backend ------------------------

KERAS_SPEC = unirnn.preset("gelu_update_gru", I, H, bidirectional=True)


def keras_case(out: Path) -> None:
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    devices = keras.distribution.list_devices()
    assert len(devices) == WORLD, f"expected {WORLD} devices, found {devices}"
    keras.utils.set_random_seed(0)
    x, _, y = batch()  # the mask comes from the zero padding

    def make_model():
        layer = unirnn.build(KERAS_SPEC, backend="keras",
                             weights=nonzero_weights(KERAS_SPEC, 1), name="rnn")
        inputs = keras.Input((T, I))
        masked = keras.layers.Masking(0.0)(inputs)  # zero-padded steps: Keras' mask
        outputs = keras.layers.Dense(1, name="head")(layer(masked))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
        return model, layer

    def weights_of(model):
        return {f"{i:02d}.{v.path}": keras.ops.convert_to_numpy(v.value)
                for i, v in enumerate(model.trainable_variables)}

    single, single_layer = make_model()
    init = single.get_weights()
    loss1 = single.train_on_batch(x, y[..., None])
    save(out, "keras_single", {"loss": loss1, **weights_of(single)})

    distribution = keras.distribution.DataParallel(devices=devices)
    with distribution.scope():
        model, layer = make_model()
        model.set_weights(init)
        save(out, "keras_init", weights_of(model))
        loss2 = model.train_on_batch(x, y[..., None])
        save(out, "keras_distributed", {"loss": loss2, **weights_of(model)})
    variable = model.trainable_variables[0].value
    meta = {
        "kernel": layer.kernel,
        "single_kernel": single_layer.kernel,
        "variable_devices": len(variable.sharding.device_set),
        "single_variable_devices": len(
            single.trainable_variables[0].value.sharding.device_set),
        "data_layout": str(distribution.get_data_layout((N, T, I)).axes),
        "mesh_shape": list(distribution.device_mesh.shape),
    }
    (out / "meta.json").write_text(json.dumps(meta))


CASES = {"torch": torch_case, "flax": flax_case, "keras": keras_case}

if __name__ == "__main__":
    case, target = sys.argv[1], Path(sys.argv[2])
    target.mkdir(parents=True, exist_ok=True)
    CASES[case](target)
