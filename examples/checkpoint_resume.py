"""Checkpoint a training run, kill it, resume it: the result is bit-identical
to a run that was never interrupted.

    python examples/checkpoint_resume.py           # the demonstration
    python examples/checkpoint_resume.py --fast    # shorter, as CI runs it

    # Or crash it for real, then run the same command again to resume:
    python examples/checkpoint_resume.py --train --run-dir run --kill-at 150
    python examples/checkpoint_resume.py --train --run-dir run

Everything that decides the rest of a run goes into the checkpoint: the
model, the optimiser state, the step count and the PRNG key (here it draws
each batch and each dropout mask, so a resumed run that lost it would see
other data). `pytreemod.save` writes them atomically under their key paths
(a crash during a save leaves the previous checkpoint whole), and
`pytreemod.load` reads them back into a freshly built skeleton of the same
structure.

The demonstration trains once without interruption, then again with a
simulated crash part-way, resumes that run from its last checkpoint, and
checks that the two final models, optimiser states, steps and keys are equal
bit for bit. It saves both loss curves to `--plot`.
"""

import argparse
import hashlib
import json
import os
import signal
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pytreemod as ptm

# --------------------------------------------------------------------------
# A small regression problem whose batches come from the PRNG key: fit
# y = sin(3 x0) * cos(2 x1) with an MLP that uses dropout.
# --------------------------------------------------------------------------


