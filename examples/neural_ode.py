"""A neural ODE: learn the vector field of a dynamical system from its
trajectories, solving the ODE with diffrax.

    python examples/neural_ode.py            # full run: a few minutes
    python examples/neural_ode.py --fast     # a few steps, as CI runs it

The data are trajectories of a damped nonlinear oscillator,

    dy/dt = A y**3,    A = [[-0.1, 2.0], [-2.0, -0.1]],

from random starting points (the spiral that neural ODE papers use as their
first example), solved by diffrax. The model is an ODE whose vector field is
a small MLP, written as a pytreemod Module; diffrax solves it, and training
differentiates through the solver.

diffrax is built on Equinox and imports it: the two libraries work side by
side. The diffrax objects (`ODETerm`, the solver) are Equinox Modules, the
vector field is a pytreemod Module, and both are pytrees, so each library's
transforms see through the other's objects. The script prints progress, the
error on held-out trajectories, and saves a plot of the fit to `--plot`.
"""

import argparse
import json
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pytreemod as ptm

# --------------------------------------------------------------------------
# The true system, and trajectories of it.
# --------------------------------------------------------------------------

A = jnp.array([[-0.1, 2.0], [-2.0, -0.1]])


def true_vector_field(t, y, args):
    return A @ y**3


def solve(vector_field, y0: jax.Array, ts: jax.Array) -> jax.Array:
    """The solution of dy/dt = vector_field(t, y, None) from `y0` at times `ts`,
    by an adaptive Runge-Kutta method (Tsit5). Returns (len(ts), 2)."""
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        diffrax.Tsit5(),
        t0=ts[0],
        t1=ts[-1],
        dt0=ts[1] - ts[0],
        y0=y0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
        max_steps=4096,
    )
    return solution.ys


