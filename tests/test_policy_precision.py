"""`pytreemod.policy.MixedPrecision` and loss scaling: casts by selection,
bit for bit against hand-written casts; float32 master weights and
gradients; a bf16 run against float32; float16 with dynamic loss scaling;
memory of a bf16 step against float32; misuse."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings

import pytreemod as ptm
from pytreemod import select
from pytreemod.policy import (
    KEEP,
    DynamicLossScale,
    MixedPrecision,
    NoOpLossScale,
    StaticLossScale,
    all_finite,
    select_tree,
)

BF16, F16, F32 = jnp.bfloat16, jnp.float16, jnp.float32
NORMS = select.instance(ptm.nn.LayerNorm, ptm.nn.RMSNorm, ptm.nn.GroupNorm)


def _cast(tree, dtype):
    """The Equinox way: every floating array cast by hand."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if ptm.is_inexact_array(x) else x, tree
    )


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    bits = lambda x: x.reshape(-1).view(np.uint8)  # noqa: E731
    np.testing.assert_array_equal(bits(a), bits(b))


class Block(ptm.Module):
    """A pre-norm transformer block over `(seq, dim)`."""

    norm1: ptm.nn.LayerNorm
    attention: ptm.nn.MultiheadAttention
    norm2: ptm.nn.LayerNorm
    mlp: ptm.nn.MLP

    def __init__(self, dim, heads, key):
        k1, k2 = jax.random.split(key)
        self.norm1 = ptm.nn.LayerNorm(dim)
        self.attention = ptm.nn.MultiheadAttention(heads, dim, key=k1)
        self.norm2 = ptm.nn.LayerNorm(dim)
        self.mlp = ptm.nn.MLP(dim, dim, 2 * dim, 1, key=k2)

    def __call__(self, x):
        h = jax.vmap(self.norm1)(x)
        x = x + self.attention(h, h, h)
        return x + jax.vmap(self.mlp)(jax.vmap(self.norm2)(x))


def _data(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), F32)


# -- forward, bit for bit ------------------------------------------------------


def test_bf16_mlp_forward_equals_hand_cast_bit_for_bit():
    mlp = ptm.nn.MLP(8, 4, 16, 2, key=jax.random.key(0))
    x = _data((5, 8))
    policy = MixedPrecision(param=F32, compute=BF16, output=F32)

    @ptm.filter_jit
    def with_policy(mlp, x):
        run = policy.cast_to_compute(mlp)
        return policy.cast_to_output(jax.vmap(run)(policy.cast_inputs(x)))

    @ptm.filter_jit
    def by_hand(mlp, x):
        return jax.vmap(_cast(mlp, BF16))(x.astype(BF16)).astype(F32)

    out = with_policy(mlp, x)
    assert out.dtype == F32
    _same_bits(out, by_hand(mlp, x))
    # and bf16 really ran: float32 gives another answer
    assert not np.array_equal(out, jax.vmap(mlp)(x))


