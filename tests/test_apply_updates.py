"""`apply_updates`."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod


class Model(pytreemod.Module):
    weight: jax.Array
    bias: jax.Array
    steps: jax.Array  # an integer array, updated only if asked
    activation: Any
    name: str = pytreemod.field(static=True, default="m")


MODEL = Model(jnp.ones(2), jnp.zeros(2), jnp.array(0), jnp.tanh, name="model")


def test_updates_are_added_and_none_leaves_are_kept():
    updates = Model(jnp.array([0.5, -0.5]), None, None, None, name="model")
    new = pytreemod.apply_updates(MODEL, updates)
    assert new.weight.tolist() == [1.5, 0.5]
    assert new.bias is MODEL.bias and new.steps is MODEL.steps
    assert new.activation is jnp.tanh and new.name == "model"


def test_a_none_update_stands_for_a_whole_subtree():
    model = {"encoder": (jnp.ones(2), jnp.ones(3)), "head": jnp.ones(1)}
    new = pytreemod.apply_updates(model, {"encoder": None, "head": jnp.ones(1)})
    assert new["encoder"][0] is model["encoder"][0]
    assert new["encoder"][1] is model["encoder"][1]
    assert new["head"].tolist() == [2.0]


def test_updates_from_filter_grad_apply_to_the_model():
    grads = pytreemod.filter_grad(lambda m: jnp.sum(m.weight**2) + jnp.sum(m.bias))(
        MODEL
    )
    updates = jax.tree_util.tree_map(lambda g: -0.1 * g, grads)
    new = pytreemod.apply_updates(MODEL, updates)
    assert np.allclose(new.weight, [0.8, 0.8]) and np.allclose(new.bias, [-0.1, -0.1])
    assert new.steps is MODEL.steps


def test_works_under_jit():
    new = jax.jit(pytreemod.apply_updates)({"w": jnp.ones(2)}, {"w": jnp.full(2, 2.0)})
    assert new["w"].tolist() == [3.0, 3.0]


_floats = st.floats(-100, 100, allow_nan=False, width=32)


@settings(max_examples=25, deadline=None)
@given(
    weight=st.lists(_floats, min_size=2, max_size=2),
    update=st.lists(_floats, min_size=2, max_size=2),
    skip_bias=st.booleans(),
)
def test_applying_an_update_and_its_negation_gives_the_model_back(
    weight, update, skip_bias
):
    model = Model(jnp.array(weight), jnp.ones(2), jnp.array(3), jnp.sin)
    u = jnp.array(update, dtype=jnp.float32)
    forward = Model(u, None if skip_bias else u, None, None)
    backward = jax.tree_util.tree_map(lambda x: -x, forward)
    there = pytreemod.apply_updates(model, forward)
    back = pytreemod.apply_updates(there, backward)
    assert pytreemod.tree_equal(back, model, rtol=1e-5, atol=1e-4)
    assert back.steps is model.steps


def test_updates_of_another_structure_are_an_error():
    with pytest.raises(ValueError, match=r"structure of `model`(.|\n)*model\['b'\]"):
        pytreemod.apply_updates({"a": jnp.ones(1), "b": (1, 2)}, {"a": None, "b": (1,)})


@pytest.mark.parametrize(
    ("update", "update_shape"),
    [
        (jnp.ones(3), r"\(3,\)"),  # broadcasts over the rows
        (jnp.ones((5, 2, 3)), r"\(5, 2, 3\)"),  # a batch of updates
        (jnp.ones(4), r"\(4,\)"),  # cannot broadcast at all
        (np.ones((3, 2)), r"\(3, 2\)"),  # NumPy arrays too
    ],
)
def test_an_update_of_another_shape_is_an_error_naming_the_path(update, update_shape):
    # A deliberate deviation (docs/compatibility.md): Equinox broadcasts.
    model = {"layers": [Model(jnp.ones((2, 3)), jnp.zeros(2), jnp.array(0), None)]}
    updates = {"layers": [Model(update, None, None, None)]}
    with pytest.raises(
        ValueError,
        match=rf"update of shape {update_shape} for `model\['layers'\]\[0\]\.weight`,"
        r" whose\nshape is \(2, 3\)",
    ):
        pytreemod.apply_updates(model, updates)


def test_a_python_scalar_update_is_added_to_every_element():
    # As in Equinox: a scalar has no shape to disagree with.
    new = pytreemod.apply_updates({"w": jnp.ones((2, 2))}, {"w": 0.5})
    assert new["w"].tolist() == [[1.5, 1.5], [1.5, 1.5]]


def test_shapes_are_checked_per_example_under_vmap():
    batched = pytreemod.filter_vmap(pytreemod.apply_updates)(
        {"w": jnp.ones((4, 3))}, {"w": jnp.full((4, 3), 2.0)}
    )
    assert batched["w"].shape == (4, 3) and float(batched["w"].sum()) == 36.0
