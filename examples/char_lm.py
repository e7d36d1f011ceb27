"""A character language model with d2l's GRU, three ways, then served from Flax and Keras.

"Dive into Deep Learning" (d2l) trains a character-level language model with a GRU twice:
from scratch (parameters ``W_xz, W_hz, b_z, ...`` and a Python loop over time, the reset
gate applied *before* the recurrent matmul) and concisely with ``nn.GRU``, which computes
another cell (reset *after*, cuDNN's variant). ``unirnn.preset("d2l_gru", ...)`` is the
scratch cell as a torch module that drops in where ``nn.GRU`` was. This script:

1. builds d2l's data pipeline on text that ships with Python (docstrings of standard
   library modules, lower-cased, letters and spaces: 28 tokens with ``<unk>``), with
   d2l's sequential (default) or random minibatches, batch 32, 35 steps, one-hot inputs;
2. trains three contenders from the same initial weights on the same batches with d2l's
   recipe (SGD, lr 1, gradients clipped to norm 1): unirnn's d2l GRU, ``nn.GRU`` and the
   scratch loop, each under d2l's ``RNNModel`` (one-hot in, ``nn.Linear`` head out). It
   prints the perplexity per epoch and the training speed in tokens/s, timed over the
   training steps only (forward, backward, clipping, update), interleaved batch by batch,
   the first batches excluded as warm-up;
3. ports the trained unirnn GRU to Flax and Keras (``unirnn.port``), moves the head by
   hand in numpy, generates text greedily from the same prefix in torch, Flax and Keras
   (d2l's ``predict_ch8``) and asserts the three strings are identical.

Run it (from the repository root):

    python examples/char_lm.py                 # the full run: a few minutes on 2 CPU cores
    python examples/char_lm.py --quick         # a tiny run that does every step
    python examples/char_lm.py --plot ppl.png  # also plot perplexity per epoch (matplotlib)

Figures measured on the development machine are in docs/examples.md.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import math
import random
import re
import statistics
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

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

import unirnn

# -- data: d2l's pipeline, on text every Python installation has --------------------------

CORPUS_MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy",
    "csv", "dataclasses", "decimal", "difflib", "enum", "fractions", "functools", "glob",
    "heapq", "inspect", "itertools", "json", "logging", "math", "operator", "pathlib",
    "pickle", "random", "re", "shutil", "statistics", "string", "subprocess", "tempfile",
    "textwrap", "threading", "unittest", "urllib.parse", "uuid", "zipfile",
)
"""The standard library modules whose docstrings make the corpus (d2l uses a novel)."""


def read_corpus_text(modules: Sequence[str] = CORPUS_MODULES) -> list[str]:
    """The docstrings of each module and of its public classes and functions, in a fixed
    order, as lines (d2l's ``read_time_machine`` reads the lines of a book). The text
    depends on the Python version only."""
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in modules:
            module = importlib.import_module(name)
            docs = [module.__doc__]
            for attr in sorted(vars(module)):
                obj = getattr(module, attr)
                if not attr.startswith("_") and getattr(obj, "__module__", None) == name:
                    docs.append(getattr(obj, "__doc__", None))
            for doc in docs:
                if isinstance(doc, str):
                    lines.extend(doc.splitlines())
    # d2l: keep letters only, lower-cased, everything else becomes one space
    return [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in lines]


class Vocab:
    """d2l's ``Vocab`` for characters: ``<unk>`` is 0, then tokens by falling frequency."""

    def __init__(self, tokens: Sequence[str]) -> None:
        counts = collections.Counter(tokens)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        self.idx_to_token = ["<unk>"] + [token for token, _ in ranked]
        self.token_to_idx = {token: idx for idx, token in enumerate(self.idx_to_token)}

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __getitem__(self, token: str) -> int:
        return self.token_to_idx.get(token, 0)

    def to_tokens(self, indices: Sequence[int]) -> str:
        return "".join(self.idx_to_token[i] for i in indices)


def load_corpus(max_tokens: int = -1) -> tuple[list[int], Vocab]:
    """d2l's ``load_corpus_time_machine``: character indices of the whole text, and the
    vocabulary (lines are joined with a space, as d2l's tokens of consecutive lines)."""
    tokens = list(" ".join(line for line in read_corpus_text() if line))
    vocab = Vocab(tokens)
    corpus = [vocab[token] for token in tokens]
    if max_tokens > 0:
        corpus = corpus[:max_tokens]
    return corpus, vocab


Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def seq_data_iter_random(corpus: list[int], batch_size: int, num_steps: int,
                         rng: random.Random) -> Batches:
    """d2l's random sampling: subsequences at random offsets, in random order."""
    corpus = corpus[rng.randint(0, num_steps - 1):]
    num_subseqs = (len(corpus) - 1) // num_steps
    starts = list(range(0, num_subseqs * num_steps, num_steps))
    rng.shuffle(starts)
    for i in range(0, batch_size * (num_subseqs // batch_size), batch_size):
        batch = starts[i:i + batch_size]
        X = [corpus[j:j + num_steps] for j in batch]
        Y = [corpus[j + 1:j + 1 + num_steps] for j in batch]
        yield torch.tensor(X), torch.tensor(Y)


def seq_data_iter_sequential(corpus: list[int], batch_size: int, num_steps: int,
                             rng: random.Random) -> Batches:
    """d2l's sequential partitioning: batch row k continues row k of the previous batch,
    so the state can be carried over (detached) from one batch to the next."""
    offset = rng.randint(0, num_steps)
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    Xs = torch.tensor(corpus[offset:offset + num_tokens]).reshape(batch_size, -1)
    Ys = torch.tensor(corpus[offset + 1:offset + 1 + num_tokens]).reshape(batch_size, -1)
    for i in range(0, num_steps * (Xs.shape[1] // num_steps), num_steps):
        yield Xs[:, i:i + num_steps], Ys[:, i:i + num_steps]


# -- the three contenders ----------------------------------------------------------------

class ScratchGRU(nn.Module):
    """d2l's GRU from scratch: ``get_params`` (``x @ W`` layout, normal(0, 0.01) weights,
    zero biases) and ``gru(inputs, state, params)``, a Python loop over time with one
    matmul per gate and side. d2l's output layer (``W_hq``, ``b_q``) is the shared head of
    :class:`RNNModel` here, so the three contenders differ in their recurrent layer only.
    Called like ``nn.GRU``: ``inputs (T, N, I)``, ``state (1, N, H)``."""

    def __init__(self, num_inputs: int, num_hiddens: int) -> None:
        super().__init__()

        def normal(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape) * 0.01)

        def three() -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
            return (normal(num_inputs, num_hiddens), normal(num_hiddens, num_hiddens),
                    nn.Parameter(torch.zeros(num_hiddens)))

        self.W_xz, self.W_hz, self.b_z = three()  # update gate
        self.W_xr, self.W_hr, self.b_r = three()  # reset gate
        self.W_xh, self.W_hh, self.b_h = three()  # candidate hidden state
        self.hidden_size = num_hiddens

    def forward(self, inputs: torch.Tensor, state: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        H = inputs.new_zeros(inputs.shape[1], self.hidden_size) if state is None else state[0]
        outputs = []
        for X in inputs:
            Z = torch.sigmoid((X @ self.W_xz) + (H @ self.W_hz) + self.b_z)
            R = torch.sigmoid((X @ self.W_xr) + (H @ self.W_hr) + self.b_r)
            H_tilde = torch.tanh((X @ self.W_xh) + ((R * H) @ self.W_hh) + self.b_h)
            H = Z * H + (1 - Z) * H_tilde
            outputs.append(H)
        return torch.stack(outputs), H.unsqueeze(0)


class RNNModel(nn.Module):
    """d2l's ``RNNModel``: one-hot inputs, a recurrent layer, a linear head per step."""

    def __init__(self, rnn: nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.rnn = rnn
        self.vocab_size = vocab_size
        self.linear = nn.Linear(rnn.hidden_size, vocab_size)

    def forward(self, inputs: torch.Tensor, state: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        X = F.one_hot(inputs.T.long(), self.vocab_size).to(torch.float32)  # (T, N, V)
        Y, state = self.rnn(X, state)
        return self.linear(Y.reshape(-1, Y.shape[-1])), state


def make_contenders(vocab_size: int, num_hiddens: int) -> dict[str, RNNModel]:
    """The three models, from the same initial weights: the scratch loop's ``get_params``
    draw, moved into unirnn's GRU with ``unirnn.from_gates`` (d2l's ``x @ W`` layout and
    z, r, h names) and from there into ``nn.GRU``, whose state dict has the same names."""
    scratch = ScratchGRU(vocab_size, num_hiddens)
    spec = unirnn.preset("d2l_gru", vocab_size, num_hiddens)  # reset before, like d2l
    weights = unirnn.from_gates(spec, {
        "z": {"w_x": scratch.W_xz, "w_h": scratch.W_hz, "b": scratch.b_z},
        "r": {"w_x": scratch.W_xr, "w_h": scratch.W_hr, "b": scratch.b_r},
        "h": {"w_x": scratch.W_xh, "w_h": scratch.W_hh, "b": scratch.b_h},
    }, layout="in_out")
    fast = unirnn.build(spec, "torch", weights=weights)  # time-major, like nn.GRU
    # d2l's cell has one bias per gate; torch's layout keeps two (bias_ih, bias_hh), and
    # SGD would move their sum twice as fast. Holding bias_hh at zero keeps d2l's training.
    fast.bias_hh_l0.requires_grad_(False)
    native = nn.GRU(vocab_size, num_hiddens)  # d2l's concise chapter: reset after
    native.load_state_dict(fast.state_dict())
    models = {"unirnn d2l GRU": RNNModel(fast, vocab_size),
              "nn.GRU": RNNModel(native, vocab_size),
              "scratch loop": RNNModel(scratch, vocab_size)}
    head = models["scratch loop"].linear  # d2l's W_hq ~ normal(0, 0.01), b_q = 0
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01)
        head.bias.zero_()
    for model in models.values():
        model.linear.load_state_dict(head.state_dict())
    return models


# -- training: d2l's train_ch8, the three contenders interleaved batch by batch ----------

@dataclass
class Run:
    """One contender's training: its optimizer, state, and what was measured."""

    model: RNNModel
    optimizer: torch.optim.Optimizer
    state: torch.Tensor | None = None
    loss_sum: float = 0.0
    tokens: int = 0
    perplexities: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    timed_tokens: int = 0


def train_step(run: Run, X: torch.Tensor, Y: torch.Tensor, use_random_iter: bool,
               clip: float) -> None:
    """d2l's ``train_epoch_ch8`` body for one batch."""
    if run.state is None or use_random_iter:
        run.state = None  # a fresh zero state
    else:
        run.state = run.state.detach()  # sequential: carry the state, cut the graph
    y_hat, run.state = run.model(X, run.state)
    loss = F.cross_entropy(y_hat, Y.T.reshape(-1))
    run.optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(run.model.parameters(), clip)  # d2l's grad_clipping
    run.optimizer.step()
    run.loss_sum += loss.item() * Y.numel()
    run.tokens += Y.numel()


def train(runs: dict[str, Run], corpus: list[int], args: argparse.Namespace) -> None:
    iterator = seq_data_iter_random if args.sampling == "random" else seq_data_iter_sequential
    names = list(runs)
    print(f"{'epoch':>5}  " + "  ".join(f"{name:>16}" for name in names) + "   (perplexity)")
    batch_index = 0
    for epoch in range(args.epochs):
        for run in runs.values():
            run.state, run.loss_sum, run.tokens = None, 0.0, 0
        batches = iterator(corpus, args.batch_size, args.num_steps,
                           random.Random(args.seed * 1000 + epoch))
        for X, Y in batches:
            order = names if batch_index % 2 == 0 else names[::-1]  # alternate who goes first
            for name in order:
                run = runs[name]
                if batch_index < args.warmup:
                    train_step(run, X, Y, args.sampling == "random", args.clip)
                    continue
                with stopwatch(run.step_times):
                    train_step(run, X, Y, args.sampling == "random", args.clip)
                run.timed_tokens += Y.numel()
            batch_index += 1
        for run in runs.values():
            run.perplexities.append(math.exp(run.loss_sum / run.tokens))
        print(f"{epoch + 1:>5}  " + "  ".join(f"{runs[n].perplexities[-1]:>16.3f}" for n in names),
              flush=True)


# -- greedy generation in torch, Flax and Keras -------------------------------------------

Step = Callable[[int, object], tuple[np.ndarray, object]]
"""One step of a language model: (token, state) -> (logits (V,), new state)."""


def predict(prefix: str, num_preds: int, step: Step, state: object, vocab: Vocab
            ) -> tuple[str, list[np.ndarray]]:
    """d2l's ``predict_ch8``: warm the state up on ``prefix``, then append the most likely
    next character ``num_preds`` times. Also returns the logits of each generated step."""
    outputs = [vocab[prefix[0]]]
    for char in prefix[1:]:  # warm-up
        _, state = step(outputs[-1], state)
        outputs.append(vocab[char])
    logits_seen = []
    for _ in range(num_preds):
        logits, state = step(outputs[-1], state)
        logits_seen.append(logits)
        outputs.append(int(np.argmax(logits)))
    return vocab.to_tokens(outputs), logits_seen


def one_hot(token: int, vocab_size: int) -> np.ndarray:
    """A batch of one sequence of one step, batch-major: ``(1, 1, V)`` float32."""
    x = np.zeros((1, 1, vocab_size), np.float32)
    x[0, 0, token] = 1.0
    return x


def torch_step(model: RNNModel) -> Step:
    def step(token: int, state: object) -> tuple[np.ndarray, object]:
        with torch.no_grad():
            logits, state = model(torch.tensor([[token]]), state)
        return logits[0].numpy(), state
    return step


def flax_step(torch_rnn: nn.Module, head: nn.Linear, vocab_size: int) -> Step:
    """The trained GRU ported to a Flax linen module, with a ``nn.Dense`` head."""
    import flax.linen as fnn
    import jax

    class FlaxCharLM(fnn.Module):
        rnn: fnn.Module
        vocab_size: int

        @fnn.compact
        def __call__(self, x: jax.Array, carry: tuple[jax.Array, ...]
                     ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
            carry, y = self.rnn(x, initial_carry=carry, return_carry=True)
            return fnn.Dense(self.vocab_size, name="head")(y), carry

    rnn = unirnn.port(torch_rnn, to="flax")  # batch-major, Flax's convention
    x0 = one_hot(0, vocab_size)
    rnn_params = rnn.init(jax.random.key(0), x0)["params"]  # holds the torch weights
    model = FlaxCharLM(rnn, vocab_size)
    variables = {"params": {"rnn": rnn_params,
                            "head": flax_dense_params(*linear_to_numpy(head))}}
    apply = jax.jit(model.apply)

    def step(token: int, carry: object) -> tuple[np.ndarray, object]:
        logits, carry = apply(variables, one_hot(token, vocab_size), carry)
        return np.asarray(logits)[0, 0], carry
    return step


def keras_step(torch_rnn: nn.Module, head: nn.Linear, vocab_size: int) -> Step:
    """The trained GRU ported to unirnn's Keras layer, with a ``keras.layers.Dense`` head."""
    import keras

    rnn = unirnn.port(torch_rnn, to="keras", return_state=True)  # Keras' own GRU inside
    dense = keras_dense(*linear_to_numpy(head))

    def step(token: int, states: object) -> tuple[np.ndarray, object]:
        y, *states = rnn(one_hot(token, vocab_size), initial_state=states)
        return keras.ops.convert_to_numpy(dense(y))[0, 0], states
    return step


# -- reporting -----------------------------------------------------------------------------

def report_speed(runs: dict[str, Run], batch_tokens: int, warmup: int) -> None:
    """Tokens/s from the median step time, and the ratios as the median over batches of
    the per-batch speed ratio (the contenders ran each batch back to back), which other
    jobs on a shared machine disturb far less than totals do; the mean is printed too."""
    print(f"\ntraining speed (forward, backward, clipping and update; the same batches, "
          f"interleaved; the first {warmup} batches not timed):")
    for name, run in runs.items():
        median = statistics.median(run.step_times)
        print(f"  {name:16s} {batch_tokens / median:10,.0f} tokens/s   median step "
              f"{1e3 * median:7.2f} ms   (from the mean step: "
              f"{run.timed_tokens / sum(run.step_times):,.0f} tokens/s)")
    mine = runs["unirnn d2l GRU"].step_times
    ratios = {other: statistics.median(t / u for t, u in zip(runs[other].step_times, mine))
              for other in ("scratch loop", "nn.GRU")}
    print(f"  speed ratio unirnn d2l GRU / scratch loop: {ratios['scratch loop']:.2f}x   "
          f"unirnn d2l GRU / nn.GRU: {ratios['nn.GRU']:.2f}x   (>1: unirnn is faster)")


def plot(runs: dict[str, Run], path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"--plot {path}: matplotlib is not installed; "
              "install it with `python -m pip install matplotlib` (or unirnn's [plot] extra)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    # unirnn's and the scratch loop's curves coincide: dashed and dotted keep both visible
    for (name, run), style in zip(runs.items(), ("-", ":", "--")):
        epochs = range(1, len(run.perplexities) + 1)
        ax.plot(epochs, run.perplexities, style, marker="o", markersize=3, label=name)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training perplexity")
    ax.set_title("character LM: d2l's GRU three ways")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"perplexity plot written to {path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run (hidden 32, 4 short epochs, Adam) that does every step")
    parser.add_argument("--epochs", type=int, default=None, help="default 20 (quick: 4)")
    parser.add_argument("--hidden", type=int, default=None, help="default 256 (quick: 32)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="use only the first tokens of the corpus (quick: 24000)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-steps", type=int, default=35)
    parser.add_argument("--sampling", choices=("sequential", "random"), default="sequential",
                        help="d2l's minibatch sampling (sequential carries the state)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                        help="default sgd, d2l's (quick: adam, which learns in fewer steps)")
    parser.add_argument("--lr", type=float, default=None, help="default: sgd 1 (d2l's), adam 1e-2")
    parser.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (d2l: 1)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="batches at the start not timed")
    parser.add_argument("--prefix", default="return the ",
                        help="the prefix greedy generation starts from")
    parser.add_argument("--num-preds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--plot", metavar="PATH", help="plot perplexity per epoch to a PNG")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (4 if args.quick else 20)
    args.hidden = args.hidden or (32 if args.quick else 256)
    args.max_tokens = args.max_tokens or (24000 if args.quick else -1)
    args.optimizer = args.optimizer or ("adam" if args.quick else "sgd")
    args.lr = args.lr or (1.0 if args.optimizer == "sgd" else 1e-2)
    quiet_frameworks()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)

    corpus, vocab = load_corpus(args.max_tokens)
    print(f"corpus: {len(corpus):,} characters of docstrings of {len(CORPUS_MODULES)} standard "
          f"library modules (Python {sys.version.split()[0]}); vocabulary of {len(vocab)}: "
          f"{' '.join(repr(t) for t in vocab.idx_to_token)}")
    models = make_contenders(len(vocab), args.hidden)
    kernel = models["unirnn d2l GRU"].rnn.kernel
    print(f"contenders (hidden {args.hidden}, batch {args.batch_size}, {args.num_steps} steps, "
          f"{args.sampling} sampling, {args.optimizer} lr {args.lr:g}, clip {args.clip:g}, "
          f"{torch.get_num_threads()} torch threads): unirnn d2l GRU (reset before, kernel "
          f"{kernel}), nn.GRU (reset after), d2l's scratch loop (reset before)")
    optimizer = torch.optim.SGD if args.optimizer == "sgd" else torch.optim.Adam
    runs = {name: Run(model, optimizer(model.parameters(), lr=args.lr))
            for name, model in models.items()}
    train(runs, corpus, args)

    final = {name: run.perplexities[-1] for name, run in runs.items()}
    gap = final["unirnn d2l GRU"] / final["scratch loop"] - 1
    print("\nfinal perplexity: " + ", ".join(f"{n} {p:.3f}" for n, p in final.items()))
    print(f"unirnn d2l GRU vs scratch loop (the same cell, the same start): {100 * gap:+.2f}% "
          f"({'within' if abs(gap) <= 0.01 else 'NOT within'} 1%)")
    report_speed(runs, args.batch_size * args.num_steps, args.warmup)
    if args.plot:
        plot(runs, args.plot)

    # serve the trained unirnn GRU from Flax and Keras, the head moved by hand
    trained = runs["unirnn d2l GRU"].model.eval()
    hidden = args.hidden
    steps = {
        "torch": (torch_step(trained), None),
        "flax": (flax_step(trained.rnn, trained.linear, len(vocab)),
                 (np.zeros((1, hidden), np.float32),)),
        "keras": (keras_step(trained.rnn, trained.linear, len(vocab)),
                  [np.zeros((1, hidden), np.float32)]),
    }
    texts, logits = {}, {}
    for name, (step, state) in steps.items():
        texts[name], logits[name] = predict(args.prefix, args.num_preds, step, state, vocab)
    print(f"\ngreedy generation from {args.prefix!r} ({args.num_preds} characters):")
    for name, text in texts.items():
        print(f"  {name:6s} {text!r}")
    want = np.stack(logits["torch"])
    top2 = np.sort(want, axis=1)[:, -2:]
    for name in ("flax", "keras"):
        got = np.stack(logits[name])
        print(f"  max |logits {name} - logits torch| = {float(np.abs(got - want).max()):.2e}")
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0,
                                   err_msg=f"{name}'s logits differ from torch's")
        if texts[name] != texts["torch"]:
            raise AssertionError(f"{name} generated {texts[name]!r}, torch {texts['torch']!r}")
    margin = float((top2[:, 1] - top2[:, 0]).min())
    print(f"  (smallest gap between the two largest logits of a step: {margin:.2e})")
    print("torch, flax and keras generated identical text")
    return 0


if __name__ == "__main__":
    sys.exit(main())
