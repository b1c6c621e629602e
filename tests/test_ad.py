"""`filter_jvp`, `filter_vjp`, `filter_jacfwd`, `filter_jacrev` and
`filter_hessian`, each checked against the plain JAX transform."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod

X = jnp.array([0.5, -1.0, 2.0])
T = jnp.array([1.0, 0.5, -2.0])


def _close(a, b):
    return np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def _f(x, activation, n, label):
    """A function of arrays and non-arrays, with a mixed output."""
    return {"y": activation(x) * n, "label": label, "n": n, "i": jnp.arange(2)}


def _plain_f(x):
    """`_f`'s differentiable part, for plain JAX."""
    return jnp.sin(x) * 3


# --- filter_jvp ------------------------------------------------------------------


def test_jvp_matches_jax_with_non_array_arguments():
    out, t_out = pytreemod.filter_jvp(_f, (X, jnp.sin, 3, "s"), (T, None, None, None))
    expected_out, expected_t = jax.jvp(_plain_f, (X,), (T,))
    assert _close(out["y"], expected_out) and _close(t_out["y"], expected_t)
    assert out["label"] == "s" and out["n"] == 3
    assert t_out["label"] is None and t_out["n"] is None and t_out["i"] is None


def test_jvp_with_python_float_primals_and_keyword_arguments():
    def f(x, y, *, power):
        return x**power * y

    out, t_out = pytreemod.filter_jvp(f, (2.0, X), (1.0, None), power=2)
    expected = jax.jvp(lambda x: x**2 * X, (2.0,), (1.0,))
    assert _close(out, expected[0]) and _close(t_out, expected[1])


def test_jvp_none_tangent_holds_a_float_array_fixed():
    out, t_out = pytreemod.filter_jvp(
        lambda a, b: {"ab": a * b, "b": 2 * b}, (X, X), (T, None)
    )
    assert _close(t_out["ab"], T * X)
    assert t_out["b"] is None  # depends only on the fixed argument


def test_jvp_without_any_tangent_only_evaluates():
    out, t_out = pytreemod.filter_jvp(lambda a, s: (a, s), (X, "s"), (None, None))
    assert out[0] is X and t_out == (None, None)


def test_jvp_outputs_that_do_not_depend_on_the_input_get_none_under_jit():
    @jax.jit
    def f(x, c):
        def inner(y):
            return {"dep": y * c, "closed": c * 2, "const": jnp.ones(2)}

        return pytreemod.filter_jvp(inner, (x,), (jnp.ones_like(x),))[1]

    t_out = f(X, jnp.array(2.0))
    assert _close(t_out["dep"], jnp.full(3, 2.0))
    assert t_out["closed"] is None and t_out["const"] is None


def test_jvp_over_jvp_matches_jax():
    def inner(y):
        return pytreemod.filter_jvp(lambda x: jnp.sin(x * y), (X,), (T,))[1]

    out, t_out = pytreemod.filter_jvp(inner, (jnp.array(1.5),), (jnp.array(1.0),))
    plain = lambda y: jax.jvp(lambda x: jnp.sin(x * y), (X,), (T,))[1]  # noqa: E731
    expected = jax.jvp(plain, (jnp.array(1.5),), (jnp.array(1.0),))
    assert _close(out, expected[0]) and _close(t_out, expected[1])


def test_jvp_accepts_lists():
    out, t_out = pytreemod.filter_jvp(lambda x: 2 * x, [X], [T])
    assert _close(t_out, 2 * T)


def test_jvp_a_tangent_for_a_non_differentiable_leaf_is_an_error():
    with pytest.raises(TypeError, match=r"tangent for `primals\[1\]\[0\]`(.|\n)*int"):
        pytreemod.filter_jvp(lambda x, t: x, (X, (jnp.arange(2),)), (T, (T,)))


def test_jvp_tangents_of_another_structure_are_an_error():
    with pytest.raises(ValueError, match=r"structure of `primals`(.|\n)*primals\[1\]"):
        pytreemod.filter_jvp(lambda x, t: x, (X, (1, 2)), (T, (None,)))


def test_jvp_a_tangent_of_another_shape_is_an_error():
    with pytest.raises(ValueError, match=r"shape \(2,\), but the primal has shape"):
        pytreemod.filter_jvp(lambda x: x, (X,), (jnp.ones(2),))


def test_jvp_primals_must_be_a_sequence():
    with pytest.raises(TypeError, match="sequences"):
        pytreemod.filter_jvp(lambda x: x, X, T)


# --- filter_vjp ------------------------------------------------------------------


