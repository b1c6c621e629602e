"""A convolutional network with batch normalisation, trained on handwritten
digits.

    python examples/digits_cnn.py            # full run: >= 95% test accuracy
    python examples/digits_cnn.py --fast     # a few epochs, as CI runs it

The data are scikit-learn's bundled 8x8 digits (1,797 greyscale images, no
download). The network is two convolutions, each followed by `nn.BatchNorm`,
then a max-pool and a linear classifier. BatchNorm keeps running statistics,
which are not parameters: pytreemod holds them in an explicit `nn.State` that
goes into each call and comes back out, so the model itself stays an
immutable pytree. The script prints progress each epoch, reports the test
accuracy, and saves a learning curve (training loss and test accuracy) to
`--plot`.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import pytreemod as ptm

# --------------------------------------------------------------------------
# Data: 8x8 images with values 0..16, scaled to [0, 1], as (channels, H, W).
# --------------------------------------------------------------------------


def load_data(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Shuffle the digits and split them 80/20 into train and test sets."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
    n_train = int(0.8 * len(labels))
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]


# --------------------------------------------------------------------------
# The model. `BatchNorm` normalises over the batch, which it finds through a
# named vmap axis ("batch"): the model is written for ONE image and vmapped.
# --------------------------------------------------------------------------


class CNN(ptm.Module):
    conv1: ptm.nn.Conv2d
    norm1: ptm.nn.BatchNorm
    conv2: ptm.nn.Conv2d
    norm2: ptm.nn.BatchNorm
    pool: ptm.nn.MaxPool2d
    head: ptm.nn.Linear

    def __init__(self, key: jax.Array, width: int = 32):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = ptm.nn.Conv2d(1, width, kernel_size=3, padding=1, key=k1)
        # mode="ema": normalise with batch statistics while training and keep
        # an exponential moving average of them for evaluation.
        self.norm1 = ptm.nn.BatchNorm(width, axis_name="batch", mode="ema")
        self.conv2 = ptm.nn.Conv2d(width, 2 * width, kernel_size=3, padding=1, key=k2)
        self.norm2 = ptm.nn.BatchNorm(2 * width, axis_name="batch", mode="ema")
        self.pool = ptm.nn.MaxPool2d(kernel_size=2, stride=2)
        self.head = ptm.nn.Linear(2 * width * 4 * 4, 10, key=k3)

    def __call__(
        self, image: jax.Array, state: ptm.nn.State
    ) -> tuple[jax.Array, ptm.nn.State]:
        # Each BatchNorm reads its statistics from `state` and returns a new
        # `state` with them updated: thread it through, layer by layer.
        x, state = self.norm1(self.conv1(image), state)
        x = jax.nn.relu(x)
        x, state = self.norm2(self.conv2(x), state)
        x = self.pool(jax.nn.relu(x))  # (64, 8, 8) -> (64, 4, 4)
        return self.head(x.reshape(-1)), state


# The model and state for a batch of images: vmap over the images, name the
# axis "batch" for BatchNorm, share one state (in_axes/out_axes None).
def batched(model: CNN):
    return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))


def loss_fn(
    model: CNN, state: ptm.nn.State, images: jax.Array, labels: jax.Array
) -> tuple[jax.Array, ptm.nn.State]:
    logits, state = batched(model)(images, state)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, state  # the new state rides along as auxiliary output


optimiser = optax.adam(1e-3)


@ptm.filter_jit
def train_step(model, state, opt_state, images, labels):
    # `filter_value_and_grad` differentiates with respect to the model's
    # floating-point arrays only; `has_aux` returns the updated state too.
    (loss, state), grads = ptm.filter_value_and_grad(loss_fn, has_aux=True)(
        model, state, images, labels
    )
    updates, opt_state = optimiser.update(
        grads, opt_state, ptm.filter(model, ptm.is_array)
    )
    return ptm.apply_updates(model, updates), state, opt_state, loss


@ptm.filter_jit
def accuracy(model, state, images, labels) -> jax.Array:
    # `inference_mode` switches BatchNorm to the running statistics; the state
    # it returns is unchanged, and dropped.
    logits, _ = batched(ptm.nn.inference_mode(model))(images, state)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def train(epochs: int, batch_size: int = 64, seed: int = 0) -> dict:
    x_train, y_train, x_test, y_test = load_data(seed)
    # `make_with_state` builds the model and returns the initial state that
    # its BatchNorm layers keep (running means and variances) beside it.
    model, state = ptm.nn.make_with_state(CNN)(jax.random.key(seed))
    opt_state = optimiser.init(ptm.filter(model, ptm.is_array))
    rng = np.random.default_rng(seed)
    steps_per_epoch = len(y_train) // batch_size
    losses, test_accuracies = [], []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y_train))
        for i in range(steps_per_epoch):
            batch = order[i * batch_size : (i + 1) * batch_size]
            model, state, opt_state, loss = train_step(
                model, state, opt_state, x_train[batch], y_train[batch]
            )
            losses.append(float(loss))
        test_accuracies.append(float(accuracy(model, state, x_test, y_test)))
        epoch_loss = np.mean(losses[-steps_per_epoch:])
        print(
            f"epoch {epoch:3d}/{epochs}  train loss {epoch_loss:.4f}"
            f"  test accuracy {test_accuracies[-1]:.2%}"
            f"  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return {
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "losses": losses,
        "test_accuracies": test_accuracies,
        "test_accuracy": test_accuracies[-1],
        "n_train": len(y_train),
        "n_test": len(y_test),
        "seconds": time.perf_counter() - start,
    }


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # write a file; no display needed
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = np.arange(1, len(result["losses"]) + 1) / result["steps_per_epoch"]
    left.plot(steps, result["losses"], lw=0.6, alpha=0.4, label="per step")
    window = result["steps_per_epoch"]
    if len(result["losses"]) >= window:
        smooth = np.convolve(result["losses"], np.ones(window) / window, "valid")
        left.plot(steps[window - 1 :], smooth, lw=1.5, label="mean of one epoch")
    left.set(xlabel="epoch", ylabel="training loss", yscale="log")
    left.set_title("Training loss (cross-entropy)")
    left.legend()
    epochs = np.arange(1, result["epochs"] + 1)
    right.plot(epochs, 100 * np.array(result["test_accuracies"]), marker="o", ms=3)
    right.axhline(95, color="grey", ls="--", lw=1, label="95%")
    right.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(50, 100))
    right.set_title(f"Test accuracy: {result['test_accuracy']:.1%} at the end")
    right.legend(loc="lower right")
    fig.suptitle(
        f"CNN with BatchNorm on 8x8 digits ({result['n_train']} train, "
        f"{result['n_test']} test images)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="a few epochs (CI)")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--plot", default="digits_cnn.png", help="where to save")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    epochs = args.epochs or (3 if args.fast else 20)
    result = train(epochs)
    plot(result, args.plot)
    print(f"test accuracy {result['test_accuracy']:.2%}; plot saved to {args.plot}")
    if args.json:
        summary = {k: v for k, v in result.items() if k != "losses"}
        print(json.dumps(summary | {"first_loss": result["losses"][0]}))


if __name__ == "__main__":
    main()
