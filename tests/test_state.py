import pickle

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import Counter
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod
from pytreemod.nn import State, StateIndex, make_with_state

STALE = "Attempted to use old state. This State was already used"


class Pair(pytreemod.Module):
    first: Counter
    second: Counter


def test_get_and_set():
    index = StateIndex((jnp.zeros(2), jnp.ones(())))
    state = State(index)
    new = state.set(index, (jnp.full(2, 3.0), jnp.array(4.0)))
    values = new.get(index)
    assert values[0].tolist() == [3.0, 3.0]
    assert values[1].item() == 4.0


def _use_get(state, index):
    state.get(index)


def _use_set(state, index):
    state.set(index, jnp.array(1.0))


def _use_flatten(state, index):
    jax.tree_util.tree_leaves(state)


def _use_substate(state, index):
    state.substate(index)


def _use_jax_jit(state, index):
    jax.jit(lambda s: s.get(index))(state)


def _use_filter_jit(state, index):
    pytreemod.filter_jit(lambda s: s.get(index))(state)


@pytest.mark.parametrize(
    "use",
    [_use_get, _use_set, _use_flatten, _use_substate, _use_jax_jit, _use_filter_jit],
)
def test_set_invalidates_the_old_state(use):
    model, state = make_with_state(Counter)()
    _, new_state = model(jnp.array(1.0), state)
    with pytest.raises(ValueError, match=STALE):
        use(state, model.index)
    # The new one is fine, and the message says how to keep an old State.
    assert new_state.get(model.index).item() == 1.0
    with pytest.raises(ValueError, match=r"tree_map\(lambda x: x, state\)"):
        state.get(model.index)


def test_update_invalidates_the_old_state():
    model, state = make_with_state(Counter)()
    sub = state.substate(model)
    state.update(sub)
    with pytest.raises(ValueError, match=STALE):
        state.get(model.index)


def test_reuse_inside_a_trace_is_an_error():
    model, state = make_with_state(Counter)()

    @pytreemod.filter_jit
    def step(model, state, x):
        y, state2 = model(x, state)
        y, state3 = model(y, state)  # the bug: reuses `state`
        return y, state3

    with pytest.raises(ValueError, match=STALE):
        step(model, state, jnp.array(1.0))


def test_a_copy_keeps_an_old_state_usable():
    model, state = make_with_state(Counter)()
    kept = jax.tree_util.tree_map(lambda x: x, state)
    _, state = model(jnp.array(0.0), state)
    _, state = model(jnp.array(0.0), state)
    assert kept.get(model.index).item() == 0.0
    assert state.get(model.index).item() == 2.0


@pytest.mark.parametrize(
    "old, new, shown",
    [
        (jnp.zeros(3), jnp.zeros(4), r"held: f32\[3\]\n  new:  f32\[4\]"),
        (jnp.zeros(3), jnp.zeros(3, jnp.int32), r"held: f32\[3\]\n  new:  i32\[3\]"),
        (
            (jnp.zeros(1), jnp.zeros(1)),
            [jnp.zeros(1), jnp.zeros(1)],
            r"held: \(f32\[1\], f32\[1\]\)\n  new:  \[f32\[1\], f32\[1\]\]",
        ),
        (jnp.array(0.0), 1, r"held: weak_f32\[\]\n  new:  weak_i32\[\]"),
    ],
    ids=["shape", "dtype", "structure", "python-int"],
)
def test_set_checks_structure_shape_and_dtype(old, new, shown):
    index = StateIndex(old)
    state = State(index)
    with pytest.raises(ValueError, match=shown):
        state.set(index, new)
    # A failed set leaves the State usable.
    assert state.get(index) is not None


def test_mismatch_error_starts_with_equinox_sentence():
    index = StateIndex(jnp.zeros(3))
    state = State(index)
    with pytest.raises(ValueError, match=r"^Old and new values have different"):
        state.set(index, jnp.zeros(4))


def test_values_keep_their_weak_type():
    # Equinox keeps `jnp.array(0)` weakly typed in a State; code written for it
    # (`x + count` with a float `x`) relies on that under strict promotion.
    index = StateIndex(jnp.array(0))
    state = State(index)
    count = state.get(index)
    assert jax.typeof(count).weak_type
    with jax.numpy_dtype_promotion("strict"):
        y = jnp.ones(2, jnp.float32) + count
        assert y.dtype == jnp.float32
        state = state.set(index, count + 1)
    assert jax.typeof(state.get(index)).weak_type
    assert state.get(index).item() == 1


