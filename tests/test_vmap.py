"""`filter_vmap` and `if_array`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as eqx


class MyLinear(eqx.Module):
    weight: jax.Array
    bias: jax.Array
    activation: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, *, key: jax.Array):
        self.weight = jax.random.normal(key, (out_size, in_size))
        self.bias = jnp.zeros(out_size)
        self.activation = "identity"

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.weight @ x + self.bias

    @eqx.filter_vmap(in_axes=(None, 0))
    def batched(self, x: jax.Array) -> jax.Array:
        return self(x)


KEY = jax.random.key(0)


def _member(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


# --- if_array ---------------------------------------------------------------


@pytest.mark.parametrize(
    "leaf, expected",
    [(jnp.ones(3), 2), (np.ones(3), 2), (np.float32(1.0), 2), (1.0, None), ("a", None)],
)
def test_if_array_gives_the_axis_to_arrays_only(leaf, expected):
    assert eqx.if_array(2)(leaf) == expected


def test_if_array_is_readable_hashable_and_compares_by_axis():
    assert repr(eqx.if_array(0)) == "if_array(axis=0)"
    assert eqx.if_array(1) == eqx.if_array(1) != eqx.if_array(0)
    assert hash(eqx.if_array(1)) == hash(eqx.if_array(1))
    assert jax.tree_util.tree_leaves(eqx.if_array(1)) == [eqx.if_array(1)]


@pytest.mark.parametrize("bad", [1.5, "0", True])
def test_if_array_rejects_a_non_int_axis(bad):
    with pytest.raises(TypeError, match="needs an int axis"):
        eqx.if_array(bad)


# --- mapping ----------------------------------------------------------------


def test_arrays_are_mapped_and_other_leaves_passed_through():
    def f(x, how, n):
        assert how == "double" and n == 3  # seen unbatched, as passed
        return x * 2 + n, how

    out, how = eqx.filter_vmap(f)(jnp.arange(4.0), "double", 3)
    assert how == "double"
    np.testing.assert_allclose(out, [3.0, 5.0, 7.0, 9.0])


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    size=st.integers(1, 3),
    axis=st.sampled_from([0, 1, -1]),
    out_axis=st.sampled_from([0, 1, -1]),
)
def test_vmap_matches_a_python_loop(batch, size, axis, out_axis):
    xs = np.arange(batch * size, dtype=np.float32).reshape(batch, size)
    xs = np.moveaxis(xs, 0, axis)
    y = np.float32(0.5)

    def f(x, y, tag):
        return {"out": jnp.sin(x) * y, "tag": tag}

    out_axes = {"out": out_axis, "tag": None}
    got = eqx.filter_vmap(f, in_axes=(axis, None, None), out_axes=out_axes)(
        jnp.asarray(xs), y, "t"
    )
    loop = np.stack([np.sin(np.take(xs, i, axis=axis)) * y for i in range(batch)])
    assert got["tag"] == "t"
    np.testing.assert_allclose(got["out"], np.moveaxis(loop, 0, out_axis), rtol=1e-6)


def test_an_ensemble_of_modules_built_and_run():
    keys = jax.random.split(KEY, 4)
    ensemble = eqx.filter_vmap(lambda k: MyLinear(2, 3, key=k))(keys)
    assert isinstance(ensemble, MyLinear)
    assert ensemble.weight.shape == (4, 3, 2)
    assert ensemble.bias.shape == (4, 3)
    assert ensemble.activation == "identity"

    x = jnp.array([1.0, -2.0])
    out = eqx.filter_vmap(lambda m, x: m(x), in_axes=(eqx.if_array(0), None))(
        ensemble, x
    )
    assert out.shape == (4, 3)
    for i in range(4):
        expected = MyLinear(2, 3, key=keys[i])(x)
        np.testing.assert_allclose(out[i], expected, rtol=1e-6)
        np.testing.assert_allclose(out[i], _member(ensemble, i)(x), rtol=1e-6)

    # Per-member data: everything mapped by default.
    xs = jnp.arange(8.0).reshape(4, 2)
    per_member = eqx.filter_vmap(lambda m, x: m(x))(ensemble, xs)
    np.testing.assert_allclose(per_member[2], _member(ensemble, 2)(xs[2]), rtol=1e-6)


def test_out_axes_none_for_an_unbatched_array_and_non_arrays_as_returned():
    def f(x, scale):
        return x * scale, scale * 2, "done"

    batched, unbatched, tag = eqx.filter_vmap(
        f, in_axes=(0, None), out_axes=(0, None, None)
    )(jnp.arange(3.0), jnp.array(2.0))
    np.testing.assert_allclose(batched, [0.0, 2.0, 4.0])
    assert unbatched.shape == () and float(unbatched) == 4.0
    assert tag == "done"


def test_out_axes_if_array_places_the_batch_axis():
    out = eqx.filter_vmap(lambda x: (x, "tag"), out_axes=eqx.if_array(1))(
        jnp.ones((5, 2))
    )
    assert out[0].shape == (2, 5)
    assert out[1] == "tag"


def test_axis_name_reaches_collectives():
    x = jnp.arange(4.0)
    out = eqx.filter_vmap(lambda x: x - jax.lax.pmean(x, "batch"), axis_name="batch")(x)
    np.testing.assert_allclose(out, x - 1.5)


def test_axis_size_broadcasts_when_nothing_is_mapped():
    out = eqx.filter_vmap(lambda x: x + 1, in_axes=None, axis_size=3)(jnp.ones(2))
    assert out.shape == (3, 2)


def test_in_axes_per_argument_prefix_and_named():
    params = {"w": jnp.ones((3, 2)), "b": jnp.arange(3.0)}

    def f(p, x):
        return p["w"].sum() + p["b"] + x

    # `w` shared, `b` mapped, `x` mapped.
    got = eqx.filter_vmap(f, in_axes=({"w": None, "b": 0}, 0))(params, jnp.ones(3))
    np.testing.assert_allclose(got, [7.0, 8.0, 9.0])
    named = eqx.filter_vmap(f, in_axes={"p": {"w": None, "b": 0}})(params, jnp.ones(3))
    np.testing.assert_allclose(named, got)
    as_list = eqx.filter_vmap(f, in_axes=[{"w": None, "b": 0}, 0])(params, jnp.ones(3))
    np.testing.assert_allclose(as_list, got)


def test_decorator_with_keywords_only_and_on_a_method():
    @eqx.filter_vmap(in_axes=(0, None))
    def add(x, y):
        return x + y

    np.testing.assert_allclose(add(jnp.arange(3.0), jnp.array(1.0)), [1.0, 2.0, 3.0])
    assert add.__name__ == "add"

    layer = MyLinear(2, 3, key=KEY)
    xs = jnp.ones((5, 2))
    np.testing.assert_allclose(layer.batched(xs)[4], layer(xs[4]), rtol=1e-6)


def test_the_wrapper_is_a_pytree_of_the_functions_arrays():
    layer = MyLinear(2, 3, key=KEY)
    vmapped = eqx.filter_vmap(layer)
    arrays = [x for x in jax.tree_util.tree_leaves(vmapped) if eqx.is_array(x)]
    assert len(arrays) == 2 and arrays[0] is layer.weight

    # Mapping over the wrapper's leaves reaches the wrapped module's arrays.
    doubled = jax.tree_util.tree_map(lambda x: 2 * x if eqx.is_array(x) else x, vmapped)
    np.testing.assert_allclose(
        doubled(jnp.ones((4, 2)))[0], 2 * layer(jnp.ones(2)), rtol=1e-6
    )


def test_nested_vmap_inside_jit():
    @jax.jit
    def outer(xs):
        return eqx.filter_vmap(eqx.filter_vmap(lambda x: x * 2))(xs)

    np.testing.assert_allclose(outer(jnp.ones((2, 3))), 2 * np.ones((2, 3)))


# --- misuse -----------------------------------------------------------------


def test_no_mapped_input_and_no_axis_size_is_an_error():
    with pytest.raises(ValueError, match="cannot tell the size of the batch"):
        eqx.filter_vmap(lambda x: x, in_axes=None)(jnp.ones(3))


@pytest.mark.parametrize(
    ("in_axes", "out_axes", "args", "named"),
    [
        # Equinox returns these outputs unbatched (2.0, and [2., 2.]).
        (eqx.if_array(0), eqx.if_array(0), (1.0,), "the arguments hold no arrays"),
        (None, None, (jnp.ones(2),), "every array: `args[0]`"),
        (
            (None, None),
            eqx.if_array(0),
            (jnp.ones(2), {"w": jnp.ones(3), "act": "relu"}),
            "every array: `args[0]`, `args[1]['w']`",
        ),
    ],
)
def test_nothing_mapped_is_an_error_whatever_the_output(in_axes, out_axes, args, named):
    # A deliberate deviation (docs/compatibility.md): Equinox calls the
    # function once and returns its output without a batch axis.
    calls = []

    def f(x, *rest):
        calls.append(x)
        return x + 1

    vmapped = eqx.filter_vmap(f, in_axes=in_axes, out_axes=out_axes)
    with pytest.raises(ValueError, match=r"^Cannot resolve batch dimension\.") as e:
        vmapped(*args)
    assert named in str(e.value) and "axis_size=n" in str(e.value)
    assert calls == []  # refused before running anything


def test_mismatched_sizes_name_paths_and_sizes():
    f = eqx.filter_vmap(lambda a, b: a["x"] + b)
    with pytest.raises(
        ValueError, match=r"(?s)args\[0\]\['x'\] has size 3.*args\[1\] has size 4"
    ):
        f({"x": jnp.ones(3)}, jnp.ones(4))


def test_axis_size_disagreeing_with_the_inputs_is_an_error():
    with pytest.raises(ValueError, match=r"(?s)`axis_size` = 2.*args\[0\] has size 3"):
        eqx.filter_vmap(lambda x: x, axis_size=2)(jnp.ones(3))


def test_in_axes_that_is_not_a_prefix_names_the_path():
    f = eqx.filter_vmap(lambda a, b: a, in_axes=(0, {"y": 0}))
    with pytest.raises(
        ValueError, match=r"not a prefix of the arguments: at `args\[1\]`"
    ):
        f(jnp.ones(3), {"z": jnp.ones(3)})


def test_in_axes_with_the_wrong_number_of_arguments_is_an_error():
    with pytest.raises(ValueError, match="not a prefix of the arguments: at `args`"):
        eqx.filter_vmap(lambda a, b: a, in_axes=(0, 0, 0))(jnp.ones(3), jnp.ones(3))


def test_mapping_a_non_array_is_an_error():
    with pytest.raises(ValueError, match=r"(?s)maps the leaf at `args\[1\]`.*`str`"):
        eqx.filter_vmap(lambda x, s: x, in_axes=0)(jnp.ones(3), "name")


def test_mapped_axis_out_of_range_is_an_error():
    with pytest.raises(
        ValueError, match=r"over axis 2, but that leaf has shape \(3,\)"
    ):
        eqx.filter_vmap(lambda x: x, in_axes=2)(jnp.ones(3))


@pytest.mark.parametrize("where", ["in_axes", "out_axes"])
def test_bad_axis_spec_leaf_is_an_error_at_wrap_time(where):
    with pytest.raises(
        ValueError, match=rf"got 'zero' of type `str` at `{where}\[0\]`"
    ):
        eqx.filter_vmap(lambda x: x, **{where: ("zero",)})


def test_callable_axis_spec_returning_a_non_axis_is_an_error():
    with pytest.raises(ValueError, match=r"returned 'a' for the leaf at `args\[0\]`"):
        eqx.filter_vmap(lambda x: x, in_axes=lambda leaf: "a")(jnp.ones(3))


def test_out_axes_mapping_a_non_array_output_is_an_error():
    f = eqx.filter_vmap(lambda x: (x, "tag"), out_axes=0)
    with pytest.raises(
        ValueError, match=r"(?s)`out_axes` maps the leaf at `output\[1\]`"
    ):
        f(jnp.ones(3))


def test_unmapped_output_that_varies_over_the_batch_is_an_error():
    f = eqx.filter_vmap(lambda x: {"a": x, "b": 1}, out_axes=None)
    with pytest.raises(ValueError, match=r"unmapped array outputs are `output\['a'\]`"):
        f(jnp.ones(3))


def test_keyword_arguments_are_refused():
    with pytest.raises(TypeError, match="(?s)positional arguments only.*`y`"):
        eqx.filter_vmap(lambda x, y: x)(jnp.ones(3), y=jnp.ones(3))


def test_named_in_axes_for_an_unknown_argument_is_an_error():
    f = eqx.filter_vmap(lambda x, y: x, in_axes={"z": 0})
    with pytest.raises(ValueError, match=r"`z` is not among them \(passed: `x`, `y`\)"):
        f(jnp.ones(3), jnp.ones(3))


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"axis_size": 0}, ValueError, "`axis_size` must be a positive int"),
        ({"axis_name": ["b"]}, TypeError, "`axis_name` must be hashable"),
    ],
)
def test_bad_options_are_errors(options, error, match):
    with pytest.raises(error, match=match):
        eqx.filter_vmap(lambda x: x, **options)


def test_a_non_callable_is_an_error():
    with pytest.raises(TypeError, match="needs a callable"):
        eqx.filter_vmap(jnp.ones(3))
