"""`pytreemod.sharding`: logical axis names (`field(axes=...)`, rules by key
path, `like=` for optimiser states) mapped to mesh axes.

Names and misuse are checked on the test machine's one CPU device; placement
on an 8-device mesh runs in a subprocess
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), whose checks each
report "ok" or their traceback in one JSON line.
"""

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import run_on_cpu_devices
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import PartitionSpec as P

import pytreemod as eqx
from pytreemod import select
from pytreemod.sharding import logical_specs, named_shardings, shard


class Block(eqx.Module):
    up: jax.Array = eqx.field(axes=("mlp", "embed"))
    up_bias: jax.Array = eqx.field(axes=("mlp",))
    down: jax.Array = eqx.field(axes=("embed", "mlp"))
    scale: float = 1.0
    name: str = eqx.field(static=True, default="block")


class Plain(eqx.Module):
    weight: jax.Array
    weight_norm: jax.Array
    bias: jax.Array | None


class Stack(eqx.Module):
    """A stack of blocks: every array has a leading layer axis."""

    blocks: Block = eqx.field(axes=("layers",))


class PerInstance(eqx.Module):
    weight: jax.Array = eqx.field(axes=lambda self: self.names)
    names: tuple = eqx.field(static=True, default=("mlp", None))


def _block(embed=4, mlp=8, layers=None) -> Block:
    lead = () if layers is None else (layers,)
    return Block(
        jnp.ones((*lead, mlp, embed)),
        jnp.ones((*lead, mlp)),
        jnp.ones((*lead, embed, mlp)),
    )


def _mesh():
    return jax.make_mesh((1,), ("model",))


def test_axes_are_metadata_not_leaves():
    class Bare(eqx.Module):
        up: jax.Array
        up_bias: jax.Array
        down: jax.Array
        scale: float = 1.0
        name: str = eqx.field(static=True, default="block")

    named, bare = _block(), Bare(*jax.tree_util.tree_leaves(_block())[:3])
    assert len(jax.tree_util.tree_leaves(named)) == len(jax.tree_util.tree_leaves(bare))
    assert jax.tree_util.tree_flatten(named)[1].num_leaves == 4
    field = {f.name: f for f in dataclasses.fields(Block)}["up"]
    assert field.metadata["pytreemod.axes"] == ("mlp", "embed")


# --- logical_specs ------------------------------------------------------------


def test_field_axes_name_arrays_and_other_leaves_are_none():
    specs = logical_specs(_block())
    assert isinstance(specs, Block)
    assert specs.up == P("mlp", "embed")
    assert specs.up_bias == P("mlp")
    assert specs.down == P("embed", "mlp")
    assert specs.scale is None and specs.name == "block"


def test_unnamed_arrays_are_replicated_and_structure_is_kept():
    tree = {"a": jnp.ones((2, 3)), "b": [np.zeros(2), "text"], "c": None}
    specs = logical_specs(tree)
    assert specs == {"a": P(), "b": [P(), None], "c": None}
    leaves = jax.tree_util.tree_structure(tree, is_leaf=lambda x: x is None)
    assert jax.tree_util.tree_structure(specs, is_leaf=lambda x: x is None) == leaves


def test_rules_match_the_whole_key_path_first_rule_wins():
    model = Plain(jnp.ones((2, 3)), jnp.ones(3), None)
    rules = [
        (r".*\.weight", ("out", "in")),  # not `.weight_norm`: a full match
        (r".*", None),
        (r"\.weight_norm", ("in",)),  # never reached
    ]
    specs = logical_specs(model, rules)
    assert specs.weight == P("out", "in")
    assert specs.weight_norm == P()


def test_rules_override_field_axes_and_accept_compiled_patterns():
    rules = {re.compile(r"\.up"): (None, "embed")}
    specs = logical_specs(_block(), rules)
    assert specs.up == P(None, "embed")
    assert specs.down == P("embed", "mlp")


def test_rules_take_any_selection_types_and_selectors():
    # Sharding rules are the ordered rules of `pytreemod.select`: a type or a
    # selector works where a pattern does, and a match at a submodule names
    # every array below it.
    model = {"block": _block(), "plain": Plain(jnp.ones((2, 3)), jnp.ones(3), None)}
    rules = [
        (select.instance(Plain) & select.field("weight"), ("out", "in")),
        (Plain, None),
        (r"\['block'\]", None),
    ]
    specs = logical_specs(model, rules)
    assert specs["plain"].weight == P("out", "in")
    assert specs["plain"].weight_norm == P()
    assert specs["block"].up == P() and specs["block"].up_bias == P()