def test_weak_value_into_strong_slot_is_stored_strong():
    # A Python scalar is accepted for a strongly typed value of its dtype and
    # stored strongly typed, so the jit cache key of the next step is the same.
    index = StateIndex(jnp.array(0.0, dtype=jnp.float32))
    state = State(index)
    assert not jax.typeof(state.get(index)).weak_type
    state = state.set(index, 2.0)
    value = state.get(index)
    assert value.item() == 2.0
    assert not jax.typeof(value).weak_type


def test_strong_value_into_weak_slot_is_an_error():
    index = StateIndex(jnp.array(0))
    state = State(index)
    with pytest.raises(ValueError, match=r"(?s)held: weak_i32\[\].*new:  i32\[\]"):
        state.set(index, jnp.array(1, dtype=jnp.int32))
    with pytest.raises(ValueError, match="The held value is weakly typed"):
        state.set(index, jnp.array(1, dtype=jnp.int32))


def test_weak_state_does_not_retrace_a_jitted_step():
    traces = []

    @pytreemod.filter_jit
    def step(x, state):
        traces.append(None)
        count = state.get(index)
        return x + count, state.set(index, count + 1)

    index = StateIndex(jnp.array(0))
    state = State(index)
    x = jnp.zeros(2, jnp.float32)
    for _ in range(3):
        x, state = step(x, state)
    assert len(traces) == 1
    assert x.tolist() == [3.0, 3.0]
    assert jax.typeof(state.get(index)).weak_type


def test_state_made_under_jit_keeps_weak_types():
    @jax.jit
    def make():
        return make_with_state(Counter)()[1]

    # Counter's initial count is `jnp.array(0.0)`: weakly typed, eagerly and
    # when the State is built inside a trace and returned from it.
    for state in [make_with_state(Counter)()[1], make()]:
        leaves = jax.tree_util.tree_leaves(state)
        assert [jax.typeof(x).weak_type for x in leaves] == [True]


def test_missing_index_names_the_key_and_what_the_state_holds():
    model, state = make_with_state(Pair)(Counter(), Counter())
    swapped = pytreemod.tree_at(lambda m: m.second, model, Counter())
    with pytest.raises(ValueError, match="holds no value") as info:
        swapped.second(jnp.array(0.0), state)
    message = str(info.value)
    assert "not made by make_with_state" in message
    assert "'Pair.first.index', 'Pair.second.index'" in message
    assert not isinstance(info.value, KeyError)


def test_index_of_another_model_is_an_error():
    counter, counter_state = make_with_state(Counter)()
    pair, pair_state = make_with_state(Pair)(Counter(), Counter())
    with pytest.raises(ValueError, match="'Counter.index'.*\n.*'Pair.first.index'"):
        pair_state.get(counter.index)


def test_get_with_something_else_than_an_index():
    _, state = make_with_state(Counter)()
    # ValueError with Equinox's first sentence, as code written for it expects.
    with pytest.raises(
        ValueError,
        match=r"^Can only use `eqx.nn.StateIndex`s as state keys\. A State is "
        r"indexed by `pytreemod.nn.StateIndex`",
    ):
        state.get("Counter.index")


def test_substate_and_update():
    model, state = make_with_state(Pair)(Counter(), Counter())
    sub = state.substate(model.second)
    _, sub = model.second(jnp.array(0.0), sub)
    _, sub = model.second(jnp.array(0.0), sub)
    state = state.update(sub)
    assert state.get(model.first.index).item() == 0.0
    assert state.get(model.second.index).item() == 2.0


def test_substate_of_something_the_state_lacks():
    model, state = make_with_state(Counter)()
    with pytest.raises(ValueError, match="holds no value"):
        state.substate(Counter())


def test_update_with_foreign_keys_is_an_error():
    pair, pair_state = make_with_state(Pair)(Counter(), Counter())
    counter, counter_state = make_with_state(Counter)()
    with pytest.raises(
        ValueError,
        match=r"^Cannot call `state1.update\(state2\)` unless `state2` is a "
        r"substate of `state1`\.(.|\n)*holding keys this State\s+does not",
    ):
        pair_state.update(counter_state)
    with pytest.raises(
        ValueError, match=r"^Can only use `eqx.nn.State`s in `update`\.(.|\n)*State`"
    ):
        pair_state.update({"Counter.index": jnp.array(0.0)})


