"""`filter_jit` and `clear_caches`."""

import dataclasses
import gc
import time
import weakref
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as eqx


class Linear(eqx.Module):
    weight: jax.Array
    bias: jax.Array
    activation: Callable
    size: int = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.activation(self.weight @ x + self.bias)


class MLP(eqx.Module):
    layers: list

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x

    def first(self, x: jax.Array) -> jax.Array:
        return self.layers[0](x)


def mlp(depth: int = 2, scale: float = 1.0, activation: Callable = jax.nn.relu):
    weight = scale * jnp.eye(3, dtype=jnp.float32)
    return MLP([Linear(weight, jnp.ones(3), activation, 3) for _ in range(depth)])


def double_arrays(leaf):
    return 2 * leaf if eqx.is_array(leaf) else leaf


def counted(fn, max_traces=None):
    return eqx.debug.assert_max_traces(fn, max_traces=max_traces)


X = jnp.array([1.0, -2.0, 3.0])


# --- arguments: traced arrays, static everything else -------------------------


def test_arrays_traced_and_non_arrays_static():
    @eqx.filter_jit
    def f(x, n, name, fn):
        assert isinstance(x, jax.core.Tracer)
        assert type(n) is int and type(name) is str
        return fn(x) * n, name + "!"

    out, name = f(X, 2, "a", jnp.abs)
    assert out.tolist() == [2.0, 4.0, 6.0]
    assert name == "a!"


@pytest.mark.parametrize(
    "array",
    [np.array([1.0, 2.0], dtype=np.float32), np.float32(3.0), jnp.ones(2)],
    ids=["numpy array", "numpy scalar", "jax array"],
)
def test_numpy_arrays_and_scalars_are_traced(array):
    @eqx.filter_jit
    def is_traced(x):
        return isinstance(x, jax.core.Tracer)

    assert is_traced(array) is True


def test_numpy_and_jax_arrays_of_one_shape_share_a_trace():
    f = eqx.filter_jit(counted(lambda x: x + 1, max_traces=1))
    f(np.ones(3, dtype=np.float32))
    assert f(jnp.ones(3)).tolist() == [2.0, 2.0, 2.0]


def test_same_structure_static_and_shapes_never_retraces():
    f = eqx.filter_jit(counted(lambda model, x: model(x), max_traces=1))
    for scale in (1.0, 2.0, 3.0):
        # A new model instance each time, same structure: one trace.
        out = f(mlp(scale=scale), X)
        assert jnp.allclose(out, mlp(scale=scale)(X))
    assert eqx.debug.get_num_traces(f) == 1


@pytest.mark.parametrize(
    "first,second",
    [(1, 1.0), (1, True), (0.0, False)],
    ids=["int-float", "int-bool", "float-bool"],
)
def test_equal_static_values_of_different_types_trace_apart(first, second):
    # `1 == 1.0` and `hash(1) == hash(1.0)`, but they trace differently.
    f = eqx.filter_jit(lambda n: n)
    assert type(f(first)) is type(first)
    assert type(f(second)) is type(second)


def test_new_static_value_or_shape_retraces():
    f = eqx.filter_jit(counted(lambda x, n: x * n))
    f(X, 2)
    f(X, 3)
    f(jnp.ones(4), 3)
    f(jnp.ones(4, dtype=jnp.int32), 3)
    assert eqx.debug.get_num_traces(f) == 4


def test_args_and_kwargs():
    @eqx.filter_jit
    def f(*args, scale, **kwargs):
        return sum(args) * scale + kwargs["offset"]

    assert float(f(jnp.array(1.0), jnp.array(2.0), scale=2.0, offset=1)) == 7.0


# --- what can be compiled -----------------------------------------------------


def test_callable_module_traces_its_arrays():
    model = mlp()
    jitted = eqx.filter_jit(model)
    assert jnp.allclose(jitted(X), model(X))
    text = jitted.lower(X).as_text()
    # Each weight and bias is an argument of the compiled program (2 layers x
    # 2 arrays, then x), not a constant baked into it.
    assert "%arg4: tensor<3xf32>" in text
    assert "%arg5" not in text