def test_a_rule_that_matches_nothing_is_an_error_unless_missing_ok():
    model = Plain(jnp.ones((2, 3)), jnp.ones(3), None)
    rules = [(r"\.wieght", ("out", "in"))]
    with pytest.raises(ValueError, match=r"(?s)matches nothing.*\.weight"):
        logical_specs(model, rules)
    with pytest.raises(ValueError, match="matches nothing"):
        named_shardings(model, jax.make_mesh((1,), ("m",)), {}, rules)
    assert logical_specs(model, rules, missing_ok=True).weight == P()


def test_field_on_a_subtree_names_leading_axes():
    specs = logical_specs(Stack(_block(layers=3)))
    assert specs.blocks.up == P("layers", "mlp", "embed")
    assert specs.blocks.up_bias == P("layers", "mlp")


def test_leading_axes_alone_leave_the_other_dimensions_unnamed():
    class Holder(eqx.Module):
        stack: dict = eqx.field(axes=("layers",))

    specs = logical_specs(Holder({"w": jnp.ones((3, 2, 2))}))
    assert specs.stack["w"] == P("layers", None, None)


def test_axes_can_depend_on_the_instance():
    assert logical_specs(PerInstance(jnp.ones((2, 2)))).weight == P("mlp", None)
    other = PerInstance(jnp.ones((2, 2)), names=(None, "embed"))
    assert logical_specs(other).weight == P(None, "embed")


def test_all_none_names_are_replicated():
    class Free(eqx.Module):
        w: jax.Array = eqx.field(axes=(None, None))

    assert logical_specs(Free(jnp.ones((2, 2)))).w == P()


def test_abstract_models_are_named_too():
    abstract = eqx.filter_eval_shape(_block)
    assert logical_specs(abstract).up == P("mlp", "embed")


def test_optax_state_follows_like_by_suffix_and_shape():
    model = _block()
    state = optax.adam(1e-3).init(eqx.filter(model, eqx.is_array))
    specs = logical_specs(state, like=model)
    assert specs[0].mu.up == P("mlp", "embed")
    assert specs[0].nu.down == P("embed", "mlp")
    assert specs[0].count == P()


def test_like_with_another_shape_is_unnamed():
    # Adafactor-style factored moments: same paths, other shapes.
    model = {"w": jnp.ones((8, 4))}
    rules = [(r"\['w'\]", ("mlp", "embed"))]
    state = {"v_row": {"w": jnp.ones(8)}, "v": {"w": jnp.ones((8, 4))}}
    specs = logical_specs(state, rules, like=model)
    assert specs["v_row"]["w"] == P()
    assert specs["v"]["w"] == P("mlp", "embed")


# --- misuse: names ------------------------------------------------------------


@pytest.mark.parametrize(
    "rules, error, match",
    [
        ("w", TypeError, "list of `\\(selection, axes\\)` pairs"),
        ([("w",)], TypeError, "rule 0"),
        ([(3, ("a",))], TypeError, "rule 0"),
        ([("w[", ("a",))], ValueError, "not a valid regular expression"),
        ([("w", "a")], TypeError, "the axes of rule 0 must be a tuple"),
        ([("w", (1,))], TypeError, "the axes of rule 0 must be a tuple"),
        ([("w", lambda m: ("a",))], TypeError, "rule 0"),
    ],
)
def test_bad_rules_are_errors(rules, error, match):
    with pytest.raises(error, match=match):
        logical_specs({"w": jnp.ones(2)}, rules)


def test_field_axes_must_be_a_tuple_of_names():
    with pytest.raises(TypeError, match="`axes` must be a tuple"):
        eqx.field(axes="embed")
    with pytest.raises(TypeError, match="`axes` must be a tuple"):
        eqx.field(axes=("embed", 3))
    with pytest.raises(TypeError, match="may not use the key 'pytreemod.axes'"):
        eqx.field(metadata={"pytreemod.axes": ("a",)})


def test_wrong_number_of_field_axes_names_path_and_field():
    class Wrong(eqx.Module):
        w: jax.Array = eqx.field(axes=("mlp",))

    with pytest.raises(ValueError, match=r"`\.w` has shape \(2, 3\).*`Wrong.w`"):
        logical_specs(Wrong(jnp.ones((2, 3))))


