"""Fine-tuning a pretrained network, with training policies set by selection.

    python examples/fine_tuning.py            # full run
    python examples/fine_tuning.py --fast     # a few steps, as CI runs it

A small network is first trained to tell which digit an image shows
(scikit-learn's bundled 8x8 digits, no download), on 60% of the images: its
`backbone` learns features of handwriting. Then it is fine-tuned, with a new
`head`, on a new question about the other images, "is the digit odd?", from
only two labelled images of each digit. Four ways of doing that are compared,
each stated with a `pytreemod.select` selection instead of a hand-written
filter spec:

1. **frozen backbone**: only the new head trains (the backbone's arrays are
   neither differentiated nor given optimiser state, and end bit-identical);
2. **full fine-tuning with policies**: every array trains, the backbone with a
   learning rate ten times smaller than the head's (parameter groups), weight
   decay only on weight matrices (not biases, not norms), and the forward pass
   computed in bfloat16 with the norm layers kept in float32 (mixed
   precision; float32 master weights and gradients);
3. **LoRA**: every `Linear` of the backbone gets a low-rank adapter; only the
   adapters and the head train, and at the end the adapters are merged back
   into plain `Linear`s, which give the same predictions;
4. **from scratch**: the same network trained on the new task from a random
   start, to show what pretraining brought.

The script prints progress and the test accuracy of each, and saves a plot of
the test accuracy during fine-tuning to `--plot`.
"""

import argparse
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import pytreemod as ptm
from pytreemod import select, surgery

WIDTH = 128

# --------------------------------------------------------------------------
# Data: the 8x8 digits as 64 numbers in [0, 1], split between the pretraining
# task and the new one.
# --------------------------------------------------------------------------


def load_tasks(shots: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Pretraining: which digit (10 classes), on 60% of the images. The new
    task: is the digit odd (2 classes), learnt from `shots` images of each
    digit of the other 40%, and tested on the rest of them."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    pre, rest = order[: int(0.6 * len(y))], order[int(0.6 * len(y)) :]
    train = np.concatenate([rest[y[rest] == d][:shots] for d in range(10)])
    test = np.setdiff1d(rest, train)
    return {
        "pre_x": x[pre],
        "pre_y": y[pre],
        "new_x": x[train],
        "new_y": y[train] % 2,
        "test_x": x[test],
        "test_y": y[test] % 2,
    }


# --------------------------------------------------------------------------
# The model: a backbone (two Linear + LayerNorm + GELU blocks) and a head.
# --------------------------------------------------------------------------


class Net(ptm.Module):
    backbone: ptm.nn.Sequential
    head: ptm.nn.Linear

    def __init__(self, key: jax.Array, classes: int, width: int = WIDTH):
        k1, k2, k3 = jax.random.split(key, 3)
        self.backbone = ptm.nn.Sequential(
            [
                ptm.nn.Linear(64, width, key=k1),
                ptm.nn.LayerNorm(width),
                ptm.nn.Lambda(jax.nn.gelu),
                ptm.nn.Linear(width, width, key=k2),
                ptm.nn.LayerNorm(width),
                ptm.nn.Lambda(jax.nn.gelu),
            ]
        )
        self.head = ptm.nn.Linear(width, classes, key=k3)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.backbone(x))


# A policy that changes nothing: the runs without mixed precision use it, so
# that one training step serves every run.
FULL_PRECISION = ptm.policy.MixedPrecision(
    param="float32", compute="float32", output="float32"
)
# bfloat16 compute, float32 master weights and outputs, norms in float32.
MIXED = ptm.policy.MixedPrecision(
    param="float32",
    compute="bfloat16",
    output="float32",
    rules=[(select.instance(ptm.nn.LayerNorm), "float32")],
)


def make_step(optimiser: optax.GradientTransformation, policy: Any) -> Any:
    """One training step on the trainable half of a model (`params`), the
    rest (`frozen`) passed in unchanged."""

    @ptm.filter_jit
    def step(params, frozen, opt_state, x, y):
        def loss_of(params):
            model = policy.cast_to_compute(ptm.combine(params, frozen))
            logits = policy.cast_to_output(jax.vmap(model)(policy.cast_inputs(x)))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = ptm.filter_value_and_grad(loss_of)(params)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return ptm.apply_updates(params, updates), opt_state, loss

    return step


@ptm.filter_jit
def accuracy(model: Net, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=-1) == y)