def test_bound_method():
    model = mlp()
    jitted = eqx.filter_jit(model.first)
    assert jnp.allclose(jitted(X), model.first(X))
    # The bound method is a pytree: its leaves are the model's.
    assert len(jax.tree_util.tree_leaves(jitted)) == len(
        jax.tree_util.tree_leaves(model)
    )


def test_method_decorator_in_a_module_class():
    class Model(eqx.Module):
        weight: jax.Array

        @eqx.filter_jit
        @eqx.debug.assert_max_traces(max_traces=1)
        def __call__(self, x, power=1):
            return self.weight * x**power

        @eqx.filter_jit(donate="none")
        def double(self, x):
            return 2 * self(x)

    one, three = Model(jnp.ones(3)), Model(jnp.array([3.0, 3.0, 3.0]))
    assert one(X).tolist() == [1.0, -2.0, 3.0]
    assert three(X).tolist() == [3.0, -6.0, 9.0]
    assert three.double(X).tolist() == [6.0, -12.0, 18.0]
    assert eqx.debug.get_num_traces(Model.__call__) == 1
    # Looked up on the class: the unbound compiled function.
    assert Model.__call__(one, X).tolist() == one(X).tolist()
    # Bound: a pytree holding the instance.
    assert jax.tree_util.tree_leaves(three.double)[0].tolist() == [3.0, 3.0, 3.0]


def test_function_is_split_like_the_arguments():
    jitted = eqx.filter_jit(counted(mlp(scale=2.0), max_traces=1))
    # The compiled function is a pytree of the model's leaves; a copy with new
    # arrays shares the compiled code, and uses the new arrays.
    copy = jax.tree_util.tree_map(double_arrays, jitted)
    expected = jax.tree_util.tree_map(double_arrays, mlp(scale=2.0))(X)
    assert jnp.allclose(copy(X), expected)
    assert jnp.allclose(jitted(X), mlp(scale=2.0)(X))
    # It can itself be an argument of a compiled function.
    assert jnp.allclose(eqx.filter_jit(lambda g, x: g(x))(jitted, X), jitted(X))


def test_wrapper_looks_like_the_function():
    def step(x):
        """One step."""
        return x

    jitted = eqx.filter_jit(step)
    assert jitted.__name__ == "step"
    assert jitted.__doc__ == "One step."
    assert jitted.__wrapped__ is step
    assert "step" in repr(jitted)


# --- outputs ------------------------------------------------------------------


def test_non_array_outputs_come_back_exactly():
    sentinel = object()

    @eqx.filter_jit
    def f(x):
        return {"x": x + 1, "n": 3, "s": "hi", "none": None, "obj": sentinel}

    out = f(X)
    assert out["n"] == 3 and type(out["n"]) is int
    assert out["s"] == "hi" and out["none"] is None and out["obj"] is sentinel
    assert out["x"].tolist() == [2.0, -1.0, 4.0]


def test_module_output_mixing_arrays_and_non_arrays():
    @eqx.filter_jit
    def scaled(model, factor):
        return jax.tree_util.tree_map(
            lambda a: a * factor if eqx.is_array(a) else a, model
        )

    model = mlp()
    out = scaled(model, 2.0)
    assert isinstance(out, MLP)
    assert out.layers[0].activation is jax.nn.relu
    assert out.layers[0].size == 3
    assert out.layers[1].weight.tolist() == (2 * jnp.eye(3)).tolist()


def test_non_array_output_depending_on_shapes():
    # The static part of the output changes with the input shape under one
    # cache entry: each shape gets its own output structure.
    @eqx.filter_jit
    def f(x):
        return x.sum(), x.shape, [None] * x.shape[0]

    assert f(jnp.ones(2))[1:] == ((2,), [None, None])
    assert f(jnp.ones(3))[1:] == ((3,), [None, None, None])
    assert f(jnp.ones(2))[1:] == ((2,), [None, None])
    assert float(f(jnp.ones(3))[0]) == 3.0


@dataclasses.dataclass(frozen=True)
class Frozen:
    """A pytree node that checks its children, so that output placeholders
    cannot be put into it."""

    value: jax.Array
    tag: str

    def __post_init__(self):
        if not isinstance(self.value, (jax.Array, np.ndarray)):
            raise TypeError("value must be an array")