class Regressor(ptm.Module):
    hidden: ptm.nn.Linear
    dropout: ptm.nn.Dropout
    out: ptm.nn.Linear

    def __init__(self, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.hidden = ptm.nn.Linear(2, 64, key=k1)
        self.dropout = ptm.nn.Dropout(0.1)
        self.out = ptm.nn.Linear(64, 1, key=k2)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        h = self.dropout(jax.nn.tanh(self.hidden(x)), key=key)
        return self.out(h)[0]


def target(x: jax.Array) -> jax.Array:
    return jnp.sin(3 * x[..., 0]) * jnp.cos(2 * x[..., 1])


optimiser = optax.adam(optax.exponential_decay(1e-2, 100, 0.8))


@ptm.filter_jit
def train_step(model, opt_state, key):
    # One key in, one key out: the next step's key is part of the run's state.
    key, data_key, dropout_key = jax.random.split(key, 3)
    x = jax.random.uniform(data_key, (128, 2), minval=-1, maxval=1)
    dropout_keys = jax.random.split(dropout_key, 128)

    def loss_fn(model):
        predictions = jax.vmap(lambda x, k: model(x, key=k))(x, dropout_keys)
        return jnp.mean((predictions - target(x)) ** 2)

    loss, grads = ptm.filter_value_and_grad(loss_fn)(model)
    updates, opt_state = optimiser.update(
        grads, opt_state, ptm.filter(model, ptm.is_array)
    )
    return ptm.apply_updates(model, updates), opt_state, key, loss


# --------------------------------------------------------------------------
# The run's state, and its checkpoint
# --------------------------------------------------------------------------


def initial_run_state(seed: int = 0) -> dict:
    """Everything a run carries from one step to the next."""
    model_key, train_key = jax.random.split(jax.random.key(seed))
    model = Regressor(model_key)
    return {
        "model": model,
        "opt_state": optimiser.init(ptm.filter(model, ptm.is_array)),
        # A checkpoint holds numbers, so the typed key is stored as its raw
        # uint32 data and wrapped again after loading.
        "key": jax.random.key_data(train_key),
        "step": jnp.array(0, dtype=jnp.int32),
    }


def checkpoint_path(run_dir: str) -> str:
    return os.path.join(run_dir, "latest.ckpt")


def save_checkpoint(run_dir: str, run: dict, losses: list[float]) -> None:
    # Atomic: written to a temporary file, then renamed over the old one.
    ptm.save(
        checkpoint_path(run_dir),
        run,
        metadata={"step": int(run["step"]), "losses": losses},
    )


def restore_or_start(run_dir: str, seed: int = 0) -> tuple[dict, list[float]]:
    """The run saved in `run_dir`, or a new one if there is none."""
    fresh = initial_run_state(seed)
    if not os.path.exists(checkpoint_path(run_dir)):
        return fresh, []
    # `fresh` is the skeleton: it gives the structure, the static fields and
    # the expected shapes and dtypes; the arrays come from the file. (A
    # `filter_eval_shape` skeleton would avoid initialising the arrays.)
    run, metadata = ptm.load(checkpoint_path(run_dir), fresh, with_metadata=True)
    return run, metadata["losses"]


def digest(run: dict) -> str:
    """A SHA-256 of every array of the run's state: equal digests mean
    bit-identical states."""
    hasher = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(run)[0]:
        hasher.update(jax.tree_util.keystr(path).encode())
        hasher.update(np.asarray(leaf).tobytes())
    return hasher.hexdigest()


class SimulatedCrash(Exception):
    pass


def train(
    run_dir: str,
    steps: int,
    save_every: int,
    crash_at: int | None = None,
    kill_at: int | None = None,
) -> tuple[dict, list[float], int]:
    """Train to `steps`, resuming from `run_dir` if it holds a checkpoint.

    `crash_at`: raise `SimulatedCrash` after that step (in-process demo);
    `kill_at`: kill this process with SIGKILL after that step (a real crash:
    nothing gets to clean up). Returns the run, its losses, and the step it
    started from.
    """
    os.makedirs(run_dir, exist_ok=True)
    run, losses = restore_or_start(run_dir)
    started_at = int(run["step"])
    if started_at:
        print(f"resuming from the checkpoint at step {started_at}", flush=True)
    model, opt_state, step = run["model"], run["opt_state"], started_at
    key = jax.random.wrap_key_data(run["key"])
    start = time.perf_counter()
    while step < steps:
        model, opt_state, key, loss = train_step(model, opt_state, key)
        step += 1
        losses.append(float(loss))
        if step % save_every == 0 or step == steps:
            run = {
                "model": model,
                "opt_state": opt_state,
                "key": jax.random.key_data(key),
                "step": jnp.array(step, dtype=jnp.int32),
            }
            save_checkpoint(run_dir, run, losses)
            print(
                f"step {step:5d}/{steps}  loss {np.mean(losses[-save_every:]):.5f}"
                f"  checkpoint saved  ({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
        if step == crash_at:
            raise SimulatedCrash(f"crashed after step {step}")
        if step == kill_at:
            print(f"killing this process after step {step}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    return run, losses, started_at


def demonstrate(steps: int, save_every: int, crash_at: int) -> dict:
    with tempfile.TemporaryDirectory() as root:
        print("== an uninterrupted run", flush=True)
        straight, straight_losses, _ = train(f"{root}/a", steps, save_every)

        print(f"== a run that crashes after step {crash_at}", flush=True)
        try:
            train(f"{root}/b", steps, save_every, crash_at=crash_at)
        except SimulatedCrash as crash:
            print(f"   ... {crash}; the last checkpoint is the one saved before it")
        print("== the same command again: it resumes", flush=True)
        resumed, resumed_losses, resumed_from = train(f"{root}/b", steps, save_every)

    def equal(name: str) -> bool:
        return bool(ptm.tree_equal(straight[name], resumed[name]))

    return {
        "steps": steps,
        "crash_at": crash_at,
        "resumed_from": resumed_from,
        "model_equal": equal("model"),
        "opt_state_equal": equal("opt_state"),
        "key_equal": equal("key"),
        "step_equal": equal("step"),
        "losses_equal": straight_losses == resumed_losses,
        "digest_straight": digest(straight),
        "digest_resumed": digest(resumed),
        "first_loss": straight_losses[0],
        "final_loss": float(np.mean(straight_losses[-save_every:])),
        "_losses": (straight_losses, resumed_losses),
    }


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    straight, resumed = result["_losses"]
    steps = np.arange(1, len(straight) + 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, straight, lw=3, alpha=0.35, label="uninterrupted run")
    ax.plot(steps, resumed, lw=0.8, color="C3", label="crashed, then resumed")
    ax.axvline(result["crash_at"], color="k", ls=":", lw=1, label="crash")
    ax.axvline(result["resumed_from"], color="C2", ls="--", lw=1, label="resumed from")
    ax.set(xlabel="step", ylabel="training loss (MSE)", yscale="log")
    same = (
        "bit-identical"
        if result["digest_straight"] == result["digest_resumed"]
        else "DIFFERENT"
    )
    ax.set_title(f"Resumed after a crash: final state {same} to the uninterrupted run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="fewer steps (CI)")
    parser.add_argument("--steps", type=int, help="override the number of steps")
    parser.add_argument("--plot", default="checkpoint_resume.png", help="where to save")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument(
        "--train", action="store_true", help="one run in --run-dir, no demonstration"
    )
    parser.add_argument("--run-dir", default="run", help="checkpoints (with --train)")
    parser.add_argument("--kill-at", type=int, help="SIGKILL after this step (--train)")
    args = parser.parse_args()
    steps = args.steps or (60 if args.fast else 1000)
    save_every = 10 if args.fast else 50
    if args.train:
        run, losses, started_at = train(
            args.run_dir, steps, save_every, kill_at=args.kill_at
        )
        result = {
            "steps": int(run["step"]),
            "resumed_from": started_at,
            "digest": digest(run),
            "final_loss": losses[-1],
        }
        print(f"trained to step {steps}; state digest {result['digest'][:16]}...")
    else:
        # Crash part-way between two checkpoints: the steps after the last
        # save are lost and done again, as after a real crash.
        crash_at = steps // 2 + save_every // 2 - 3
        result = demonstrate(steps, save_every, crash_at)
        plot(result, args.plot)
        identical = result["digest_straight"] == result["digest_resumed"]
        print(
            f"resumed from step {result['resumed_from']}; final model, optimiser "
            f"state, step and key bit-identical: {identical}; plot saved to {args.plot}"
        )
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k[0] != "_"}))


if __name__ == "__main__":
    main()
