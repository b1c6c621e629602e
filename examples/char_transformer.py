"""A character-level transformer language model, trained on text that ships
with Python, then sampled.

    python examples/char_transformer.py          # full run: a few minutes
    python examples/char_transformer.py --fast   # a tiny model, as CI runs it

The text is the Python language reference's help topics, which CPython ships
in its standard library (`pydoc_data.topics`, what `help("assert")` prints):
about 465,000 characters of English prose and code, no download. The model
predicts each next character from the ones before it:

- an embedding of the characters;
- `nn.Stacked` pre-norm blocks (causal self-attention with rotary position
  embeddings, then an MLP): the blocks' arrays are stacked along a leading
  axis and applied with a scan, so the model compiles like one block;
- a final norm and a linear read-out to logits over the characters.

The script prints the loss every few steps, saves the training and
validation loss curves to `--plot`, and samples text from the trained model.
"""

import argparse
import dataclasses
import json
import pydoc_data.topics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pytreemod as ptm

# --------------------------------------------------------------------------
# Sizes: the full run and the fast one differ only in these numbers.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    seq_len: int  # characters of context
    embed: int  # width of the residual stream
    heads: int  # attention heads (embed // heads channels each)
    layers: int  # transformer blocks
    batch: int  # sequences per step
    steps: int  # optimiser steps
    learning_rate: float


FULL = Config(
    seq_len=64, embed=96, heads=4, layers=3, batch=32, steps=1200, learning_rate=3e-3
)
FAST = Config(
    seq_len=32, embed=32, heads=2, layers=2, batch=16, steps=150, learning_rate=5e-3
)

# --------------------------------------------------------------------------
# Data: characters -> integer ids; the last 10% of the text is held out.
# --------------------------------------------------------------------------


def load_text() -> str:
    topics = pydoc_data.topics.topics
    return "\n".join(topics[name] for name in sorted(topics))