jax.tree_util.register_pytree_node(
    Frozen,
    lambda f: ((f.value, f.tag), None),
    lambda _, children: Frozen(*children),
)


def test_output_node_that_rejects_placeholders():
    @eqx.filter_jit
    def f(x):
        return Frozen(x * 2, "tag")

    out = f(X)
    assert out.tag == "tag" and out.value.tolist() == [2.0, -4.0, 6.0]


# --- inside other transforms -------------------------------------------------------


def _sin_times(x, n):
    return jnp.sin(x) * n, "tag"


@pytest.mark.parametrize(
    "transform",
    [
        lambda f: jax.grad(lambda x: f(x, 2.0)[0].sum()),
        lambda f: jax.vmap(lambda x: f(x, 2.0)[0]),
        lambda f: jax.jit(lambda x: f(x, 2.0)[0]),
        lambda f: eqx.filter_jit(lambda x: f(x, 2.0)[0]),
    ],
    ids=["grad", "vmap", "jit", "filter_jit"],
)
def test_inside_other_transforms(transform):
    x = jnp.array([[0.5, 1.0], [1.5, 2.0]])
    expected = transform(_sin_times)(x)
    assert jnp.allclose(transform(eqx.filter_jit(_sin_times))(x), expected)


def test_with_jit_disabled():
    f = eqx.filter_jit(counted(_sin_times))
    with jax.disable_jit():
        out, tag = f(X, 2.0)
        assert not isinstance(out, jax.core.Tracer) and tag == "tag"
        f(X, 2.0)
    assert eqx.debug.get_num_traces(f) == 2  # the body runs on every call


# --- dispatch is asynchronous -------------------------------------------------


def _slow(x):
    return jax.lax.fori_loop(0, 120, lambda i, y: jnp.tanh(y @ y), x)


def test_call_returns_before_the_work_is_done():
    x = jnp.full((400, 400), 1e-3, dtype=jnp.float32)
    jitted = eqx.filter_jit(_slow)
    jax.block_until_ready(jitted(x))  # compile
    start = time.perf_counter()
    jax.block_until_ready(jitted(x))
    run = time.perf_counter() - start
    # Size the work so the check below has a margin on a slow machine.
    assert run > 0.05, f"the work took only {run:.3f}s; make it larger"
    start = time.perf_counter()
    out = jitted(x)
    dispatch = time.perf_counter() - start
    jax.block_until_ready(out)
    assert dispatch < run / 10, f"dispatch {dispatch:.4f}s vs run {run:.4f}s"


# --- donation -----------------------------------------------------------------


def _pair(a, b):
    return a + 1, b * 2


@pytest.mark.parametrize(
    "donate,first_deleted,rest_deleted",
    [
        ("all", True, True),
        ("all-except-first", False, True),
        ("none", False, False),
    ],
)
def test_donation(donate, first_deleted, rest_deleted):
    a, b = jnp.ones(3), jnp.ones(3)
    out = eqx.filter_jit(_pair, donate=donate)(a, b)
    assert out[0].tolist() == [2.0] * 3 and out[1].tolist() == [2.0] * 3
    assert a.is_deleted() is first_deleted
    assert b.is_deleted() is rest_deleted


def test_donate_all_silences_unusable_donation_warnings():
    # No output can reuse the (3,) buffer; with "all" JAX's warning is silenced
    # (pytest turns warnings into errors, so a warning would fail this test).
    assert float(eqx.filter_jit(jnp.sum, donate="all")(jnp.ones(3))) == 3.0


@pytest.mark.parametrize("donate", ["warn", "warn-except-first"])
def test_donate_warn_keeps_the_warnings(donate):
    f = eqx.filter_jit(lambda a, b: jnp.sum(a) + jnp.sum(b), donate=donate)
    with pytest.warns(UserWarning, match="Some donated buffers were not usable"):
        f(jnp.ones(3), jnp.ones(3))


# --- unhashable static values -------------------------------------------------


class Configured(eqx.Module):
    weight: jax.Array
    options: dict = eqx.field(static=True)

    def __call__(self, x):
        return self.weight * x * self.options["scale"]


