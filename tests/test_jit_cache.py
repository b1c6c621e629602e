"""`filter_jit`'s cache: never serves what a fresh trace would not give, and
shares compiled versions between equal calls however they are written."""

import types
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as eqx


def counted(fn: Callable) -> Callable:
    return eqx.debug.assert_max_traces(fn, max_traces=None)


def traces(f: Callable) -> int:
    return eqx.debug.get_num_traces(f)


def fresh_copy(fn: types.FunctionType) -> types.FunctionType:
    """The same code as a new function object: a new owner, so a filter_jit
    of it starts with an empty cache."""
    return types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


class Affine(eqx.Module):
    weight: jax.Array
    bias: jax.Array
    name: str = eqx.field(static=True, default="affine")

    def __call__(self, x):
        return self.weight * x + self.bias

    def shifted(self, x, by=1.0):
        return self(x) + by


X = jnp.array([1.0, -2.0, 3.0])


# --- config contexts: what JAX keys on, filter_jit respects -----------------


def test_a_config_context_is_part_of_the_key():
    f = eqx.filter_jit(lambda x: (x, jax.config.jax_default_matmul_precision))
    assert f(X)[1] is None
    with jax.default_matmul_precision("highest"):
        assert f(X)[1] == "highest"
    assert f(X)[1] is None


def test_an_output_structure_that_depends_on_a_context():
    def f(x):
        if jax.config.jax_default_matmul_precision == "highest":
            return {"x": x, "twice": 2 * x}
        return [x]

    jitted = eqx.filter_jit(f)
    assert isinstance(jitted(X), list)
    with jax.default_matmul_precision("highest"):
        assert set(jitted(X)) == {"x", "twice"}
    out = jitted(X)
    assert isinstance(out, list) and len(out) == 1


def test_enable_x64_is_part_of_the_key():
    f = eqx.filter_jit(lambda x: (x + 1, str(jnp.asarray(1.0).dtype)))
    assert f(np.ones(2))[1] == "float32"
    with jax.enable_x64(True):
        out, name = f(np.ones(2))
        assert name == "float64" and out.dtype == jnp.float64
    assert f(np.ones(2))[1] == "float32"


# --- binding to the signature -----------------------------------------------


def test_positional_and_keyword_calls_are_one_entry():
    g = eqx.filter_jit(counted(lambda a, b: a + 2 * b))
    results = [g(X, X), g(X, b=X), g(a=X, b=X)]
    for result in results:
        assert result.tolist() == (3 * X).tolist()
    assert traces(g) == 1


def test_keyword_only_and_var_keyword_parameters():
    def f(x, *, scale, **extra):
        return x * scale + sum(extra.values())

    g = eqx.filter_jit(counted(f))
    assert g(X, scale=2.0, c=1.0).tolist() == (2 * X + 1).tolist()
    assert g(x=X, c=1.0, scale=2.0).tolist() == (2 * X + 1).tolist()
    assert traces(g) == 1


def test_a_bad_call_is_the_signatures_type_error():
    g = eqx.filter_jit(lambda a, b: a + b)
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        g(X, a=X)


def test_donation_sees_the_first_parameter_by_name():
    f = eqx.filter_jit(lambda model, x: model(x) + x, donate="all-except-first")
    model = Affine(jnp.ones(3), jnp.zeros(3))
    x = jnp.ones(3)
    f(model=model, x=x)
    assert not model.weight.is_deleted()
    assert x.is_deleted()


# --- the wrapped callable is split like an argument ---------------------------


def test_a_fresh_filter_grad_each_step_traces_once():
    def loss(model, x):
        return jnp.sum(model(x) ** 2)

    counted_loss = counted(loss)
    model = Affine(jnp.ones(3), jnp.zeros(3))
    for _ in range(4):
        grads = eqx.filter_jit(eqx.filter_grad(counted_loss))(model, X)
    assert traces(counted_loss) == 1
    assert grads.weight.tolist() == (2 * X * X).tolist()


