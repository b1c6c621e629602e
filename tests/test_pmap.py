"""`filter_pmap`. On the test machine's one CPU device, and on four CPU
devices in a subprocess."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import run_on_cpu_devices

import pytreemod as eqx


class Scale(eqx.Module):
    factor: jax.Array
    name: str = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.factor * x


def test_arrays_are_split_and_other_leaves_static():
    traces = []

    @eqx.filter_pmap(axis_name="d")
    def f(x, how):
        traces.append(how)
        total = jax.lax.psum(x, "d")
        return (total if how == "sum" else x), how

    x = jnp.arange(3.0)[None]
    out, how = f(x, "sum")
    assert how == "sum"
    np.testing.assert_allclose(out, x)
    f(x + 1, "sum")
    assert traces == ["sum"]  # same non-array leaves and shapes: cached
    out, how = f(x, "keep")
    assert how == "keep" and traces == ["sum", "keep"]


def test_clear_caches_empties_the_compiled_pmaps():
    traces = []

    def f(x):
        traces.append(1)
        return x

    g = eqx.filter_pmap(f)
    g(jnp.ones((1, 2)))
    g(jnp.ones((1, 2)))
    eqx.clear_caches()
    g(jnp.ones((1, 2)))
    assert len(traces) == 2


def test_equal_but_differently_typed_static_leaves_do_not_share_a_compile():
    f = eqx.filter_pmap(lambda x, n: (x * 2, n))
    x = jnp.ones((1, 2))
    assert type(f(x, 1)[1]) is int
    assert type(f(x, 1.0)[1]) is float


def test_module_arguments_broadcast_and_out_axes():
    scale = Scale(jnp.array(3.0), "triple")

    def f(m, x):
        return m(x), m.factor * 0 + 1, m.name

    g = eqx.filter_pmap(f, in_axes=(None, 1), out_axes=(1, None, None))
    mapped, unmapped, name = g(scale, jnp.ones((2, 1)))
    assert mapped.shape == (2, 1)
    np.testing.assert_allclose(mapped, 3.0)
    assert unmapped.shape == () and float(unmapped) == 1.0
    assert name == "triple"


def test_a_module_as_the_function_is_traced_not_baked_in():
    traces = []

    class Counted(eqx.Module):
        factor: jax.Array

        def __call__(self, x):
            traces.append(1)
            return self.factor * x

    x = jnp.ones((1, 2))
    assert float(eqx.filter_pmap(Counted(jnp.array(2.0)))(x)[0, 0]) == 2.0
    assert float(eqx.filter_pmap(Counted(jnp.array(5.0)))(x)[0, 0]) == 5.0
    assert len(traces) == 1


def test_axis_size_when_nothing_is_mapped():
    out = eqx.filter_pmap(lambda x: x + 1, in_axes=None, axis_size=1)(jnp.ones(3))
    assert out.shape == (1, 3)


@pytest.mark.parametrize("donate", ["all", "warn", "none"])
def test_donate_options_run(donate):
    out = eqx.filter_pmap(lambda x: x * 2, donate=donate)(jnp.ones((1, 2)))
    np.testing.assert_allclose(out, 2.0)


def test_devices_and_decorating_a_method():
    class Layer(eqx.Module):
        w: jax.Array

        @eqx.filter_pmap(in_axes=(None, 0), devices=jax.devices()[:1])
        def apply(self, x):
            return self.w * x

    out = Layer(jnp.array(2.0)).apply(jnp.ones((1, 3)))
    np.testing.assert_allclose(out, 2.0)


# --- misuse -----------------------------------------------------------------


def test_nothing_mapped_without_axis_size_is_an_error():
    with pytest.raises(ValueError, match="nothing to split over the devices"):
        eqx.filter_pmap(lambda x: x, in_axes=None)(jnp.ones(3))


def test_bad_donate_is_an_error():
    with pytest.raises(ValueError, match="`donate` must be one of .*; got 'yes'"):
        eqx.filter_pmap(lambda x: x, donate="yes")


def test_unhashable_static_leaf_is_an_error():
    class Box:  # a leaf (not a pytree) that cannot be hashed
        __hash__ = None

    f = eqx.filter_pmap(lambda x, b: x)
    with pytest.raises(
        TypeError, match=r"(?s)leaf at `args\[1\]` is an\s+unhashable `Box`"
    ):
        f(jnp.ones((1, 2)), Box())


def test_mismatched_sizes_name_paths():
    f = eqx.filter_pmap(lambda x, y: x)
    with pytest.raises(
        ValueError, match=r"(?s)args\[0\] has size 1.*args\[1\] has size 2"
    ):
        f(jnp.ones(1), jnp.ones(2))


def test_keyword_arguments_are_refused():
    with pytest.raises(TypeError, match="`filter_pmap` takes positional arguments"):
        eqx.filter_pmap(lambda x: x)(x=jnp.ones(1))


_FOUR_DEVICES = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import pytreemod as eqx

    assert jax.local_device_count() == 4

    class Linear(eqx.Module):
        w: jax.Array
        act: str = eqx.field(static=True)
        def __call__(self, x):
            return self.w @ x

    # An ensemble, one member per device, built and run with filter_pmap.
    keys = jax.random.split(jax.random.key(0), 4)
    make = eqx.filter_pmap(lambda k: Linear(jax.random.normal(k, (3, 2)), "id"))
    ensemble = make(keys)
    assert ensemble.w.shape == (4, 3, 2) and ensemble.act == "id"
    assert len(ensemble.w.sharding.device_set) == 4
    x = jnp.array([1.0, 2.0])
    run = eqx.filter_pmap(lambda m, x: m(x), in_axes=(eqx.if_array(0), None))
    out = run(ensemble, x)
    for i in range(4):
        np.testing.assert_allclose(out[i], ensemble.w[i] @ x, rtol=1e-5)

    # Collectives over the device axis, and a batch on axis 1.
    total = eqx.filter_pmap(
        lambda x: jax.lax.psum(x, "d"), axis_name="d", in_axes=1, out_axes=1
    )(jnp.arange(8.0).reshape(2, 4))
    np.testing.assert_allclose(total, [[6.0] * 4, [22.0] * 4])

    # axis_size with nothing mapped, and a subset of devices.
    assert eqx.filter_pmap(lambda x: x, in_axes=None, axis_size=4)(x).shape == (4, 2)
    sub = eqx.filter_pmap(lambda x: x * 2, devices=jax.devices()[:2])(jnp.ones((2, 3)))
    assert len(sub.sharding.device_set) == 2
    print("ok")
    """
)


def test_on_four_devices_in_a_subprocess():
    result = run_on_cpu_devices(_FOUR_DEVICES, 4, python_options=("-W", "error"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