def test_unhashable_static_field_compared_by_eq():
    f = eqx.filter_jit(counted(lambda model, x: model(x)))
    f(Configured(jnp.ones(3), {"scale": 2.0}), X)
    out = f(Configured(jnp.ones(3), {"scale": 2.0}), X)  # equal, new dict
    assert out.tolist() == [2.0, -4.0, 6.0]
    assert eqx.debug.get_num_traces(f) == 1
    assert f(Configured(jnp.ones(3), {"scale": 3.0}), X).tolist() == [3.0, -6.0, 9.0]
    assert eqx.debug.get_num_traces(f) == 2


class Config:
    """Defines `__eq__` but not `__hash__`: unhashable."""

    def __init__(self, scale):
        self.scale = scale

    def __eq__(self, other):
        return isinstance(other, Config) and self.scale == other.scale


def test_unhashable_static_argument_is_an_error_naming_its_path():
    # As with `jax.jit`'s static arguments: an unhashable value could be
    # mutated in place after a trace, so it cannot key a compiled function.
    f = eqx.filter_jit(lambda x, config: x * config.scale)
    with pytest.raises(ValueError, match=r"`config` is a static value.*unhashable"):
        f(X, Config(2.0))
    with pytest.raises(ValueError, match=r"`options\['s'\]` is a static"):
        eqx.filter_jit(lambda x, options: x)(X, {"s": {1, 2}})


def test_unhashable_static_field_mutated_in_place_traces_again():
    # A static field may hold a dict (as in Equinox); mutating it in place
    # must not reuse the trace made with the old contents.
    f = eqx.filter_jit(counted(lambda model, x: model(x)))
    options = {"scale": 2.0}
    model = Configured(jnp.ones(3), options)
    assert f(model, X).tolist() == [2.0, -4.0, 6.0]
    options["scale"] = 3.0
    assert f(model, X).tolist() == [3.0, -6.0, 9.0]
    assert eqx.debug.get_num_traces(f) == 2
    assert f(model, X).tolist() == [3.0, -6.0, 9.0]
    assert eqx.debug.get_num_traces(f) == 2


class Table(eqx.Module):
    table: object = eqx.field(static=True)


def _model_with_table(table):
    with pytest.warns(UserWarning, match="static field holding an array"):
        return MLP([Table(()), Table(()), Table(table)])


@pytest.mark.parametrize(
    "table", [np.arange(3), jnp.arange(3), np.arange(1)], ids=["np", "jax", "size 1"]
)
def test_array_in_static_field_is_an_error_naming_its_path(table):
    f = eqx.filter_jit(lambda model, x: x)
    with pytest.raises(TypeError, match=r"`model\.layers\[2\]\.table` is a static"):
        f(_model_with_table(table), X)
    # Also once a first call with a comparable value has been cached.
    f(MLP([Table(()), Table(()), Table(())]), X)
    with pytest.raises(TypeError, match=r"make it a regular field"):
        f(_model_with_table(table), X)


def test_array_in_unhashable_static_argument_names_its_path():
    @dataclasses.dataclass
    class Holder:
        table: np.ndarray

    f = eqx.filter_jit(lambda x, holder: x)
    with pytest.raises(TypeError, match=r"`args\[1\]` is a static value.*array"):
        # A lambda's parameters are named; this one is called positionally
        # through `*args`, so it is named by position.
        eqx.filter_jit(lambda *args: args[0])(X, Holder(np.ones(2)))
    with pytest.raises(TypeError, match=r"`holder` is a static value"):
        f(X, Holder(np.ones(2)))


# --- lower and compile --------------------------------------------------------


def test_lower_and_compile():
    f = eqx.filter_jit(lambda x, n: x * n)
    lowered = f.lower(X, 2)
    assert "stablehlo.multiply" in lowered.as_text()
    compiled = lowered.compile()
    assert compiled(X, 2).tolist() == [2.0, -4.0, 6.0]
    assert compiled(jnp.zeros(3), 2).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "args,message",
    [
        ((jnp.ones(4), 2), r"x: f32\[3\] -> f32\[4\]"),
        ((X, 3), r"n: 2 -> 3"),
        (((X,), 2), r"x: a leaf -> tuple of length 1"),
    ],
    ids=["shape", "static", "structure"],
)
def test_compiled_called_with_other_arguments(args, message):
    compiled = eqx.filter_jit(lambda x, n: x).lower(X, 2).compile()
    with pytest.raises(TypeError, match=r"(?s)lowered for other arguments.*" + message):
        compiled(*args)


