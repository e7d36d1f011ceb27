"""A bidirectional GRU classifier whose GRU has a GELU update gate, trained in PyTorch and
served from Keras and Flax with equal logits.

The classic PyTorch sequence classifier runs ``nn.GRU(..., batch_first=True,
bidirectional=True)`` over a padded, packed batch and classifies the concatenated final
states of the two directions, ``h_n[-2]`` (forward) and ``h_n[-1]`` (backward). Here the
GRU computes ``z = gelu(W_xz x + W_hz h + b_z)`` instead of a sigmoid, which no
framework's own GRU can express; ``unirnn.build(unirnn.preset("gelu_update_gru", ...),
"torch", batch_first=True)`` drops in where ``nn.GRU`` was (same constructor attributes,
``forward(input, hx)``, ``PackedSequence`` in and out, the same ``h_n`` rows). This script:

1. generates a task that needs both directions and the lengths: sequences of 3 to 24
   symbols ``0..7`` (one-hot), padded; the label says whether the first and the last
   valid symbol add up to 8 or more. The forward direction's final state has just read
   the last valid symbol, the backward direction's has just read the first one, and a
   model that ran over the padding would have the last symbol fade out;
2. trains the classifier twice from the same seed, once with ``nn.GRU`` and once with
   unirnn's GELU-update GRU, and prints their test accuracy;
3. ports the trained unirnn GRU to Keras (unirnn's layer, with a Keras mask for the
   lengths) and Flax (unirnn's linen module, with ``seq_lengths``), moves the
   ``nn.Linear`` head by hand into a ``Dense``, and asserts that the logits on a test
   batch equal torch's (float32: within 1e-5 of the logits' scale, max(1, max |logit|)).

Run it (from the repository root):

    python examples/bigru_classifier.py           # the full run (under a minute, 2 CPU cores)
    python examples/bigru_classifier.py --quick   # a short run that does every step
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from _common import (
    flax_dense_params,
    keras_dense,
    linear_to_numpy,
    quiet_frameworks,
    seed_everything,
    stopwatch,
)
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import unirnn

# -- the task -------------------------------------------------------------------------------

NUM_SYMBOLS = 8
MIN_LEN, MAX_LEN = 3, 24


def make_dataset(size: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x (size, MAX_LEN, NUM_SYMBOLS)`` one-hot float32, zero past each length;
    ``lengths (size,)`` int64; ``labels (size,)``: 1 when the first and the last valid
    symbol add up to ``NUM_SYMBOLS`` or more (uniform symbols: 28 of the 64 pairs)."""
    lengths = rng.integers(MIN_LEN, MAX_LEN + 1, size=size)
    symbols = rng.integers(0, NUM_SYMBOLS, size=(size, MAX_LEN))
    last = symbols[np.arange(size), lengths - 1]
    labels = (symbols[:, 0] + last >= NUM_SYMBOLS).astype(np.int64)
    x = np.eye(NUM_SYMBOLS, dtype=np.float32)[symbols]
    x[np.arange(MAX_LEN)[None, :] >= lengths[:, None]] = 0.0  # padding
    return x, lengths.astype(np.int64), labels


# -- the classifier: any GRU module shaped like nn.GRU(batch_first=True, bidirectional=True)

