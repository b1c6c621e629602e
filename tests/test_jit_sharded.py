"""`filter_jit` on arrays sharded across devices.

The checks run in a subprocess started with 8 CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), which must be set
before JAX starts; each prints one JSON line that the tests below read.
"""

import json
import textwrap

import pytest
from _helpers import run_on_cpu_devices

_SCRIPT = textwrap.dedent(
    """
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    import pytreemod as eqx

    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")


    class Linear(eqx.Module):
        weight: jax.Array
        bias: jax.Array
        name: str = eqx.field(static=True)

        def __call__(self, x):
            return x @ self.weight + self.bias[None]


    class Model(eqx.Module):
        layers: list

        def __call__(self, x):
            for layer in self.layers:
                x = jnp.tanh(layer(x))
            return x


    def plain(model, x):
        return model(x)


    def on_leaves(leaves, treedef, x):
        return plain(jax.tree_util.tree_unflatten(treedef, leaves), x)


    def check(name, mesh, weight_spec, bias_spec, x_spec):
        rng = np.random.default_rng(0)
        put = lambda a, spec: jax.device_put(
            jnp.asarray(a, dtype=jnp.float32), NamedSharding(mesh, spec)
        )
        model = Model(
            [
                Linear(
                    put(rng.normal(size=(16, 16)) / 4, weight_spec),
                    put(rng.normal(size=(16,)), bias_spec),
                    f"layer{i}",
                )
                for i in range(2)
            ]
        )
        x = put(rng.normal(size=(8, 16)), x_spec)
        counted = eqx.debug.assert_max_traces(plain, max_traces=1)
        jitted = eqx.filter_jit(counted)
        out = jitted(model, x)
        again = jitted(model, x)
        # The floor: jax.jit on the same array leaves, for the sharding that
        # JAX's own propagation gives.
        leaves, treedef = jax.tree_util.tree_flatten(model)
        reference = jax.jit(on_leaves, static_argnums=1)(leaves, treedef, x)
        gathered = jax.tree_util.tree_map(np.asarray, model)
        expected = np.asarray(x)
        for layer in gathered.layers:
            expected = np.tanh(expected @ layer.weight + layer.bias)
        print(json.dumps({
            "name": name,
            "devices": len(jax.devices()),
            "close": bool(np.allclose(np.asarray(out), expected, atol=1e-5)),
            "same_as_jax": bool(np.array_equal(np.asarray(out), np.asarray(reference))),
            "spec": [str(axis) for axis in out.sharding.spec],
            "sharding_equivalent": bool(
                out.sharding.is_equivalent_to(reference.sharding, out.ndim)
            ),
            "shards": len(out.addressable_shards),
            "again_sharding_equivalent": bool(
                again.sharding.is_equivalent_to(reference.sharding, out.ndim)
            ),
            "traces": eqx.debug.get_num_traces(counted),
        }))


    devices = np.array(jax.devices())
    mesh1 = jax.sharding.Mesh(devices, ("data",))
    check("1d", mesh1, P(None, "data"), P("data"), P())
    check("1d-batch", mesh1, P(), P(), P("data", None))
    mesh2 = jax.sharding.Mesh(devices.reshape(4, 2), ("data", "model"))
    check("2d", mesh2, P(None, "model"), P("model"), P("data", None))
    explicit = jax.make_mesh(
        (4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2
    )
    with jax.set_mesh(explicit):
        check("2d-explicit", explicit, P(None, "model"), P("model"), P("data", None))
    """
)


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    done = run_on_cpu_devices(_SCRIPT, 8, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line]
    return {line["name"]: line for line in lines}


@pytest.mark.parametrize("name", ["1d", "1d-batch", "2d", "2d-explicit"])
def test_sharded_model_through_filter_jit(results, name):
    result = results[name]
    assert result["devices"] == 8
    assert result["close"], result
    assert result["same_as_jax"], result
    # The output sharding is what JAX's propagation gives for the same leaves.
    assert result["sharding_equivalent"], result
    assert result["again_sharding_equivalent"], result
    assert result["traces"] == 1


def test_batch_sharded_output_stays_sharded(results):
    assert results["1d-batch"]["spec"][0] == "data"
    assert results["1d-batch"]["shards"] == 8
