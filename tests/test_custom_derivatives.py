"""`filter_custom_jvp` and `filter_custom_vjp`, checked against
`jax.custom_jvp` and `jax.custom_vjp`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod

X = jnp.array([0.5, -1.0, 2.0])
T = jnp.array([1.0, 0.5, -2.0])


def _close(a, b):
    return np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


# --- filter_custom_jvp -----------------------------------------------------------

seen_tangents = []


@pytreemod.filter_custom_jvp
def scaled(x, fn, n, *, offset):
    return fn(x) * n + offset


@scaled.def_jvp
def _scaled_jvp(primals, tangents, *, offset):
    x, fn, n = primals
    tx, t_fn, t_n = tangents
    seen_tangents.append((t_fn, t_n))
    # A deliberately "wrong" rule, so that the test sees the rule being used.
    return scaled(x, fn, n, offset=offset), 10.0 * tx * n


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def plain_scaled(x, fn, n, offset):
    return fn(x) * n + offset


@plain_scaled.defjvp
def _plain_scaled_jvp(fn, n, offset, primals, tangents):
    (x,), (tx,) = primals, tangents
    return plain_scaled(x, fn, n, offset), 10.0 * tx * n


def test_custom_jvp_matches_jax_custom_jvp():
    seen_tangents.clear()
    out, t_out = jax.jvp(lambda x: scaled(x, jnp.sin, 3, offset=1.0), (X,), (T,))
    expected = jax.jvp(lambda x: plain_scaled(x, jnp.sin, 3, 1.0), (X,), (T,))
    assert _close(out, expected[0]) and _close(t_out, expected[1])
    # The non-array arguments get `None` tangents.
    assert seen_tangents == [(None, None)]


def test_custom_jvp_under_grad_jit_and_vmap():
    def loss(x):
        return jnp.sum(scaled(x, jnp.tanh, 2, offset=0.0))

    def plain_loss(x):
        return jnp.sum(plain_scaled(x, jnp.tanh, 2, 0.0))

    expected = jax.grad(plain_loss)(X)
    assert _close(pytreemod.filter_grad(loss)(X), expected)
    assert _close(jax.jit(jax.grad(loss))(X), expected)
    batched = jax.vmap(jax.grad(loss))(jnp.stack([X, X]))
    assert _close(batched, jnp.stack([expected, expected]))


def test_custom_jvp_unperturbed_float_arguments_get_none():
    @pytreemod.filter_custom_jvp
    def mul(a, b):
        return a * b

    tangents_seen = []

    @mul.def_jvp
    def _mul_jvp(primals, tangents):
        tangents_seen.append(tangents)
        a, b = primals
        ta, tb = tangents
        return mul(a, b), ta * b

    grad = jax.grad(lambda a: jnp.sum(mul(a, X)))(X)
    assert _close(grad, X)
    assert tangents_seen[-1][1] is None


def test_custom_jvp_none_output_tangent_means_zero():
    @pytreemod.filter_custom_jvp
    def pair(x):
        return x * 2, jnp.sum(x)

    @pair.def_jvp
    def _pair_jvp(primals, tangents):
        (x,), (tx,) = primals, tangents
        return pair(x), (2 * tx, None)

    _, (t_first, t_second) = jax.jvp(pair, (X,), (T,))
    assert _close(t_first, 2 * T) and _close(t_second, 0.0)


def test_custom_jvp_integer_outputs():
    @pytreemod.filter_custom_jvp
    def with_count(x):
        return x * 2, jnp.sum(x > 0)

    @with_count.def_jvp
    def _with_count_jvp(primals, tangents):
        (x,), (tx,) = primals, tangents
        return with_count(x), (2 * tx, None)

    grad = jax.grad(lambda x: jnp.sum(with_count(x)[0]))(X)
    assert _close(grad, jnp.full(3, 2.0))


def test_custom_jvp_keeps_the_function_name():
    assert scaled.__name__ == "scaled"


def test_custom_jvp_differentiating_a_keyword_argument_is_an_error():
    with pytest.raises(ValueError, match="keyword arguments as non-differentiable"):
        jax.grad(lambda off: jnp.sum(scaled(X, jnp.sin, 1, offset=off)))(jnp.array(1.0))


def test_custom_jvp_called_before_def_jvp_is_an_error():
    undefined = pytreemod.filter_custom_jvp(lambda x: x)
    with pytest.raises(TypeError, match=r"JVP rule is not defined yet(.|\n)*def_jvp"):
        undefined(X)


def test_custom_jvp_rule_that_does_not_return_a_pair_is_an_error():
    @pytreemod.filter_custom_jvp
    def f(x):
        return x

    f.def_jvp(lambda primals, tangents: tangents[0])
    with pytest.raises(TypeError, match=r"must return a pair"):
        jax.jvp(f, (X,), (T,))


# --- filter_custom_vjp -----------------------------------------------------------

seen = {}


@pytreemod.filter_custom_vjp
def weighted(vjp_arg, fn, *, scale):
    a, b, label, count = vjp_arg
    return {"y": fn(a * b) * scale, "label": label, "count": count}


@weighted.def_fwd
def _weighted_fwd(perturbed, vjp_arg, fn, *, scale):
    seen["perturbed"] = perturbed
    a, b, label, count = vjp_arg
    out = weighted(vjp_arg, fn, scale=scale)
    return out, (a, b, "residual note")


@weighted.def_bwd
def _weighted_bwd(residuals, grad_out, perturbed, vjp_arg, fn, *, scale):
    a, b, note = residuals
    seen["note"] = note
    seen["grad_out"] = grad_out
    # Deliberately scaled by 2, so that the test sees the rule being used.
    g = 2 * grad_out["y"] * scale
    return (g * b, g * a, None, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def plain_weighted(a, b, fn, scale):
    return fn(a * b) * scale


def _plain_fwd(a, b, fn, scale):
    return plain_weighted(a, b, fn, scale), (a, b)


def _plain_bwd(fn, scale, residuals, ct):
    a, b = residuals
    g = 2 * ct * scale
    return g * b, g * a


plain_weighted.defvjp(_plain_fwd, _plain_bwd)


def test_custom_vjp_matches_jax_custom_vjp():
    def loss(ab):
        a, b = ab
        return jnp.sum(weighted((a, b, "l", 3), jnp.sin, scale=1.5)["y"])

    def plain_loss(ab):
        a, b = ab
        return jnp.sum(plain_weighted(a, b, jnp.sin, 1.5))

    grads = jax.grad(loss)((X, T))
    expected = jax.grad(plain_loss)((X, T))
    assert _close(grads[0], expected[0]) and _close(grads[1], expected[1])
    assert seen["note"] == "residual note"
    assert seen["perturbed"] == (True, True, False, False)
    assert seen["grad_out"]["label"] is None and seen["grad_out"]["count"] is None


def test_custom_vjp_passes_non_array_outputs_through():
    out = weighted((X, T, "label", 3), jnp.sin, scale=1.0)
    assert out["label"] == "label" and out["count"] == 3
    assert _close(out["y"], jnp.sin(X * T))


def test_custom_vjp_perturbed_says_which_leaves_are_differentiated():
    grad_a = jax.grad(
        lambda a: jnp.sum(weighted((a, T, "l", 3), jnp.sin, scale=1.0)["y"])
    )(X)
    assert seen["perturbed"] == (True, False, False, False)
    assert _close(
        grad_a, jax.grad(lambda a: jnp.sum(plain_weighted(a, T, jnp.sin, 1.0)))(X)
    )


def test_custom_vjp_under_filter_grad_jit_and_vmap():
    def loss(ab):
        return jnp.sum(weighted((*ab, "l", 3), jnp.cos, scale=2.0)["y"])

    def plain_loss(ab):
        return jnp.sum(plain_weighted(*ab, jnp.cos, 2.0))

    expected = jax.grad(plain_loss)((X, T))
    grads = pytreemod.filter_grad(loss)((X, T))
    assert _close(grads[0], expected[0])
    jitted = jax.jit(jax.grad(loss))((X, T))
    assert _close(jitted[1], expected[1])
    batched = jax.vmap(jax.grad(loss))((jnp.stack([X, X]), jnp.stack([T, T])))
    assert _close(batched[0][1], expected[0])


def test_custom_vjp_bwd_may_return_none_for_a_subtree():
    @pytreemod.filter_custom_vjp
    def f(vjp_arg):
        x, (y, z) = vjp_arg
        return x * y * z

    @f.def_fwd
    def _f_fwd(perturbed, vjp_arg):
        return f(vjp_arg), None

    @f.def_bwd
    def _f_bwd(residuals, grad_out, perturbed, vjp_arg):
        return (grad_out, None)

    grads = jax.grad(lambda v: jnp.sum(f(v)))((X, (T, T)))
    assert _close(grads[0], jnp.ones(3))
    assert _close(grads[1][0], jnp.zeros(3)) and _close(grads[1][1], jnp.zeros(3))


def test_custom_vjp_differentiating_another_argument_is_an_error():
    def loss(scale):
        return jnp.sum(weighted((X, T, "l", 3), jnp.sin, scale=scale)["y"])

    with pytest.raises(
        RuntimeError,
        match=r"^Unexpected tangent\.(.|\n)*first\s+argument only(.|\n)*as a tuple",
    ):
        jax.grad(loss)(jnp.array(1.0))


def test_custom_vjp_gradient_of_the_wrong_structure_is_an_error():
    @pytreemod.filter_custom_vjp
    def f(vjp_arg):
        return vjp_arg[0] * vjp_arg[1]

    f.def_fwd(lambda perturbed, vjp_arg: (f(vjp_arg), None))
    f.def_bwd(lambda res, g, perturbed, vjp_arg: (g, g, g))
    with pytest.raises(
        ValueError, match=r"structure of the first argument(.|\n)*`vjp_arg`"
    ):
        jax.grad(lambda v: jnp.sum(f(v)))((X, T))


def test_custom_vjp_fwd_that_does_not_return_a_pair_is_an_error():
    @pytreemod.filter_custom_vjp
    def f(x):
        return x

    f.def_fwd(lambda perturbed, x: x)
    f.def_bwd(lambda res, g, perturbed, x: g)
    with pytest.raises(TypeError, match=r"`def_fwd`\) must return a pair"):
        jax.grad(lambda x: jnp.sum(f(x)))(X)


@pytest.mark.parametrize("define", ["none", "fwd", "bwd"])
def test_custom_vjp_called_before_its_rules_are_defined_is_an_error(define):
    f = pytreemod.filter_custom_vjp(lambda x: x)
    if define == "fwd":
        f.def_fwd(lambda perturbed, x: (x, None))
    if define == "bwd":
        f.def_bwd(lambda res, g, perturbed, x: g)
    with pytest.raises(TypeError, match=r"not defined yet(.|\n)*def_fwd"):
        f(X)


def test_custom_vjp_older_defvjp_api_warns_and_works():
    # Equinox's pre-0.10.7 API: no `perturbed`, zero cotangents as arrays.
    @pytreemod.filter_custom_vjp
    def f(x):
        a, b = x
        return a + 1, b + 2, b + 3

    seen = []

    def f_bwd(res, g, x):
        seen.append(g)
        g0, g1, g2 = g
        return g0 + g1, g2

    with pytest.warns(DeprecationWarning, match=r"^`filter_custom_vjp.defvjp` is"):
        f.defvjp(lambda x: (f(x), None), f_bwd)
    x = (jnp.array(1.0), jnp.array(1.0))
    grads = jax.grad(lambda x: f(x)[0] + f(x)[2])(x)
    assert [float(g) for g in grads] == [1.0, 1.0]
    # The unused second output's cotangent arrives as zeros, not None.
    assert all(float(g[1]) == 0.0 for g in seen)
