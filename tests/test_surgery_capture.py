"""`surgery.capture`: outputs of selected submodules by path, equal to calling
them by hand, under filter_jit / filter_vmap / filter_grad, with stateful
layers, inside `nn.Stacked` and inside a parent's `jax.vmap`; an unused
capture leaves the traced program unchanged; misuse is a clear error."""

import re

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as ptm
from pytreemod import nn, select, surgery


def _mlp():
    return nn.MLP(3, 2, 8, 2, key=jax.random.key(0))


def _by_hand(mlp, x):
    """The MLP's layer outputs, computed without capture."""
    h0 = mlp.layers[0](x)
    h1 = mlp.layers[1](mlp.activation(h0))
    h2 = mlp.layers[2](mlp.activation(h1))
    return {".layers[0]": h0, ".layers[1]": h1, ".layers[2]": h2}


def _assert_equal(values, expected):
    assert set(values) == set(expected)
    for path in expected:
        assert jnp.array_equal(values[path], expected[path]), path


def test_capture_gives_the_outputs_by_path():
    mlp, x = _mlp(), jnp.arange(3.0)
    y, values = surgery.capture(nn.Linear)(mlp, x)
    assert jnp.array_equal(y, mlp(x))
    _assert_equal(values, _by_hand(mlp, x))


def test_capture_of_a_function_of_the_model():
    mlp, x = _mlp(), jnp.arange(3.0)

    def loss(model, x, *, scale):
        return scale * jnp.sum(model(x) ** 2)

    out, values = surgery.capture(r"\.layers\[1\]", loss)(mlp, x, scale=2.0)
    assert jnp.array_equal(out, loss(mlp, x, scale=2.0))
    _assert_equal(values, {".layers[1]": _by_hand(mlp, x)[".layers[1]"]})


def test_capture_under_filter_jit():
    mlp, x = _mlp(), jnp.arange(3.0)
    traces = []

    def run(model, x):
        traces.append(None)
        return model(x)

    step = ptm.filter_jit(surgery.capture(nn.Linear, run))
    y, values = step(mlp, x)
    assert jnp.allclose(y, mlp(x), atol=1e-6)
    for path, value in _by_hand(mlp, x).items():
        assert jnp.allclose(values[path], value, atol=1e-6)
    # A new model of the same structure does not retrace.
    step(ptm.tree_at(lambda m: m.layers[0].bias, mlp, mlp.layers[0].bias + 1), x)
    assert len(traces) == 1


def test_capture_under_filter_vmap_carries_the_batch_axis():
    mlp, xs = _mlp(), jnp.arange(12.0).reshape(4, 3)
    y, values = ptm.filter_vmap(surgery.capture(nn.Linear), in_axes=(None, 0))(mlp, xs)
    assert y.shape == (4, 2)
    expected = jax.vmap(lambda x: _by_hand(mlp, x))(xs)
    for path, value in expected.items():
        assert values[path].shape[0] == 4
        assert jnp.allclose(values[path], value, atol=1e-6), path


def test_capture_under_filter_grad_with_has_aux():
    mlp, x = _mlp(), jnp.arange(3.0)

    def loss(model, x):
        y, values = surgery.capture(r"\.layers\[0\]")(model, x)
        return jnp.sum(y**2), values

    grads, values = ptm.filter_grad(loss, has_aux=True)(mlp, x)
    plain = ptm.filter_grad(lambda m, x: jnp.sum(m(x) ** 2))(mlp, x)
    assert ptm.tree_equal(grads, plain)
    _assert_equal(values, {".layers[0]": _by_hand(mlp, x)[".layers[0]"]})


class Count(nn.StatefulLayer):
    """Adds how often it was called before, and counts."""

    index: nn.StateIndex

    def __init__(self):
        self.index = nn.StateIndex(jnp.zeros(3))

    def __call__(self, x, state, *, key=None):
        count = state.get(self.index)
        return x + count, state.set(self.index, count + 1)


def test_capture_of_a_stateful_layer_gives_its_output_not_its_state():
    model, state = nn.make_with_state(nn.Sequential)(
        [nn.Lambda(jnp.negative), Count(), nn.Lambda(jnp.sin)]
    )
    x = jnp.arange(3.0)
    (y, state2), values = surgery.capture(Count)(model, x, state)
    assert jnp.array_equal(values[".layers[1]"], -x)  # the count was 0
    (y, state3), values = surgery.capture(Count)(model, x, state2)
    assert jnp.array_equal(values[".layers[1]"], -x + 1)
    assert jnp.array_equal(y, jnp.sin(-x + 1))
    assert jnp.array_equal(state3.get(model.layers[1].index), jnp.full(3, 2.0))


