"""`pytreemod.nn.Shared` (weight tying)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod as ptm


def _unembed_weight(pair):
    return pair[1].weight


def _embed_weight(pair):
    return pair[0].weight


def _tied_pair(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    embed = ptm.nn.Embedding(5, 3, key=k1)
    unembed = ptm.nn.Linear(3, 5, key=k2)
    shared = ptm.nn.Shared((embed, unembed), _unembed_weight, _embed_weight)
    return embed, unembed, shared


def test_call_puts_the_tied_value_back():
    embed, unembed, shared = _tied_pair()
    new_embed, new_unembed = shared()
    assert new_embed.weight is new_unembed.weight
    np.testing.assert_array_equal(new_unembed.weight, embed.weight)
    np.testing.assert_array_equal(new_unembed.bias, unembed.bias)


def test_the_tied_node_is_held_once():
    embed, unembed, shared = _tied_pair()
    arrays = jax.tree_util.tree_leaves(ptm.filter(shared, ptm.is_array))
    # embed.weight, unembed.bias; unembed.weight is gone.
    assert [a.shape for a in arrays] == [(5, 3), (5,)]


def test_gradient_sums_both_uses():
    _, _, shared = _tied_pair()

    def loss(shared, token):
        embed, unembed = shared()
        return jnp.sum(unembed(embed(token)) ** 2)

    grads = ptm.filter_grad(loss)(shared, jnp.array(2))

    # The same loss with two separate copies: the tied gradient is their sum.
    def untied(weights, token):
        embed_w, unembed_w = weights
        embed, unembed = shared()
        embed = ptm.tree_at(lambda e: e.weight, embed, embed_w)
        unembed = ptm.tree_at(lambda u: u.weight, unembed, unembed_w)
        return jnp.sum(unembed(embed(token)) ** 2)

    weight = shared.pytree[0].weight
    g_embed, g_unembed = jax.grad(untied)((weight, weight), jnp.array(2))
    np.testing.assert_allclose(grads.pytree[0].weight, g_embed + g_unembed, rtol=1e-5)
    assert bool(jnp.all(jnp.isfinite(grads.pytree[0].weight)))


def test_several_nodes_at_once_with_a_transform_in_get():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    a = ptm.nn.Linear(2, 3, key=k1)
    b = ptm.nn.Linear(3, 2, key=k2)
    c = ptm.nn.Linear(3, 2, key=k3)
    shared = ptm.nn.Shared(
        (a, b, c),
        where=lambda t: (t[1].weight, t[2].weight),
        get=lambda t: (t[0].weight.T, t[0].weight.T),
    )
    _, new_b, new_c = shared()
    np.testing.assert_array_equal(new_b.weight, a.weight.T)
    np.testing.assert_array_equal(new_c.weight, a.weight.T)


def test_filter_jit_and_filter_vmap():
    _, _, shared = _tied_pair()

    @ptm.filter_jit
    def logits(shared, tokens):
        embed, unembed = shared()
        return ptm.filter_vmap(lambda t: unembed(embed(t)))(tokens)

    out = logits(shared, jnp.array([0, 4]))
    embed, unembed = shared()
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out[1], unembed(embed(4)), rtol=1e-5)


def test_two_models_built_alike_have_equal_static_parts():
    # The placeholders of two models compare equal, so a function jitted for
    # one model does not retrace for another built the same way.
    _, _, a = _tied_pair(0)
    _, _, b = _tied_pair(1)
    static_a = ptm.filter(a, ptm.is_array, inverse=True)
    static_b = ptm.filter(b, ptm.is_array, inverse=True)
    assert ptm.tree_equal(static_a, static_b) is True
    assert not ptm.tree_equal(a, b)  # the arrays differ


def test_repr_shows_the_placeholder():
    _, _, shared = _tied_pair()
    text = repr(shared)
    assert text.startswith("Shared(") and "weight=SharedNode" in text


def test_mismatched_shapes():
    k1, k2 = jax.random.split(jax.random.key(0))
    pair = (ptm.nn.Linear(2, 3, key=k1), ptm.nn.Linear(3, 2, key=k2))
    # The first sentence is Equinox's (libraries match on it); the transpose
    # hint follows.
    with pytest.raises(
        ValueError,
        match=r"^Every node being shared together must have the same pytree "
        r"structure(.|\n)*get\(pytree\): +f32\[3,2\](.|\n)*\.T",
    ):
        ptm.nn.Shared(pair, where=lambda p: p[1].weight, get=lambda p: p[0].weight)
