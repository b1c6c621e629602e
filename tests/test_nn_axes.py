"""The `nn` layers' `axes=` arguments: logical axis names for
`pytreemod.sharding`, held as static metadata (no new leaf, no change of
value), read by `pytreemod.sharding.logical_specs`.

The names are checked on the test machine's one CPU device; placement of an
attention block and an MLP on an 8-device mesh runs in a subprocess
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), as in
tests/test_sharding.py.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import run_on_cpu_devices
from jax.sharding import PartitionSpec as P

import pytreemod as eqx
from pytreemod.sharding import logical_specs

KEY = jax.random.key(0)

HEADS = {
    "query": ("heads", "embed"),
    "key": ("heads", "embed"),
    "value": ("heads", "embed"),
    "output": ("embed", "heads"),
}

# (build, axes, {attribute path: expected spec}); `build(axes)` makes the layer.
CASES = {
    "Conv": (
        lambda axes: eqx.nn.Conv(2, 4, 8, 3, key=KEY, axes=axes),
        ("out", "in"),
        {"weight": P("out", "in", None, None), "bias": P("out", None, None)},
    ),
    "Conv1d_full": (
        lambda axes: eqx.nn.Conv1d(4, 8, 3, key=KEY, axes=axes),
        ("out", "in", "kernel"),
        {"weight": P("out", "in", "kernel"), "bias": P("out", None)},
    ),
    "Conv2d": (
        lambda axes: eqx.nn.Conv2d(4, 8, 3, key=KEY, axes=axes),
        ("out", None),
        {"weight": P("out", None, None, None), "bias": P("out", None, None)},
    ),
    "Conv3d": (
        lambda axes: eqx.nn.Conv3d(4, 8, 2, groups=2, key=KEY, axes=axes),
        (None, "in"),
        {"weight": P(None, "in", None, None, None), "bias": P()},
    ),
    "ConvTranspose": (
        lambda axes: eqx.nn.ConvTranspose(1, 4, 8, 3, key=KEY, axes=axes),
        ("out", "in"),
        {"weight": P("out", "in", None), "bias": P("out", None)},
    ),
    "ConvTranspose2d": (
        lambda axes: eqx.nn.ConvTranspose2d(4, 8, 3, stride=2, key=KEY, axes=axes),
        ("out", "in", None, "w"),
        {"weight": P("out", "in", None, "w"), "bias": P("out", None, None)},
    ),
    "LayerNorm": (
        lambda axes: eqx.nn.LayerNorm(8, axes=axes),
        ("embed",),
        {"weight": P("embed"), "bias": P("embed")},
    ),
    "LayerNorm_2d": (
        lambda axes: eqx.nn.LayerNorm((3, 8), use_bias=False, axes=axes),
        ("seq", "embed"),
        {"weight": P("seq", "embed")},
    ),
    "RMSNorm": (
        lambda axes: eqx.nn.RMSNorm(8, axes=axes),
        ("embed",),
        {"weight": P("embed"), "bias": P("embed")},
    ),
    "GroupNorm": (
        lambda axes: eqx.nn.GroupNorm(2, 8, axes=axes),
        ("channels",),
        {"weight": P("channels"), "bias": P("channels")},
    ),
    "MultiheadAttention": (
        lambda axes: eqx.nn.MultiheadAttention(
            2, 8, use_query_bias=True, key=KEY, axes=axes
        ),
        HEADS,
        {
            "query_proj.weight": P("heads", "embed"),
            "query_proj.bias": P("heads"),
            "key_proj.weight": P("heads", "embed"),
            "value_proj.weight": P("heads", "embed"),
            "output_proj.weight": P("embed", "heads"),
        },
    ),
    "MultiheadAttention_some": (
        lambda axes: eqx.nn.MultiheadAttention(2, 8, key=KEY, axes=axes),
        {"output": ("embed", "heads")},
        {"query_proj.weight": P(), "output_proj.weight": P("embed", "heads")},
    ),
    "MLP": (
        lambda axes: eqx.nn.MLP(4, 2, 8, 2, key=KEY, axes=axes),
        [("mlp", "embed"), ("mlp2", "mlp"), None],
        {
            "layers[0].weight": P("mlp", "embed"),
            "layers[0].bias": P("mlp"),
            "layers[1].weight": P("mlp2", "mlp"),
            "layers[2].weight": P(),
        },
    ),
    "MLP_scan": (
        lambda axes: eqx.nn.MLP(4, 2, 8, 3, scan=True, key=KEY, axes=axes),
        [("mlp", "embed"), ("mlp2", "mlp"), ("mlp2", "mlp"), ("out", "mlp2")],
        {
            "layers[0].weight": P("mlp", "embed"),
            # The stacked hidden layers: an unnamed leading layer axis.
            "layers[1].weight": P(None, "mlp2", "mlp"),
            "layers[1].bias": P(None, "mlp2"),
            "layers[2].weight": P("out", "mlp2"),
            "layers[2].bias": P("out"),
        },
    ),
}


def _get(tree, path):
    for part in path.replace("[", ".").replace("]", "").split("."):
        tree = tree[int(part)] if part.isdigit() else getattr(tree, part)
    return tree


@pytest.mark.parametrize("name", sorted(CASES))
def test_axes_name_the_layers_arrays(name):
    build, axes, expected = CASES[name]
    specs = logical_specs(build(axes))
    for path, spec in expected.items():
        assert _get(specs, path) == spec, path


@pytest.mark.parametrize("name", sorted(CASES))
def test_axes_add_no_leaf_and_change_no_value(name):
    build, axes, _ = CASES[name]
    named, plain = build(axes), build(None)
    named_leaves = jax.tree_util.tree_leaves(named)
    plain_leaves = jax.tree_util.tree_leaves(plain)
    assert len(named_leaves) == len(plain_leaves)
    for a, b in zip(named_leaves, plain_leaves, strict=True):
        np.testing.assert_array_equal(a, b)
    assert repr(named) == repr(plain)  # `axes` is left out of the repr
    # Unnamed by default: every array replicated.
    is_spec = lambda x: isinstance(x, P)
    specs = jax.tree_util.tree_leaves(logical_specs(plain), is_leaf=is_spec)
    assert specs and all(spec == P() for spec in specs)


def test_named_layers_compute_the_same():
    x = jnp.arange(8.0)
    for name in ("LayerNorm", "RMSNorm", "MLP"):
        build, axes, _ = CASES[name]
        arg = x[:4] if name == "MLP" else x
        np.testing.assert_array_equal(build(axes)(arg), build(None)(arg))
    build, axes, _ = CASES["MultiheadAttention"]
    seq = jnp.ones((3, 8))
    np.testing.assert_array_equal(
        build(axes)(seq, seq, seq), build(None)(seq, seq, seq)
    )
    conv = CASES["Conv2d"][0]
    image = jnp.ones((4, 5, 5))
    np.testing.assert_array_equal(conv(("out", "in"))(image), conv(None)(image))


def test_layer_axes_inside_stacked_follow_the_layer_axis():
    stack = eqx.nn.Stacked(
        lambda k: eqx.nn.LayerNorm(8, axes=("embed",)), 3, key=jax.random.key(1)
    )
    assert logical_specs(stack).layers.weight == P(None, "embed")


@pytest.mark.parametrize(
    "build, error, match",
    [
        (
            lambda: eqx.nn.Conv2d(2, 2, 3, key=KEY, axes=("out",)),
            ValueError,
            r"`Conv2d\(axes=...\)` takes 2 logical names, for \(out, in\), or 4, "
            r"one per dimension of the weight \(out, in, kernel_1, kernel_2\)",
        ),
        (
            lambda: eqx.nn.ConvTranspose1d(2, 2, 3, key=KEY, axes="out"),
            TypeError,
            r"`ConvTranspose1d\(axes=...\)` must be a tuple",
        ),
        (
            lambda: eqx.nn.LayerNorm((2, 3), axes=("embed",)),
            ValueError,
            r"`LayerNorm\(axes=...\)` takes 2 logical names, for "
            r"\(shape\[0\], shape\[1\]\)",
        ),
        (
            lambda: eqx.nn.RMSNorm(3, axes=("a", "b")),
            ValueError,
            r"`RMSNorm\(axes=...\)` takes 1 logical name, for \(shape\[0\]\)",
        ),
        (
            lambda: eqx.nn.GroupNorm(1, 2, axes="channels"),
            TypeError,
            r"`GroupNorm\(axes=...\)` must be a tuple",
        ),
        (
            lambda: eqx.nn.MultiheadAttention(2, 8, key=KEY, axes=("heads", "embed")),
            TypeError,
            r"`MultiheadAttention\(axes=...\)` must be a dict from 'query'",
        ),
        (
            lambda: eqx.nn.MultiheadAttention(2, 8, key=KEY, axes={"q": ("a", "b")}),
            ValueError,
            r"unknown keys \['q'\]; the projections are 'query', 'key'",
        ),
        (
            lambda: eqx.nn.MultiheadAttention(2, 8, key=KEY, axes={"key": ("a",)}),
            ValueError,
            r"`MultiheadAttention\(axes=\{'key': ...\}\)` takes 2 logical names",
        ),
        (
            lambda: eqx.nn.MLP(2, 2, 4, 1, key=KEY, axes=[("a", "b")]),
            ValueError,
            r"`MLP\(axes=...\)` needs one entry per layer, 2 for depth=1",
        ),
        (
            # One Linear's axes where a list of them is due.
            lambda: eqx.nn.MLP(2, 2, 4, 1, key=KEY, axes=("a", "b")),
            TypeError,
            r"`MLP\(axes=...\)\[0\]` must be a tuple",
        ),
        (
            lambda: eqx.nn.MLP(2, 2, 4, 1, key=KEY, axes=[None, ("a",)]),
            ValueError,
            r"`MLP\(axes=...\)\[1\]` takes 2 logical names",
        ),
        (
            lambda: eqx.nn.MLP(
                2, 2, 4, 3, scan=True, key=KEY, axes=[None, ("a", "b"), None, None]
            ),
            ValueError,
            r"`MLP\(scan=True\)` stacks its hidden layers into one `Linear`",
        ),
    ],
)
def test_bad_axes_are_clear_errors(build, error, match):
    with pytest.raises(error, match=match):
        build()


_SCRIPT = """
import json
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import pytreemod as eqx
from pytreemod.sharding import shard

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

