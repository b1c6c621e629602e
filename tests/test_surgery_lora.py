"""LoRA end to end: adapters on the query and value projections of every
attention layer of a small transformer (inside `nn.Stacked`), the same output
at initialisation, training that moves only the adapters, merging back into
plain `nn.Linear`s, and saving only the adapters and loading them onto a
fresh base model."""

import jax
import jax.numpy as jnp
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as ptm
from pytreemod import nn, select, surgery


class Block(ptm.Module):
    norm: nn.LayerNorm
    attention: nn.MultiheadAttention
    mlp: nn.MLP

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.norm = nn.LayerNorm(8)
        self.attention = nn.MultiheadAttention(2, 8, key=k1)
        self.mlp = nn.MLP(8, 8, 16, 1, key=k2)

    def __call__(self, x, *, key=None):
        h = jax.vmap(self.norm)(x)
        x = x + self.attention(h, h, h)
        return x + jax.vmap(self.mlp)(x)


class Transformer(ptm.Module):
    embed: nn.Linear
    blocks: nn.Stacked
    head: nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.embed = nn.Linear(3, 8, key=k1)
        self.blocks = nn.Stacked(Block, 2, key=k2)
        self.head = nn.Linear(8, 1, key=k3)

    def __call__(self, x):
        return jax.vmap(self.head)(self.blocks(jax.vmap(self.embed)(x)))


QV = select.instance(nn.MultiheadAttention) & select.field("query_proj", "value_proj")
ADAPTERS = select.instance(surgery.LoRALinear) & select.field("a", "b")


def _data():
    xs = jax.random.normal(jax.random.key(5), (4, 6, 3))
    ys = jnp.sin(xs.sum(-1, keepdims=True))
    return xs, ys


def _loss(model, xs, ys):
    return jnp.mean((jax.vmap(model)(xs) - ys) ** 2)


def test_add_lora_wraps_the_query_and_value_projections_inside_stacked():
    base = Transformer(jax.random.key(0))
    tuned = surgery.add_lora(base, QV, rank=2, key=jax.random.key(1))
    attention = tuned.blocks.layers.attention
    assert isinstance(attention.query_proj, surgery.LoRALinear)
    assert isinstance(attention.value_proj, surgery.LoRALinear)
    assert type(attention.key_proj) is nn.Linear
    # One adapter per layer, stacked like the rest; each layer's A is its own.
    assert attention.query_proj.a.shape == (2, 2, 8)
    assert attention.query_proj.b.shape == (2, 8, 2)
    assert not jnp.array_equal(attention.query_proj.a[0], attention.query_proj.a[1])
    assert attention.query_proj.weight is not base.blocks.layers.attention.query_proj
    assert jnp.array_equal(
        attention.query_proj.weight, base.blocks.layers.attention.query_proj.weight
    )
    assert tuned.embed is base.embed and tuned.head is base.head
    assert tuned.blocks.layers.mlp is base.blocks.layers.mlp
    xs, _ = _data()
    # B = 0: the same output at initialisation, exactly.
    assert jnp.array_equal(jax.vmap(tuned)(xs), jax.vmap(base)(xs))


