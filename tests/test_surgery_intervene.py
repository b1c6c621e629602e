"""`surgery.intervene`: outputs of selected submodules replaced by a value,
a function or a dict by path, under the transforms `capture` works under;
the identity patch is a bitwise no-op; a patch that does not fit names the
path."""

import jax
import jax.numpy as jnp
import pytest

import pytreemod as ptm
from pytreemod import nn, surgery


def _mlp():
    return nn.MLP(3, 2, 8, 2, key=jax.random.key(0))


def _rest_of_mlp(mlp, h1):
    """The MLP's output given the output of `.layers[1]`."""
    return mlp.layers[2](mlp.activation(h1))


def test_identity_patch_is_a_bitwise_no_op():
    mlp, x = _mlp(), jnp.arange(3.0)
    same = surgery.intervene(nn.Linear, lambda y: y)
    assert jnp.array_equal(same(mlp, x), mlp(x))
    plain = jax.make_jaxpr(lambda x: mlp(x))(x)
    patched = jax.make_jaxpr(lambda x: same(mlp, x))(x)
    assert str(plain) == str(patched)
    jitted = ptm.filter_jit(same)(mlp, x)
    assert jnp.array_equal(jitted, ptm.filter_jit(lambda m, x: m(x))(mlp, x))


def test_function_patch_ablates_and_steers():
    mlp, x = _mlp(), jnp.arange(3.0)
    ablated = surgery.intervene(r"\.layers\[1\]", jnp.zeros_like)(mlp, x)
    assert jnp.array_equal(ablated, _rest_of_mlp(mlp, jnp.zeros(8)))
    direction = jnp.linspace(-1.0, 1.0, 8)
    steered = surgery.intervene(r"\.layers\[1\]", lambda y: y + direction)(mlp, x)
    h1 = mlp.layers[1](mlp.activation(mlp.layers[0](x)))
    assert jnp.array_equal(steered, _rest_of_mlp(mlp, h1 + direction))


def test_value_patch_and_activation_patching_from_a_capture():
    mlp, clean, corrupt = _mlp(), jnp.arange(3.0), -jnp.arange(3.0)
    _, clean_values = surgery.capture(r"\.layers\[1\]")(mlp, clean)
    value = clean_values[".layers[1]"]
    by_value = surgery.intervene(r"\.layers\[1\]", value)(mlp, corrupt)
    by_dict = surgery.intervene(r"\.layers\[1\]", clean_values)(mlp, corrupt)
    # Patching the last hidden layer's clean output restores the clean output.
    assert jnp.array_equal(by_value, mlp(clean))
    assert jnp.array_equal(by_dict, mlp(clean))


def test_intervene_under_vmap_jit_and_grad():
    mlp, xs = _mlp(), jnp.arange(12.0).reshape(4, 3)
    ablate = surgery.intervene(r"\.layers\[0\]", jnp.zeros_like)
    ys = ptm.filter_jit(ptm.filter_vmap(ablate, in_axes=(None, 0)))(mlp, xs)
    expected = jax.vmap(lambda x: ablate(mlp, x))(xs)
    assert ys.shape == (4, 2)
    assert jnp.allclose(ys, expected, atol=1e-6)

    def loss(model, x):
        return jnp.sum(ablate(model, x) ** 2)

    grads = ptm.filter_grad(loss)(mlp, xs[1])
    # The first layer's output is replaced by zeros: no gradient reaches it.
    assert jnp.array_equal(grads.layers[0].weight, jnp.zeros((8, 3)))
    assert jnp.any(grads.layers[2].weight != 0)


class Count(nn.StatefulLayer):
    index: nn.StateIndex

    def __init__(self):
        self.index = nn.StateIndex(jnp.zeros(3))

    def __call__(self, x, state, *, key=None):
        count = state.get(self.index)
        return x + count, state.set(self.index, count + 1)


def test_stateful_layer_has_its_output_patched_not_its_state():
    model, state = nn.make_with_state(nn.Sequential)([Count(), nn.Lambda(jnp.sin)])
    x = jnp.arange(3.0)
    y, state = surgery.intervene(Count, jnp.negative)(model, x, state)
    assert jnp.array_equal(y, jnp.sin(-x))
    assert jnp.array_equal(state.get(model.layers[0].index), jnp.ones(3))


def test_intervene_inside_stacked():
    stack = nn.Stacked(lambda k: nn.Linear(4, 4, key=k), 3, key=jax.random.key(0))
    x = jnp.arange(4.0)
    # A function applies to each layer's output.
    halved = surgery.intervene(r"\.layers", lambda y: y / 2)(stack, x)
    h = x
    for layer in stack:
        h = layer(h) / 2
    assert jnp.allclose(halved, h, atol=1e-6)
    # A value carries the layer axis, as capture gives it: patching every layer
    # with another run's outputs gives that run's output.
    other = jnp.ones(4)
    y_other, values = surgery.capture(r"\.layers")(stack, other)
    assert values[".layers"].shape == (3, 4)
    patched = surgery.intervene(r"\.layers", values)(stack, x)
    assert jnp.array_equal(patched, y_other)
    with pytest.raises(
        ValueError, match=r"(?s)`\.layers` is a value .*3 layers.*start with \(3,\)"
    ):
        surgery.intervene(r"\.layers", values[".layers"][0])(stack, x)


def test_a_patch_of_the_wrong_shape_names_the_path():
    mlp, x = _mlp(), jnp.arange(3.0)
    with pytest.raises(
        ValueError, match=r"(?s)patch for `\.layers\[1\]`.*f32\[8\].*f32\[5\]"
    ):
        surgery.intervene(r"\.layers\[1\]", jnp.zeros(5))(mlp, x)
    with pytest.raises(ValueError, match=r"patch for `\.layers\[1\]` does not fit"):
        surgery.intervene(r"\.layers\[1\]", lambda y: y[:3])(mlp, x)
    with pytest.raises(ValueError, match=r"patch for `\.layers\[1\]` does not fit"):
        surgery.intervene(r"\.layers\[1\]", jnp.zeros(8, jnp.int32))(mlp, x)


def test_a_dict_patch_must_be_keyed_by_the_selected_paths():
    mlp, x = _mlp(), jnp.arange(3.0)
    with pytest.raises(ValueError, match=r"(?s)have no entry.*\.layers\[2\]"):
        surgery.intervene(r"\.layers\[[12]\]", {".layers[1]": jnp.zeros(8)})(mlp, x)
    with pytest.raises(ValueError, match=r"(?s)not selected paths.*\.layers\[0\]"):
        surgery.intervene(
            r"\.layers\[1\]", {".layers[1]": jnp.zeros(8), ".layers[0]": jnp.zeros(8)}
        )(mlp, x)


def test_intervene_checks_its_arguments():
    with pytest.raises(TypeError, match=r"takes the selection first"):
        surgery.intervene(jnp.zeros_like, r"\.layers\[1\]")
    with pytest.raises(ValueError, match="matches nothing"):
        surgery.intervene(r"\.nope", jnp.zeros_like)(_mlp(), jnp.ones(3))
