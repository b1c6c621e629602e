"""Bound methods of a Module are pytrees."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np

from pytreemod import Module
from pytreemod._module._module import BoundMethod


class Affine(Module):
    scale: jax.Array

    def apply(self, x, *, shift=0.0):
        return self.scale * x + shift


def test_bound_method_flattens_to_module_leaves():
    m = Affine(jnp.array(2.0))
    method = m.apply
    assert isinstance(method, BoundMethod)
    assert jax.tree_util.tree_leaves(method) == jax.tree_util.tree_leaves(m)
    doubled = jax.tree_util.tree_map(lambda x: x * 2, method)
    assert float(doubled(1.0)) == 4.0


def test_jit_of_bound_method_traces_the_module():
    m = Affine(jnp.array(2.0))
    np.testing.assert_allclose(jax.jit(m.apply)(jnp.array(3.0), shift=1.0), 7.0)
    f = jax.jit(lambda method, x: method(x))
    np.testing.assert_allclose(f(m.apply, 1.0), 2.0)
    np.testing.assert_allclose(f(Affine(jnp.array(5.0)).apply, 1.0), 5.0)


def test_bound_methods_of_equal_modules_are_equal():
    a, b = Affine(jnp.array(2.0)), Affine(jnp.array(2.0))
    assert a.apply == b.apply
    assert a.apply != Affine(jnp.array(3.0)).apply


def test_signature_and_name_drop_self():
    m = Affine(jnp.array(2.0))
    assert list(inspect.signature(m.apply).parameters) == ["x", "shift"]
    assert m.apply.__name__ == "apply"
    assert Affine.apply.__name__ == "apply"  # the class attribute is the function