def test_wrong_number_of_rule_axes_names_the_rule():
    with pytest.raises(ValueError, match=r"rule 0 \(path\('\.\*'\)\)\s+names 1 axes"):
        logical_specs({"w": jnp.ones((2, 3))}, [(".*", ("mlp",))])


def test_leading_axes_longer_than_the_array_are_an_error():
    with pytest.raises(ValueError, match="leading|`Stack.blocks`"):
        logical_specs(Stack(_block()))  # no layer axis on these arrays


def test_a_name_twice_in_one_array_is_an_error():
    with pytest.raises(ValueError, match="names two dimensions 'mlp'"):
        logical_specs({"w": jnp.ones((2, 2))}, [(".*", ("mlp", "mlp"))])


def test_a_bad_axes_function_result_is_an_error():
    with pytest.raises(TypeError, match="`axes` function of `PerInstance.weight`"):
        logical_specs(PerInstance(jnp.ones((2, 2)), names="mlp"))


# --- misuse: mapping to a mesh -----------------------------------------------


def test_unknown_logical_name_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"`\.up` has the logical axis name 'embed'"):
        shard(_block(), _mesh(), {"mlp": "model"})


def test_axis_rules_naming_a_missing_mesh_axis_is_an_error():
    with pytest.raises(ValueError, match="the mesh has no axis 'data'"):
        shard(_block(), _mesh(), {"mlp": "data", "embed": None})


@pytest.mark.parametrize(
    "mesh, axis_rules, match",
    [
        ("mesh", {}, "`mesh` must be a `jax.sharding.Mesh`"),
        (None, [("mlp", "model")], "`axis_rules` must be a mapping"),
        (None, {"mlp": 3}, r"`axis_rules\['mlp'\]` must be a mesh axis name"),
    ],
)
def test_bad_mesh_or_axis_rules_are_errors(mesh, axis_rules, match):
    with pytest.raises(TypeError, match=match):
        shard(_block(), _mesh() if mesh is None else mesh, axis_rules)


def test_two_dimensions_on_one_mesh_axis_is_an_error():
    with pytest.raises(ValueError, match="maps both 'mlp' and 'embed' to the mesh"):
        shard(_block(), _mesh(), {"mlp": "model", "embed": "model"})


# --- shard on one device -------------------------------------------------------


def test_shard_places_and_keeps_the_rest():
    out = shard(_block(), _mesh(), {"mlp": "model", "embed": None})
    assert out.up.sharding.spec == P("model")
    assert out.down.sharding.spec == P(None, "model")
    assert out.scale == 1.0 and out.name == "block"


def test_named_shardings_has_none_for_non_arrays():
    out = named_shardings(_block(), _mesh(), {"mlp": "model", "embed": None})
    assert out.up.spec == P("model") and out.scale is None