def test_vjp_matches_jax_with_non_array_arguments():
    out, vjp_fn = pytreemod.filter_vjp(_f, X, jnp.sin, 3, "s")
    cotangent = {"y": T, "label": None, "n": None, "i": None}
    grads = vjp_fn(cotangent)
    expected_out, plain_vjp = jax.vjp(_plain_f, X)
    assert _close(out["y"], expected_out) and out["label"] == "s"
    assert _close(grads[0], plain_vjp(T)[0])
    assert grads[1:] == (None, None, None)


def test_vjp_gives_none_for_integer_arrays():
    out, vjp_fn = pytreemod.filter_vjp(
        lambda p: p["w"] * p["k"].astype(jnp.float32), {"w": X, "k": jnp.arange(3)}
    )
    (grads,) = vjp_fn(T)
    assert grads["k"] is None and _close(grads["w"], T * jnp.arange(3.0))


def test_vjp_has_aux():
    out, vjp_fn, aux = pytreemod.filter_vjp(
        lambda x: (jnp.sum(x**2), ("aux", x)), X, has_aux=True
    )
    assert aux[0] == "aux" and aux[1] is X
    assert _close(vjp_fn(jnp.ones(()))[0], 2 * X)


def test_vjp_has_aux_without_a_pair_is_an_error():
    with pytest.raises(TypeError, match="return a pair"):
        pytreemod.filter_vjp(lambda x: x, X, has_aux=True)


def test_vjp_of_a_non_callable_is_an_error():
    with pytest.raises(TypeError, match="needs a callable"):
        pytreemod.filter_vjp(X, X)


# --- filter_jacfwd and filter_jacrev -----------------------------------------------


def _g(params, x, power):
    weight, activation, count = params
    return activation(weight * x) ** power * count


@pytest.mark.parametrize(
    "transform, plain",
    [(pytreemod.filter_jacfwd, jax.jacfwd), (pytreemod.filter_jacrev, jax.jacrev)],
)
def test_jacobians_match_jax(transform, plain):
    params = (X, jnp.tanh, 2)
    jac = transform(_g)(params, T, 2)
    expected = plain(lambda w: jnp.tanh(w * T) ** 2 * 2)(X)
    assert _close(jac[0], expected)
    assert jac[1] is None and jac[2] is None


@pytest.mark.parametrize(
    "transform", [pytreemod.filter_jacfwd, pytreemod.filter_jacrev]
)
def test_jacobians_have_aux(transform):
    jac, aux = transform(lambda x, s: (x * 2, s), has_aux=True)(X, "aux")
    assert aux == "aux" and _close(jac, 2 * jnp.eye(3))


@pytest.mark.parametrize(
    "transform", [pytreemod.filter_jacfwd, pytreemod.filter_jacrev]
)
def test_jacobian_of_a_pytree_output(transform):
    jac = transform(lambda x: {"a": x[0], "b": x * 3})(X)
    assert _close(jac["a"], jnp.array([1.0, 0.0, 0.0]))
    assert _close(jac["b"], 3 * jnp.eye(3))


@pytest.mark.parametrize(
    "transform", [pytreemod.filter_jacfwd, pytreemod.filter_jacrev]
)
def test_jacobians_without_a_positional_argument_are_an_error(transform):
    with pytest.raises(TypeError, match="first positional argument"):
        transform(lambda x: x)(x=X)


@pytest.mark.parametrize(
    "transform", [pytreemod.filter_jacfwd, pytreemod.filter_jacrev]
)
def test_jacobians_has_aux_without_a_pair_is_an_error(transform):
    with pytest.raises(TypeError, match="return a pair"):
        transform(lambda x: x, has_aux=True)(X)


# --- filter_hessian ---------------------------------------------------------------


def test_hessian_matches_jax():
    def f(params, power):
        x, name = params
        return jnp.sum(jnp.sin(x) ** power)

    hess = pytreemod.filter_hessian(f)((X, "name"), 3)
    expected = jax.hessian(lambda x: jnp.sum(jnp.sin(x) ** 3))(X)
    assert _close(hess[0][0], expected)
    assert hess[1] is None


def test_hessian_has_aux():
    hess, aux = pytreemod.filter_hessian(
        lambda x: (jnp.sum(x**3), "aux"), has_aux=True
    )(X)
    assert aux == "aux" and _close(hess, jnp.diag(6 * X))


def test_hessian_of_a_non_callable_is_an_error():
    with pytest.raises(TypeError, match="needs a callable"):
        pytreemod.filter_hessian("f")
