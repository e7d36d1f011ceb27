"""A ReLU LSTM trained in PyTorch, served by Keras' own LSTM layer, and brought back to torch.

Keras has ``LSTM(64, activation="relu", recurrent_activation="sigmoid")``; PyTorch's
``nn.LSTM`` has no activation argument, so a ReLU LSTM in torch is usually a hand-written
``nn.LSTMCell`` loop. ``unirnn.lstm(I, 64, activation="relu")`` (the ``"relu_lstm"`` preset)
describes that cell once; this script:

1. trains it in torch (CUDA when available, else CPU; unirnn's custom loop, since no torch
   kernel computes it) with a linear head on a generated regression task: at every step,
   predict the sum of the first input channel over the last 5 steps plus half the second
   channel, scaled to unit variance (``y_t = (sum_{s=t-4..t} x_s[0] + x_t[1] / 2) / 2.29``);
2. exports the recurrent layer with ``unirnn.to_keras(*unirnn.from_torch(rnn))``, which gives
   Keras' **own** ``keras.layers.LSTM(64, activation="relu", recurrent_activation="sigmoid")``
   holding the trained weights, moves the head into a ``keras.layers.Dense`` by hand, and
   asserts that the Keras model's predictions equal the torch model's;
3. reads the Keras layer back (``unirnn.from_keras``) into a fresh torch module and asserts
   the spec and weights came back (kernels bit for bit; Keras keeps one bias, so torch's two
   biases come back summed in ``b_x``) and that its predictions equal the original's.

Run it (from the repository root)::

    python examples/relu_lstm.py            # 400 training steps: well under a minute on CPU
    python examples/relu_lstm.py --quick    # 40 steps, every check

Every check raises (exit status 1) on a mismatch. Output on the development machine is in
docs/examples.md ("ReLU LSTM").
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before Keras is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import unirnn  # noqa: E402

INPUTS, HIDDEN, WINDOW = 3, 64, 5


def make_batch(rng: np.random.Generator, batch: int, steps: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(N, T, 3)`` and targets ``(N, T, 1)``, float32."""
    x = rng.standard_normal((batch, steps, INPUTS)).astype(np.float32)
    cumulative = np.cumsum(x[..., 0], axis=1)
    window = cumulative - np.pad(cumulative, ((0, 0), (WINDOW, 0)))[:, :steps]
    y = (window + 0.5 * x[..., 1]) / np.sqrt(WINDOW + 0.25)
    return x, y[..., None].astype(np.float32)


