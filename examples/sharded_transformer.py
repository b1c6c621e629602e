"""A small transformer trained data- and model-parallel on 8 CPU devices.

    python examples/sharded_transformer.py            # 8 steps
    python examples/sharded_transformer.py --fast     # 3 steps, as CI runs it

The model is built from `pytreemod.nn` layers (an embedding, pre-norm blocks
of attention and MLP stacked with `nn.Stacked`, an output projection). Its
arrays get logical axis names from rules by key path, `shard` places them on
a `("data", "model")` mesh through one `axis_rules` mapping (attention heads
and the MLP's hidden units split over "model", the batch over "data"), and
the optimiser state follows the model with `like=`. The script prints the
model's summary, trains a few steps, saves a checkpoint and restores it
straight into the sharded layout, and checks that the loss curve is the one
the same training gives on a single device.
"""

import os

# Eight CPU devices, set before JAX starts (keep a caller's setting).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import pytreemod as ptm  # noqa: E402
from pytreemod.sharding import shard  # noqa: E402

VOCAB, EMBED, HEADS, MLP, LAYERS, SEQ, BATCH = 32, 16, 4, 32, 2, 8, 8

# Logical names for the arrays of the nn layers, by key path (a regular
# expression matched against the whole `jax.tree_util.keystr` path). Arrays
# inside `blocks` carry a leading layer axis (from `nn.Stacked`), named None.
RULES = [
    (r"\.embedding\.weight", ("vocab", "embed")),
    (
        r"\.blocks\.layers\.attention\.(query|key|value)_proj\.weight",
        (None, "heads", "embed"),
    ),
    (r"\.blocks\.layers\.attention\.output_proj\.weight", (None, "embed", "heads")),
    (r"\.blocks\.layers\.up\.weight", (None, "mlp", "embed")),
    (r"\.blocks\.layers\.up\.bias", (None, "mlp")),
    (r"\.blocks\.layers\.down\.weight", (None, "embed", "mlp")),
    (r"\.unembed\.weight", ("vocab", "embed")),
]
# The batch is a dict of two arrays, split along the batch dimension.
BATCH_RULES = [(r"\['tokens'\]|\['targets'\]", ("batch", None))]
# Logical name -> mesh axis: the one place where the parallelism is chosen.
AXIS_RULES = {
    "batch": "data",
    "heads": "model",
    "mlp": "model",
    "vocab": "model",
    "embed": None,
}