class Block(ptm.Module):
    attention: nn.MultiheadAttention
    mlp: nn.MLP

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.attention = nn.MultiheadAttention(2, 8, key=k1)
        self.mlp = nn.MLP(8, 8, 16, 1, key=k2)

    def __call__(self, x, *, key=None):
        x = x + self.attention(x, x, x)
        return x + jax.vmap(self.mlp)(x)


def test_capture_inside_a_parents_vmap_gives_the_mapped_axis_first():
    block, x = Block(jax.random.key(0)), jnp.ones((5, 8))
    sel = select.field("query_proj", "value_proj") | r"\.mlp\.layers\[0\]"
    _, values = surgery.capture(sel)(block, x)
    assert jnp.array_equal(
        values[".attention.query_proj"], jax.vmap(block.attention.query_proj)(x)
    )
    assert jnp.array_equal(
        values[".attention.value_proj"], jax.vmap(block.attention.value_proj)(x)
    )
    h = x + block.attention(x, x, x)
    assert jnp.array_equal(values[".mlp.layers[0]"], jax.vmap(block.mlp.layers[0])(h))


def test_capture_inside_stacked_gives_one_value_per_layer():
    stack = nn.Stacked(Block, 3, key=jax.random.key(1))
    x = jnp.broadcast_to(jnp.arange(8.0) / 8, (5, 8))
    sel = r"\.layers\.attention\.query_proj|\.layers\.mlp"
    y, values = ptm.filter_jit(surgery.capture(sel))(stack, x)
    h, queries, mlps = x, [], []
    for block in stack:
        queries.append(jax.vmap(block.attention.query_proj)(h))
        a = h + block.attention(h, h, h)
        mlps.append(jax.vmap(block.mlp)(a))
        h = a + mlps[-1]
    assert values[".layers.attention.query_proj"].shape == (3, 5, 8)
    assert jnp.allclose(
        values[".layers.attention.query_proj"], jnp.stack(queries), atol=1e-5
    )
    assert jnp.allclose(values[".layers.mlp"], jnp.stack(mlps), atol=1e-5)
    assert jnp.allclose(y, h, atol=1e-5)


def test_capture_inside_a_stateful_stacked():
    stack, state = nn.make_with_state(nn.Stacked)(
        lambda k: Count(), 4, key=jax.random.key(0)
    )
    x = jnp.zeros(3)
    (y, state), values = surgery.capture(r"\.layers")(stack, x, state)
    # Every layer's count starts at 0, so each layer passes its input on.
    assert jnp.array_equal(values[".layers"], jnp.zeros((4, 3)))
    (y, state), values = surgery.capture(r"\.layers")(stack, x, state)
    assert jnp.array_equal(
        values[".layers"], jnp.arange(1.0, 5.0)[:, None] * jnp.ones((1, 3))
    )


def test_a_submodule_called_twice_gives_a_tuple():
    lin = nn.Linear(3, 3, key=jax.random.key(0))
    model = nn.Sequential([lin, lin])  # the same layer twice
    x = jnp.arange(3.0)
    _, values = surgery.capture(
        r"\.layers\[0\]", lambda m, x: m.layers[0](m.layers[0](x))
    )(model, x)
    first, second = values[".layers[0]"]
    assert jnp.array_equal(first, lin(x)) and jnp.array_equal(second, lin(lin(x)))


def test_capture_of_nothing_leaves_the_traced_program_unchanged():
    stack = nn.Stacked(Block, 2, key=jax.random.key(1))
    x = jnp.ones((5, 8))
    plain = jax.make_jaxpr(lambda x: stack(x))(x)
    captured = jax.make_jaxpr(
        lambda x: surgery.capture(nn.Conv2d, missing_ok=True)(stack, x)[0]
    )(x)
    assert str(plain) == str(captured)
    # And capture of something outside the stack leaves the scan's program as is.
    seq = nn.Sequential([nn.Lambda(jnp.tanh), stack])
    plain = jax.make_jaxpr(lambda x: seq(x))(x)
    captured = jax.make_jaxpr(lambda x: surgery.capture(nn.Lambda)(seq, x)[0])(x)
    assert str(plain) == str(captured)


def test_capture_and_intervene_compose():
    mlp, x = _mlp(), jnp.arange(3.0)
    ablate = surgery.intervene(r"\.layers\[0\]", jnp.zeros_like)
    y, values = surgery.capture(nn.Linear, ablate)(mlp, x)
    assert jnp.array_equal(values[".layers[0]"], jnp.zeros(8))  # the patched value
    assert jnp.array_equal(y, ablate(mlp, x))