def test_lower_a_bound_method_in_a_class():
    class Model(eqx.Module):
        weight: jax.Array

        @eqx.filter_jit
        def __call__(self, x):
            return self.weight + x

    model = Model(jnp.ones(3))
    compiled = model.__call__.lower(X).compile()
    assert compiled(model, X).tolist() == [2.0, -1.0, 4.0]


# --- misuse -------------------------------------------------------------------


@pytest.mark.parametrize("donate", ["yes", True, None, "first"])
def test_bad_donate(donate):
    with pytest.raises(
        ValueError, match=r"`filter_jit\(..., donate=...\)` must be one of .*; got"
    ):
        eqx.filter_jit(abs, donate=donate)
    with pytest.raises(ValueError, match=r"must be one of"):
        eqx.filter_jit(donate=donate)


@pytest.mark.parametrize("fun", [3, "f", None, jnp.ones(2)])
def test_not_callable(fun):
    with pytest.raises(TypeError, match="`filter_jit` needs a callable"):
        eqx.filter_jit(fun)


def test_errors_in_the_function_propagate():
    @eqx.filter_jit
    def f(x):
        raise KeyError("from the user")

    with pytest.raises(KeyError, match="from the user"):
        f(X)


# --- caches -------------------------------------------------------------------


def test_clear_caches_retraces_everything():
    f = eqx.filter_jit(counted(lambda x: x + 1))
    g = eqx.filter_jit(counted(lambda x: x - 1))
    f(X), g(X)
    eqx.clear_caches()
    f(X), g(X)
    f(X), g(X)
    assert eqx.debug.get_num_traces(f) == 2
    assert eqx.debug.get_num_traces(g) == 2


def _call_and_forget():
    model = mlp()
    jitted = eqx.filter_jit(lambda model, x: model(x))
    jitted(model, X)
    return weakref.ref(jitted), weakref.ref(jitted._cache), weakref.ref(model)


def test_function_and_its_cache_are_garbage_collected():
    jitted, cache, model = _call_and_forget()
    gc.collect()
    assert jitted() is None
    assert cache() is None
    assert model() is None


def test_cache_does_not_keep_arguments_alive():
    jitted = eqx.filter_jit(lambda model, x: model(x))
    model = mlp()
    jitted(model, X)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert jitted(mlp(), X).shape == (3,)


# --- property: a round trip through filter_jit changes nothing ----------------

_arrays = st.sampled_from(
    [jnp.ones(2), jnp.arange(3), np.float32(1.5), np.zeros((1, 2), np.float32)]
)
_statics = st.one_of(
    st.integers(-3, 3), st.sampled_from(["a", "b"]), st.none(), st.booleans()
)
_trees = st.recursive(
    st.one_of(_arrays, _statics),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(tuple),
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["p", "q", "r"]), children, max_size=3),
    ),
    max_leaves=6,
)


@settings(max_examples=30, deadline=None)
@given(_trees)
def test_identity_round_trip(tree):
    out = eqx.filter_jit(lambda t: t)(tree)
    out_leaves, out_def = jax.tree_util.tree_flatten(out)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    assert out_def == treedef
    for before, after in zip(leaves, out_leaves, strict=True):
        if eqx.is_array(before):
            assert isinstance(after, jax.Array)
            assert np.array_equal(np.asarray(before), np.asarray(after))
        else:
            assert after is before


def test_dunder_call_of_a_module_traces_its_arrays():
    # Regression: `filter_jit(model.__call__)` got a plain bound method (dunder
    # methods are not wrapped), so the model's arrays were baked in as
    # constants instead of traced.
    class Scale(eqx.Module):
        factor: jax.Array

        def __call__(self, x):
            return self.factor * x

    jitted = eqx.filter_jit(Scale(jnp.array(2.0)).__call__)
    assert jax.tree_util.tree_leaves(jitted) == [jnp.array(2.0)]
    assert float(jitted(jnp.array(3.0))) == 6.0
