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