@given(
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    named=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_shard_round_trips_values(shape, named):
    names = tuple(f"n{i}" if named[i] else None for i in range(len(shape)))
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    rules = [(".*", names)]
    axis_rules = {f"n{i}": "model" if i == 0 else None for i in range(3)}
    out = shard({"x": x}, _mesh(), axis_rules, rules)
    np.testing.assert_array_equal(np.asarray(out["x"]), x)
    assert logical_specs(out, rules)["x"] == logical_specs({"x": x}, rules)["x"]


# --- on eight CPU devices -----------------------------------------------------

_SCRIPT = """
import dataclasses
import json
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import pytreemod as eqx
from pytreemod import select
from pytreemod.sharding import logical_specs, named_shardings, shard

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

AXIS_RULES = {"batch": "data", "mlp": "model", "embed": None}


class Block(eqx.Module):
    up: jax.Array = eqx.field(axes=("mlp", "embed"))
    up_bias: jax.Array = eqx.field(axes=("mlp",))
    down: jax.Array = eqx.field(axes=("embed", "mlp"))
    scale: float = 1.0
    name: str = eqx.field(static=True, default="block")

    def __call__(self, x):
        return x + self.down @ jnp.tanh(self.up @ x + self.up_bias) * self.scale


def block(embed=4, mlp=8, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s).astype(np.float32))
    return Block(f(mlp, embed), f(mlp), f(embed, mlp))


def mesh(kind=AxisType.Auto):
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(kind, kind))


CHECKS = {}


def same(sharding, m, spec):
    return sharding.is_equivalent_to(NamedSharding(m, spec), 2)


def check(f):
    CHECKS[f.__name__] = f
    return f


@check
def placement_outside_jit():
    m = mesh()
    out = shard(block(), m, AXIS_RULES)
    assert out.up.sharding == NamedSharding(m, P("model")), out.up.sharding
    assert out.down.sharding == NamedSharding(m, P(None, "model"))
    assert out.up_bias.sharding.spec == P("model")
    assert out.up.addressable_shards[0].data.shape == (2, 4)
    assert out.scale == 1.0 and out.name == "block"
    np.testing.assert_array_equal(out.up, block().up)


@check
def indivisible_dimension_names_path_shape_and_mesh():
    try:
        shard(block(mlp=6), mesh(), AXIS_RULES)
    except ValueError as e:
        msg = str(e)
        assert "`.up`" in msg and "(6, 4)" in msg, msg
        assert "{'data': 2, 'model': 4}" in msg, msg
        return
    raise AssertionError("no error")


@check
def tuple_of_mesh_axes():
    m = mesh()
    out = shard(block(), m, {"mlp": ("data", "model"), "embed": None})
    assert out.up.sharding.spec == P(("data", "model")), out.up.sharding.spec
    assert out.up.addressable_shards[0].data.shape == (1, 4)


@check
def data_parallel_batch_and_unnamed_replicated():
    m = mesh()
    x = shard(
        {"x": jnp.ones((8, 4)), "free": jnp.ones(3)}, m, AXIS_RULES,
        rules=[(r"\\['x'\\]", ("batch", "embed"))],
    )
    assert x["x"].sharding.spec == P("data"), x["x"].sharding.spec
    assert x["free"].sharding.spec == P()
    assert x["free"].sharding.is_fully_replicated


def _jit_check(kind):
    m = mesh(kind)
    model = shard(block(), m, AXIS_RULES)
    x = jax.device_put(jnp.ones((8, 4)), NamedSharding(m, P("data")))

    @eqx.filter_jit
    def step(model, x):
        model = jax.tree_util.tree_map(lambda a: a * 2, model)
        model = shard(model, m, AXIS_RULES)
        return model, x * 2

    out, y = step(model, x)
    assert same(out.up.sharding, m, P("model")), out.up.sharding
    assert same(out.down.sharding, m, P(None, "model")), out.down.sharding
    assert same(y.sharding, m, P("data")), y.sharding
    np.testing.assert_allclose(out.up, 2 * np.asarray(block().up), rtol=1e-6)
    assert y.shape == (8, 4)


@check
def inside_filter_jit_auto_mesh():
    _jit_check(AxisType.Auto)


@check
def inside_filter_jit_explicit_mesh():
    with jax.set_mesh(mesh(AxisType.Explicit)):
        _jit_check(AxisType.Explicit)


@check
def explicit_mesh_constrains_unplaced_arrays_inside_jit():
    m = mesh(AxisType.Explicit)
    with jax.set_mesh(m):
        out = eqx.filter_jit(lambda b: shard(b, m, AXIS_RULES))(block())
    assert same(out.up.sharding, m, P("model")), out.up.sharding


@check
def optax_state_follows_the_model_with_like_and_with_field_axes():
    m = mesh()
    model = shard(block(), m, AXIS_RULES)
    opt = optax.adam(1e-3)
    state = opt.init(eqx.filter(model, eqx.is_array))
    for placed in (
        shard(state, m, AXIS_RULES, like=model),
        shard(state, m, AXIS_RULES),
    ):
        adam = placed[0]
        for moment in (adam.mu, adam.nu):
            assert moment.up.sharding == model.up.sharding, moment.up.sharding
            assert moment.down.sharding == model.down.sharding
        assert adam.count.sharding.is_fully_replicated


@check
def optax_state_with_rules_via_like():
    m = mesh()
    params = {"w": jnp.ones((8, 4)), "b": jnp.ones(8)}
    rules = [(r"\\['w'\\]", ("mlp", "embed")), (r"\\['b'\\]", ("mlp",))]
    params = shard(params, m, AXIS_RULES, rules)
    state = optax.adamw(1e-3).init(params)
    placed = shard(state, m, AXIS_RULES, rules, like=params)
    assert placed[0].mu["w"].sharding.spec == P("model")
    assert placed[0].nu["b"].sharding.spec == P("model")


@check
def abstract_model_gets_shardings():
    m = mesh()
    abstract = eqx.filter_eval_shape(block)
    out = shard(abstract, m, AXIS_RULES)
    assert isinstance(out.up, jax.ShapeDtypeStruct)
    assert out.up.sharding == NamedSharding(m, P("model")), out.up.sharding


@check
def named_shardings_feed_jax_jit():
    m = mesh()
    model = block()
    shardings = named_shardings(model, m, AXIS_RULES)
    out = jax.jit(lambda b: b, out_shardings=shardings)(model)
    assert out.up.sharding.spec == P("model")


@check
def summary_shows_the_mesh_spec_and_logical_axes():
    m = mesh()
    rows = eqx.summary(shard(block(), m, AXIS_RULES)).to_dict()["arrays"]
    up = rows[0]
    assert up["sharding"] == "P('model',)" and up["axes"] == ["mlp", "embed"], up
    abstract = shard(eqx.filter_eval_shape(block), m, AXIS_RULES)
    rows = eqx.summary(abstract).to_dict()["arrays"]
    assert rows[2]["sharding"] == "P(None, 'model')", rows


@check
def load_restores_straight_into_shardings():
    import os
    import tempfile

    m = mesh()
    path = os.path.join(tempfile.mkdtemp(), "model.ckpt")
    saved = block(seed=3)
    eqx.save(path, shard(saved, m, AXIS_RULES))
    abstract = shard(eqx.filter_eval_shape(block), m, AXIS_RULES)
    targets = named_shardings(block(), m, AXIS_RULES)
    for out in (
        eqx.load(path, abstract),  # the like's own shardings
        eqx.load(path, block(), shardings=targets),
        eqx.load(path, shard(block(), m, AXIS_RULES)),
    ):
        assert out.up.sharding == NamedSharding(m, P("model")), out.up.sharding
        assert out.down.sharding == NamedSharding(m, P(None, "model"))
        # Every device holds its slice only, never the whole array.
        assert {s.data.shape for s in out.up.addressable_shards} == {(2, 4)}
        for name in ("up", "up_bias", "down"):
            np.testing.assert_array_equal(getattr(out, name), getattr(saved, name))
    replicated = eqx.load(path, block(), shardings=NamedSharding(m, P()))
    assert replicated.up.sharding.is_fully_replicated


results = {}
for name, f in CHECKS.items():
    try:
        f()
        results[name] = "ok"
    except Exception:
        results[name] = traceback.format_exc()
print(json.dumps(results))
"""

_CHECKS = re.findall(r"^@check\ndef (\w+)", _SCRIPT, re.MULTILINE)


@pytest.fixture(scope="module")
def eight_devices():
    done = run_on_cpu_devices(_SCRIPT, 8, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", _CHECKS)
def test_on_eight_devices(eight_devices, name):
    assert eight_devices[name] == "ok", eight_devices[name]


# --- nn layers' `axes=` -------------------------------------------------------


def test_linear_and_embedding_axes_name_their_weights_without_new_leaves():
    key = jax.random.key(0)
    plain = eqx.nn.Linear(4, 8, key=key)
    named = eqx.nn.Linear(4, 8, key=key, axes=("mlp", "embed"))
    assert len(jax.tree_util.tree_leaves(named)) == len(
        jax.tree_util.tree_leaves(plain)
    )
    specs = logical_specs(named)
    assert specs.weight == P("mlp", "embed") and specs.bias == P("mlp")
    assert logical_specs(plain).weight == P() and logical_specs(plain).bias == P()
    assert "axes" not in repr(named)
    table = eqx.nn.Embedding(10, 4, key=key, axes=("vocab", "embed"))
    assert logical_specs(table).weight == P("vocab", "embed")


def test_stacked_layers_keep_their_names_after_the_layer_axis():
    stack = eqx.nn.Stacked(
        lambda k: eqx.nn.Linear(4, 4, key=k, axes=("mlp", "embed")),
        3,
        key=jax.random.key(0),
    )
    specs = logical_specs(stack)
    assert specs.layers.weight == P(None, "mlp", "embed")
    assert specs.layers.bias == P(None, "mlp")


@pytest.mark.parametrize("axes", [("mlp",), ("a", "b", "c")])
def test_layer_axes_of_the_wrong_length_are_an_error(axes):
    with pytest.raises(ValueError, match=r"takes 2 logical names, for \(out, in\)"):
        eqx.nn.Linear(2, 2, key=jax.random.key(0), axes=axes)
    with pytest.raises(TypeError, match=r"`Embedding\(axes=...\)` must be a tuple"):
        eqx.nn.Embedding(2, 2, key=jax.random.key(0), axes="vocab")
