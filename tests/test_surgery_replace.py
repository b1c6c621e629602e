"""`surgery.replace`, `insert_before`, `insert_after`: edits by selection that
leave the rest of the tree untouched, on `nn` layers, user classes and
inside `nn.Stacked`."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import pytest

import pytreemod as ptm
from pytreemod import nn, select, surgery


class Block(ptm.Module):
    norm: nn.LayerNorm
    proj: nn.Linear
    extra: object

    def __init__(self, key):
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4, key=key)
        self.extra = None

    def __call__(self, x, *, key=None):
        return x + self.proj(self.norm(x))


class Net(ptm.Module):
    body: nn.Sequential
    head: nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.body = nn.Sequential(
            [nn.Linear(3, 4, key=k1), nn.Dropout(0.5), Block(k2), nn.Lambda(jnp.tanh)]
        )
        self.head = nn.Linear(4, 2, key=k3)

    def __call__(self, x):
        return self.head(self.body(x))


def out_of(net):
    return surgery.replace(net, nn.Dropout, lambda _: nn.Identity())


def _untouched_leaves(before, after, changed_prefix):
    """Every leaf of `before` off `changed_prefix` is the same object in
    `after`, at the same path."""
    old = {jtu.keystr(p): x for p, x in jtu.tree_leaves_with_path(before)}
    new = {jtu.keystr(p): x for p, x in jtu.tree_leaves_with_path(after)}
    kept = [p for p in old if not p.startswith(changed_prefix)]
    assert kept
    for p in kept:
        assert new[p] is old[p], p


def test_replace_swaps_only_the_selected_submodule():
    net = Net(jax.random.key(0))
    out = surgery.replace(net, nn.Dropout, lambda _: nn.Identity())
    assert isinstance(out.body.layers[1], nn.Identity)
    assert out.body.layers[0] is net.body.layers[0]
    assert out.body.layers[2] is net.body.layers[2]
    assert out.head is net.head
    _untouched_leaves(net, out, ".body.layers[1]")
    x = jnp.arange(3.0)
    # Dropout in inference mode is the identity, so the outputs agree.
    assert jnp.array_equal(out(x), nn.inference_mode(net)(x))


def test_replace_by_pattern_type_and_selector_agree():
    net = Net(jax.random.key(0))

    def wrap(linear):
        return nn.Sequential([linear, nn.Lambda(jax.nn.relu)])

    a = surgery.replace(net, r"\.head", wrap, check_types=False)
    b = surgery.replace(net, select.path(r"\.head"), wrap, check_types=False)
    c = surgery.replace(
        net, select.instance(nn.Linear) & select.field("head"), wrap, check_types=False
    )
    for out in (a, b, c):
        assert isinstance(out.head, nn.Sequential)
        assert out.head.layers[0] is net.head
    x = jnp.arange(3.0)
    a, net = nn.inference_mode(a), nn.inference_mode(net)
    assert jnp.array_equal(a(x), jax.nn.relu(net(x)))


def test_replace_calls_fn_on_outermost_selected_only():
    net = Net(jax.random.key(0))
    seen = []

    def record(sub):
        seen.append(type(sub).__name__)
        return sub

    either = select.instance(Block) | select.instance(nn.Linear)
    out = surgery.replace(net, either, record)
    assert sorted(seen) == ["Block", "Linear", "Linear"]  # not Block.proj
    assert out is net  # nothing changed: the very same tree


def test_replace_on_a_user_class_inside_a_user_class():
    net = Net(jax.random.key(0))
    out = surgery.replace(
        net, r"\.body\.layers\[2\]\.norm", lambda n: nn.LayerNorm(4, use_weight=False)
    )
    assert out.body.layers[2].norm.weight is None
    assert out.body.layers[2].proj is net.body.layers[2].proj


def test_replace_checks_a_declared_type_and_names_the_path():
    net = Net(jax.random.key(0))
    with pytest.raises(TypeError, match=r"`\.body\.layers\[2\]\.proj`.*`Block\.proj`"):
        surgery.replace(net, r".*\.proj", lambda _: nn.Identity())
    with pytest.raises(TypeError, match=r"`\.head` is a `Identity`.*`Net\.head`"):
        surgery.replace(net, r"\.head", lambda _: nn.Identity())
    # A field without a plain-class annotation (`object`, here) takes anything,
    # and so does a subclass of the declared class.
    anything = surgery.replace(net, r".*\.extra", lambda _: "anything")
    assert anything.body.layers[2].extra == "anything"
    # A leafless submodule (`nn.Identity`, a `None`) can be selected too.
    back = surgery.replace(out_of(net), nn.Identity, lambda _: nn.Lambda(jnp.tanh))
    assert isinstance(back.body.layers[1], nn.Lambda)
    out = surgery.replace(net, r".*\.proj", lambda _: nn.Identity(), check_types=False)
    assert isinstance(out.body.layers[2].proj, nn.Identity)


def test_replace_of_nothing_is_an_error_unless_missing_ok():
    net = Net(jax.random.key(0))
    with pytest.raises(ValueError, match="matches nothing"):
        surgery.replace(net, r"\.haed", lambda m: m)
    assert surgery.replace(net, r"\.haed", lambda m: m, missing_ok=True) is net


def test_replace_the_root():
    lin = nn.Linear(2, 2, key=jax.random.key(0))
    out = surgery.replace(lin, select.everything(), lambda m: nn.Sequential([m]))
    assert isinstance(out, nn.Sequential) and out.layers[0] is lin


def test_insert_before_and_after_in_sequential():
    net = Net(jax.random.key(0))
    out = surgery.insert_after(
        net, r"\.body\.layers\[0\]", lambda lin: nn.LayerNorm(lin.out_features)
    )
    names = [type(layer).__name__ for layer in out.body.layers]
    assert names == ["Linear", "LayerNorm", "Dropout", "Block", "Lambda"]
    out = surgery.insert_before(net, nn.Dropout, nn.Lambda(jnp.negative))
    names = [type(layer).__name__ for layer in out.body.layers]
    assert names == ["Linear", "Lambda", "Dropout", "Block", "Lambda"]
    assert out.body.layers[0] is net.body.layers[0]
    assert out.head is net.head
    # Two positions in one Sequential, both honoured.
    both = surgery.insert_after(net, r"\.body\.layers\[[02]\]", nn.Identity())
    names = [type(layer).__name__ for layer in both.body.layers]
    assert names == ["Linear", "Identity", "Dropout", "Block", "Identity", "Lambda"]


def test_insert_outside_a_sequential_is_an_error_naming_the_path():
    net = Net(jax.random.key(0))
    held = r"`\.head` is not one \(it is held by a `Net`\)"
    with pytest.raises(ValueError, match=held):
        surgery.insert_after(net, r"\.head", nn.Identity())
    with pytest.raises(ValueError, match=r"`\(the root\)`.*held by a `nothing`"):
        surgery.insert_after(net, select.everything(), nn.Identity())


def _stack(key, n=3):
    return nn.Stacked(lambda k: Block(k), n, key=key)


def test_replace_inside_stacked_works_per_layer_and_keeps_the_layer_axis():
    stack = _stack(jax.random.key(0))
    layers = []

    def scale(proj):
        layers.append(proj.weight.shape)
        return ptm.tree_at(lambda p: p.weight, proj, 2 * proj.weight)

    out = surgery.replace(stack, r"\.layers\.proj", scale)
    assert layers == [(4, 4)] * 3  # fn saw ordinary layers, one at a time
    assert out.layers.proj.weight.shape == (3, 4, 4)
    assert jnp.array_equal(out.layers.proj.weight, 2 * stack.layers.proj.weight)
    assert out.layers.norm is stack.layers.norm
    assert out.layers.proj.bias is not None
    x = jnp.arange(4.0)
    by_hand = x
    for layer in stack:
        layer = ptm.tree_at(lambda b: b.proj.weight, layer, 2 * layer.proj.weight)
        by_hand = layer(by_hand)
    assert jnp.allclose(out(x), by_hand, atol=1e-6)


def test_replace_inside_stacked_that_differs_per_layer_names_the_path():
    stack = _stack(jax.random.key(0))
    count = iter(range(10))

    def differ(proj):
        return nn.Linear(4, 4, use_bias=next(count) == 0, key=jax.random.key(1))

    inside = r"`\.layers\.proj` is inside the `nn\.Stacked`"
    with pytest.raises(ValueError, match=inside):
        surgery.replace(stack, r"\.layers\.proj", differ)


def test_insert_inside_a_stacked_sequential():
    stack = nn.Stacked(
        lambda k: nn.Sequential([nn.Linear(4, 4, key=k)]), 2, key=jax.random.key(0)
    )
    out = surgery.insert_after(stack, nn.Linear, nn.Lambda(jax.nn.relu))
    assert [type(x).__name__ for x in out.layers.layers] == ["Linear", "Lambda"]
    assert out.layers.layers[0].weight.shape == (2, 4, 4)
    x = jnp.arange(4.0) - 2
    by_hand = x
    for layer in stack:
        by_hand = jax.nn.relu(layer(by_hand))
    assert jnp.allclose(out(x), by_hand, atol=1e-6)