def make_data(n: int, ts: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`n` trajectories from starting points on a ring of radius 1 to 2."""
    k1, k2 = jax.random.split(key)
    angle = jax.random.uniform(k1, (n,), maxval=2 * jnp.pi)
    radius = jax.random.uniform(k2, (n,), minval=1.0, maxval=2.0)
    y0 = jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)
    ys = jax.jit(jax.vmap(lambda y: solve(true_vector_field, y, ts)))(y0)
    return y0, ys


# --------------------------------------------------------------------------
# The model: a pytreemod Module, called by diffrax as f(t, y, args).
# --------------------------------------------------------------------------


class VectorField(ptm.Module):
    mlp: ptm.nn.MLP

    def __init__(self, width: int, depth: int, *, key: jax.Array):
        self.mlp = ptm.nn.MLP(
            2, 2, width_size=width, depth=depth, activation=jax.nn.softplus, key=key
        )

    def __call__(self, t: jax.Array, y: jax.Array, args: None) -> jax.Array:
        # Autonomous: the field depends on the state y only, not on t.
        return self.mlp(y)


def predict(field: VectorField, y0: jax.Array, ts: jax.Array) -> jax.Array:
    """The model's trajectories from each of the starting points `y0`."""
    return jax.vmap(lambda y: solve(field, y, ts))(y0)


def loss_fn(field: VectorField, y0: jax.Array, ys: jax.Array, ts: jax.Array):
    return jnp.mean((predict(field, y0, ts) - ys) ** 2)


@ptm.filter_jit
def train_step(field, opt_state, optimiser, y0, ys, ts):
    # Gradients flow through every step of diffrax's solver.
    loss, grads = ptm.filter_value_and_grad(loss_fn)(field, y0, ys, ts)
    updates, opt_state = optimiser.update(grads, opt_state)
    return ptm.apply_updates(field, updates), opt_state, loss


predict_jit = ptm.filter_jit(predict)


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def train(
    steps: int, n_train: int, width: int, curriculum: bool = True, seed: int = 0
) -> dict:
    data_key, model_key = jax.random.split(jax.random.key(seed))
    ts = jnp.linspace(0.0, 10.0, 100)
    # Training trajectories, and 32 more held out to test on.
    y0, ys = make_data(n_train + 32, ts, data_key)
    y0, test_y0, ys, test_ys = y0[:n_train], y0[n_train:], ys[:n_train], ys[n_train:]

    field = VectorField(width, 2, key=model_key)
    optimiser = optax.adam(3e-3)
    opt_state = optimiser.init(ptm.filter(field, ptm.is_array))

    # A curriculum: fit the first fifth of each trajectory first (the early
    # part decides where the rest goes), then the whole of it. (The fast mode
    # skips it: each length compiles the training step again.)
    short = len(ts) // 5 if curriculum else len(ts)
    losses = []
    every = max(1, steps // 15)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        length = short if step <= steps // 3 else len(ts)
        field, opt_state, loss = train_step(
            field, opt_state, optimiser, y0, ys[:, :length], ts[:length]
        )
        losses.append(float(loss))
        if step % every == 0 or step == steps:
            print(
                f"step {step:5d}/{steps}  loss {loss:.5f} on t <= {ts[length - 1]:.0f}"
                f"  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )

    fitted = predict_jit(field, test_y0, ts)
    test_mse = float(jnp.mean((fitted - test_ys) ** 2))
    untrained = VectorField(width, 2, key=model_key)
    untrained_mse = float(
        jnp.mean((predict_jit(untrained, test_y0, ts) - test_ys) ** 2)
    )
    return {
        "steps": steps,
        "n_train": n_train,
        "losses": losses,
        "first_loss": losses[0],
        "test_mse": test_mse,
        "untrained_test_mse": untrained_mse,
        "seconds": time.perf_counter() - start,
        "curriculum": curriculum,
        # Three held-out trajectories, true and fitted, for the plot.
        "_plot": (np.asarray(ts), np.asarray(test_ys[:3]), np.asarray(fitted[:3])),
    }


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts, true, fitted = result["_plot"]
    fig, (phase, series, curve) = plt.subplots(1, 3, figsize=(13, 4))
    for i, colour in enumerate(["C0", "C1", "C2"]):
        phase.plot(true[i, :, 0], true[i, :, 1], color=colour, lw=2, alpha=0.4)
        phase.plot(fitted[i, :, 0], fitted[i, :, 1], color=colour, lw=1, ls="--")
        phase.plot(*true[i, 0], "o", color=colour, ms=4)
    phase.plot([], [], color="k", lw=2, alpha=0.4, label="true")
    phase.plot([], [], color="k", lw=1, ls="--", label="neural ODE")
    phase.set(xlabel="$y_0$", ylabel="$y_1$", title="Held-out trajectories")
    bottom, top = phase.get_ylim()
    phase.set_ylim(bottom, top + 0.25 * (top - bottom))  # room for the legend
    phase.legend(loc="upper center", ncol=2)
    series.plot(ts, true[0, :, 0], color="C0", lw=2, alpha=0.4, label="true $y_0$")
    series.plot(ts, fitted[0, :, 0], color="C0", lw=1, ls="--", label="fitted $y_0$")
    series.plot(ts, true[0, :, 1], color="C3", lw=2, alpha=0.4, label="true $y_1$")
    series.plot(ts, fitted[0, :, 1], color="C3", lw=1, ls="--", label="fitted $y_1$")
    series.set(xlabel="t", title="One trajectory over time")
    series.legend(fontsize="small")
    curve.plot(np.arange(1, len(result["losses"]) + 1), result["losses"], lw=1)
    if result["curriculum"]:  # where training moves on to whole trajectories
        curve.axvline(result["steps"] // 3, color="grey", ls=":", lw=1)
    curve.set(xlabel="step", ylabel="mean squared error", yscale="log")
    curve.set_title(f"Training loss; held-out MSE {result['test_mse']:.2g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="a few steps (CI)")
    parser.add_argument("--steps", type=int, help="override the number of steps")
    parser.add_argument("--plot", default="neural_ode.png", help="where to save")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    steps = args.steps or (60 if args.fast else 1500)
    n_train = 16 if args.fast else 64
    result = train(
        steps, n_train, width=32 if args.fast else 64, curriculum=not args.fast
    )
    plot(result, args.plot)
    print(
        f"held-out MSE {result['test_mse']:.3g} "
        f"(untrained {result['untrained_test_mse']:.3g}); plot saved to {args.plot}"
    )
    if args.json:
        print(
            json.dumps(
                {k: v for k, v in result.items() if k[0] != "_" and k != "losses"}
            )
        )


if __name__ == "__main__":
    main()
