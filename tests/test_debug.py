"""`pytreemod.debug.assert_max_traces` and `get_num_traces`."""

import threading

import jax
import jax.numpy as jnp
import pytest

import pytreemod as eqx


class Scale(eqx.Module):
    factor: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.factor * x


def test_counts_calls_outside_jit():
    counted = eqx.debug.assert_max_traces(lambda x: x + 1, max_traces=None)
    assert eqx.debug.get_num_traces(counted) == 0
    assert counted(1) == 2
    assert counted(2) == 3
    assert eqx.debug.get_num_traces(counted) == 2


def test_decorator_form_inside_filter_jit_counts_traces():
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=2)
    def f(x, n):
        return x * n

    f(jnp.ones(2), 2)
    f(jnp.zeros(2), 2)  # same shape, dtype and static value: no trace
    assert eqx.debug.get_num_traces(f) == 1
    f(jnp.ones(2), 3)  # new static value
    assert eqx.debug.get_num_traces(f) == 2


def test_exceeding_max_traces_raises():
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def f(x):
        return x + 1

    f(jnp.ones(2))
    message = r"can only be traced 1 times\. However, it has now been traced 2 times"
    with pytest.raises(RuntimeError, match=message):
        f(jnp.ones(3))


def test_error_names_the_function_and_points_to_explanations():
    def my_step(x):
        return x

    counted = eqx.debug.assert_max_traces(my_step, max_traces=0)
    with pytest.raises(
        RuntimeError,
        match=r"(?s)my_step at .* can only be traced 0 times.*explain_retraces",
    ):
        counted(1)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_max_traces(bad):
    with pytest.raises(ValueError, match="`max_traces` must be a non-negative int"):
        eqx.debug.assert_max_traces(abs, max_traces=bad)


def test_not_callable():
    with pytest.raises(TypeError, match="`assert_max_traces` needs a callable"):
        eqx.debug.assert_max_traces(3, max_traces=1)


@pytest.mark.parametrize("fn", [abs, eqx.filter_jit(abs)])
def test_get_num_traces_of_an_unwrapped_function(fn):
    with pytest.raises(ValueError, match="needs a function wrapped with"):
        eqx.debug.get_num_traces(fn)


def test_wrapped_module_is_a_pytree_and_its_arrays_are_traced():
    counted = eqx.debug.assert_max_traces(Scale(jnp.array(2.0)), max_traces=1)
    leaves = jax.tree_util.tree_leaves(counted)
    assert len(leaves) == 1 and float(leaves[0]) == 2.0
    jitted = eqx.filter_jit(counted)
    assert float(jitted(jnp.array(1.0))) == 2.0
    # A copy rebuilt with new leaves shares the counter and the compiled
    # function: the factor is traced, not baked in, so nothing retraces.
    copy = jax.tree_util.tree_map(lambda x: 3 * x, jitted)
    assert float(copy(jnp.array(1.0))) == 6.0
    assert eqx.debug.get_num_traces(copy) == 1


def test_as_a_method_in_a_module_class():
    class Model(eqx.Module):
        weight: jax.Array

        @eqx.filter_jit
        @eqx.debug.assert_max_traces(max_traces=1)
        def __call__(self, x):
            return self.weight * x

    first = Model(jnp.ones(2))
    second = Model(jnp.array([3.0, 3.0]))
    assert first(jnp.ones(2)).tolist() == [1.0, 1.0]
    assert second(jnp.ones(2)).tolist() == [3.0, 3.0]
    assert eqx.debug.get_num_traces(Model.__call__) == 1
    assert eqx.debug.get_num_traces(second.__call__) == 1


def test_count_is_thread_safe():
    counted = eqx.debug.assert_max_traces(lambda: None, max_traces=None)
    threads = [
        threading.Thread(target=lambda: [counted() for _ in range(200)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert eqx.debug.get_num_traces(counted) == 800


def test_keeps_the_wrapped_name():
    def body(x):
        """Docs."""
        return x

    counted = eqx.debug.assert_max_traces(body, max_traces=1)
    assert counted.__name__ == "body"
    assert counted.__doc__ == "Docs."
    assert counted.__wrapped__ is body