HEADS = {
    "query": ("heads", "embed"),
    "key": ("heads", "embed"),
    "value": ("heads", "embed"),
    "output": ("embed", "heads"),
}
AXIS_RULES = {"batch": "data", "heads": "model", "mlp": "model", "embed": None}


class Block(eqx.Module):
    norm: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    mlp: eqx.nn.MLP

    def __init__(self, axes, key):
        k1, k2 = jax.random.split(key)
        self.norm = eqx.nn.LayerNorm(16, axes=axes and ("embed",))
        self.attention = eqx.nn.MultiheadAttention(
            4, 16, use_query_bias=True, key=k1, axes=axes and HEADS
        )
        self.mlp = eqx.nn.MLP(
            16, 16, 32, 1, key=k2,
            axes=axes and [("mlp", "embed"), ("embed", "mlp")],
        )

    def __call__(self, x):
        h = jax.vmap(self.norm)(x)
        x = x + self.attention(h, h, h)
        return x + jax.vmap(self.mlp)(x)


# `Auto` axes: XLA chooses the layout of intermediate results (with
# `Explicit` ones JAX asks for an `out_sharding` on every ambiguous matmul).
mesh = jax.make_mesh(
    (2, 4), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto)
)
results = {}


def check(f):
    try:
        f()
        results[f.__name__] = "ok"
    except Exception:
        results[f.__name__] = traceback.format_exc()


