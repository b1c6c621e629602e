"""`Partial` and `module_update_wrapper`."""

import jax
import jax.numpy as jnp
import pytest

from pytreemod import Module, Partial, is_array, module_update_wrapper


def test_partial_calls_like_functools_partial():
    p = Partial(lambda a, b, *, c=0: a * 10 + b + c, 1, c=5)
    assert p(2) == 17
    assert p(2, c=0) == 12  # call-time keywords win


def test_partial_is_a_pytree_of_its_arguments():
    p = Partial(jnp.multiply, jnp.array(3.0))
    # The function is a leaf too (a static one for the filtered transforms).
    assert jax.tree_util.tree_leaves(p) == [jnp.multiply, jnp.array(3.0)]
    tripled = jax.tree_util.tree_map(lambda x: x * 3 if is_array(x) else x, p)
    assert float(tripled(jnp.array(2.0))) == 18.0


def test_partial_needs_a_callable():
    with pytest.raises(TypeError, match="`Partial` needs a callable"):
        Partial(3)


def test_module_update_wrapper_copies_metadata():
    def square(x):
        "Square x."
        return x * x

    class Wrapper(Module):
        fn: object

        @property
        def __wrapped__(self):
            return self.fn

        def __call__(self, x):
            return self.fn(x)

    w = module_update_wrapper(Wrapper(square))
    assert (w.__name__, w.__doc__, w(3)) == ("square", "Square x.", 9)


def test_module_update_wrapper_without_wrapped_is_an_error():
    class Bare(Module):
        pass

    with pytest.raises(TypeError, match="has no `__wrapped__`"):
        module_update_wrapper(Bare())