# -- misuse ------------------------------------------------------------------


def test_capturing_a_path_that_does_not_exist_names_the_nearest():
    mlp = _mlp()
    with pytest.raises(ValueError, match=r"(?s)matches nothing.*\.layers\[0\]"):
        surgery.capture(r"\.layer\[0\]")(mlp, jnp.ones(3))
    _, values = surgery.capture(r"\.layer\[0\]", missing_ok=True)(mlp, jnp.ones(3))
    assert values == {}


def test_a_transform_inside_the_capture_is_a_clear_error_not_a_leak():
    mlp, x = _mlp(), jnp.arange(3.0)
    inner_jit = surgery.capture(nn.Linear, ptm.filter_jit(lambda m, x: m(x)))
    with pytest.raises(
        surgery.CaptureError, match=r"(?s)`\.layers\[0\]`.*inside a transform"
    ):
        inner_jit(mlp, x)

    def scanned(model, xs):
        return jax.lax.scan(lambda c, x: (c, model(x)), 0.0, xs)[1]

    with pytest.raises(surgery.CaptureError, match="would leak out of it"):
        surgery.capture(nn.Linear, scanned)(mlp, jnp.ones((2, 3)))


def test_a_tapped_model_kept_past_its_capture_is_a_clear_error():
    mlp, x = _mlp(), jnp.arange(3.0)
    kept = []

    def keep(model, x):
        kept.append(model)
        return model(x)

    surgery.capture(nn.Linear, keep)(mlp, x)
    with pytest.raises(surgery.CaptureError, match=r"`\.layers\[0\]` has ended"):
        kept[0](x)
    with pytest.raises(surgery.CaptureError, match="has ended"):
        jax.jit(lambda x: kept[0](x))(x)


def test_capture_checks_its_arguments():
    with pytest.raises(TypeError, match=re.escape("capture(selection, fn)")):
        surgery.capture(lambda m: m, nn.Linear)
    with pytest.raises(TypeError, match="Expected a selection"):
        surgery.capture(3)


class ReadsItsChild(ptm.Module):
    proj: nn.Linear

    def __call__(self, x):
        # Reads an attribute of the child as well as calling it.
        return self.proj(x) * self.proj.weight.shape[0]


def test_a_parent_still_reads_its_tapped_childs_attributes():
    model, x = ReadsItsChild(nn.Linear(3, 2, key=jax.random.key(0))), jnp.ones(3)
    y, values = surgery.capture(r"\.proj")(model, x)
    assert jnp.array_equal(y, model(x))
    assert jnp.array_equal(values[".proj"], model.proj(x))


@settings(deadline=None, max_examples=15)
@given(
    depth=st.integers(1, 4),
    chosen=st.sets(st.integers(0, 4)),
    seed=st.integers(0, 2**16),
)
def test_captured_values_equal_calling_the_layers_by_hand(depth, chosen, seed):
    mlp = nn.MLP(3, 2, 4, depth, key=jax.random.key(seed))
    chosen = sorted(i for i in chosen if i <= depth)
    x = jax.random.normal(jax.random.key(seed + 1), (3,))
    pattern = "|".join(rf"\.layers\[{i}\]" for i in chosen) or r"\.nothing"
    y, values = surgery.capture(pattern, missing_ok=True)(mlp, x)
    assert jnp.array_equal(y, mlp(x))
    h, expected = x, {}
    for i, layer in enumerate(mlp.layers):
        h = layer(h)
        expected[f".layers[{i}]"] = h
        h = mlp.activation(h) if i < depth else mlp.final_activation(h)
    assert set(values) == {f".layers[{i}]" for i in chosen}
    for path, value in values.items():
        assert jnp.array_equal(value, expected[path]), path


class ConstantInsideVmap(ptm.Module):
    offset: nn.Lambda

    def __call__(self, xs):
        # `offset` ignores its input, so inside the vmap its output is not
        # batched; the captured value is still one per example.
        return jax.vmap(lambda x: x + self.offset(x))(xs)


def test_an_unbatched_output_inside_a_parents_vmap_is_broadcast():
    model = ConstantInsideVmap(nn.Lambda(lambda x: jnp.full(3, 2.0)))
    xs = jnp.arange(12.0).reshape(4, 3)
    _, values = surgery.capture(r"\.offset")(model, xs)
    assert jnp.array_equal(values[".offset"], jnp.full((4, 3), 2.0))
    # Nested vmaps: the outer mapped axis first.
    outer = ptm.filter_vmap(surgery.capture(r"\.offset"), in_axes=(None, 0))
    _, values = outer(model, jnp.stack([xs, xs]))
    assert values[".offset"].shape == (2, 4, 3)
