"""The `is_array` family of leaf predicates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod

CASES = [
    # (value, is_array, is_array_like, is_inexact_array, is_inexact_array_like)
    (jnp.ones(2), True, True, True, True),
    (jnp.arange(2), True, True, False, False),
    (jnp.array(True), True, True, False, False),
    (jnp.ones(2, jnp.complex64), True, True, True, True),
    (jnp.ones(2, jnp.bfloat16), True, True, True, True),
    (np.ones(2), True, True, True, True),
    (np.arange(2), True, True, False, False),
    (np.float32(1.0), True, True, True, True),
    (np.int8(1), True, True, False, False),
    (1.0, False, True, False, True),
    (1, False, True, False, False),
    (True, False, True, False, False),
    (1j, False, True, False, True),
    ("a", False, False, False, False),
    (None, False, False, False, False),
    ([1.0], False, False, False, False),
    (jax.ShapeDtypeStruct((2,), jnp.float32), False, False, False, False),
]


@pytest.mark.parametrize(
    "value, array, array_like, inexact, inexact_like",
    CASES,
    ids=[f"{type(case[0]).__name__}-{i}" for i, case in enumerate(CASES)],
)
def test_predicates(value, array, array_like, inexact, inexact_like):
    assert pytreemod.is_array(value) is array
    assert pytreemod.is_array_like(value) is array_like
    assert bool(pytreemod.is_inexact_array(value)) is inexact
    assert bool(pytreemod.is_inexact_array_like(value)) is inexact_like


def test_tracers_are_arrays():
    seen = []

    @jax.jit
    def f(x, n):
        seen.append(
            (
                pytreemod.is_array(x),
                pytreemod.is_inexact_array(x),
                pytreemod.is_inexact_array(n),
            )
        )
        return x

    f(jnp.ones(2), jnp.arange(2))
    assert seen == [(True, True, False)]


def test_prng_keys_are_arrays_but_not_inexact():
    key = jax.random.key(0)
    assert pytreemod.is_array(key)
    assert not pytreemod.is_inexact_array(key)