def test_a_fresh_method_of_equal_fresh_models_traces_once():
    calls = []

    class Scale(eqx.Module):
        factor: jax.Array

        def apply(self, x):
            calls.append(None)
            return self.factor * x

    for factor in (1.0, 2.0, 3.0):
        out = eqx.filter_jit(Scale(jnp.array(factor)).apply)(X)
        assert out.tolist() == (factor * X).tolist()
    assert len(calls) == 1


def test_a_fresh_partial_traces_once():
    f = counted(lambda x, y: x * y)
    for y in (1.0, 2.0):
        out = eqx.filter_jit(eqx.Partial(f, jnp.asarray(y)))(X)
        assert out.tolist() == (y * X).tolist()
    assert traces(f) == 1


def test_different_static_parts_of_the_function_trace_apart():
    f = counted(lambda x, n: x * n)
    assert eqx.filter_jit(eqx.Partial(f, n=2))(X).tolist() == (2 * X).tolist()
    assert eqx.filter_jit(eqx.Partial(f, n=3))(X).tolist() == (3 * X).tolist()
    assert traces(f) == 2


def test_options_are_part_of_the_key():
    f = counted(lambda x: x + 1)
    x = jnp.ones(2)
    eqx.filter_jit(f)(x)
    eqx.filter_jit(f, donate="all")(x)
    assert x.is_deleted()
    assert traces(f) == 2


def test_jitkwargs_reach_jax_jit():
    f = eqx.filter_jit(lambda x, unused: x, keep_unused=True)
    text = f.lower(X, jnp.ones(5)).as_text()
    assert "tensor<5xf32>" in text
    text = eqx.filter_jit(lambda x, unused: x).lower(X, jnp.ones(5)).as_text()
    assert "tensor<5xf32>" not in text


@pytest.mark.parametrize("name", ["static_argnums", "donate_argnums", "in_shardings"])
def test_jitkwargs_that_filter_jit_decides_are_refused(name):
    with pytest.raises(ValueError, match="`jitkwargs` cannot contain"):
        eqx.filter_jit(abs, **{name: 0})


# --- static values: hashable, or correct under mutation -----------------------


def test_a_model_holding_a_list_sees_the_lists_new_contents():
    class Holder(eqx.Module):
        parts: list

        def total(self):
            return sum(jnp.sum(p) for p in self.parts)

    parts = [jnp.ones(2)]
    model = Holder(parts)
    f = eqx.filter_jit(lambda m: m.total())
    assert [float(f(model)) for _ in range(2)] == [2.0, 2.0]
    parts[0] = jnp.full(2, 5.0)
    assert float(f(model)) == 10.0
    parts.append(jnp.ones(1))
    assert float(f(model)) == 11.0


def test_a_mutated_set_static_field_traces_again():
    class Tagged(eqx.Module):
        x: jax.Array
        tags: set = eqx.field(static=True)

    f = eqx.filter_jit(counted(lambda m: m.x * len(m.tags)))
    tags = {1, 2}
    model = Tagged(X, tags)
    assert f(model).tolist() == (2 * X).tolist()
    tags.add(3)
    assert f(model).tolist() == (3 * X).tolist()
    assert traces(f) == 2


def test_a_set_argument_names_its_path_and_how_to_fix_it():
    f = eqx.filter_jit(lambda x, cfg: x)
    with pytest.raises(ValueError, match=r"(?s)`cfg\[1\]`.*unhashable set.*frozenset"):
        f(X, (1, {2}))


def test_the_cache_does_not_keep_a_dropped_function_alive():
    import gc
    import weakref

    def make():
        fn = lambda x: x + 1  # noqa: E731
        eqx.filter_jit(fn)(X)
        eqx.filter_jit(eqx.filter_grad(lambda x: jnp.sum(fn(x))))(X)
        return weakref.ref(fn)

    ref = make()
    gc.collect()
    assert ref() is None


# --- property: cached results equal fresh ones --------------------------------