@check
def heads_and_mlp_split_over_the_model_axis():
    block = shard(Block(True, jax.random.key(0)), mesh, AXIS_RULES)
    q = block.attention.query_proj
    assert q.weight.sharding == NamedSharding(mesh, P("model")), q.weight.sharding
    assert q.bias.sharding == NamedSharding(mesh, P("model"))
    out = block.attention.output_proj.weight.sharding
    assert out == NamedSharding(mesh, P(None, "model")), out
    # Each device holds a quarter of the heads: 16 rows of 4 heads -> 4.
    assert {s.data.shape for s in q.weight.addressable_shards} == {(4, 16)}
    up = block.mlp.layers[0].weight
    assert up.sharding == NamedSharding(mesh, P("model")), up.sharding
    assert block.mlp.layers[1].weight.sharding == NamedSharding(mesh, P(None, "model"))
    assert block.norm.weight.sharding.is_fully_replicated


@check
def sharded_forward_matches_the_single_device_one():
    key = jax.random.key(0)
    plain = Block(None, key)
    block = shard(Block(True, key), mesh, AXIS_RULES)
    xs = jax.random.normal(jax.random.key(1), (8, 5, 16))
    xs_sharded = jax.device_put(xs, NamedSharding(mesh, P("data")))
    step = eqx.filter_jit(eqx.filter_vmap(lambda b, x: b(x), in_axes=(None, 0)))
    want = jax.vmap(plain)(xs)
    got = step(block, xs_sharded)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


print(json.dumps(results))
"""

_CHECKS = [
    "heads_and_mlp_split_over_the_model_axis",
    "sharded_forward_matches_the_single_device_one",
]


@pytest.fixture(scope="module")
def eight_devices():
    done = run_on_cpu_devices(_SCRIPT, 8, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", _CHECKS)
def test_on_eight_devices(eight_devices, name):
    assert eight_devices[name] == "ok", eight_devices[name]