def test_bf16_transformer_block_keeps_layer_norms_in_float32_bit_for_bit():
    block = Block(8, 2, jax.random.key(1))
    # norm weights and biases that bfloat16 cannot hold exactly
    block = ptm.tree_at(
        lambda b: (b.norm1.weight, b.norm1.bias, b.norm2.weight),
        block,
        (1 + 0.1 * _data((8,), 3), 0.1 * _data((8,), 4), 1 + 0.1 * _data((8,), 5)),
    )
    x = _data((6, 8), seed=1)
    policy = MixedPrecision(compute="bfloat16", output="float32", rules=[(NORMS, F32)])

    running = policy.cast_to_compute(block)
    assert running.norm1.weight.dtype == F32 and running.norm2.bias.dtype == F32
    assert running.mlp.layers[0].weight.dtype == BF16
    assert running.attention.query_proj.weight.dtype == BF16
    # kept float32 arrays are the very same objects
    assert running.norm1.weight is block.norm1.weight
    # and the kept norm computes in float32 on bfloat16 input (as
    # docs/policies.md says): the float32 layer's answer, rounded once
    h = (_data((8,), seed=2) * 3 + 1).astype(BF16)
    _same_bits(running.norm1(h), block.norm1(h.astype(F32)).astype(BF16))
    assert not np.array_equal(running.norm1(h), _cast(block.norm1, BF16)(h))

    def by_hand(block):
        # the Equinox way: tree_at the layers to cast, norms left alone
        return ptm.tree_at(
            lambda b: (b.attention, b.mlp),
            block,
            (_cast(block.attention, BF16), _cast(block.mlp, BF16)),
        )

    def with_policy(block, x):
        running = policy.cast_to_compute(block)
        return policy.cast_to_output(running(policy.cast_inputs(x)))

    run = ptm.filter_jit(with_policy)
    ref = ptm.filter_jit(lambda b, x: by_hand(b)(x.astype(BF16)).astype(F32))
    _same_bits(run(block, x), ref(block, x))


def test_only_floating_arrays_are_cast():
    tree = {
        "w": jnp.ones(3),
        "i": jnp.arange(3),
        "k": jax.random.key(0),
        "raw": jax.random.PRNGKey(0),
        "b": jnp.array([True]),
        "s": "name",
        "f": 1.5,
    }
    out = MixedPrecision(compute=BF16).cast_to_compute(tree)
    assert out["w"].dtype == BF16
    for name in ["i", "k", "raw", "b", "s", "f"]:
        assert out[name] is tree[name]


def test_gradients_come_back_in_the_master_weights_dtype():
    mlp = ptm.nn.MLP(4, 1, 8, 1, key=jax.random.key(0))
    policy = MixedPrecision(compute=BF16, output=F32)
    x = _data((3, 4))

    def loss(mlp):
        run = policy.cast_to_compute(mlp)
        return jnp.sum(policy.cast_to_output(jax.vmap(run)(policy.cast_inputs(x))))

    grads = ptm.filter_grad(loss)(mlp)
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(grads)}
    assert dtypes == {jnp.dtype(F32)}


def test_keep_leaves_arrays_alone_both_ways():
    tree = {"a": jnp.ones(2, BF16), "b": jnp.ones(2, BF16)}
    policy = MixedPrecision(compute=F16, rules=[(r"\['a'\]", KEEP)])
    assert policy.cast_to_compute(tree)["a"] is tree["a"]
    assert policy.cast_to_compute(tree)["b"].dtype == F16
    back = policy.cast_to_param(tree)
    assert back["a"] is tree["a"] and back["b"].dtype == F32


def test_first_matching_rule_wins():
    mlp = ptm.nn.MLP(2, 2, 2, 1, key=jax.random.key(0))
    policy = MixedPrecision(
        compute=BF16,
        rules=[(select.field("bias"), F32), (select.instance(ptm.nn.Linear), F16)],
    )
    out = policy.cast_to_compute(mlp)
    assert out.layers[0].bias.dtype == F32
    assert out.layers[0].weight.dtype == F16


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
    st.sets(st.integers(0, 3)),
    st.sampled_from(["bfloat16", "float16"]),
)
def test_round_trip_keeps_selected_and_leaves_others_alone(sizes, kept, compute):
    """cast_to_compute then cast_to_param gives back float32 arrays selected
    as KEEP bit for bit (the same objects), and non-floating leaves are never
    touched."""
    rng = np.random.default_rng(len(sizes))
    tree = {
        "p": [jnp.asarray(rng.normal(size=(n,)), F32) for n in sizes],
        "i": [jnp.arange(n) for n in sizes],
    }
    kept = sorted(k for k in kept if k < len(sizes))
    rules = [(select.path(rf"\['p'\]\[{k}\]"), KEEP) for k in kept]
    policy = MixedPrecision(compute=compute, rules=rules)
    running = policy.cast_to_compute(tree)
    back = policy.cast_to_param(running)
    trios = zip(tree["p"], back["p"], running["p"], strict=True)
    for k, (old, new, mid) in enumerate(trios):
        assert new.dtype == F32
        if k in kept:
            assert mid is old and new is old
        else:
            assert mid.dtype == jnp.dtype(compute)
    for old, new in zip(tree["i"], back["i"], strict=True):
        assert new is old


