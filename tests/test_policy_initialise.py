"""`pytreemod.policy.initialise`: re-initialisation by ordered rules, keys
derived from key paths, abstract models, sharded creation (8 CPU devices, in
a subprocess) and misuse."""

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import run_on_cpu_devices

import pytreemod as ptm
from pytreemod import select
from pytreemod.policy import initialise, path_key

init = jax.nn.initializers


class Net(ptm.Module):
    encoder: ptm.nn.Linear
    head: ptm.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.encoder = ptm.nn.Linear(6, 8, key=k1)
        self.head = ptm.nn.Linear(8, 2, key=k2)


class BiggerNet(ptm.Module):
    """`Net` with layers added before and between, fields in another order."""

    head: ptm.nn.Linear
    embed: ptm.nn.Linear
    extra: ptm.nn.Linear
    encoder: ptm.nn.Linear

    def __init__(self, key):
        keys = jax.random.split(key, 4)
        self.embed = ptm.nn.Linear(3, 6, key=keys[0])
        self.encoder = ptm.nn.Linear(6, 8, key=keys[1])
        self.extra = ptm.nn.Linear(8, 8, key=keys[2])
        self.head = ptm.nn.Linear(8, 2, key=keys[3])


RULES = [
    (select.field("bias"), init.zeros),
    (select.path(r"\.head\.weight"), init.normal(1e-3)),
    (select.field("weight"), init.orthogonal()),
]


def test_each_rule_initialises_what_it_selects_by_hand_reference():
    net = Net(jax.random.key(0))
    key = jax.random.key(7)
    out = initialise(net, RULES, key=key)
    # by hand, the Equinox way: tree_at with each value drawn from its own key
    # (compiled, as `initialise` does: eager `normal` may differ in the last bit)
    draw = jax.jit(lambda f, k, shape: f(k, shape, jnp.float32), static_argnums=(0, 2))
    expected = ptm.tree_at(
        lambda n: (n.encoder.weight, n.encoder.bias, n.head.weight, n.head.bias),
        net,
        (
            draw(init.orthogonal(), path_key(key, ".encoder.weight"), (8, 6)),
            jnp.zeros(8),
            draw(init.normal(1e-3), path_key(key, ".head.weight"), (2, 8)),
            jnp.zeros(2),
        ),
    )
    assert ptm.tree_equal(out, expected)
    w = out.encoder.weight
    np.testing.assert_allclose(w.T @ w, np.eye(6), atol=1e-5)  # orthonormal columns
    assert float(jnp.abs(out.head.weight).max()) < 1e-2


def test_unselected_leaves_are_the_same_objects():
    net = Net(jax.random.key(0))
    out = initialise(net, [(select.field("bias"), init.zeros)], key=jax.random.key(1))
    assert out.encoder.weight is net.encoder.weight
    assert out.head.weight is net.head.weight
    assert jax.tree.structure(out) == jax.tree.structure(net)


def test_values_do_not_change_when_other_layers_are_added_or_reordered():
    key = jax.random.key(3)
    small = initialise(Net(jax.random.key(0)), RULES, key=key)
    big = initialise(BiggerNet(jax.random.key(1)), RULES, key=key)
    for name in ["encoder", "head"]:
        for field in ["weight", "bias"]:
            a = getattr(getattr(small, name), field)
            b = getattr(getattr(big, name), field)
            np.testing.assert_array_equal(a, b)
    # and different paths get different values
    assert not np.array_equal(big.extra.weight[:, :6], big.encoder.weight[:, :6])


def test_path_keys_are_stable_across_processes():
    # a stable hash (crc32), not Python's per-process salted `hash`
    script = textwrap.dedent(
        """
        import jax
        from pytreemod.policy import path_key
        print(jax.random.key_data(path_key(jax.random.key(0), ".a.weight")).tolist())
        """
    )
    outs = {run_on_cpu_devices(script, 1, python_options=[]).stdout for _ in range(2)}
    here = jax.random.key_data(path_key(jax.random.key(0), ".a.weight")).tolist()
    assert outs == {f"{here}\n"}