class BiGRUClassifier(nn.Module):
    """The tutorials' classifier: pack the padded batch, run the bidirectional GRU, and
    classify ``cat(h_n[-2], h_n[-1])``, the last layer's forward and backward final states."""

    def __init__(self, rnn: nn.Module, num_classes: int = 2) -> None:
        super().__init__()
        self.rnn = rnn
        self.fc = nn.Linear(2 * rnn.hidden_size, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(packed)  # h_n (num_layers * 2, N, H)
        return self.fc(torch.cat([h_n[-2], h_n[-1]], dim=1))


def gelu_update_gru(input_size: int, hidden_size: int) -> nn.Module:
    """unirnn's torch module for a GRU with a GELU update gate, as nn.GRU is called."""
    spec = unirnn.preset("gelu_update_gru", input_size, hidden_size, bidirectional=True)
    return unirnn.build(spec, "torch", batch_first=True)


def train(model: BiGRUClassifier, data: tuple[np.ndarray, np.ndarray, np.ndarray],
          args: argparse.Namespace) -> list[float]:
    """Adam on the cross-entropy, shuffled minibatches; the time of each step."""
    x, lengths, labels = (torch.from_numpy(a) for a in data)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    times: list[float] = []
    model.train()
    for _ in range(args.epochs):
        for batch in torch.randperm(len(x), generator=generator).split(args.batch_size):
            with stopwatch(times):
                loss = F.cross_entropy(model(x[batch], lengths[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            if not torch.isfinite(loss):
                raise RuntimeError("the training loss is not finite; try a smaller --lr")
    return times


def accuracy(model: BiGRUClassifier, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    x, lengths, labels = (torch.from_numpy(a) for a in data)
    model.eval()
    with torch.no_grad():
        predicted = model(x, lengths).argmax(dim=1)
    return float((predicted == labels).float().mean())


# -- the trained model in Keras and Flax ------------------------------------------------------

def keras_logits(model: BiGRUClassifier, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """unirnn's Keras layer (``return_sequences=False``: the final ``h`` of each direction,
    forward then backward, as ``cat(h_n[-2], h_n[-1])``), a Keras mask for the lengths."""
    import keras

    rnn = unirnn.port(model.rnn, to="keras", return_sequences=False)
    head = keras_dense(*linear_to_numpy(model.fc))
    mask = np.arange(x.shape[1])[None, :] < lengths[:, None]
    inputs = keras.Input((x.shape[1], x.shape[2]))
    mask_input = keras.Input((x.shape[1],), dtype="bool")
    classifier = keras.Model([inputs, mask_input], head(rnn(inputs, mask=mask_input)))
    return keras.ops.convert_to_numpy(classifier([x, mask]))


def flax_logits(model: BiGRUClassifier, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """unirnn's linen module inside a small Flax classifier: the final carry is a tuple of
    one ``h`` per layer and direction in torch's row order, so its last two are
    ``h_n[-2]`` and ``h_n[-1]``."""
    import flax.linen as fnn
    import jax

    class FlaxBiGRUClassifier(fnn.Module):
        rnn: fnn.Module
        num_classes: int = 2

        @fnn.compact
        def __call__(self, x: jax.Array, seq_lengths: jax.Array) -> jax.Array:
            carry, _ = self.rnn(x, seq_lengths=seq_lengths, return_carry=True)
            features = jax.numpy.concatenate([carry[-2], carry[-1]], axis=1)
            return fnn.Dense(self.num_classes, name="fc")(features)

    rnn = unirnn.port(model.rnn, to="flax")  # batch-major, like batch_first=True
    rnn_params = rnn.init(jax.random.key(0), x)["params"]  # holds the torch weights
    classifier = FlaxBiGRUClassifier(rnn)
    variables = {"params": {"rnn": rnn_params, "fc": flax_dense_params(*linear_to_numpy(model.fc))}}
    return np.asarray(jax.jit(classifier.apply)(variables, x, lengths))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run that does every step")
    parser.add_argument("--epochs", type=int, default=None, help="default 6 (quick: 3)")
    parser.add_argument("--train-size", type=int, default=None, help="default 4000 (quick: 1500)")
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=None, help="default 64 (quick: 32)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="Adam's learning rate (at 1e-2 the GELU-update GRU diverges)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (3 if args.quick else 6)
    args.train_size = args.train_size or (1500 if args.quick else 4000)
    args.hidden = args.hidden or (32 if args.quick else 64)
    quiet_frameworks()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    train_data, test_data = make_dataset(args.train_size, rng), make_dataset(args.test_size, rng)
    print(f"task: do the first and the last valid symbol add up to {NUM_SYMBOLS} or more? "
          f"symbols 0-{NUM_SYMBOLS - 1}, lengths {MIN_LEN}-{MAX_LEN}, {args.train_size} "
          f"training and {args.test_size} test sequences (majority class "
          f"{max(train_data[2].mean(), 1 - train_data[2].mean()):.1%})")

    results = {}
    for name, make_rnn in (("nn.GRU", lambda: nn.GRU(NUM_SYMBOLS, args.hidden, batch_first=True,
                                                     bidirectional=True)),
                           ("unirnn GELU-update GRU",
                            lambda: gelu_update_gru(NUM_SYMBOLS, args.hidden))):
        seed_everything(args.seed)
        model = BiGRUClassifier(make_rnn())
        times = train(model, train_data, args)
        results[name] = model
        kernel = getattr(model.rnn, "kernel", "nn.GRU")
        print(f"{name:24s} test accuracy {accuracy(model, test_data):6.1%}   "
              f"({args.epochs} epochs, median step {1e3 * statistics.median(times):.1f} ms, "
              f"kernel {kernel})", flush=True)

    model = results["unirnn GELU-update GRU"].eval()
    x, lengths, _ = (a[:64] for a in test_data)
    with torch.no_grad():
        want = model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    scale = max(1.0, float(np.abs(want).max()))
    print(f"\nlogits on a test batch of {len(x)} sequences, lengths {lengths.min()}-"
          f"{lengths.max()}, largest |logit| {float(np.abs(want).max()):.2f}:")
    for framework, logits in (("keras", keras_logits(model, x, lengths)),
                              ("flax", flax_logits(model, x, lengths))):
        diff = float(np.abs(logits - want).max())
        print(f"  {framework:5s} max |logits - torch logits| = {diff:.2e}")
        if not (np.isfinite(want).all() and np.isfinite(logits).all()):
            raise AssertionError(f"non-finite logits (torch or {framework})")
        np.testing.assert_allclose(logits, want, atol=1e-5 * scale, rtol=0,
                                   err_msg=f"{framework} logits differ from torch's")
    print(f"keras and flax logits equal torch's (atol 1e-5 x {scale:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
