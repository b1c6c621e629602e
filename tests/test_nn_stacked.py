"""`pytreemod.nn.Stacked`: N identical layers applied with one scan."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as ptm

WIDTH = 4


class Block(ptm.Module):
    """A residual block, as stacked in real networks."""

    linear: ptm.nn.Linear
    norm: ptm.nn.LayerNorm
    dropout: ptm.nn.Dropout

    def __init__(self, key, p=0.0):
        self.linear = ptm.nn.Linear(WIDTH, WIDTH, key=key)
        self.norm = ptm.nn.LayerNorm(WIDTH)
        self.dropout = ptm.nn.Dropout(p)

    def __call__(self, x, *, key=None, inference=None):
        h = self.dropout(self.linear(self.norm(x)), key=key, inference=inference)
        return x + jnp.tanh(h)


class CountingBlock(ptm.Module):
    """A stateful block: adds a running sum of its inputs to its output."""

    linear: ptm.nn.Linear
    total: ptm.nn.StateIndex

    def __init__(self, key):
        self.linear = ptm.nn.Linear(WIDTH, WIDTH, key=key)
        self.total = ptm.nn.StateIndex(jnp.zeros(WIDTH))

    def __call__(self, x, state, *, key=None):
        total = state.get(self.total) + x
        return jnp.tanh(self.linear(x)) + total, state.set(self.total, total)


def _stack(num_layers, make=Block, seed=0):
    return ptm.nn.Stacked(make, num_layers, key=jax.random.key(seed))


X = jnp.array([0.5, -1.0, 2.0, 0.25])


def test_same_output_as_the_unrolled_python_loop():
    stack = _stack(5)
    assert stack.layers.linear.weight.shape == (5, WIDTH, WIDTH)
    assert len(stack) == 5
    y = X
    for layer in stack:
        y = layer(y)
    np.testing.assert_allclose(stack(X), y, rtol=1e-5, atol=1e-6)


def test_layers_are_the_ones_make_layer_builds_from_split_keys():
    stack = _stack(3)
    keys = jax.random.split(jax.random.key(0), 3)
    for i in range(3):
        assert ptm.tree_equal(stack[i], Block(keys[i]), rtol=1e-6, atol=1e-6)
    assert ptm.tree_equal(stack[-1], stack[2])


def test_a_key_is_split_into_one_per_layer():
    stack = _stack(3, make=lambda k: Block(k, p=0.5))
    key = jax.random.key(7)
    y = X
    for layer, k in zip(stack, jax.random.split(key, 3), strict=True):
        y = layer(y, key=k)
    np.testing.assert_allclose(stack(X, key=key), y, rtol=1e-5, atol=1e-6)
    # Keyword arguments go to every layer.
    no_dropout = stack(X, inference=True)
    np.testing.assert_allclose(no_dropout, _stack(3)(X), rtol=1e-5, atol=1e-6)


def _scan_count(jaxpr):
    return sum(eqn.primitive.name == "scan" for eqn in jaxpr.eqns)


def test_jaxpr_holds_one_scan_whatever_the_depth():
    def apply(model, x):
        return model(x)

    small, _, _ = ptm.filter_make_jaxpr(apply)(_stack(2), X)
    deep, _, _ = ptm.filter_make_jaxpr(apply)(_stack(48), X)
    assert _scan_count(small.jaxpr) == _scan_count(deep.jaxpr) == 1
    assert len(deep.jaxpr.eqns) == len(small.jaxpr.eqns)
    (scan,) = [e for e in deep.jaxpr.eqns if e.primitive.name == "scan"]
    assert scan.params["length"] == 48
    body = scan.params["jaxpr"].jaxpr
    assert sum(e.primitive.name == "dot_general" for e in body.eqns) == 1
    # The Python loop over the same layers traces 48 copies instead.
    unrolled, _, _ = ptm.filter_make_jaxpr(lambda m, x: [x := layer(x) for layer in m])(
        _stack(48), X
    )
    assert sum(e.primitive.name == "dot_general" for e in unrolled.jaxpr.eqns) == 48


def test_state_is_threaded_through_each_layer():
    stack, state = ptm.nn.make_with_state(ptm.nn.Stacked)(
        CountingBlock, 3, key=jax.random.key(0)
    )
    assert stack.is_stateful()
    # The unrolled reference: slice the stacked state for each layer by hand.
    substate = state.substate(stack)
    ref_state = jax.tree_util.tree_map(lambda a: a, substate)
    y1, state = stack(X, state)
    y2, state = stack(2 * X, state)

    def loop(x, sub):
        outs = []
        for i, layer in enumerate(stack):
            x, new = layer(x, jax.tree_util.tree_map(lambda a, i=i: a[i], sub))
            outs.append(new)
        return x, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *outs)

    r1, ref_state = loop(X, ref_state)
    r2, ref_state = loop(2 * X, ref_state)
    np.testing.assert_allclose(y1, r1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y2, r2, rtol=1e-5, atol=1e-6)
    (index,) = [stack.layers.total]
    np.testing.assert_allclose(
        state.get(index), ref_state.get(index), rtol=1e-5, atol=1e-6
    )
    assert state.get(index).shape == (3, WIDTH)


def test_batch_norm_blocks_under_filter_vmap_and_filter_jit():
    class BNBlock(ptm.Module):
        linear: ptm.nn.Linear
        bn: ptm.nn.BatchNorm

        def __init__(self, key):
            self.linear = ptm.nn.Linear(WIDTH, WIDTH, key=key)
            self.bn = ptm.nn.BatchNorm(WIDTH, axis_name="batch", mode="ema")

        def __call__(self, x, state, *, key=None):
            y, state = self.bn(self.linear(x), state)
            return x + y, state

    model, state = ptm.nn.make_with_state(ptm.nn.Stacked)(
        BNBlock, 3, key=jax.random.key(0)
    )
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(8, WIDTH)), jnp.float32)

    @ptm.filter_jit
    def step(model, xs, state):
        return ptm.filter_vmap(
            model, in_axes=(0, None), out_axes=(0, None), axis_name="batch"
        )(xs, state)

    substate = state.substate(model)
    reference = jax.tree_util.tree_map(lambda a: a, substate)
    ys, new_state = step(model, xs, state)
    assert ys.shape == (8, WIDTH)

    # The unrolled reference: each layer on its own slice of the state.
    h, outs = xs, []
    for i, layer in enumerate(model):
        sub = jax.tree_util.tree_map(lambda a, i=i: a[i], reference)
        h, sub = ptm.filter_vmap(
            layer, in_axes=(0, None), out_axes=(0, None), axis_name="batch"
        )(h, sub)
        outs.append(sub)
    np.testing.assert_allclose(ys, h, rtol=1e-4, atol=1e-5)
    expected = jax.tree_util.tree_leaves(outs)
    got = jax.tree_util.tree_leaves(new_state.substate(model))
    assert got and len(expected) == 3 * len(got)
    for leaf_index, leaf in enumerate(got):
        per_layer = [jax.tree_util.tree_leaves(o)[leaf_index] for o in outs]
        np.testing.assert_allclose(leaf, jnp.stack(per_layer), rtol=1e-4, atol=1e-5)
    # The running statistics moved away from their initial values.
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(got, jax.tree_util.tree_leaves(reference), strict=True)
    )


def test_a_stateless_stack_passes_a_state_through():
    stack = _stack(2)
    state = ptm.nn.State(ptm.nn.StateIndex(jnp.zeros(1)))
    y, same = stack(X, state)
    assert same is state
    np.testing.assert_allclose(y, stack(X), rtol=1e-6)


def test_in_a_sequential():
    stack = _stack(2)
    model = ptm.nn.Sequential([ptm.nn.Lambda(jnp.negative), stack])
    assert not stack.is_stateful()
    np.testing.assert_allclose(model(X), stack(-X), rtol=1e-6)
    stateful, state = ptm.nn.make_with_state(
        lambda: ptm.nn.Sequential([_stack(2, make=CountingBlock)])
    )()
    y, state = stateful(X, state)
    assert y.shape == (WIDTH,)


_weights = hnp.arrays(np.float32, (WIDTH, WIDTH), elements=st.floats(-2, 2, width=32))


@settings(max_examples=25, deadline=None)
@given(weights=st.lists(_weights, min_size=1, max_size=4))
def test_stacking_existing_layers_round_trips(weights):
    base = ptm.nn.Linear(WIDTH, WIDTH, key=jax.random.key(0))
    layers = [ptm.tree_at(lambda m: m.weight, base, jnp.asarray(w)) for w in weights]
    stack = ptm.nn.Stacked(layers=layers)
    assert len(stack) == len(layers)
    for original, back in zip(layers, stack, strict=True):
        assert ptm.tree_equal(original, back)
    assert ptm.tree_equal(ptm.nn.Stacked(layers=list(stack)), stack)


def test_gradients_finite():
    stack = _stack(3)
    grads = ptm.filter_grad(lambda m, x: jnp.sum(m(x) ** 2))(stack, X)
    assert grads.layers.linear.weight.shape == (3, WIDTH, WIDTH)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert bool(jnp.all(jnp.any(grads.layers.linear.weight != 0, axis=(1, 2))))


def test_filter_jit_and_filter_vmap():
    stack = _stack(3)
    xs = jnp.stack([X, -X])
    ys = ptm.filter_jit(ptm.filter_vmap(lambda m, x: m(x), in_axes=(None, 0)))(
        stack, xs
    )
    np.testing.assert_allclose(ys[1], stack(-X), rtol=1e-5, atol=1e-6)


def test_repr_is_readable():
    text = repr(_stack(3))
    assert text.startswith("Stacked(\n  layers=Block(")
    assert "weight=f32[3,4,4]" in text and "num_layers=3" in text


def test_layer_that_changes_the_shape():
    with pytest.raises(ValueError, match=r"Stacked: each layer's output is the next"):
        ptm.nn.Stacked(
            lambda k: ptm.nn.Linear(WIDTH, 2, key=k), 2, key=jax.random.key(0)
        )(X)


@pytest.mark.parametrize(
    "layers, match",
    [
        (
            [
                ptm.nn.Linear(4, 4, key=jax.random.key(0)),
                ptm.nn.Linear(4, 4, use_bias=False, key=jax.random.key(1)),
            ],
            r"needs identical layers(.|\n)*Layer 1 differs from layer 0",
        ),
        (
            [
                ptm.nn.Linear(4, 4, key=jax.random.key(0)),
                ptm.nn.Linear(4, 4, dtype=jnp.bfloat16, key=jax.random.key(1)),
            ],
            r"Layer 1 differs from layer 0",
        ),
        ([], r"needs at least one layer"),
    ],
)
def test_existing_layers_that_cannot_be_stacked(layers, match):
    with pytest.raises(ValueError, match=match):
        ptm.nn.Stacked(layers=layers)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((Block,), {"key": jax.random.key(0)}, r"Got no num_layers\."),
        ((Block, 2), {}, r"Got no key\."),
        (
            (Block, 0),
            {"key": jax.random.key(0)},
            r"`num_layers` must be a positive int",
        ),
        (
            (Block, 2),
            {"layers": [Block(jax.random.key(0))], "key": jax.random.key(0)},
            r"both `layers=` and a constructor",
        ),
    ],
)
def test_bad_construction(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ptm.nn.Stacked(*args, **kwargs)


def test_misuse_when_called():
    stack = _stack(2)
    with pytest.raises(IndexError, match=r"layer index 2 is out of range"):
        stack[2]
    with pytest.raises(TypeError, match=r"takes a `pytreemod.nn.State`"):
        stack(X, {"not": "a state"})
    stateful, _ = ptm.nn.make_with_state(ptm.nn.Stacked)(
        CountingBlock, 2, key=jax.random.key(0)
    )
    with pytest.raises(ValueError, match=r"hold state .* called\nwithout a `State`"):
        stateful(X)
    with pytest.raises(
        ValueError, match=r"LayerNorm\(shape=\(4,\)\): .*got shape \(3,\)"
    ):
        stack(jnp.ones(3))
