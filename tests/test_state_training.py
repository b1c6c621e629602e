"""End to end: a small MLP with BatchNorm trained with `filter_jit`,
`filter_value_and_grad` and optax, with its running statistics in a State."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pytreemod
from pytreemod.nn import (
    MLP,
    BatchNorm,
    Lambda,
    Linear,
    Sequential,
    inference_mode,
    make_with_state,
)

DOCS = pathlib.Path(__file__).parent.parent / "docs" / "state.md"


def _make_model(key):
    key1, key2 = jax.random.split(key)
    return Sequential(
        [
            Linear(2, 16, key=key1),
            BatchNorm(16, axis_name="batch", mode="batch"),
            Lambda(jax.nn.relu),
            MLP(16, "scalar", width_size=8, depth=1, key=key2),
        ]
    )


def _batched(model):
    return pytreemod.filter_vmap(
        model, in_axes=(0, None), out_axes=(0, None), axis_name="batch"
    )


def test_training_lowers_the_loss_and_updates_the_statistics():
    optim = optax.sgd(0.05, momentum=0.9)
    traces = []

    def loss_fn(model, state, xs, ys):
        preds, state = _batched(model)(xs, state)
        return jnp.mean((preds - ys) ** 2), state

    @pytreemod.filter_jit
    def train_step(model, state, opt_state, xs, ys):
        traces.append(None)
        grad_fn = pytreemod.filter_value_and_grad(loss_fn, has_aux=True)
        (loss, state), grads = grad_fn(model, state, xs, ys)
        params = pytreemod.filter(model, pytreemod.is_inexact_array)
        updates, opt_state = optim.update(grads, opt_state, params)
        return pytreemod.apply_updates(model, updates), state, opt_state, loss

    data_key, model_key = jax.random.split(jax.random.key(0))
    xs = jax.random.normal(data_key, (64, 2))
    ys = jnp.sin(xs[:, 0]) + xs[:, 1] ** 2
    model, state = make_with_state(_make_model)(model_key)
    norm = model[1]
    initial_stats = [leaf.copy() for leaf in jax.tree_util.tree_leaves(state)]
    opt_state = optim.init(pytreemod.filter(model, pytreemod.is_inexact_array))

    losses = []
    for _ in range(150):
        model, state, opt_state, loss = train_step(model, state, opt_state, xs, ys)
        losses.append(loss.item())
    assert len(traces) == 1
    assert losses[-1] < losses[0] / 5
    steps = state.get(norm.batch_counter)
    assert steps.item() == 150
    mean, var = state.get(norm.batch_state_index)
    assert not np.allclose(mean, initial_stats[1])
    assert not np.allclose(var, initial_stats[2])

    # Inference: running statistics, no state change, the same answer twice,
    # and each prediction independent of the rest of the batch.
    evaluation = inference_mode(model)
    evaluate = pytreemod.filter_jit(
        lambda model, state, xs: jax.vmap(model, in_axes=(0, None), out_axes=(0, None))(
            xs, state
        )
    )
    preds, after = evaluate(evaluation, state, xs)
    again, _ = evaluate(evaluation, after, xs)
    np.testing.assert_array_equal(preds, again)
    first_only, _ = evaluate(evaluation, after, xs[:1])
    np.testing.assert_allclose(first_only[0], preds[0], rtol=1e-5)
    assert pytreemod.tree_equal(after, state)
    assert jnp.mean((preds - ys) ** 2) < losses[0] / 2


def test_the_docs_example_runs():
    # The examples in docs/state.md are executed here, so that they cannot rot.
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    counter_example, training_example = [b for b in blocks if "import pytreemod" in b]
    namespace: dict = {}
    exec(counter_example, namespace)
    assert namespace["state"].get(namespace["model"].index).item() == 3.0
    # optax's adam mixes a Python float and an int32 count, which the strict
    # promotion of this test suite refuses; users run with the default.
    with jax.numpy_dtype_promotion("standard"):
        exec(training_example, namespace)
    assert namespace["loss"] < 0.2
    assert namespace["preds"].shape == (64,)
