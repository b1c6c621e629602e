import dataclasses
import functools

import jax
import jax.numpy as jnp
import pytest

import pytreemod
from pytreemod.nn import StateIndex


def test_holds_initial_value_and_unique_key():
    init = (jnp.zeros(2), {"count": jnp.array(0)})
    a = StateIndex(init)
    b = StateIndex(init)
    assert a.init is init
    assert a.marker != b.marker
    assert "not made by make_with_state" in repr(a.marker)


def test_is_a_module_whose_key_is_static():
    a = StateIndex(jnp.arange(3.0))
    leaves, treedef = jax.tree_util.tree_flatten(a)
    assert len(leaves) == 1
    assert (leaves[0] == jnp.arange(3.0)).all()
    # The key lives in the treedef, so two differently keyed indices differ
    # in structure, not in leaves.
    assert treedef != jax.tree_util.tree_structure(StateIndex(jnp.arange(3.0)))
    assert isinstance(a, pytreemod.Module)


def test_generic_in_the_value_type():
    index = StateIndex[jax.Array](jnp.zeros(1))
    assert isinstance(index, StateIndex)


def _make_zeros():
    return jnp.zeros(3)


@pytest.mark.parametrize(
    "init",
    [
        lambda: jnp.zeros(3),
        _make_zeros,
        functools.partial(jnp.zeros, 3),
        len,
    ],
    ids=["lambda", "function", "partial", "builtin"],
)
def test_function_instead_of_value_is_an_error(init):
    with pytest.raises(ValueError, match="takes the initial value itself"):
        StateIndex(init)


def test_make_with_state_replaces_the_key_by_the_path():
    class Model(pytreemod.Module):
        layers: list

        def __init__(self):
            self.layers = [jnp.zeros(1), StateIndex(jnp.zeros(2))]

    model, _ = pytreemod.nn.make_with_state(Model)()
    assert model.layers[1].marker == "Model.layers[1]"
    assert jax.tree_util.tree_leaves(model.layers[1]) == []


def test_frozen_like_any_module():
    index = StateIndex(jnp.zeros(1))
    with pytest.raises(dataclasses.FrozenInstanceError, match="immutable"):
        index.init = jnp.ones(1)
