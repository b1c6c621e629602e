"""`filter_shard`. On the test machine's one CPU device, and on eight CPU
devices in a subprocess."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import run_on_cpu_devices
from jax.sharding import SingleDeviceSharding

import pytreemod as eqx

CPU = jax.devices("cpu")[0]


class Block(eqx.Module):
    weight: jax.Array
    bias: np.ndarray
    scale: float
    name: str = eqx.field(static=True)


def _block() -> Block:
    return Block(jnp.ones((2, 2)), np.zeros(2, np.float32), 0.5, "block")


@pytest.mark.parametrize("target", [CPU, SingleDeviceSharding(CPU)])
def test_eagerly_arrays_are_placed_and_the_rest_left_alone(target):
    out = eqx.filter_shard(_block(), target)
    assert isinstance(out, Block)
    assert out.weight.sharding == SingleDeviceSharding(CPU)
    assert isinstance(out.bias, jax.Array)  # a NumPy array is put on the device
    assert out.bias.sharding == SingleDeviceSharding(CPU)
    assert out.scale == 0.5 and out.name == "block"
    np.testing.assert_array_equal(out.weight, 1.0)


def test_inside_jit_it_constrains_and_keeps_values():
    sharding = SingleDeviceSharding(CPU)

    @jax.jit
    def f(block):
        block = eqx.filter_shard(block, sharding)
        return block.weight @ block.bias

    out = f(eqx.filter(_block(), eqx.is_array))
    assert out.sharding == sharding
    np.testing.assert_array_equal(out, 0.0)


def test_a_prefix_of_shardings_with_none_leaves_a_subtree_alone():
    tree = {"placed": np.ones(2), "kept": np.ones(3)}
    out = eqx.filter_shard(tree, {"placed": CPU, "kept": None})
    assert isinstance(out["placed"], jax.Array)
    assert isinstance(out["kept"], np.ndarray)


# --- misuse -----------------------------------------------------------------


def test_a_partition_spec_without_a_mesh_is_an_error():
    spec = jax.sharding.PartitionSpec("x")
    with pytest.raises(
        ValueError, match=r"(?s)got P\('x',\) of type `P`.*NamedSharding\(mesh, spec\)"
    ):
        eqx.filter_shard(jnp.ones(2), spec)


def test_shardings_that_are_not_a_prefix_name_the_path():
    with pytest.raises(ValueError, match=r"not a prefix of `x`: at `x\['b'\]`"):
        eqx.filter_shard({"a": jnp.ones(2), "b": jnp.ones(2)}, {"a": CPU, "b": (CPU,)})


_EIGHT_DEVICES = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import pytreemod as eqx

    assert len(jax.devices()) == 8

    class Linear(eqx.Module):
        weight: jax.Array
        bias: jax.Array
        act: str = eqx.field(static=True)

    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    rows = NamedSharding(mesh, P("data", "model"))
    replicated = NamedSharding(mesh, P())
    model = Linear(jnp.arange(32.0).reshape(8, 4), jnp.zeros(8), "relu")

    # One sharding for every array, eagerly.
    out = eqx.filter_shard(model, replicated)
    assert out.weight.sharding == replicated and out.bias.sharding == replicated
    assert out.act == "relu"

    # A prefix pytree of shardings, eagerly.
    shardings = Linear(rows, NamedSharding(mesh, P("data")), "relu")
    out = eqx.filter_shard(model, shardings)
    assert out.weight.sharding == rows
    assert out.bias.sharding == NamedSharding(mesh, P("data"))
    assert len(out.weight.addressable_shards) == 8
    assert out.weight.addressable_shards[0].data.shape == (2, 2)
    np.testing.assert_array_equal(out.weight, model.weight)

    # Inside jit: the constraint decides the output sharding.
    @jax.jit
    def f(m):
        m = eqx.filter_shard(m, shardings)
        return m.weight * 2, m.bias + 1

    w, b = f(eqx.filter(model, eqx.is_array))
    assert w.sharding.is_equivalent_to(rows, 2)
    assert b.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), 1)
    np.testing.assert_array_equal(w, model.weight * 2)
    print("ok")
    """
)


def test_on_eight_devices_in_a_subprocess():
    result = run_on_cpu_devices(_EIGHT_DEVICES, 8, python_options=("-W", "error"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# `with_sharding_constraint` refuses the `Explicit` axes of a mesh (a
# regression: `filter_shard` inside `filter_jit` failed there); they take
# `jax.sharding.reshard`, and a mesh mixing both kinds takes both.
_MESH_KINDS = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import pytreemod as eqx

    E, A = AxisType.Explicit, AxisType.Auto
    kinds = {"auto": (A, A), "explicit": (E, E), "mixed": (E, A)}[KINDS]
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=kinds)

    class Linear(eqx.Module):
        weight: jax.Array
        bias: jax.Array
        act: str = eqx.field(static=True)

        def __call__(self, x):
            return x @ self.weight.T + self.bias

    grid = NamedSharding(mesh, P("data", "model"))
    rows = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    shardings = Linear(grid, rows, "relu")
    model = Linear(jnp.arange(32.0).reshape(8, 4), jnp.zeros(8), "relu")

    def spec(x):
        # Auto axes are not part of a traced array's type; the output's
        # sharding shows them.
        return tuple(x.sharding.spec) + (None,) * (x.ndim - len(x.sharding.spec))

    # Outside jit.
    out = eqx.filter_shard(model, shardings)
    assert out.weight.sharding == grid and out.bias.sharding == rows, out
    assert out.act == "relu"
    np.testing.assert_array_equal(out.weight, model.weight)

    # Inside filter_jit and jax.jit, from replicated arrays on the mesh and
    # from arrays on one device.
    def f(m):
        m = eqx.filter_shard(m, shardings)
        return m.weight * 2, m.bias + 1, m.act

    def check(w, b):
        assert spec(w) == ("data", "model"), w.sharding
        assert spec(b) == ("data",), b.sharding
        np.testing.assert_array_equal(w, model.weight * 2)

    # From arrays already on the mesh.
    on_mesh = eqx.filter_shard(model, replicated)
    w, b, act = eqx.filter_jit(f)(on_mesh)
    check(w, b)
    assert act == "relu"
    check(*jax.jit(lambda m: f(m)[:2])(eqx.filter(on_mesh, eqx.is_array)))
    # From arrays on one device: an `Explicit` sharding is part of an array's
    # type, so JAX wants the mesh set for that (`jax.set_mesh`).
    with jax.set_mesh(mesh):
        check(*eqx.filter_jit(f)(model)[:2])
        check(*jax.jit(lambda m: f(m)[:2])(eqx.filter(model, eqx.is_array)))

    # A training step that shards its batch inside filter_jit.
    @eqx.filter_jit
    def loss(m, x):
        x = eqx.filter_shard(x, rows)
        return jnp.mean(m(x) ** 2)

    with jax.set_mesh(mesh):
        x = jnp.ones((8, 4))
        grads = eqx.filter_grad(loss)(on_mesh, x)
        expected = jax.grad(lambda m: jnp.mean(m(x) ** 2))(model)
    np.testing.assert_allclose(grads.weight, expected.weight)
    print("ok")
    """
)


@pytest.mark.parametrize("kinds", ["auto", "explicit", "mixed"])
def test_auto_explicit_and_mixed_meshes_on_eight_devices(kinds):
    script = f"KINDS = {kinds!r}\n" + _MESH_KINDS
    result = run_on_cpu_devices(script, 8, python_options=("-W", "error"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
