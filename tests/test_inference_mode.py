import jax
import jax.numpy as jnp

import pytreemod
from pytreemod.nn import BatchNorm, Dropout, Linear, Sequential, inference_mode


class Block(pytreemod.Module):
    norm: BatchNorm
    drop: Dropout
    linear: Linear


class StaticFlag(pytreemod.Module):
    weight: jax.Array
    inference: bool = pytreemod.field(static=True, default=False)


class Outer(pytreemod.Module):
    """Has its own flag and nested flagged layers."""

    inner: Sequential
    inference: bool = False


def _model():
    key = jax.random.key(0)
    block = Block(
        BatchNorm(3, "batch", mode="ema"), Dropout(0.5), Linear(3, 3, key=key)
    )
    return {
        "blocks": [block, Outer(Sequential([Dropout(0.1), block]))],
        "static": StaticFlag(jnp.ones(2)),
        "plain": jnp.zeros(1),
    }


def _flags(model):
    block, outer = model["blocks"]
    return [
        block.norm.inference,
        block.drop.inference,
        outer.inference,
        outer.inner[0].inference,
        outer.inner[1].norm.inference,
        outer.inner[1].drop.inference,
        model["static"].inference,
    ]


def test_sets_every_flag_and_back():
    model = _model()
    assert _flags(model) == [False] * 7
    evaluation = inference_mode(model)
    assert _flags(evaluation) == [True] * 7
    training = inference_mode(evaluation, value=False)
    assert _flags(training) == [False] * 7
    # The input is not changed.
    assert _flags(model) == [False] * 7


def test_keeps_structure_and_array_leaves():
    model = _model()
    evaluation = inference_mode(model)
    leaves = jax.tree_util.tree_leaves(model)
    assert all(
        a is b
        for a, b in zip(leaves, jax.tree_util.tree_leaves(evaluation), strict=True)
        if isinstance(a, jax.Array)
    )
    assert jax.tree_util.tree_structure(
        inference_mode(evaluation, value=False)
    ) == jax.tree_util.tree_structure(model)


def test_changes_what_a_layer_does():
    drop = Dropout(0.5)
    x = jnp.ones(8)
    assert (inference_mode(drop)(x) == x).all()


def test_leaves_without_flags_alone():
    assert inference_mode([1, "a", None]) == [1, "a", None]


def test_tree_inference_is_inference_mode_without_a_warning():
    # Equinox keeps `equinox.tree_inference` as a plain alias of
    # `nn.inference_mode`, with no warning; code run with warnings as errors
    # (as this suite is) must keep working.
    model = _model()
    flags = [
        leaf.inference
        for leaf in jax.tree_util.tree_leaves(
            pytreemod.tree_inference(model, True),
            is_leaf=lambda x: hasattr(x, "inference"),
        )
        if hasattr(leaf, "inference")
    ]
    assert flags and all(flags)
    back = pytreemod.tree_inference(pytreemod.tree_inference(model), value=False)
    assert pytreemod.tree_equal(back, inference_mode(model, value=False))
    assert pytreemod.tree_equal(
        pytreemod.tree_inference(model), inference_mode(model, True)
    )