# -- training -------------------------------------------------------------------


def _train(policy, steps, scale=None, lr=1e-2):
    """A small regression MLP trained with Adam under `policy`; returns the
    losses, the final model, and every (skipped, scale) pair."""
    # optax's Adam needs JAX's standard dtype promotion
    with jax.numpy_dtype_promotion("standard"):
        return _train_standard(policy, steps, scale, lr)


def _train_standard(policy, steps, scale, lr):
    mlp = ptm.nn.MLP(8, 1, 32, 2, key=jax.random.key(0))
    optim = optax.adam(lr)
    opt_state = optim.init(ptm.filter(mlp, ptm.is_array))
    scale = NoOpLossScale() if scale is None else scale
    x = _data((64, 8))
    y = jnp.sin(x.sum(axis=1, keepdims=True))

    @ptm.filter_jit
    def step(mlp, opt_state, scale):
        def loss(mlp):
            run = policy.cast_to_compute(mlp)
            pred = policy.cast_to_output(jax.vmap(run)(policy.cast_inputs(x)))
            value = jnp.mean((pred - y) ** 2)
            return scale.scale(value), value

        grads, value = ptm.filter_grad(loss, has_aux=True)(mlp)
        grads = scale.unscale(grads)
        finite = all_finite(grads)
        updates, new_state = optim.update(grads, opt_state)
        new_mlp = ptm.apply_updates(mlp, updates)
        mlp, opt_state = select_tree(finite, (new_mlp, new_state), (mlp, opt_state))
        return value, mlp, opt_state, scale.adjust(finite), finite

    losses, history = [], []
    for _ in range(steps):
        before = (mlp, opt_state)
        value, mlp, opt_state, new_scale, finite = step(mlp, opt_state, scale)
        history.append((bool(finite), before, (mlp, opt_state), scale))
        scale = new_scale
        losses.append(float(value))
    return np.array(losses), mlp, history


def test_bf16_training_tracks_float32_loss():
    """Tolerance: at every one of 100 Adam steps the bf16 loss is within 2% of
    the initial loss of the float32 one (measured: at most 0.9%), and both
    fall by over 100x."""
    f32, _, _ = _train(MixedPrecision(), 100)
    bf16, bf16_model, _ = _train(MixedPrecision(compute=BF16, output=F32), 100)
    assert f32[-1] < f32[0] / 100 and bf16[-1] < bf16[0] / 100
    np.testing.assert_allclose(bf16, f32, rtol=0, atol=0.02 * f32[0])
    assert not np.array_equal(bf16, f32)
    # the master weights stayed float32
    arrays = jax.tree.leaves(ptm.filter(bf16_model, ptm.is_array))
    assert {x.dtype for x in arrays} == {jnp.dtype(F32)}


def test_float16_dynamic_loss_scale_skips_overflowing_steps_and_adjusts():
    # 2**40 overflows float16 in the backward pass: each such step must be
    # skipped (model and optimiser state bit for bit unchanged) and the scale
    # halved, until it fits; then training proceeds and, after `period`
    # finite steps, the scale doubles.
    scale = DynamicLossScale(2.0**40, period=5)
    policy = MixedPrecision(compute=F16, output=F32)
    losses, _, history = _train(policy, 40, scale=scale)
    finite = [h[0] for h in history]
    scales = [float(h[3].loss_scale) for h in history]
    first = finite.index(True)
    assert first >= 2, "the first steps must overflow"
    assert all(not f for f in finite[:first])
    assert scales[: first + 1] == [2.0 ** (40 - i) for i in range(first + 1)]
    for _, before, after, _ in history[:first]:
        arrays = [ptm.filter(t, ptm.is_array) for t in (before, after)]
        jax.tree.map(_same_bits, *arrays)
    for ok, before, after, _ in history[first : first + 3]:
        assert ok
        assert not np.array_equal(before[0].layers[0].weight, after[0].layers[0].weight)
    # the scale doubles after 5 finite steps in a row
    assert all(finite[first : first + 5])
    assert scales[first + 5] == 2 * scales[first]
    assert losses[-1] < losses[first]