class Block(ptm.Module):
    """Pre-norm residual block: causal self-attention, then an MLP."""

    attention_norm: ptm.nn.LayerNorm
    attention: ptm.nn.MultiheadAttention
    mlp_norm: ptm.nn.LayerNorm
    up: ptm.nn.Linear
    down: ptm.nn.Linear

    def __init__(self, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.attention_norm = ptm.nn.LayerNorm(EMBED)
        self.attention = ptm.nn.MultiheadAttention(HEADS, EMBED, key=k1)
        self.mlp_norm = ptm.nn.LayerNorm(EMBED)
        self.up = ptm.nn.Linear(EMBED, MLP, key=k2)
        self.down = ptm.nn.Linear(MLP, EMBED, key=k3)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.vmap(self.attention_norm)(x)
        causal = jnp.tril(jnp.ones((SEQ, SEQ), bool))
        x = x + self.attention(h, h, h, mask=causal)
        h = jax.vmap(self.mlp_norm)(x)
        return x + jax.vmap(self.down)(jax.nn.gelu(jax.vmap(self.up)(h)))


class Transformer(ptm.Module):
    embedding: ptm.nn.Embedding
    blocks: ptm.nn.Stacked
    norm: ptm.nn.LayerNorm
    unembed: ptm.nn.Linear

    def __init__(self, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.embedding = ptm.nn.Embedding(VOCAB, EMBED, key=k1)
        self.blocks = ptm.nn.Stacked(Block, LAYERS, key=k2)
        self.norm = ptm.nn.LayerNorm(EMBED)
        self.unembed = ptm.nn.Linear(EMBED, VOCAB, use_bias=False, key=k3)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = jax.vmap(self.embedding)(tokens)
        x = self.blocks(x)
        return jax.vmap(self.unembed)(jax.vmap(self.norm)(x))


def batches(steps: int) -> list[dict[str, np.ndarray]]:
    """Sequences that count up from a random start: each token predicts the
    next, so the loss can fall."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(steps):
        start = rng.integers(0, VOCAB, size=(BATCH, 1))
        seq = (start + np.arange(SEQ + 1)) % VOCAB
        out.append({"tokens": seq[:, :-1], "targets": seq[:, 1:]})
    return out


optimiser = optax.adam(3e-3)


def loss_fn(model: Transformer, batch: dict) -> jax.Array:
    logits = jax.vmap(model)(batch["tokens"])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["targets"]
    ).mean()


def make_step(mesh: jax.sharding.Mesh | None):
    @ptm.filter_jit
    def step(model, opt_state, batch):
        loss, grads = ptm.filter_value_and_grad(loss_fn)(model, batch)
        updates, opt_state = optimiser.update(
            grads, opt_state, ptm.filter(model, ptm.is_array)
        )
        model = ptm.apply_updates(model, updates)
        if mesh is not None:  # keep the layout: a sharding constraint here
            model = shard(model, mesh, AXIS_RULES, RULES)
            opt_state = shard(opt_state, mesh, AXIS_RULES, RULES, like=model)
        return model, opt_state, loss

    return step


def train(
    mesh: jax.sharding.Mesh | None, steps: int, model: Transformer | None = None
) -> tuple[Transformer, list[float]]:
    """Train from the same start; sharded on `mesh`, or on one device."""
    model = Transformer(jax.random.key(0)) if model is None else model
    opt_state = optimiser.init(ptm.filter(model, ptm.is_array))
    if mesh is not None:
        model = shard(model, mesh, AXIS_RULES, RULES)
        opt_state = shard(opt_state, mesh, AXIS_RULES, RULES, like=model)
    step = make_step(mesh)
    losses = []
    for batch in batches(steps):
        if mesh is not None:
            batch = shard(batch, mesh, AXIS_RULES, BATCH_RULES)
        model, opt_state, loss = step(model, opt_state, batch)
        losses.append(float(loss))
    return model, losses


def main(steps: int = 8, verbose: bool = True) -> dict:
    # `Auto` axes: the compiler propagates shardings between the placed
    # arrays (with `Explicit` axes, ambiguous ops such as the embedding's
    # gather would need an `out_sharding` each).
    auto = jax.sharding.AxisType.Auto
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(auto, auto))
    model, sharded_losses = train(mesh, steps)
    if verbose:
        print(ptm.summary(model, RULES))
    _, single_losses = train(None, steps)

    # Checkpoint, then restore straight into the sharded layout: the `like`
    # is an abstract model (no memory) whose arrays carry their shardings.
    path = os.path.join(tempfile.mkdtemp(), "transformer.ckpt")
    ptm.save(path, model, metadata={"step": steps})
    abstract = ptm.filter_eval_shape(Transformer, jax.random.key(0))
    restored = ptm.load(path, shard(abstract, mesh, AXIS_RULES, RULES))
    same = bool(ptm.tree_equal(model, restored))
    weight = restored.blocks.layers.up.weight
    result = {
        "sharded": sharded_losses,
        "single": single_losses,
        "restored_equal": same,
        "restored_up_sharding": str(weight.sharding.spec),
        "up_shard_shape": list(weight.addressable_shards[0].data.shape),
    }
    if verbose:
        for i, (a, b) in enumerate(zip(sharded_losses, single_losses, strict=True)):
            print(f"step {i}: loss {a:.5f} sharded, {b:.5f} on one device")
        print(f"restored sharded: {weight.sharding.spec}, equal: {same}")
    return result


def plot(result: dict, path: str) -> None:
    """The loss curves of the sharded and the single-device run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(result["sharded"]) + 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, result["single"], lw=4, alpha=0.35, label="one device")
    ax.plot(steps, result["sharded"], "o--", ms=3, lw=1, label="8 devices, (2, 4) mesh")
    ax.set(xlabel="step", ylabel="training loss (cross-entropy)")
    ax.set_title("Sharded training follows the single-device loss curve")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    # `--json`: print the results as one JSON line (for the tests);
    # `--steps N`: train N steps (default 8; `--fast`: 3);
    # `--plot PATH`: save the two loss curves there.
    steps = 3 if "--fast" in sys.argv else 8
    if "--steps" in sys.argv:
        steps = int(sys.argv[sys.argv.index("--steps") + 1])
    out = main(steps, verbose="--json" not in sys.argv)
    if "--plot" in sys.argv:
        plot(out, sys.argv[sys.argv.index("--plot") + 1])
    if "--json" in sys.argv:
        print(json.dumps(out))
