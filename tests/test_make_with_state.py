import dataclasses

import jax
import jax.numpy as jnp
import pytest
from _helpers import Counter

import pytreemod
from pytreemod.nn import State, StateIndex, delete_init_state, make_with_state


class PostInitCounter(pytreemod.Module):
    start: float
    index: StateIndex = dataclasses.field(init=False)

    def __post_init__(self):
        self.index = StateIndex(jnp.array(self.start, jnp.float32))

    def __call__(self, x, state):
        count = state.get(self.index)
        return x + count, state.set(self.index, count + 1)


@pytest.mark.parametrize(
    "make, start", [(Counter, 0.0), (lambda: PostInitCounter(5.0), 5.0)]
)
def test_the_issue_pattern_traces_once(make, start):
    traces = []

    @pytreemod.filter_jit
    def train_step(model, state, x):
        traces.append(None)
        return model(x, state)

    model, state = make_with_state(make)()
    x = jnp.array(1.0)
    for _ in range(3):
        y, state = train_step(model, state, x)
    assert len(traces) == 1
    assert y.item() == 1.0 + start + 2
    assert state.get(model.index).item() == start + 3


def test_initial_values_move_into_the_state():
    model, state = make_with_state(Counter)()
    assert jax.tree_util.tree_leaves(model) == []
    assert state.get(model.index).item() == 0.0


def test_arguments_are_passed_on():
    class Sized(pytreemod.Module):
        index: StateIndex

        def __init__(self, size, *, fill):
            self.index = StateIndex(jnp.full(size, fill))

    model, state = make_with_state(Sized)(3, fill=2.0)
    assert state.get(model.index).tolist() == [2.0, 2.0, 2.0]


def test_separately_built_models_are_interchangeable():
    traces = []

    @pytreemod.filter_jit
    def step(model, state, x):
        traces.append(None)
        return model(x, state)

    model_a, state_a = make_with_state(Counter)()
    model_b, state_b = make_with_state(Counter)()
    assert jax.tree_util.tree_structure(model_a) == jax.tree_util.tree_structure(
        model_b
    )
    assert jax.tree_util.tree_structure(state_a) == jax.tree_util.tree_structure(
        state_b
    )
    _, state_a = step(model_a, state_a, jnp.array(0.0))
    # A new model of the same architecture, with the other model's state.
    y, state_a = step(model_b, state_a, jnp.array(0.0))
    assert len(traces) == 1
    assert y.item() == 1.0
    assert state_a.get(model_b.index).item() == 2.0


def test_keys_come_from_the_place_in_the_model():
    class Net(pytreemod.Module):
        layers: tuple
        extra: dict

    net, state = make_with_state(Net)((Counter(), Counter()), {"c": Counter()})
    assert [layer.index.marker for layer in net.layers] == [
        "Net.layers[0].index",
        "Net.layers[1].index",
    ]
    assert net.extra["c"].index.marker == "Net.extra['c'].index"
    assert len(jax.tree_util.tree_leaves(state)) == 3


def test_a_shared_index_is_one_entry():
    shared = Counter()

    class Twice(pytreemod.Module):
        first: Counter
        second: Counter

        def __call__(self, x, state):
            x, state = self.first(x, state)
            return self.second(x, state)

    model, state = make_with_state(Twice)(shared, shared)
    assert model.first.index.marker == model.second.index.marker == "Twice.first.index"
    assert len(jax.tree_util.tree_leaves(state)) == 1
    y, state = model(jnp.array(0.0), state)
    # Both places count in the same entry: 0 + 0, then 0 + 1.
    assert y.item() == 1.0
    assert state.get(model.first.index).item() == 2.0
    assert state.get(model.second.index).item() == 2.0


def test_shared_batch_norm_layer_is_one_entry():
    bn = pytreemod.nn.BatchNorm(2, "batch", mode="ema")
    model, state = make_with_state(lambda: [bn, bn])()
    # ema mode: a first-time flag and (mean, var).
    assert len(jax.tree_util.tree_leaves(state)) == 3


def test_delete_init_state():
    model = [Counter(), Counter()]
    state = State(model)
    stripped = delete_init_state(model)
    assert jax.tree_util.tree_leaves(stripped) == []
    assert len(jax.tree_util.tree_leaves(model)) == 2
    assert state.get(stripped[1].index).item() == 0.0
    with pytest.raises(ValueError, match="already moved out"):
        State(stripped)
    # Regression: the deleted marker was checked by identity, which a
    # flatten/unflatten round trip (every transform) does not preserve.
    with pytest.raises(ValueError, match="already moved out"):
        State(jax.tree_util.tree_map(lambda x: x, stripped))
    # Deleting twice is harmless.
    assert jax.tree_util.tree_structure(
        delete_init_state(stripped)
    ) == jax.tree_util.tree_structure(stripped)


def test_make_with_state_of_a_plain_function():
    model, state = make_with_state(lambda n: [Counter() for _ in range(n)])(2)
    assert [c.index.marker for c in model] == ["list[0].index", "list[1].index"]
    _, state = model[1](jnp.array(0.0), state)
    assert state.get(model[0].index).item() == 0.0
    assert state.get(model[1].index).item() == 1.0