def test_abstract_model_is_built_directly_in_its_final_values():
    abstract = ptm.filter_eval_shape(Net, jax.random.key(0))
    assert isinstance(abstract.encoder.weight, jax.ShapeDtypeStruct)
    key = jax.random.key(5)
    out = initialise(abstract, RULES, key=key)
    leaves = jax.tree.leaves(out)
    assert all(isinstance(x, jax.Array) for x in leaves if not callable(x))
    assert ptm.tree_equal(out, initialise(Net(jax.random.key(9)), RULES, key=key))


def test_abstract_arrays_must_all_be_selected_or_defaulted():
    abstract = ptm.filter_eval_shape(Net, jax.random.key(0))
    with pytest.raises(ValueError, match=r"(?s)2 abstract arrays.*\.encoder\.weight"):
        initialise(
            abstract, [(select.field("bias"), init.zeros)], key=jax.random.key(0)
        )
    out = initialise(
        abstract,
        [(select.field("bias"), init.zeros)],
        key=jax.random.key(0),
        default=init.lecun_normal(),
    )
    assert out.head.weight.shape == (2, 8) and isinstance(out.head.weight, jax.Array)


def test_dtype_follows_the_array():
    net = ptm.nn.Linear(4, 4, dtype=jnp.bfloat16, key=jax.random.key(0))
    out = initialise(
        net, [(select.field("weight"), init.normal())], key=jax.random.key(1)
    )
    assert out.weight.dtype == jnp.bfloat16
    assert not np.array_equal(out.weight, net.weight)


def test_a_scaled_last_layer():
    mlp = ptm.nn.MLP(4, 3, 8, 2, key=jax.random.key(0))

    def scaled(key, shape, dtype):
        return 0.1 * init.lecun_normal()(key, shape, dtype)

    out = initialise(mlp, [(r"\.layers\[2\]\.weight", scaled)], key=jax.random.key(1))
    ref = jax.jit(scaled, static_argnums=(1, 2))(
        path_key(jax.random.key(1), ".layers[2].weight"), (3, 8), jnp.float32
    )
    np.testing.assert_array_equal(out.layers[2].weight, ref)
    assert out.layers[1].weight is mlp.layers[1].weight


# -- misuse ---------------------------------------------------------------------


def test_an_initialiser_with_the_wrong_signature_names_the_path():
    net = Net(jax.random.key(0))
    with pytest.raises(
        TypeError, match=r"(?s)rule 0 .*failed for the array at \.encoder\.bias"
    ):
        initialise(
            net, [(select.field("bias"), lambda key, shape: 0)], key=jax.random.key(0)
        )


def test_an_initialiser_returning_the_wrong_shape_or_dtype_names_the_path():
    net = Net(jax.random.key(0))
    with pytest.raises(
        ValueError,
        match=r"wrong shape for the array at \.encoder\.bias: expected \(8,\), got",
    ):
        initialise(
            net,
            [(select.field("bias"), lambda k, s, d: jnp.zeros((1,), d))],
            key=jax.random.key(0),
        )
    with pytest.raises(
        ValueError, match=r"wrong dtype for the array at \.encoder\.bias.*float16"
    ):
        initialise(
            net,
            [(select.field("bias"), lambda k, s, d: jnp.zeros(s, jnp.float16))],
            key=jax.random.key(0),
        )


def test_an_initialiser_that_rejects_the_shape_names_the_path():
    net = Net(jax.random.key(0))
    with pytest.raises(ValueError, match=r"\.encoder\.bias \(shape \(8,\)"):
        initialise(
            net, [(select.field("bias"), init.orthogonal())], key=jax.random.key(0)
        )


def test_a_non_callable_initialiser_or_bad_rule_is_an_error():
    net = Net(jax.random.key(0))
    with pytest.raises(
        TypeError, match="rule 0 of `rules`: an initialiser must be a function"
    ):
        initialise(net, [(select.field("bias"), 0.0)], key=jax.random.key(0))
    with pytest.raises(TypeError, match="must be a list of `\\(selection, initialiser"):
        initialise(net, init.zeros, key=jax.random.key(0))
    with pytest.raises(ValueError, match="matches nothing"):
        initialise(net, [(select.field("bais"), init.zeros)], key=jax.random.key(0))


