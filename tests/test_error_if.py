"""`error_if` and `branched_error_if`: eager, jit, vmap and autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod
from pytreemod import (
    EquinoxRuntimeError,
    EquinoxTracetimeError,
    branched_error_if,
    error_if,
)

F32 = jnp.float32


def _check_negative(x):
    return error_if(x, x < 0, "x must be non-negative")


# One compiled function shared by several tests, to keep compiles few.
_jitted = jax.jit(_check_negative)


def test_errors_are_runtime_errors_exported_under_equinoxs_names():
    for error in (EquinoxRuntimeError, EquinoxTracetimeError):
        assert issubclass(error, RuntimeError)
        assert error.__module__ == "pytreemod"
    # As in Equinox, neither is a subclass of the other.
    assert not issubclass(EquinoxTracetimeError, EquinoxRuntimeError)
    # pytreemod's earlier name is the same class.
    assert pytreemod.PytreemodRuntimeError is EquinoxRuntimeError


@pytest.mark.parametrize(
    ("pred", "error"),
    [
        (True, EquinoxTracetimeError),
        (np.bool_(True), EquinoxTracetimeError),
        (np.array([False, True]), EquinoxRuntimeError),
        (jnp.array([[False], [True]]), EquinoxRuntimeError),
    ],
    ids=["python", "numpy-scalar", "numpy", "jax"],
)
def test_eager_true_predicate_raises_at_once(pred, error):
    # A Python bool fails "at trace time", an array "at runtime", as in Equinox;
    # eagerly the message is just `msg` (the traceback is the whole stack).
    with pytest.raises(error, match="^bad value$"):
        error_if(jnp.ones(2), pred, "bad value")


def test_eager_false_predicate_returns_x_itself():
    tree = {"a": jnp.ones(2), "b": "not an array", "c": 3}
    assert error_if(tree, jnp.zeros(3, bool), "unused") is tree
    # With a concrete predicate, `x` need not hold arrays at all.
    assert error_if("text", False, "unused") == "text"


def test_jit_passes_values_through_and_raises_at_runtime():
    x = jnp.array([0.0, 2.0], F32)
    assert jnp.array_equal(_jitted(x), x)
    with pytest.raises(RuntimeError, match="x must be non-negative") as info:
        _jitted(jnp.array([1.0, -1.0], F32))
    # Raised by JAX around the host callback, not directly by error_if; the
    # message starts with Equinox's first line and shows where error_if was
    # traced.
    assert type(info.value) is not EquinoxRuntimeError
    assert "Above is the stack outside of JIT" in str(info.value)
    assert "in _check_negative" in str(info.value)
    assert "Batch index" not in str(info.value)
    # A second, cached call raises the same way.
    with pytest.raises(RuntimeError, match="x must be non-negative"):
        _jitted(jnp.array([-1.0, 1.0], F32))


def test_filter_jit_raises_at_runtime():
    @pytreemod.filter_jit
    def f(model, scale):
        w = error_if(model["w"], model["w"] < 0, "negative weight")
        return w * scale

    model = {"w": jnp.ones(2, F32), "name": "layer"}
    assert jnp.array_equal(f(model, 2.0), jnp.full(2, 2.0, F32))
    with pytest.raises(RuntimeError, match="negative weight"):
        f({"w": -jnp.ones(2, F32), "name": "layer"}, 2.0)


def test_predicate_known_at_trace_time_raises_while_tracing():
    with pytest.raises(EquinoxTracetimeError, match="always wrong"):
        jax.jit(lambda x: error_if(x, True, "always wrong"))(jnp.ones(2))
    # A constant false predicate adds nothing to the computation.
    jaxpr = jax.make_jaxpr(lambda x: error_if(x, False, "never"))(jnp.ones(2))
    assert not jaxpr.eqns


def test_the_check_is_kept_even_if_the_result_is_unused():
    @jax.jit
    def f(x):
        error_if(x, x < 0, "unused but checked")
        return x + 1

    with pytest.raises(RuntimeError, match="unused but checked"):
        f(-jnp.ones(2, F32))


def test_static_leaves_of_x_are_kept():
    class Layer(pytreemod.Module):
        weight: jax.Array
        name: str = pytreemod.field(static=True)
        activation: object = jax.nn.relu

    layer = Layer(jnp.ones(2, F32), "dense")
    out = pytreemod.filter_jit(lambda m: error_if(m, m.weight < 0, "negative"))(layer)
    assert out.name == "dense" and out.activation is jax.nn.relu
    assert jnp.array_equal(out.weight, layer.weight)


def test_eager_vmap_raises_the_python_error_naming_failing_elements():
    f = jax.vmap(_check_negative)
    assert jnp.array_equal(f(jnp.ones((3, 2), F32)), jnp.ones((3, 2), F32))
    with pytest.raises(
        EquinoxRuntimeError, match=r"^Batch index \(1,\) had error:\nx must be non-"
    ):
        f(jnp.array([[1.0, 1.0], [1.0, -1.0]], F32))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_vmap_names_every_failing_batch_index(jit):
    f = jax.vmap(jax.vmap(_check_negative))
    f = jax.jit(f) if jit else f
    x = jnp.ones((2, 3), F32).at[0, 1].set(-1.0).at[1, 2].set(-1.0)
    with pytest.raises(RuntimeError) as info:
        f(x)
    expected = (
        "Batch index (0, 1) had error:\nx must be non-negative\n\n"
        "Batch index (1, 2) had error:\nx must be non-negative"
    )
    assert expected in str(info.value)
    assert "(0, 0)" not in str(info.value)


def test_jit_of_nested_vmap_raises_only_when_an_element_fails():
    # Regression guard: a batched predicate turns `lax.cond` into a select that
    # runs both branches, which would raise for every batch.
    f = jax.jit(jax.vmap(jax.vmap(_check_negative)))
    good = jnp.ones((2, 3, 2), F32)
    assert jnp.array_equal(f(good), good)
    with pytest.raises(RuntimeError, match="x must be non-negative"):
        f(good.at[1, 2, 0].set(-1.0))


def _linear_loss(x):
    return jnp.sum(_check_negative(x) * 3.0)


def test_gradient_passes_through_unchanged():
    x = jnp.array([1.0, 2.0], F32)
    grad = jax.grad(lambda x: jnp.sum(_check_negative(x) ** 2))(x)
    assert jnp.allclose(grad, 2 * x)
    with pytest.raises(EquinoxRuntimeError, match="x must be non-negative"):
        jax.grad(_linear_loss)(-x)


@pytest.mark.parametrize("transform", [jax.grad, jax.jacfwd], ids=["grad", "jacfwd"])
def test_check_survives_when_only_derivatives_are_used(transform):
    # Regression guard: the derivative of a linear function does not need the
    # primal output, so a check made of pure operations would be removed.
    f = jax.jit(transform(_linear_loss))
    assert jnp.allclose(f(jnp.ones(2, F32)), jnp.full(2, 3.0, F32))
    with pytest.raises(RuntimeError, match="x must be non-negative"):
        f(-jnp.ones(2, F32))


def test_integer_leaves_do_not_block_differentiation():
    def loss(w):
        w, count = error_if((w, jnp.arange(2)), w < 0, "negative")
        return jnp.sum(w * count.astype(F32))

    assert jnp.allclose(
        jax.jit(jax.grad(loss))(jnp.ones(2, F32)), jnp.array([0.0, 1.0], F32)
    )


def test_check_inside_scan_raises():
    def body(carry, _):
        carry = error_if(carry, carry < 0, "went negative")
        return carry - 1.0, None

    f = jax.jit(lambda x: jax.lax.scan(body, x, length=3)[0])
    assert float(f(jnp.array(5.0, F32))) == 2.0
    with pytest.raises(RuntimeError, match="went negative"):
        f(jnp.array(1.0, F32))


MSGS = ["too small", "too large", "not a number"]


@pytest.mark.parametrize("index", [0, 2, np.int32(1), jnp.array(1)])
def test_branched_eager_uses_the_indexed_message(index):
    message = MSGS[int(index)]
    with pytest.raises(EquinoxTracetimeError, match=f"^{message}$"):
        branched_error_if(jnp.ones(2), True, index, MSGS)


def test_branched_with_traced_index_picks_the_message_at_runtime():
    f = jax.jit(lambda x, i: branched_error_if(x, x < 0, i, MSGS))
    assert jnp.array_equal(f(jnp.ones(2, F32), 1), jnp.ones(2, F32))
    with pytest.raises(RuntimeError, match="\n\nnot a number\n\n"):
        f(-jnp.ones(2, F32), 2)


def test_branched_vmap_reports_each_failing_element_with_its_message():
    f = jax.jit(jax.vmap(lambda x, i: branched_error_if(x, x < 0, i, MSGS)))
    x = jnp.array([-1.0, 1.0, -1.0], F32)
    # Element 1 passes, so its message ("not a number") is not reported.
    with pytest.raises(RuntimeError) as info:
        f(x, jnp.array([0, 2, 1]))
    assert (
        "Batch index (0,) had error:\ntoo small\n\n"
        "Batch index (2,) had error:\ntoo large"
    ) in str(info.value)
    assert "not a number" not in str(info.value)


def test_traced_predicate_needs_an_array_in_x():
    with pytest.raises(
        ValueError, match=r"^No arrays to thread error on to: .*holds\s+no arrays"
    ):
        jax.jit(lambda p: error_if("no arrays", p, "msg"))(jnp.array(True))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: error_if(1.0, jnp.ones(2), "m"), TypeError, "dtype float32"),
        (lambda: error_if(1.0, 1, "m"), TypeError, r"`pred` must be a bool.*int"),
        (lambda: error_if(1.0, False, 3), TypeError, "`msg` must be a string"),
        (lambda: branched_error_if(1.0, False, 0, "m"), TypeError, "sequence"),
        (lambda: branched_error_if(1.0, False, 0, []), ValueError, "at least one"),
        (lambda: branched_error_if(1.0, False, 0, ["a", 2]), TypeError, r"msgs\[1\]"),
        (lambda: branched_error_if(1.0, False, 0.0, MSGS), TypeError, "float"),
        (lambda: branched_error_if(1.0, False, True, MSGS), TypeError, "a bool"),
        (
            lambda: branched_error_if(1.0, False, np.zeros(2, int), MSGS),
            TypeError,
            r"shape \(2,\)",
        ),
        (lambda: branched_error_if(1.0, True, 3, MSGS), IndexError, r"\[0, 3\)"),
    ],
)
def test_bad_arguments_are_rejected_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


@settings(max_examples=30, deadline=None)
# Subnormals are excluded: XLA on CPU flushes them to zero, so `-1e-45 < 0`
# is false there (hypothesis found this).
@given(
    st.lists(
        st.floats(-4, 4, allow_nan=False, allow_subnormal=False, width=32),
        min_size=3,
        max_size=3,
    )
)
def test_jitted_check_is_identity_or_raises_exactly_when_pred_holds(values):
    x = jnp.array(values, F32)
    if np.any(np.asarray(values) < 0):
        with pytest.raises(RuntimeError, match="x must be non-negative"):
            _jitted(x)
    else:
        assert jnp.array_equal(_jitted(x), x)


def test_filter_jit_raises_the_pytreemod_error_itself():
    # Inside a compiled computation the error passes through JAX as a
    # JaxRuntimeError; filter_jit gives the user the library's own type.
    f = pytreemod.filter_jit(lambda x: pytreemod.error_if(x, x < 0, "negative x"))
    with pytest.raises(EquinoxRuntimeError, match="negative x") as info:
        jax.block_until_ready(f(jnp.array(-1.0)))
    assert type(info.value) is EquinoxRuntimeError
    assert str(info.value).startswith("Above is the stack outside of JIT.")
    assert "EQX_ON_ERROR" in str(info.value)
    assert info.value.__cause__ is None
    assert float(f(jnp.array(2.0))) == 2.0


# --- on_error and EQX_ON_ERROR ---


def test_on_error_off_skips_the_check_even_when_known_to_fail():
    f = jax.jit(lambda x, p: error_if(x, p, "hi", on_error="off"))
    assert float(f(jnp.array(1.0, F32), True)) == 1.0
    assert (
        float(jax.jit(lambda x: error_if(x, True, "hi", on_error="off") + 1)(1.0))
        == 2.0
    )


def test_on_error_nan_fills_arrays_and_carries_on():
    tree = {
        "f": jnp.array([1.0, 2.0], F32),
        "i": jnp.array([1, 2], jnp.int32),
        "u": jnp.array(3, jnp.uint8),
        "b": jnp.array(True),
        "s": "static",
    }
    f = jax.jit(lambda t, p: error_if(t, p, "hi", on_error="nan"), static_argnums=())
    arrays = {k: v for k, v in tree.items() if k != "s"}
    out = f(arrays, jnp.array(True))
    assert bool(jnp.all(jnp.isnan(out["f"])))
    assert out["i"].tolist() == [2**31 - 1] * 2 and int(out["u"]) == 255
    assert bool(out["b"])
    same = f(arrays, jnp.array(False))
    assert jnp.array_equal(same["f"], tree["f"])
    # Eagerly, non-array leaves are kept as they are.
    assert error_if(tree, jnp.array(False), "hi", on_error="nan")["s"] == "static"


def test_on_error_nan_under_vmap_fills_only_failing_elements():
    f = jax.vmap(lambda x: error_if(x, x < 0, "neg", on_error="nan"))
    out = f(jnp.array([1.0, -1.0], F32))
    assert float(out[0]) == 1.0 and bool(jnp.isnan(out[1]))


def test_on_error_nan_with_a_known_predicate_warns_as_equinox():
    with pytest.warns(UserWarning, match=r"^Resolving error at trace time"):
        out = error_if(jnp.ones(2, F32), True, "hi", on_error="nan")
    assert bool(jnp.all(jnp.isnan(out)))


def test_the_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("EQX_ON_ERROR", "off")
    assert float(error_if(jnp.array(1.0), jnp.array(True), "hi")) == 1.0
    # An explicit `on_error` wins over the environment.
    with pytest.raises(EquinoxRuntimeError, match="^hi$"):
        error_if(jnp.array(1.0), jnp.array(True), "hi", on_error="raise")
    monkeypatch.setenv("EQX_ON_ERROR", "loud")
    with pytest.raises(RuntimeError, match=r"EQX_ON_ERROR`: got 'loud'"):
        error_if(jnp.array(1.0), jnp.array(True), "hi")


def test_an_unknown_on_error_is_rejected():
    with pytest.raises(RuntimeError, match=r"^Unrecognised value for `on_error`"):
        error_if(1.0, False, "hi", on_error="loud")


def test_on_error_breakpoint_opens_jaxs_debugger(monkeypatch):
    opened = []
    monkeypatch.setattr(jax.debug, "breakpoint", lambda **kw: opened.append(kw))
    monkeypatch.setenv("EQX_ON_ERROR_BREAKPOINT_FRAMES", "3")
    assert float(error_if(jnp.array(1.0), True, "hi", on_error="breakpoint")) == 1.0
    assert opened == [{"num_frames": 3}]
    # Traced: the breakpoint is staged behind the predicate.
    jax.make_jaxpr(lambda x: error_if(x, x < 0, "hi", on_error="breakpoint"))(1.0)
    assert len(opened) == 2


# --- errors through filter_jit, as Equinox reports them ---


def test_nested_filter_jit_error_has_no_cause_and_logs_nothing(caplog):
    inner = pytreemod.filter_jit(lambda x: error_if(x, x > 0, "egads"))
    outer = pytreemod.filter_jit(lambda x: inner(x))
    with pytest.raises(EquinoxRuntimeError, match="egads") as info:
        outer(jnp.array(1.0))
    assert info.value.__cause__ is None
    assert str(info.value).startswith("Above is the stack outside of JIT")
    # JAX logs exceptions raised in callbacks; ours is raised, not logged twice.
    assert caplog.text == ""


def test_an_error_after_a_successful_call_is_equinoxs_type():
    # A cached compiled call must raise the same type as the first trace.
    f = pytreemod.filter_jit(lambda x: error_if(x, x > 0, "positive"))
    f(jnp.array(-1.0))
    with pytest.raises(EquinoxRuntimeError) as info:
        f(jnp.array(1.0))
    assert type(info.value) is EquinoxRuntimeError