class Regressor(nn.Module):
    """unirnn's ReLU LSTM (batch-first, like the Keras layer it becomes) and a linear head."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| over the output scale max(1, max |want|)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))


def expect(name: str, error: float, tolerance: float) -> None:
    bound = f"tolerance {tolerance:.0e}" if tolerance else "exact"
    print(f"  {name:52s} {error:.1e}  ({bound})")
    if not error <= tolerance:
        raise AssertionError(f"{name}: {error:.2e} exceeds {tolerance:.0e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=30, help="sequence length")
    parser.add_argument("--quick", action="store_true", help="40 training steps, length 20")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.length = 40, 20

    # -- 1. train in torch ---------------------------------------------------------------
    spec = unirnn.lstm(INPUTS, HIDDEN, activation="relu", recurrent_activation="sigmoid")
    assert spec == unirnn.preset("relu_lstm", INPUTS, HIDDEN)
    torch.manual_seed(0)
    rnn = unirnn.build(spec, backend="torch", batch_first=True, dtype=torch.float32,
                       device=args.device)
    model = Regressor(rnn).to(args.device)
    print(f"spec: {spec.family}, activations {dict(spec.activations)}")
    print(f"torch module: {type(rnn).__name__} on {args.device}, kernel {rnn.kernel!r} "
          "(no torch kernel computes a ReLU LSTM)")
    rng = np.random.default_rng(0)
    x_test, y_test = make_batch(rng, 256, args.length)
    xt_test = torch.from_numpy(x_test).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    baseline = float(np.mean(y_test ** 2))  # the loss of predicting 0
    print(f"training {args.steps} steps, batch {args.batch}, T={args.length}; "
          f"test MSE of predicting 0: {baseline:.3f}")
    started = time.perf_counter()
    first = last = None
    for step in range(1, args.steps + 1):
        x, y = (torch.from_numpy(a).to(args.device) for a in make_batch(rng, args.batch,
                                                                        args.length))
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step == 1 or step % max(1, args.steps // 8) == 0 or step == args.steps:
            with torch.no_grad():
                test = float(nn.functional.mse_loss(model(xt_test),
                                                    torch.from_numpy(y_test).to(args.device)))
            first = test if first is None else first
            last = test
            print(f"  step {step:4d}  train MSE {loss.item():.4f}  test MSE {test:.4f}")
    print(f"trained in {time.perf_counter() - started:.1f} s")
    if not last < 0.5 * first:
        raise AssertionError(f"the test MSE did not halve: {first:.4f} -> {last:.4f}")
    model.eval()
    with torch.no_grad():
        want = model(xt_test).cpu().numpy()
        want_rnn = rnn(xt_test)[0].cpu().numpy()

    # -- 2. export to Keras' own LSTM ----------------------------------------------------
    import keras

    trained_spec, trained = unirnn.from_torch(rnn)  # the module carries its spec
    assert trained_spec == spec
    keras_lstm = unirnn.to_keras(trained_spec, trained)  # return_sequences=True
    config = keras_lstm.get_config()
    assert type(keras_lstm) is keras.layers.LSTM, type(keras_lstm)
    assert (config["units"], config["activation"], config["recurrent_activation"]) == (
        HIDDEN, "relu", "sigmoid"), config
    print(f"\nKeras ({keras.backend.backend()}): keras.layers.LSTM(units={config['units']}, "
          f"activation={config['activation']!r}, "
          f"recurrent_activation={config['recurrent_activation']!r}) holds the trained weights")
    weight, bias = (t.detach().cpu().numpy().astype(np.float32)
                    for t in (model.head.weight, model.head.bias))
    dense = keras.layers.Dense(1)
    dense.build((None, None, HIDDEN))
    dense.set_weights([weight.T, bias])  # Dense: x @ kernel + bias; nn.Linear: x @ W.T + b
    keras_model = keras.Sequential([keras.Input((None, INPUTS)), keras_lstm, dense])
    got_rnn = keras.ops.convert_to_numpy(keras_lstm(x_test))
    got = keras.ops.convert_to_numpy(keras_model(x_test))
    print("max |Keras - torch| / output scale:")
    expect("Keras LSTM outputs vs torch ReLU LSTM outputs", relative_error(got_rnn, want_rnn),
           1e-5)
    expect("Keras model predictions vs torch model predictions", relative_error(got, want),
           1e-5)

    # -- 3. back to torch ------------------------------------------------------------------
    back_spec, back = unirnn.from_keras(keras_lstm)
    assert back_spec == spec, back_spec
    print("\nback in torch (unirnn.from_keras): the same spec; weights:")
    for name in ("w_x", "w_h"):
        key = f"layer0.forward.{name}"
        expect(f"{key} (bit for bit)",
               float(np.abs(np.asarray(back[key]) - np.asarray(trained[key])).max()), 0.0)
    folded = np.asarray(trained["layer0.forward.b_x"]) + np.asarray(trained["layer0.forward.b_h"])
    expect("b_x = torch's b_x + b_h (Keras keeps one bias)",
           float(np.abs(np.asarray(back["layer0.forward.b_x"]) - folded).max()), 1e-6)
    expect("b_h = 0", float(np.abs(np.asarray(back["layer0.forward.b_h"])).max()), 0.0)
    rnn_back = unirnn.build(back_spec, backend="torch", weights=back, batch_first=True,
                            dtype=torch.float32, device=args.device)
    model_back = Regressor(rnn_back).to(args.device)
    model_back.head.load_state_dict(model.head.state_dict())
    model_back.eval()
    with torch.no_grad():
        again = model_back(xt_test).cpu().numpy()
    print("max |round trip - original| / output scale:")
    expect("torch (from Keras) predictions vs original torch", relative_error(again, want),
           1e-5)
    expect("torch (from Keras) predictions vs Keras", relative_error(again, got), 1e-5)
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