def test_bad_shardings_is_an_error():
    net = Net(jax.random.key(0))
    with pytest.raises(TypeError, match=r"`shardings` must be .* at \.encoder\.weight"):
        initialise(
            net,
            [(select.field("bias"), init.zeros)],
            key=jax.random.key(0),
            shardings=net,  # arrays, not shardings
        )


# -- sharded, on 8 CPU devices -----------------------------------------------------

_SHARDED = textwrap.dedent(
    """
    import json

    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    import pytreemod as ptm
    from pytreemod import select
    from pytreemod.policy import _initialise, initialise

    init = jax.nn.initializers
    N = 512


    class Big(ptm.Module):
        up: ptm.nn.Linear
        down: ptm.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.up = ptm.nn.Linear(N, N, key=k1, axes=("mlp", "embed"))
            self.down = ptm.nn.Linear(N, N, key=k2, axes=("embed", "mlp"))


    mesh = jax.make_mesh((8,), ("model",))
    abstract = ptm.filter_eval_shape(Big, jax.random.key(0))
    axis_rules = {"mlp": "model", "embed": None}
    shardings = ptm.sharding.named_shardings(abstract, mesh, axis_rules)
    rules = [
        (select.field("bias"), init.zeros),
        (select.field("weight"), init.normal(0.02)),
    ]
    key = jax.random.key(1)
    jobs = _initialise._plan(abstract, rules, shardings, None, False)
    compiled = _initialise.compiled_initialiser(jobs).lower(key).compile()
    memory = compiled.memory_analysis()
    model = initialise(abstract, rules, key=key, shardings=shardings)


    def whole():  # live arrays of a weight's full shape held by one device
        return sum(
            a.shape == (N, N) and len(a.sharding.device_set) == 1
            for a in jax.live_arrays()
        )


    whole_sharded = whole()
    unsharded = initialise(abstract, rules, key=key)
    shards = model.up.weight.addressable_shards
    report = {
        "full_bytes": N * N * 4,
        "temp": memory.temp_size_in_bytes,
        "output": memory.output_size_in_bytes,
        "full_shape_in_hlo": f"f32[{N},{N}]" in compiled.as_text(),
        "shard_shapes": sorted({tuple(s.data.shape) for s in shards}),
        "devices": len(shards),
        "whole_on_one_device": whole_sharded,
        "whole_after_unsharded": whole(),
        "spec_up": str(model.up.weight.sharding.spec),
        "spec_down": str(model.down.weight.sharding.spec),
        "bias_spec": str(model.up.bias.sharding.spec),
        "same_as_unsharded": bool((model.up.weight == unsharded.up.weight).all()),
    }
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def sharded():
    result = run_on_cpu_devices(_SHARDED, 8, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sharded_initialisation_creates_each_array_directly_sharded(sharded):
    """Measured from the compiled initialiser: with a partitionable
    initialiser (normal, zeros), each device's program never holds the whole
    512x512 weight (no such shape in the partitioned HLO; temporary plus
    output bytes per device under one weight's 1 MiB), and each of the 8
    devices ends up holding its 64-row shard only."""
    normal = sharded
    assert normal["devices"] == 8
    assert normal["whole_on_one_device"] == 0  # among `jax.live_arrays()`
    assert normal["whole_after_unsharded"] == 2  # the check sees whole arrays
    assert normal["shard_shapes"] == [[64, 512]]
    assert normal["spec_up"] == "P('model',)"
    assert normal["spec_down"] == "P(None, 'model')"
    assert normal["bias_spec"] == "P('model',)"
    assert not normal["full_shape_in_hlo"]
    # 2 weights + 2 biases, one eighth of each, per device
    assert normal["output"] < 2 * sharded["full_bytes"] / 8 * 1.01
    assert normal["temp"] + normal["output"] < sharded["full_bytes"]
    # sharding changes where the values live, not what they are
    assert normal["same_as_unsharded"]