def train(
    model: Net,
    trainable: select.Selector,
    optimiser: optax.GradientTransformation,
    data: tuple[np.ndarray, ...],
    steps: int,
    *,
    policy: Any = FULL_PRECISION,
    name: str,
    every: int,
    key: jax.Array,
) -> tuple[Net, list[float]]:
    """Train the arrays `trainable` selects, on minibatches of 32; return
    the model and the test accuracy every `every` steps."""
    x, y, test_x, test_y = data
    params, frozen = (trainable & select.where(ptm.is_inexact_array)).partition(model)
    opt_state = optimiser.init(params)
    step = make_step(optimiser, policy)
    curve = []
    for i in range(steps + 1):
        if i % every == 0:
            curve.append(float(accuracy(ptm.combine(params, frozen), test_x, test_y)))
        if i == steps:
            break
        key, sub = jax.random.split(key)
        batch = jax.random.choice(sub, len(y), (min(32, len(y)),), replace=False)
        params, opt_state, loss = step(params, frozen, opt_state, x[batch], y[batch])
        if (i + 1) % max(1, steps // 4) == 0:
            print(f"  {name}: step {i + 1}/{steps}, loss {float(loss):.3f}", flush=True)
    return ptm.combine(params, frozen), curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="a few steps (CI)")
    parser.add_argument("--plot", default="fine_tuning.png", help="plot path")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    pre_steps, steps, shots, every = (
        (60, 40, 2, 10) if args.fast else (1000, 300, 2, 20)
    )
    start = time.time()
    tasks = load_tasks(shots)
    key = jax.random.key(0)
    k_model, k_head, k_lora, k_scratch, k_train = jax.random.split(key, 5)
    new = (tasks["new_x"], tasks["new_y"], tasks["test_x"], tasks["test_y"])

    # Pretraining: which digit (10 classes); every array trains.
    print(f"pretraining: which digit, on {len(tasks['pre_y'])} images", flush=True)
    pretrained, _ = train(
        Net(k_model, 10),
        select.everything(),
        optax.adam(1e-3),
        (tasks["pre_x"], tasks["pre_y"], tasks["pre_x"], tasks["pre_y"]),
        pre_steps,
        name="pretraining",
        every=pre_steps,
        key=k_train,
    )
    # A new, randomly initialised head for the new task.
    base = ptm.tree_at(
        lambda m: m.head, pretrained, ptm.nn.Linear(WIDTH, 2, key=k_head)
    )
    head = select.path(r"\.head")
    curves = {}

    # 1. Frozen backbone: only the head's arrays are trainable.
    model, curves["frozen backbone"] = train(
        base,
        head,
        optax.adam(1e-2),
        new,
        steps,
        name="frozen backbone",
        every=every,
        key=k_train,
    )
    assert ptm.tree_equal(model.backbone, base.backbone)  # untouched, bit for bit

    # 2. Everything trains, with three policies chosen by selection.
    groups = select.labels([(head, "head")], default="backbone")
    decay = select.field("weight") & ~select.instance(ptm.nn.LayerNorm)
    optimiser = optax.multi_transform(
        {
            "head": optax.adamw(1e-2, weight_decay=1e-2, mask=decay),
            "backbone": optax.adamw(1e-3, weight_decay=1e-2, mask=decay),
        },
        groups,
    )
    model, curves["policies (bf16)"] = train(
        base,
        select.everything(),
        optimiser,
        new,
        steps,
        policy=MIXED,
        name="policies",
        every=every,
        key=k_train,
    )

    # 3. LoRA: adapters on the backbone's Linears; adapters and head train.
    adapted = surgery.add_lora(base, select.path(r"\.backbone.*"), rank=4, key=k_lora)
    adapters = (select.instance(surgery.LoRALinear) & select.field("a", "b")) | head
    model, curves["LoRA"] = train(
        adapted,
        adapters,
        optax.adam(1e-2),
        new,
        steps,
        name="LoRA",
        every=every,
        key=k_train,
    )
    merged = surgery.merge_lora(model)
    same = bool(
        jnp.all(
            jnp.argmax(jax.vmap(merged)(new[2]), -1)
            == jnp.argmax(jax.vmap(model)(new[2]), -1)
        )
    )

    # 4. From scratch, for comparison.
    _, curves["from scratch"] = train(
        Net(k_scratch, 2),
        select.everything(),
        optax.adam(1e-2),
        new,
        steps,
        name="from scratch",
        every=every,
        key=k_train,
    )
    results = {name: curve[-1] for name, curve in curves.items()}
    for name, acc in results.items():
        print(f"{name:>18}: test accuracy {acc:.1%}")
    print(f"merged LoRA model predicts as the adapted one: {same}")
    _plot(curves, every, args.plot)
    if args.json:
        print(
            json.dumps(
                {
                    "accuracy": results,
                    "curves": curves,
                    "every": every,
                    "steps": steps,
                    "shots": shots,
                    "n_test": int(len(new[3])),
                    "merged_same": same,
                    "seconds": time.time() - start,
                }
            )
        )


def _plot(curves: dict[str, list[float]], every: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot([i * every for i in range(len(curve))], curve, label=name)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("test accuracy: is the digit odd?")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