def test_training_updates_only_the_adapters_and_merging_gives_plain_linears():
    base = Transformer(jax.random.key(0))
    tuned = surgery.add_lora(base, QV, rank=2, key=jax.random.key(1))
    params, frozen = ADAPTERS.partition(tuned)
    optimiser = optax.adam(1e-2)
    opt_state = optimiser.init(params)

    @ptm.filter_jit
    def step(params, frozen, opt_state, xs, ys):
        def loss(p):
            return _loss(ptm.combine(p, frozen), xs, ys)

        value, grads = ptm.filter_value_and_grad(loss)(params)
        # optax mixes its int32 step count with floats, which the strict
        # promotion of conftest.py refuses; that is optax's business.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimiser.update(grads, opt_state)
        return ptm.apply_updates(params, updates), opt_state, value

    xs, ys = _data()
    losses = []
    for _ in range(30):
        params, opt_state, value = step(params, frozen, opt_state, xs, ys)
        losses.append(float(value))
    assert losses[-1] < 0.7 * losses[0]
    trained = ptm.combine(params, frozen)
    # Every leaf outside the adapters is the very same array as before.
    before = jax.tree_util.tree_leaves_with_path(tuned)
    after = dict(jax.tree_util.tree_leaves_with_path(trained))
    changed = {jax.tree_util.keystr(p) for p, x in before if after[p] is not x}
    assert changed == {
        ".blocks.layers.attention.query_proj.a",
        ".blocks.layers.attention.query_proj.b",
        ".blocks.layers.attention.value_proj.a",
        ".blocks.layers.attention.value_proj.b",
    }

    merged = surgery.merge_lora(trained)
    attention = merged.blocks.layers.attention
    assert type(attention.query_proj) is nn.Linear
    assert type(attention.value_proj) is nn.Linear
    assert select.instance(surgery.LoRALinear).nodes(merged, missing_ok=True) == []
    # W + BA is rounded once, the adapter's path twice: equal to float32 rounding.
    assert jnp.allclose(jax.vmap(merged)(xs), jax.vmap(trained)(xs), atol=1e-5)
    assert not jnp.allclose(jax.vmap(merged)(xs), jax.vmap(base)(xs), atol=1e-3)


def test_save_only_the_adapters_and_load_them_onto_a_fresh_base(tmp_path):
    base = Transformer(jax.random.key(0))
    tuned = surgery.add_lora(base, QV, rank=2, key=jax.random.key(1))
    # Stand-in for training: give the adapters some values.
    tuned = ADAPTERS.apply(tuned, lambda x: x + 0.1)
    adapters, _ = ADAPTERS.partition(tuned)
    ptm.save(tmp_path / "adapters", adapters)

    fresh = surgery.add_lora(
        Transformer(jax.random.key(0)), QV, rank=2, key=jax.random.key(7)
    )
    like, rest = ADAPTERS.partition(fresh)
    restored = ptm.combine(ptm.load(tmp_path / "adapters", like), rest)
    xs, _ = _data()
    assert jnp.array_equal(jax.vmap(restored)(xs), jax.vmap(tuned)(xs))
    # The file holds the adapters only.
    assert set(ptm.load_metadata(tmp_path / "adapters") or {}) == set()
    with pytest.raises(ptm.CheckpointError, match="weight"):
        ptm.load(tmp_path / "adapters", fresh)


@settings(deadline=None, max_examples=20)
@given(
    rank=st.integers(1, 4),
    alpha=st.sampled_from([None, 1.0, 16.0]),
    seed=st.integers(0, 2**16),
)
def test_merge_matches_the_adapter_for_any_rank_and_scale(rank, alpha, seed):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    lora = surgery.LoRALinear(nn.Linear(5, 3, key=k1), rank=rank, alpha=alpha, key=k2)
    lora = ptm.tree_at(lambda m: m.b, lora, jax.random.normal(k3, (3, rank)))
    x = jnp.linspace(-1.0, 1.0, 5)
    assert jnp.allclose(lora.merge()(x), lora(x), atol=1e-4, rtol=1e-5)


def test_lora_misuse_is_a_clear_error():
    linear = nn.Linear(4, 4, key=jax.random.key(0))
    lora = surgery.LoRALinear(linear, 2, key=jax.random.key(1))
    with pytest.raises(TypeError, match="merge it first"):
        surgery.LoRALinear(lora, 2, key=jax.random.key(1))
    with pytest.raises(ValueError, match="`rank` must be a positive int"):
        surgery.LoRALinear(linear, 0, key=jax.random.key(1))
    with pytest.raises(ValueError, match="of vectors"):
        surgery.LoRALinear(
            nn.Linear("scalar", 2, key=jax.random.key(0)), 1, key=jax.random.key(1)
        )
    with pytest.raises(ValueError, match="matches nothing"):
        surgery.add_lora(linear, r"\.nope", 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="matches nothing"):
        surgery.merge_lora(linear)
    assert surgery.merge_lora(linear, missing_ok=True) is linear