class Vocabulary:
    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index[c] for c in text], dtype=np.int32)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def random_windows(
    data: np.ndarray, rng: np.random.Generator, batch: int, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """`batch` random windows of the text; the targets are the inputs shifted
    by one character."""
    starts = rng.integers(0, len(data) - seq_len - 1, size=batch)
    windows = np.stack([data[s : s + seq_len + 1] for s in starts])
    return windows[:, :-1], windows[:, 1:]


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


class Block(ptm.Module):
    """Pre-norm residual block: causal self-attention (with rotary position
    embeddings on queries and keys), then an MLP. Maps (seq, embed) to the
    same shape, as `nn.Stacked` needs."""

    attention_norm: ptm.nn.LayerNorm
    attention: ptm.nn.MultiheadAttention
    rope: ptm.nn.RotaryPositionalEmbedding
    mlp_norm: ptm.nn.LayerNorm
    mlp: ptm.nn.MLP

    def __init__(self, embed: int, heads: int, *, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.attention_norm = ptm.nn.LayerNorm(embed)
        self.attention = ptm.nn.MultiheadAttention(heads, embed, key=k1)
        # Rotary embeddings act on each head's channels.
        self.rope = ptm.nn.RotaryPositionalEmbedding(embedding_size=embed // heads)
        self.mlp_norm = ptm.nn.LayerNorm(embed)
        self.mlp = ptm.nn.MLP(
            embed, embed, width_size=4 * embed, depth=1, activation=jax.nn.gelu, key=k2
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        seq_len = x.shape[0]
        # Position i may attend to positions 0..i only: a causal mask.
        causal = jnp.tril(jnp.ones((seq_len, seq_len), dtype=bool))

        def rotate_queries_and_keys(q, k, v):  # each (seq, heads, head_size)
            rotate = jax.vmap(self.rope, in_axes=1, out_axes=1)  # per head
            return rotate(q), rotate(k), v

        h = jax.vmap(self.attention_norm)(x)
        x = x + self.attention(
            h, h, h, mask=causal, process_heads=rotate_queries_and_keys
        )
        return x + jax.vmap(self.mlp)(jax.vmap(self.mlp_norm)(x))


class CharTransformer(ptm.Module):
    embedding: ptm.nn.Embedding
    blocks: ptm.nn.Stacked
    norm: ptm.nn.LayerNorm
    unembed: ptm.nn.Linear

    def __init__(self, vocab: int, config: Config, *, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.embedding = ptm.nn.Embedding(vocab, config.embed, key=k1)
        # `config.layers` identical blocks, built from one constructor.
        self.blocks = ptm.nn.Stacked(
            lambda k: Block(config.embed, config.heads, key=k), config.layers, key=k2
        )
        self.norm = ptm.nn.LayerNorm(config.embed)
        self.unembed = ptm.nn.Linear(config.embed, vocab, use_bias=False, key=k3)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """(seq,) character ids -> (seq, vocab) logits of the next character."""
        x = jax.vmap(self.embedding)(tokens)
        x = self.blocks(x)
        return jax.vmap(self.unembed)(jax.vmap(self.norm)(x))


def loss_fn(model: CharTransformer, inputs: jax.Array, targets: jax.Array):
    logits = jax.vmap(model)(inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


@ptm.filter_jit
def train_step(model, opt_state, optimiser, inputs, targets):
    # `optimiser` is a plain Python object (functions): filter_jit treats it
    # as static, and the arrays of `model` and `opt_state` as traced.
    loss, grads = ptm.filter_value_and_grad(loss_fn)(model, inputs, targets)
    updates, opt_state = optimiser.update(
        grads, opt_state, ptm.filter(model, ptm.is_array)
    )
    return ptm.apply_updates(model, updates), opt_state, loss


evaluate = ptm.filter_jit(loss_fn)


# --------------------------------------------------------------------------
# Sampling: feed the last `seq_len` characters, draw the next one from the
# model's distribution (sharpened by a temperature), append, repeat.
# --------------------------------------------------------------------------


@ptm.filter_jit
def sample(model, prompt: jax.Array, length: int, temperature: float, key):
    def next_char(window, key):
        logits = model(window)[-1] / temperature
        char = jax.random.categorical(key, logits)
        return jnp.concatenate([window[1:], char[None]]), char

    _, chars = jax.lax.scan(next_char, prompt, jax.random.split(key, length))
    return chars


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def train(config: Config, seed: int = 0, sample_length: int = 400) -> dict:
    text = load_text()
    vocab = Vocabulary(text)
    data = vocab.encode(text)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]
    # The cross-entropy of the best guess that ignores context (the
    # characters' frequencies): what the model must beat to use context.
    frequencies = np.bincount(train_data, minlength=len(vocab.chars)) / split
    unigram = float(-np.sum(frequencies * np.log(np.maximum(frequencies, 1e-12))))
    rng = np.random.default_rng(seed)
    val_rng = np.random.default_rng(seed + 1)
    val_batches = [
        random_windows(val_data, val_rng, 64, config.seq_len) for _ in range(4)
    ]

    key, sample_key = jax.random.split(jax.random.key(seed))
    model = CharTransformer(len(vocab.chars), config, key=key)
    n_params = sum(
        x.size for x in jax.tree_util.tree_leaves(ptm.filter(model, ptm.is_array))
    )
    # Warm up the learning rate, then decay it along a cosine.
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(100, config.steps // 10), config.steps
    )
    optimiser = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule))
    opt_state = optimiser.init(ptm.filter(model, ptm.is_array))
    print(
        f"{len(text):,} characters, {len(vocab.chars)} distinct; "
        f"model of {n_params:,} parameters, {config.layers} blocks",
        flush=True,
    )

    def validation_loss() -> float:
        return float(np.mean([evaluate(model, x, y) for x, y in val_batches]))

    losses, val_steps, val_losses = [], [], []
    every = max(1, config.steps // 15)
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        inputs, targets = random_windows(train_data, rng, config.batch, config.seq_len)
        model, opt_state, loss = train_step(
            model, opt_state, optimiser, inputs, targets
        )
        losses.append(float(loss))
        if step % every == 0 or step == config.steps:
            val_steps.append(step)
            val_losses.append(validation_loss())
            recent = np.mean(losses[-every:])
            print(
                f"step {step:5d}/{config.steps}  train loss {recent:.3f}"
                f"  validation loss {val_losses[-1]:.3f}"
                f"  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )

    # Sample, starting from a window of the held-out text.
    prompt = val_data[1000 : 1000 + config.seq_len]
    chars = sample(model, jnp.asarray(prompt), sample_length, 0.8, sample_key)
    return {
        "config": dataclasses.asdict(config),
        "vocab_size": len(vocab.chars),
        "n_params": int(n_params),
        "losses": losses,
        "val_steps": val_steps,
        "val_losses": val_losses,
        "first_loss": losses[0],
        "val_loss": val_losses[-1],
        "unigram_entropy": unigram,
        "prompt": vocab.decode(prompt),
        "sample": vocab.decode(np.asarray(chars)),
        "seconds": time.perf_counter() - start,
    }


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    steps = np.arange(1, len(result["losses"]) + 1)
    ax.plot(steps, result["losses"], lw=0.5, alpha=0.5, label="training (per step)")
    ax.plot(
        result["val_steps"], result["val_losses"], marker="o", ms=3, label="validation"
    )
    # Two references: guessing uniformly, and guessing from the characters'
    # frequencies alone (what the model must beat to be using the context).
    ax.axhline(
        np.log(result["vocab_size"]), color="grey", ls=":", lw=1, label="uniform guess"
    )
    ax.axhline(
        result["unigram_entropy"],
        color="grey",
        ls="--",
        lw=1,
        label="character frequencies alone",
    )
    ax.set(xlabel="step", ylabel="cross-entropy (nats per character)", ylim=(0, None))
    config = result["config"]
    ax.set_title(
        f"Character transformer, {config['layers']} stacked blocks, "
        f"{result['n_params']:,} parameters: "
        f"validation {result['val_loss']:.2f} nats/char"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="a tiny model (CI)")
    parser.add_argument("--steps", type=int, help="override the number of steps")
    parser.add_argument("--plot", default="char_transformer.png", help="where to save")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    config = FAST if args.fast else FULL
    if args.steps:
        config = dataclasses.replace(config, steps=args.steps)
    result = train(config, sample_length=120 if args.fast else 400)
    plot(result, args.plot)
    print(
        f"validation loss {result['val_loss']:.3f} nats/char; plot saved to {args.plot}"
    )
    print(f"\nprompt:\n{result['prompt']}\n\nsample:\n{result['sample']}\n")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "losses"}))


if __name__ == "__main__":
    main()
