"""``unirnn demo``: the library's main job, end to end, on whatever is installed.

1. Describe two cells as data: the ReLU LSTM (Keras' ``LSTM(activation='relu')``) and a
   GRU with a GELU update gate (expressible in no framework's own layers).
2. Train the ReLU LSTM briefly in PyTorch on a task generated here.
3. Port the trained torch module itself to Keras and Flax with ``unirnn.port``, run each
   framework's module natively, and show the outputs agree; save and reload the portable
   file.
4. Print the check table: every installed backend against the float64 numpy backend.

Frameworks that are not installed are skipped with a note; numpy alone shows 1, 3 (file)
and 4.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._file import load, save_file
from .._spec import Spec, gru, lstm
from .._weights import Weights, init_weights
from ..backends import build, explain, framework_installed
from ._console import StatusLine
from .check import format_rows, make_case, run_check

__all__ = ["run_demo"]

STEPS = 120


def _installed(name: str) -> bool:
    return framework_installed(name)


def _task(rng: np.random.Generator, batch: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """A damped running sum: y_t = 0.7 y_{t-1} + x_t[0] - x_t[1]; needs memory to predict."""
    x = rng.standard_normal((batch, steps, 4)).astype(np.float32)
    y = np.zeros((batch, steps, 1), np.float32)
    acc = np.zeros(batch, np.float32)
    for t in range(steps):
        acc = 0.7 * acc + x[:, t, 0] - x[:, t, 1]
        y[:, t, 0] = acc
    return x, y


def _train_torch(spec: Spec, seed: int = 0) -> tuple[Weights, float, float, Any]:
    import torch

    torch.manual_seed(seed)
    rnn = build(spec, "torch", init_weights(spec, seed=seed), batch_first=True)
    head = torch.nn.Linear(spec.hidden_size, 1)
    optimiser = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=0.01)
    rng = np.random.default_rng(seed)

    def loss_on(x: np.ndarray, y: np.ndarray) -> Any:
        out, _ = rnn(torch.from_numpy(x))
        return torch.nn.functional.mse_loss(head(out), torch.from_numpy(y))

    x_test, y_test = _task(rng, 64, 20)
    with torch.no_grad():
        before = float(loss_on(x_test, y_test))
    for _ in range(STEPS):
        x, y = _task(rng, 32, 20)
        optimiser.zero_grad()
        loss_on(x, y).backward()
        optimiser.step()
    with torch.no_grad():
        after = float(loss_on(x_test, y_test))
    from ..porting.torch import from_torch

    _, weights = from_torch(rnn)
    return weights, before, after, rnn


def run_demo() -> int:
    with StatusLine() as status:  # what runs now, on stderr when it is a terminal
        return _demo(status)


def _demo(status: StatusLine) -> int:
    start = time.perf_counter()
    relu_lstm = lstm(4, 16, activation="relu", recurrent_activation="sigmoid")
    gelu_gru = gru(4, 16, activations={"z": "gelu"})
    print("1. Two cells, described once:")
    print(f"   ReLU LSTM  (Keras LSTM(16, activation='relu')): {dict(relu_lstm.activations)}")
    print(f"   GELU-update GRU (no framework's own GRU has it): {dict(gelu_gru.activations)}")

    rng = np.random.default_rng(1)
    x_probe, _ = _task(rng, 3, 12)
    weights = init_weights(relu_lstm, seed=0)
    torch_rnn = None
    if _installed("torch"):
        status.show(f"training the ReLU LSTM in PyTorch ({STEPS} steps)...")
        weights, before, after, torch_rnn = _train_torch(relu_lstm)
        status.clear()
        print(f"\n2. Trained the ReLU LSTM in PyTorch for {STEPS} steps on a damped running "
              f"sum: test MSE {before:.3f} -> {after:.3f}")
        print(f"   {explain(torch_rnn)}")
    else:
        print("\n2. PyTorch is not installed (pip install 'unirnn[torch]'): skipping training.")

    reference, _ = build(relu_lstm, "numpy", weights, dtype=np.float64)(x_probe)
    source: Any = (relu_lstm, weights)
    if torch_rnn is not None:
        source = torch_rnn
        print("\n3. The trained torch module, ported with unirnn.port(torch_module, to=...) to "
              "every installed framework,\n   each run natively on the same input:")
    else:
        print("\n3. Ported to every installed framework, each run natively on the same input:")
    outputs = {"numpy float64": reference}
    status.show("porting to every installed framework...")
    outputs.update(_run_ported(source, x_probe))
    status.clear()
    width = max(len(name) for name in outputs)
    for name, out in outputs.items():
        diff = float(np.abs(np.asarray(out, np.float64) - reference).max())
        print(f"   {name:<{width}}  out[0, -1, :3] = {np.round(out[0, -1, :3], 5)}  "
              f"max |diff| vs numpy float64 = {diff:.1e}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relu_lstm.safetensors"
        save_file(path, relu_lstm, weights)
        spec2, weights2 = load(path)
        again, _ = build(spec2, "numpy", weights2, dtype=np.float64)(x_probe)
        print(f"   saved as one .safetensors file and loaded back: spec equal "
              f"{spec2 == relu_lstm}, max |diff| {np.abs(again - reference).max():.1e}")

    print("\n4. unirnn check on both cells (outputs and final state; `unirnn check` adds "
          "gradients and every Keras backend):")
    _enable_jax_x64()
    cases = [make_case("trained ReLU LSTM", relu_lstm, weights),
             make_case("GELU-update GRU", gelu_gru, init_weights(gelu_gru, seed=2))]
    rows = run_check(cases, gradients=False, keras=False, keras_in_process=True,
                     progress=status.progress)
    status.clear()
    print(format_rows(rows))
    bad = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} rows within tolerance; "
          f"demo took {time.perf_counter() - start:.0f} s")
    return 1 if bad else 0


def _enable_jax_x64() -> None:
    if _installed("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)


def _run_ported(source: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """``source`` (the trained torch module, or a ``(spec, weights)`` pair) ported with
    :func:`unirnn.port` to each installed framework and run there natively on ``x``."""
    from ..porting.port import port

    results: dict[str, np.ndarray] = {}
    if _installed("torch"):
        import torch

        if isinstance(source, torch.nn.Module):
            module, name = source, "torch, the trained module itself"
        else:
            module, name = port(source, to="torch", batch_first=True), "torch"
        with torch.no_grad():
            results[f"{name} ({module.kernel})"] = module(torch.from_numpy(x))[0].numpy()
    if _installed("keras"):
        import keras

        layer = port(source, to="keras")
        results[f"keras/{keras.backend.backend()} ({layer.kernel})"] = np.asarray(
            keras.ops.convert_to_numpy(layer(x))
        )
    if _installed("flax"):
        import jax

        module = port(source, to="flax")
        variables = module.init(jax.random.PRNGKey(0), x)
        results["flax linen (lax.scan)"] = np.asarray(module.apply(variables, x))
    return results