def test_update_checks_shapes():
    index = StateIndex(jnp.zeros(2))
    state = State(index)
    other = State([index])
    other = jax.tree_util.tree_map(lambda x: jnp.zeros(3), other)
    with pytest.raises(ValueError, match=r"held: f32\[2\]"):
        state.update(other)


def test_state_of_a_model_from_make_with_state_is_an_error():
    model, _ = make_with_state(Counter)()
    with pytest.raises(
        ValueError,
        match=r"^Do not call `eqx.nn.State\(model\)` directly\.(.|\n)*already\s+moved",
    ):
        State(model)


def test_key_paths_name_the_entries():
    model, state = make_with_state(Pair)(Counter(), Counter())
    paths = [
        jax.tree_util.keystr(path)
        for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]
    ]
    assert paths == ["['Pair.first.index']", "['Pair.second.index']"]


def test_prints_readably():
    model, state = make_with_state(Pair)(Counter(), Counter())
    assert repr(state) == (
        "State(\n  'Pair.first.index': weak_f32[],\n"
        "  'Pair.second.index': weak_f32[],\n)"
    )
    model.first(jnp.array(0.0), state)
    assert repr(state) == "State(<used: set/update returned a newer State>)"
    assert repr(State([])) == "State()"


def test_pickles():
    model, state = make_with_state(Counter)()
    again = pickle.loads(pickle.dumps(state))
    assert again.get(model.index).item() == 0.0
    assert jax.tree_util.tree_structure(again) == jax.tree_util.tree_structure(state)


_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.int32, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3),
)
_values = st.recursive(
    _arrays,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from("abc"), children, max_size=3),
    ),
    max_leaves=5,
)


@settings(max_examples=30, deadline=None)
@given(inits=st.lists(_values, min_size=0, max_size=3))
def test_flatten_unflatten_round_trip(inits):
    indices = [StateIndex(init) for init in inits]
    state = State(indices)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    assert jax.tree_util.tree_structure(again) == treedef
    for index, init in zip(indices, inits, strict=True):
        got = again.get(index)
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(init)
        for a, b in zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(init), strict=True
        ):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
        # Round-tripped values can be set again.
        again = again.set(index, got)


def test_through_filter_jit_and_jax_jit():
    model, state = make_with_state(Counter)()
    for jit in (jax.jit, pytreemod.filter_jit):
        step = jit(lambda model, state, x: model(x, state))
        y, new_state = step(model, state, jnp.array(1.0))
        assert y.item() == 1.0
        assert new_state.get(model.index).item() == 1.0


def test_through_filter_vmap():
    # An ensemble: one Counter State per member, mapped over.
    model, state = make_with_state(Counter)()
    states = jax.tree_util.tree_map(lambda x: x + jnp.arange(3.0), state)
    ys, states = pytreemod.filter_vmap(lambda s, x: model(x, s), in_axes=(0, None))(
        states, jnp.array(10.0)
    )
    assert ys.tolist() == [10.0, 11.0, 12.0]
    assert states.get(model.index).tolist() == [1.0, 2.0, 3.0]


def test_scan_equals_the_python_loop():
    model, state = make_with_state(Counter)()
    xs = jnp.arange(100.0)

    def body(state, x):
        y, state = model(x, state)
        return state, y

    scanned_state, ys = jax.lax.scan(body, state, xs)
    loop_state = jax.tree_util.tree_map(lambda x: x, state)
    loop_ys = []
    for x in xs:
        y, loop_state = model(x, loop_state)
        loop_ys.append(y)
    np.testing.assert_array_equal(ys, jnp.stack(loop_ys))
    assert scanned_state.get(model.index).item() == 100.0
    assert loop_state.get(model.index).item() == 100.0


def test_state_as_aux_of_filter_grad():
    class Scaled(pytreemod.Module):
        weight: jax.Array
        counter: Counter

        def __call__(self, x, state):
            y, state = self.counter(x, state)
            return self.weight * y, state

    model, state = make_with_state(Scaled)(jnp.array(2.0), Counter())

    @pytreemod.filter_grad(has_aux=True)
    def loss(model, state, x):
        y, state = model(x, state)
        return y**2, state

    _, state = model(jnp.array(0.0), state)
    grads, state = loss(model, state, jnp.array(1.0))
    # y = w * (x + 1) = 4, d(y^2)/dw = 2 * y * (x + 1) = 16.
    assert grads.weight.item() == 16.0
    assert state.get(model.counter.index).item() == 2.0