def _scale(x, factor, mode):
    y = x * factor
    return {"y": y, "mode": mode} if mode == "dict" else (y, mode)


def _total(model, x, by=0.0):
    return jnp.sum(model(x)) + by, model.name


def _context(x, factor):
    precision = jax.config.jax_default_matmul_precision
    return (x * factor, precision) if precision else [x]


_FUNCTIONS = {
    "context": (_context, lambda x, s, m: {"x": x, "factor": s}),
    "scale": (_scale, lambda x, s, m: {"x": x, "factor": s, "mode": m}),
    "total": (_total, lambda x, s, m: {"model": Affine(x, x * s, m), "x": x}),
}
_XS = [jnp.arange(3.0), jnp.ones(3), jnp.arange(4.0), np.float32(2.0) * np.ones(3)]

_calls = st.tuples(
    st.sampled_from(sorted(_FUNCTIONS)),
    st.sampled_from(range(len(_XS))),
    st.sampled_from([1.0, 2.0, 2]),
    st.sampled_from(["dict", "tuple"]),
    st.sampled_from(["positional", "keyword", "mixed"]),
    st.sampled_from([None, "highest"]),
)


def _call(f, kwargs, style):
    names = list(kwargs)
    values = [kwargs[name] for name in names]
    if style == "positional":
        return f(*values)
    if style == "keyword":
        return f(**kwargs)
    return f(values[0], **dict(zip(names[1:], values[1:], strict=True)))


def _same(a, b):
    leaves_a, def_a = jax.tree_util.tree_flatten(a)
    leaves_b, def_b = jax.tree_util.tree_flatten(b)
    assert def_a == def_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        if eqx.is_array(x):
            assert np.array_equal(np.asarray(x), np.asarray(y))
            assert jnp.asarray(x).dtype == jnp.asarray(y).dtype
        else:
            assert type(x) is type(y) and x == y


@settings(max_examples=25, deadline=None)
@given(st.lists(_calls, min_size=1, max_size=8))
def test_cached_results_equal_a_fresh_filter_jits(calls):
    cached = {name: eqx.filter_jit(fn) for name, (fn, _) in _FUNCTIONS.items()}
    for name, x_index, factor, mode, style, precision in calls:
        fn, make_kwargs = _FUNCTIONS[name]
        kwargs = make_kwargs(_XS[x_index], factor, mode)
        with jax.default_matmul_precision(precision):
            out = _call(cached[name], kwargs, style)
            fresh = _call(eqx.filter_jit(fresh_copy(fn)), kwargs, "positional")
        _same(out, fresh)


# --- JAX's C++ dispatch stays on ------------------------------------------------


def test_calls_with_non_array_outputs_stay_on_jaxs_cpp_dispatch(monkeypatch):
    # JAX's C++ fast path is used only when the re-flattened output is all
    # arrays; a non-array output leaf in it sends every call through JAX's
    # Python dispatch (`ExecuteReplicated.__call__`), several times slower.
    from jax._src.interpreters import pxla

    f = eqx.filter_jit(lambda model, x: (model, model(x), "done"))
    model = Affine(jnp.ones(3), jnp.zeros(3))
    f(model, X)  # compiles; the next calls take the fast path
    f(model, X)
    calls = []
    original = pxla.ExecuteReplicated.__call__

    def counting(self, *args):
        calls.append(None)
        return original(self, *args)

    monkeypatch.setattr(pxla.ExecuteReplicated, "__call__", counting)
    for _ in range(3):
        out_model, y, tag = f(model, X)
    assert tag == "done" and out_model.name == "affine"
    assert y.tolist() == X.tolist()
    assert calls == []


def test_an_unhashable_uncopyable_static_field_is_a_clear_error():
    import threading

    class Locked(eqx.Module):
        x: jax.Array
        guards: dict = eqx.field(static=True)

    f = eqx.filter_jit(lambda m: m.x + 1)
    with pytest.raises(ValueError, match=r"(?s)static field of a `Locked`.*copied"):
        f(Locked(X, {"lock": threading.Lock()}))