def test_dynamic_loss_scale_passes_through_filter_jit_without_retracing():
    @ptm.filter_jit
    @ptm.debug.assert_max_traces(max_traces=1)
    def adjust(scale, finite):
        return scale.adjust(finite)

    scale = DynamicLossScale(8.0, period=2, min_scale=2.0)
    for finite in [False, False, False, True, True]:
        scale = adjust(scale, jnp.array(finite))
    assert float(scale.loss_scale) == 4.0 and int(scale.counter) == 0
    # min_scale holds: 8 -> 4 -> 2 -> 2, then two finite steps double it
    assert scale.period == 2


def test_static_and_no_op_scales():
    grads = {"w": jnp.array([2.0, 4.0], F16)}
    s = StaticLossScale(2.0**4)
    assert s.unscale(s.scale(grads))["w"].dtype == F16
    np.testing.assert_array_equal(s.unscale(s.scale(grads))["w"], grads["w"])
    assert s.adjust(jnp.array(False)) is s
    n = NoOpLossScale()
    assert n.scale(grads) is grads and n.adjust(jnp.array(True)) is n


def test_all_finite_and_select_tree():
    assert bool(all_finite({"a": jnp.ones(2), "k": jax.random.key(0), "s": "x"}))
    assert not bool(all_finite([jnp.array([jnp.nan], BF16)]))
    assert bool(all_finite({}))
    with pytest.raises(ValueError, match="non-array leaf at \\['n'\\] differs"):
        select_tree(jnp.array(True), {"n": 1}, {"n": 2})
    with pytest.raises(ValueError, match="same structure"):
        select_tree(jnp.array(True), [jnp.ones(1)], (jnp.ones(1),))
    with pytest.raises(ValueError, match="scalar boolean `pred`"):
        select_tree(jnp.ones(2, bool), jnp.ones(2), jnp.ones(2))


# -- memory -------------------------------------------------------------------


def _step_memory(compute, width=256, depth=3, batch=512):
    """Compiled memory of one Adam step of an MLP, and the bytes the forward
    pass keeps for the backward pass (its residuals)."""
    mlp = ptm.nn.MLP(width, width, width, depth, key=jax.random.key(0))
    policy = MixedPrecision(compute=compute, output=F32)
    optim = optax.adam(1e-3)
    params, static = ptm.partition(mlp, ptm.is_array)
    opt_state = optim.init(params)
    x = jnp.ones((batch, width), F32)

    def loss(params):
        run = policy.cast_to_compute(ptm.combine(params, static))
        pred = jax.vmap(run)(policy.cast_inputs(x))
        return jnp.mean(policy.cast_to_output(pred) ** 2)

    def step(params, opt_state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optim.update(grads, opt_state)
        return value, optax.apply_updates(params, updates), opt_state

    with jax.numpy_dtype_promotion("standard"):  # for optax's Adam
        compiled = jax.jit(step).lower(params, opt_state).compile()
    memory = compiled.memory_analysis()
    _, backward = jax.eval_shape(lambda p: jax.vjp(loss, p), params)
    residuals = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(backward))
    return memory, residuals


