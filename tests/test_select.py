"""`pytreemod.select`: selections by key path, type, field name and value,
their combinations, what applying one gives (mask, pairs, nodes, apply, set,
partition, labels), and misuse."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as ptm
from pytreemod import select


class Head(ptm.Module):
    weight: jax.Array
    bias: jax.Array


class Net(ptm.Module):
    embed: ptm.nn.Embedding
    layers: list
    norm: ptm.nn.LayerNorm
    head: Head
    activation: str = ptm.field(static=True, default="relu")


def _net() -> Net:
    k = jax.random.split(jax.random.key(0), 4)
    return Net(
        embed=ptm.nn.Embedding(10, 4, key=k[0]),
        layers=[ptm.nn.Linear(4, 4, key=k[1]), ptm.nn.Linear(4, 4, key=k[2])],
        norm=ptm.nn.LayerNorm(4),
        head=Head(jnp.ones((2, 4)), jnp.zeros(2)),
    )


def _paths(selection, tree, **kwargs):
    return [p for p, _ in selection.pairs(tree, **kwargs)]


# -- atoms -------------------------------------------------------------------


def test_path_matches_the_whole_key_path_and_selects_the_subtree():
    net = _net()
    assert _paths(select.path(r"\.head"), net) == [".head.weight", ".head.bias"]
    assert _paths(select.path(r".*\.weight"), net) == [
        ".embed.weight",
        ".layers[0].weight",
        ".layers[1].weight",
        ".norm.weight",
        ".head.weight",
    ]
    # A full match: `.head` does not match `.head.weight` by prefix alone.
    assert _paths(select.path(r"\.hea"), net, missing_ok=True) == []
    # A compiled pattern is the same selection.
    assert _paths(select.path(re.compile(r"\.layers\[1\]")), net) == [
        ".layers[1].weight",
        ".layers[1].bias",
    ]


def test_instance_selects_submodules_and_leaves_by_type():
    net = _net()
    linears = select.instance(ptm.nn.Linear)
    assert [p for p, _ in linears.nodes(net)] == [".layers[0]", ".layers[1]"]
    assert len(linears.pairs(net)) == 4
    norms = select.instance(ptm.nn.LayerNorm, ptm.nn.RMSNorm)
    assert _paths(norms, net) == [".norm.weight", ".norm.bias"]
    arrays = select.instance(jax.Array)
    assert len(arrays.pairs(net)) == len(jax.tree_util.tree_leaves(net))


def test_field_selects_by_name_in_the_parent():
    net = _net()
    assert _paths(select.field("bias"), net) == [
        ".layers[0].bias",
        ".layers[1].bias",
        ".norm.bias",
        ".head.bias",
    ]
    tree = {"a": [1, 2, 3], "b": {"a": 4}}
    assert _paths(select.field("a"), tree) == [
        "['a'][0]",
        "['a'][1]",
        "['a'][2]",
        "['b']['a']",
    ]
    assert _paths(select.field(1), tree) == ["['a'][1]"]


def test_where_tests_each_leaf():
    tree = {"a": jnp.ones((2, 2)), "b": jnp.ones(2), "c": jnp.arange(3)}
    matrices = select.where(lambda x: x.ndim == 2)
    assert _paths(matrices, tree) == ["['a']"]
    floats = select.where(ptm.is_inexact_array)
    assert _paths(floats, tree) == ["['a']", "['b']"]


def test_everything_selects_every_leaf():
    net = _net()
    assert all(jax.tree_util.tree_leaves(select.everything().mask(net)))


# -- combinations --------------------------------------------------------------


def test_and_or_not_combine_per_leaf_with_inheritance():
    net = _net()
    linear_biases = select.instance(ptm.nn.Linear) & select.field("bias")
    assert _paths(linear_biases, net) == [".layers[0].bias", ".layers[1].bias"]
    either = select.path(r"\.head") | select.instance(ptm.nn.LayerNorm)
    assert _paths(either, net) == [
        ".norm.weight",
        ".norm.bias",
        ".head.weight",
        ".head.bias",
    ]
    not_head = ~select.path(r"\.head")
    mask = not_head.mask(net)
    assert mask.head.weight is False and mask.embed.weight is True
    # A pattern, a type or a tuple of types stand for a selection on either side.
    assert _paths(r"\.head" & select.field("bias"), net) == [".head.bias"]
    assert _paths(select.field("bias") & (Head, ptm.nn.LayerNorm), net) == [
        ".norm.bias",
        ".head.bias",
    ]


def test_nodes_are_the_outermost_selected_subtrees():
    net = _net()
    sel = select.path(r"\.layers") | select.instance(ptm.nn.Linear)
    assert [p for p, _ in sel.nodes(net)] == [".layers"]
    assert select.field("weight").nodes(net)[0] == (".embed.weight", net.embed.weight)


def test_nodes_counts_a_selected_node_without_leaves():
    # `nn.Identity()` has no leaves; selecting it is still a match for nodes().
    model = ptm.nn.Sequential(
        [ptm.nn.Identity(), ptm.nn.Linear(2, 2, key=jax.random.key(0))]
    )
    assert [p for p, _ in select.instance(ptm.nn.Identity).nodes(model)] == [
        ".layers[0]"
    ]
    with pytest.raises(ValueError, match="no leaf is selected"):
        select.instance(ptm.nn.Identity).pairs(model)


def test_selectors_are_hashable_values():
    a = select.instance(ptm.nn.Linear) & ~select.path(r"\.head")
    b = select.instance(ptm.nn.Linear) & ~select.path(r"\.head")
    assert a == b and hash(a) == hash(b)
    assert repr(a) == "(instance(Linear) & ~path('\\\\.head'))"


# -- what a selection gives ------------------------------------------------------


def test_mask_has_the_tree_structure_and_feeds_filter_and_optax():
    net = _net()
    sel = select.field("weight")
    mask = sel.mask(net)
    assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(net)
    kept = ptm.filter(net, mask)
    assert kept.head.bias is None and kept.head.weight is net.head.weight
    params = ptm.filter(net, ptm.is_array)
    tx = optax.masked(optax.add_decayed_weights(0.5), sel)  # a selector is callable
    updates, _ = tx.update(
        jax.tree_util.tree_map(jnp.zeros_like, params), tx.init(params), params
    )
    assert np.array_equal(updates.head.weight, 0.5 * net.head.weight)
    assert np.array_equal(updates.head.bias, jnp.zeros(2))


def test_apply_keeps_every_other_leaf_and_the_treedef():
    net = _net()
    out = select.field("bias").apply(net, lambda b: b + 1)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(net)
    assert out.head.weight is net.head.weight and out.embed.weight is net.embed.weight
    assert np.array_equal(out.head.bias, net.head.bias + 1)
    zeroed = select.instance(Head).set(net, 0.0)
    assert zeroed.head.weight == 0.0 and zeroed.layers[0].weight is net.layers[0].weight


def test_partition_and_combine_round_trip():
    net = _net()
    head, rest = select.path(r"\.head").partition(net)
    assert head.embed.weight is None and rest.head.weight is None
    assert ptm.tree_equal(ptm.combine(head, rest), net)


def test_works_on_an_optax_state_and_a_state():
    net = _net()
    params = ptm.filter(net, ptm.is_array)
    opt_state = optax.adam(1e-3).init(params)
    mu_heads = select.path(r".*\.mu\.head") & select.field("weight")
    assert _paths(mu_heads, opt_state) == ["[0].mu.head.weight"]
    assert len(select.instance(Head).pairs(opt_state)) == 4  # mu and nu
    _, state = ptm.nn.make_with_state(ptm.nn.BatchNorm)(3, "batch", mode="ema")
    assert len(select.everything().pairs(state)) == len(
        jax.tree_util.tree_leaves(state)
    )


def test_labels_first_rule_wins_with_a_default():
    net = _net()
    params = ptm.filter(net, ptm.is_array)
    rules = [
        (select.path(r"\.head"), "head"),
        (ptm.nn.Embedding, "frozen"),
        (select.field("bias"), "no_decay"),  # the head's bias is "head"
    ]
    labels = select.labels(rules, default="body")(params)
    assert labels.head.bias == "head" and labels.embed.weight == "frozen"
    assert labels.layers[0].bias == "no_decay" and labels.layers[0].weight == "body"
    tx = optax.multi_transform(
        {
            "head": optax.sgd(1.0),
            "frozen": optax.set_to_zero(),
            "no_decay": optax.sgd(0.5),
            "body": optax.sgd(0.25),
        },
        select.labels(rules, default="body"),  # a function: optax calls it
    )
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(ones, tx.init(params), params)
    assert float(updates.head.weight[0, 0]) == -1.0
    assert float(updates.embed.weight[0, 0]) == 0.0
    assert float(updates.layers[0].bias[0]) == -0.5
    assert float(updates.layers[0].weight[0, 0]) == -0.25


def test_labels_of_a_whole_model_put_none_at_non_arrays():
    class WithFn(ptm.Module):
        w: jax.Array
        fn: object

    labels = select.labels([(r"\.w", "a")])(WithFn(jnp.ones(2), jnp.tanh))
    assert labels.w == "a" and labels.fn is None


# -- misuse ----------------------------------------------------------------------


def test_a_selection_that_matches_nothing_names_the_nearest_paths():
    net = _net()
    with pytest.raises(
        ValueError, match=r"(?s)path\('\\\\.haed'\).*matches nothing.*\.head"
    ):
        select.path(r"\.haed").mask(net)
    with pytest.raises(ValueError, match=r"(?s)field\('baias'\).*nearest names.*bias"):
        select.field("baias").pairs(net)
    with pytest.raises(ValueError, match=r"(?s)instance\(RMSNorm\).*types.*Linear"):
        select.instance(ptm.nn.RMSNorm).nodes(net)
    with pytest.raises(ValueError, match="missing_ok=True"):
        select.labels([(r"\.haed", "x")], default="y")(net)
    assert select.path(r"\.haed").mask(net, missing_ok=True).head.weight is False


def test_parts_that_match_but_select_nothing_together_are_an_error():
    net = _net()
    with pytest.raises(ValueError, match="no leaf is selected by all of it together"):
        (select.path(r"\.head") & select.instance(ptm.nn.Linear)).pairs(net)


def test_bad_selections_name_themselves():
    with pytest.raises(ValueError, match=r"'w\[' is not a valid regular expression"):
        select.path("w[")
    with pytest.raises(TypeError, match="`select.path` takes a regular expression"):
        select.path(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"takes types \(classes\); got 'Linear'"):
        select.instance("Linear")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs at least one type"):
        select.instance()
    with pytest.raises(TypeError, match=r"got 1.5 \(of type `float`\)"):
        select.field(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a function `leaf -> bool`"):
        select.where(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected a selection"):
        select.field("a") & 3  # type: ignore[operator]


def test_bad_rules_and_unlabelled_arrays_are_errors():
    net = _net()
    with pytest.raises(TypeError, match=r"list of `\(selection, label\)` pairs"):
        select.labels("head")
    with pytest.raises(TypeError, match="rule 0"):
        select.labels([(r"\.head",)])
    with pytest.raises(ValueError, match=r"rule 1: .*not a valid regular expression"):
        select.labels([(r"\.head", "a"), ("[", "b")])
    with pytest.raises(
        ValueError, match=r"(?s)5 arrays .* no rule.*\.embed\.weight.*default="
    ):
        select.labels([(r"\.head", "head"), (ptm.nn.LayerNorm, "norm")])(net)


# -- properties ----------------------------------------------------------------

_leaf = st.integers(-5, 5).map(lambda i: np.full((2,), i, np.float32))
_trees = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3),
        st.dictionaries(st.sampled_from("abcde"), inner, min_size=1, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(tree=_trees, name=st.sampled_from("abcde"))
def test_not_is_the_complement_and_apply_partition_round_trip(tree, name):
    sel = select.field(name) | select.where(lambda x: float(x[0]) > 0)
    mask = jax.tree_util.tree_leaves(sel.mask(tree, missing_ok=True))
    inverse = jax.tree_util.tree_leaves((~sel).mask(tree, missing_ok=True))
    assert [not m for m in mask] == inverse
    same = sel.apply(tree, lambda x: x, missing_ok=True)
    for a, b in zip(
        jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(tree), strict=True
    ):
        assert a is b
    part, rest = sel.partition(tree, missing_ok=True)
    rejoined = ptm.combine(part, rest)
    assert jax.tree_util.tree_structure(rejoined) == jax.tree_util.tree_structure(tree)
    assert all(
        a is b
        for a, b in zip(
            jax.tree_util.tree_leaves(rejoined),
            jax.tree_util.tree_leaves(tree),
            strict=True,
        )
    )
    everything = select.path(".*").pairs(tree, missing_ok=True)
    expected = [
        (jax.tree_util.keystr(p), v)
        for p, v in jax.tree_util.tree_leaves_with_path(tree)
    ]
    assert [p for p, _ in everything] == [p for p, _ in expected] or not expected
