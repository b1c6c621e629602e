"""The recipes of docs/policies.md run as written, and each gives, bit for
bit, what the same policy written the Equinox way (hand-built filter specs,
label trees and masks with `tree_at`) gives."""

import pathlib
import re

import jax
import numpy as np
import optax
import pytest

import pytreemod as eqx  # the Equinox way, spelled with the drop-in

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "policies.md"
STEPS = 5


def _recipe(name: str) -> str:
    blocks = re.findall(
        r"```python\n# recipe: (\w+)\n(.*?)```", PAGE.read_text(), re.DOTALL
    )
    found = dict(blocks)
    assert name in found, f"docs/policies.md has no block `# recipe: {name}`"
    return found[name]


def _run(name: str) -> dict:
    """Run the setup block, then the recipe, with `loss_fn` counting how
    often it is traced."""
    namespace: dict = {}
    exec(compile(_recipe("setup"), "policies.md:setup", "exec"), namespace)
    namespace["initial"] = namespace["model"]
    loss_fn = namespace["loss_fn"]
    namespace["traces"] = 0

    def counting(*args):
        namespace["traces"] += 1
        return loss_fn(*args)

    namespace["loss_fn"] = counting
    exec(compile(_recipe(name), f"policies.md:{name}", "exec"), namespace)
    namespace["loss_fn"] = loss_fn
    return namespace


def _train_whole(ns: dict, optimiser) -> object:
    """The reference loop: `STEPS` steps of the whole model from `initial`."""
    loss_fn, tokens, targets = ns["loss_fn"], ns["tokens"], ns["targets"]
    model = ns["initial"]
    opt_state = optimiser.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state):
        _, grads = eqx.filter_value_and_grad(loss_fn)(model, tokens, targets)
        params = eqx.filter(model, eqx.is_array)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state

    for _ in range(STEPS):
        model, opt_state = step(model, opt_state)
    return model


def _bitwise_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype
        and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(la, lb, strict=True)
    )


def _nbytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree_util.tree_leaves(tree) if eqx.is_array(x))


@pytest.fixture(autouse=True)
def _standard_promotion():
    # optax mixes a Python float with its int32 step count, which the strict
    # promotion of conftest.py rejects; users run with the default.
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_freeze_trains_only_the_head_like_a_hand_built_filter_spec():
    ns = _run("freeze")
    model, initial = ns["model"], ns["initial"]
    tokens, targets, loss_fn = ns["tokens"], ns["targets"], ns["loss_fn"]

    # The Equinox way: a filter spec built with tree_at.
    spec = jax.tree_util.tree_map(lambda _: False, initial)
    spec = eqx.tree_at(
        lambda m: (m.head.weight, m.head.bias), spec, replace=(True, True)
    )
    params, frozen = eqx.partition(initial, spec)
    optimiser = optax.adam(1e-2)
    opt_state = optimiser.init(params)

    @eqx.filter_jit
    def step(params, frozen, opt_state):
        loss, grads = eqx.filter_value_and_grad(
            lambda p: loss_fn(eqx.combine(p, frozen), tokens, targets)
        )(params)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, loss

    # The selection splits the model exactly as the hand-built spec does (the
    # same treedefs, the same frozen leaves), so a step costs the same.
    structure = jax.tree_util.tree_structure
    assert structure(ns["params"]) == structure(params)
    assert structure(ns["frozen"]) == structure(frozen)
    assert all(
        a is b
        for a, b in zip(
            jax.tree_util.tree_leaves(ns["frozen"]),
            jax.tree_util.tree_leaves(frozen),
            strict=True,
        )
    )
    for _ in range(STEPS):
        params, opt_state, _ = step(params, frozen, opt_state)
    assert _bitwise_equal(model, eqx.combine(params, frozen))
    assert _bitwise_equal(ns["opt_state"], opt_state)
    # The head moved; everything else is bit-identical to the start.
    assert not np.array_equal(model.head.weight, initial.head.weight)
    frozen_now = eqx.filter(model, lambda x: True)
    for path in (".embed", ".body", ".norm"):
        before = [
            x
            for p, x in jax.tree_util.tree_leaves_with_path(initial)
            if jax.tree_util.keystr(p).startswith(path)
        ]
        after = [
            x
            for p, x in jax.tree_util.tree_leaves_with_path(frozen_now)
            if jax.tree_util.keystr(p).startswith(path)
        ]
        assert _bitwise_equal(before, after), path
    # Optimiser state is kept for the head only: 2 moments of 9 floats and
    # the step count, against 2 moments of every array of the model.
    full = optax.adam(1e-2).init(eqx.filter(initial, eqx.is_inexact_array))
    assert _nbytes(ns["opt_state"]) == 2 * 9 * 4 + 4
    assert _nbytes(full) == 2 * _nbytes(eqx.filter(initial, eqx.is_inexact_array)) + 4
    # Gradients exist only for the trainable arrays: the frozen half has no
    # arrays in what is differentiated.
    assert len(jax.tree_util.tree_leaves(ns["params"])) == 2
    # One trace for all the steps: the selection is not redone per call.
    assert ns["traces"] == 1


def test_freeze_everything_but_the_embeddings():
    ns = _run("setup")
    source = _recipe("freeze").replace(
        r'select.path(r"\.head") & select.where(ptm.is_inexact_array)',
        "~select.instance(ptm.nn.Embedding) & select.where(ptm.is_inexact_array)",
    )
    assert "~select.instance(ptm.nn.Embedding)" in source
    initial = ns["model"]
    exec(compile(source, "policies.md:freeze-embed", "exec"), ns)
    model = ns["model"]
    assert _bitwise_equal(model.embed, initial.embed)
    assert not np.array_equal(
        model.body.layers[0].weight, initial.body.layers[0].weight
    )
    assert not np.array_equal(model.norm.weight, initial.norm.weight)


def test_groups_match_a_hand_built_label_tree():
    ns = _run("groups")
    params = eqx.filter(ns["initial"], eqx.is_array)
    groups = jax.tree_util.tree_map(lambda _: "body", params)
    groups = eqx.tree_at(
        lambda m: (m.head.weight, m.head.bias), groups, replace=("head",) * 2
    )
    groups = eqx.tree_at(lambda m: m.embed.weight, groups, replace="embed")
    assert groups == ns["groups"](params)
    optimiser = optax.multi_transform(
        {"head": optax.adam(1e-2), "body": optax.adam(1e-3), "embed": optax.adam(1e-4)},
        lambda _: groups,
    )
    assert _bitwise_equal(_train_whole(ns, optimiser), ns["model"])
    assert ns["traces"] == 1


def test_decay_mask_matches_a_hand_built_mask():
    ns = _run("decay")
    params = eqx.filter(ns["initial"], eqx.is_array)
    mask = jax.tree_util.tree_map(lambda _: False, params)
    mask = eqx.tree_at(
        lambda m: [m.head.weight] + [layer.weight for layer in m.body.layers],
        mask,
        replace=[True] * 4,
    )
    assert mask == ns["decay"](params)
    optimiser = optax.adamw(1e-2, weight_decay=0.1, mask=mask)
    assert _bitwise_equal(_train_whole(ns, optimiser), ns["model"])
    assert ns["traces"] == 1