def test_bf16_step_memory_against_float32():
    """Measured on the CPU backend (docs/policies.md gives the figures): the
    arguments and outputs (float32 master weights and Adam state) are the
    same; the activations saved for the backward pass halve. XLA's CPU
    backend computes bf16 dots and elementwise ops in float32, so its
    compiled temporary memory does not shrink there as it does on GPU/TPU."""
    m32, r32 = _step_memory(F32)
    m16, r16 = _step_memory(BF16)
    assert m16.argument_size_in_bytes == m32.argument_size_in_bytes
    assert m16.output_size_in_bytes == m32.output_size_in_bytes
    assert m32.temp_size_in_bytes > 0 and m16.temp_size_in_bytes > 0
    activations = 512 * 256 * 3  # three hidden activations of (batch, width)
    assert r32 - r16 >= activations * 2  # at least 2 bytes saved per value
    assert r16 < 0.7 * r32


# -- misuse ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"compute": jnp.int32}, TypeError, "`compute` must be a floating.*int32"),
        ({"param": "int8"}, TypeError, "`param` must be a floating dtype.*int8"),
        ({"output": "bool"}, TypeError, "`output` must be a floating dtype.*bool"),
        ({"compute": "bfloat61"}, ValueError, "got 'bfloat61', which names no dtype"),
        ({"rules": [(NORMS, "int32")]}, TypeError, "rule 0 of `rules`: its dtype must"),
        ({"rules": [NORMS]}, TypeError, "must be a list of `\\(selection, dtype"),
        ({"rules": [(3, F32)]}, TypeError, "rule 0: Expected a selection"),
        ({"rules": [("[", F32)]}, ValueError, "rule 0: The key-path pattern"),
    ],
)
def test_misuse_is_a_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        MixedPrecision(**kwargs)


def test_a_rule_that_matches_nothing_is_an_error_unless_allowed():
    mlp = ptm.nn.MLP(2, 2, 2, 1, key=jax.random.key(0))
    policy = MixedPrecision(compute=BF16, rules=[(NORMS, F32)])
    with pytest.raises(ValueError, match="matches nothing in this `MLP`"):
        policy.cast_to_compute(mlp)
    lenient = MixedPrecision(compute=BF16, rules=[(NORMS, F32)], missing_ok=True)
    assert lenient.cast_to_compute(mlp).layers[0].weight.dtype == BF16


def test_dtype_names_and_aliases():
    p = MixedPrecision("f32", "bf16", "half")
    assert (p.param, p.compute, p.output) == (
        jnp.dtype(F32),
        jnp.dtype(BF16),
        jnp.dtype(F16),
    )
    assert MixedPrecision().compute == jnp.dtype(F32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"period": 0}, "`period` must be a positive int"),
        ({"factor": 1.0}, "`factor` must be greater than 1"),
        ({"min_scale": 0.0}, "`min_scale` must be positive"),
    ],
)
def test_dynamic_loss_scale_misuse(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DynamicLossScale(**kwargs)


def test_from_string_as_jmp_writes_it():
    p = MixedPrecision.from_string("params=float32,compute=bfloat16,output=float16")
    assert (p.param, p.compute, p.output) == (
        jnp.dtype(F32),
        jnp.dtype(BF16),
        jnp.dtype(F16),
    )
    assert MixedPrecision.from_string("c=bf16") == MixedPrecision(compute=BF16)
    with pytest.raises(ValueError, match="'weights=f32' should be `name=dtype`"):
        MixedPrecision.from_string("weights=f32,c=bf16")
    with pytest.raises(TypeError, match="`compute` must be a floating dtype"):
        MixedPrecision.from_string("c=int8")


def test_a_policy_is_hashable_and_passes_through_filter_jit_as_static():
    @ptm.filter_jit
    @ptm.debug.assert_max_traces(max_traces=1)
    def run(policy, x):
        return policy.cast_inputs(x)

    norms_f32 = [(NORMS, F32)]
    for _ in range(3):
        policy = MixedPrecision(compute="bf16", rules=norms_f32)
        assert run(policy, jnp.ones(2)).dtype == BF16
    assert hash(policy) == hash(MixedPrecision(compute="bf16", rules=norms_f32))
