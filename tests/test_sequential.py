import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod
from pytreemod.nn import (
    BatchNorm,
    Lambda,
    Sequential,
    StatefulLayer,
    StateIndex,
    make_with_state,
)


class AddCount(StatefulLayer):
    index: StateIndex

    def __init__(self):
        self.index = StateIndex(jnp.array(0.0))

    def __call__(self, x, state, *, key=None):
        count = state.get(self.index)
        return x + count, state.set(self.index, count + 1)


class SometimesStateful(StatefulLayer):
    stateful: bool = pytreemod.field(static=True)

    def is_stateful(self):
        return self.stateful

    def __call__(self, x, state=None, *, key=None):
        if self.stateful:
            return x * 2, state
        return x * 3


class TakesState(pytreemod.Module):
    """Not a StatefulLayer, but its `__call__` has a `state` parameter."""

    index: StateIndex

    def __init__(self):
        self.index = StateIndex(jnp.array(10.0))

    def __call__(self, x, state, *, key=None):
        return x + state.get(self.index), state


class Scale(pytreemod.Module):
    factor: float

    def __call__(self, x, *, key=None):
        return x * self.factor


class KeyAsOutput(pytreemod.Module):
    def __call__(self, x, *, key=None):
        return x + jax.random.uniform(key)


def test_plain_layers_in_order():
    model = Sequential([Scale(2.0), Lambda(jnp.negative), Scale(3.0)])
    assert model(jnp.array(1.0)).item() == -6.0
    assert not model.is_stateful()


def test_state_goes_only_to_the_layers_that_take_it():
    model, state = make_with_state(Sequential)(
        [
            AddCount(),
            Scale(2.0),
            SometimesStateful(False),
            SometimesStateful(True),
            TakesState(),
        ]
    )
    assert model.is_stateful()
    y, state = model(jnp.array(1.0), state)
    # ((1 + 0) * 2 * 3 * 2) + 10
    assert y.item() == 22.0
    y, state = model(jnp.array(1.0), state)
    assert y.item() == ((1 + 1) * 2 * 3 * 2) + 10
    assert state.get(model[0].index).item() == 2.0


def test_state_through_a_batch_norm_under_vmap():
    model, state = make_with_state(Sequential)(
        [Scale(2.0), BatchNorm(2, "batch", mode="batch"), Lambda(jax.nn.relu)]
    )
    xs = jnp.array([[1.0, 0.0], [3.0, 4.0]])
    ys, state = jax.vmap(
        model, axis_name="batch", in_axes=(0, None), out_axes=(0, None)
    )(xs, state)
    np.testing.assert_allclose(ys, [[0.0, 0.0], [1.0, 1.0]], atol=1e-4)
    assert state.get(model[1].batch_counter).item() == 1


def test_nested_sequential_is_stateful_when_a_layer_is():
    inner = Sequential([AddCount()])
    model, state = make_with_state(Sequential)([Scale(1.0), inner])
    assert inner.is_stateful()
    y, state = model(jnp.array(5.0), state)
    y, state = model(jnp.array(5.0), state)
    assert y.item() == 6.0


def test_missing_state_is_an_error():
    model, _ = make_with_state(Sequential)([Scale(1.0), AddCount()])
    with pytest.raises(ValueError, match=r"layer 1 \(AddCount\) is stateful"):
        model(jnp.array(1.0))


def test_each_layer_gets_its_own_key():
    model = Sequential([KeyAsOutput(), Scale(1.0), KeyAsOutput()])
    key = jax.random.key(0)
    first, _, third = jax.random.split(key, 3)
    expected = jax.random.uniform(first) + jax.random.uniform(third)
    np.testing.assert_allclose(model(jnp.array(0.0), key=key), expected)


def test_indexing_slicing_and_iteration():
    layers = [Scale(1.0), Scale(2.0), Scale(3.0)]
    model = Sequential(layers)
    assert len(model) == 3
    assert model[1] is layers[1]
    assert isinstance(model[1:], Sequential)
    assert model[1:].layers == (layers[1], layers[2])
    assert list(model) == layers
    with pytest.raises(TypeError, match="indexed by an int"):
        model["first"]


def test_stateful_layer_must_define_call():
    class NoCall(StatefulLayer):
        pass

    with pytest.raises(TypeError, match="__call__"):
        NoCall()


def test_signature_is_inspected_once_per_class(monkeypatch):
    # Regression guard: inspecting `__call__` on every call made Sequential slow.
    class TakesStateToo(TakesState):
        pass

    calls = []
    real_signature = inspect.signature

    def counting_signature(fn, *args, **kwargs):
        calls.append(fn)
        return real_signature(fn, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting_signature)
    model, state = make_with_state(Sequential)([TakesStateToo(), TakesStateToo()])
    for _ in range(3):
        _, state = model(jnp.array(0.0), state)
    assert calls == [TakesStateToo.__call__]
