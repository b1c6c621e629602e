"""`Enumeration`: members that are pytrees, comparison, `where`, `promote`."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod
from pytreemod import Enumeration
from pytreemod._errors._enumeration import _describe


class Colour(Enumeration):
    RED = "red"
    GREEN = ""
    BLUE = "blue"


class Shape(Enumeration):
    SQUARE = "four sides"


class Result(Enumeration):
    ok = ""
    diverged = "the solver diverged"


class MoreResult(Result):
    timeout = "ran out of time"


def test_members_are_numbered_pytrees_with_one_int32_leaf():
    leaves, treedef = jax.tree_util.tree_flatten(Colour.BLUE)
    assert len(leaves) == 1 and leaves[0].dtype == np.int32 and int(leaves[0]) == 2
    assert jax.tree_util.tree_unflatten(treedef, [np.int32(0)]) == Colour.RED


def test_class_lists_its_members_and_messages():
    assert len(Colour) == 3
    assert list(Colour) == [Colour.RED, Colour.GREEN, Colour.BLUE]
    assert [Colour[c] for c in Colour] == ["red", "", "blue"]
    assert isinstance(Colour.RED, Colour) and not isinstance(Colour.RED, Shape)
    assert not isinstance("RED", Colour)


def test_repr_is_equinoxs_full_name_and_message():
    # As Equinox: `module.qualname<message>`, `<traced>` inside jit, and the
    # array of messages for a batch of members.
    assert repr(Colour.RED) == "test_enumeration.Colour<red>"
    assert str(Colour.GREEN) == "test_enumeration.Colour<>"
    stacked = jax.tree_util.tree_map(lambda *v: np.stack(v), Colour.RED, Colour.BLUE)
    assert repr(stacked) == "test_enumeration.Colour<['red' 'blue']>"
    assert Colour[stacked] == "['red' 'blue']"
    seen = []
    jax.jit(lambda c: seen.append(repr(c)))(Colour.RED)
    assert seen == ["test_enumeration.Colour<traced>"]


def test_error_messages_name_members_by_name():
    assert _describe(Colour.GREEN) == "Colour.GREEN"
    batch = Colour.where(jnp.array(True), Colour.RED, Colour.BLUE)
    assert _describe(batch) == "Colour.RED"
    with pytest.raises(
        ValueError, match=r"cannot compare Colour\.RED with Shape\.SQUARE"
    ):
        Colour.RED == Shape.SQUARE  # noqa: B015


def test_generated_docstring_lists_members():
    assert "- `RED`: red" in Colour.__doc__
    assert "- `GREEN`\n" in Colour.__doc__


def test_equality_gives_a_bool_array():
    same, different = Colour.RED == Colour.RED, Colour.RED == Colour.BLUE
    assert isinstance(same, jax.Array) and same.dtype == jnp.bool_
    assert bool(same) and not bool(different)
    assert bool(Colour.RED != Colour.BLUE) and not bool(Colour.RED != Colour.RED)


def test_members_are_hashable():
    assert len({Colour.RED, Colour.RED}) == 1
    assert isinstance(hash(Colour.BLUE), int)


@pytest.mark.parametrize("op", ["==", "!="])
def test_comparing_different_enumerations_is_an_error(op):
    compare = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b}[op]
    with pytest.raises(
        ValueError, match=r"different\s+enumerations \(Colour and Shape\)"
    ):
        compare(Colour.RED, Shape.SQUARE)
    with pytest.raises(
        ValueError, match=r"\(of type int\): an enumeration member only compares"
    ):
        compare(Colour.RED, 0)


def test_comparing_with_a_parent_member_suggests_promote():
    with pytest.raises(ValueError, match=r"MoreResult\.promote\(item\)"):
        Result.ok == MoreResult.ok  # noqa: B015


def test_members_pass_through_jit_and_compare_traced():
    @jax.jit
    def f(colour, x):
        is_red = colour == Colour.RED
        assert isinstance(is_red, jax.core.Tracer)
        picked = Colour.where(x > 0, colour, Colour.GREEN)
        return jnp.where(is_red, x, -x), picked

    value, picked = f(Colour.RED, jnp.array(2.0))
    assert float(value) == 2.0 and picked == Colour.RED
    value, picked = f(Colour.BLUE, jnp.array(-2.0))
    assert float(value) == 2.0 and _describe(picked) == "Colour.GREEN"


def test_members_pass_through_filter_jit_and_cond():
    @pytreemod.filter_jit
    def f(colour, x):
        return jax.lax.cond(x > 0, lambda: Colour.BLUE, lambda: colour)

    assert _describe(f(Colour.RED, jnp.array(1.0))) == "Colour.BLUE"
    assert _describe(f(Colour.RED, jnp.array(-1.0))) == "Colour.RED"


def test_comparison_of_concrete_members_stays_concrete_under_jit():
    @jax.jit
    def f(x):
        same = Colour.RED == Colour.RED
        assert not isinstance(same, jax.core.Tracer)
        return x

    f(jnp.array(1.0))


def test_vmap_of_where_gives_a_batch_of_members():
    out = jax.vmap(lambda p: Colour.where(p, Colour.RED, Colour.BLUE))(
        jnp.array([True, False, True])
    )
    assert Colour[out] == "['red' 'blue' 'red']"
    assert jnp.array_equal(out == Colour.RED, jnp.array([True, False, True]))


def test_where_with_the_same_member_returns_it():
    assert Colour.where(jnp.array(True), Colour.RED, Colour.RED) is Colour.RED


@pytest.mark.parametrize(
    ("pred", "a", "b", "match"),
    [
        (jnp.array([True, False]), Colour.RED, Colour.BLUE, r"scalar boolean.*\(2,\)"),
        (jnp.array(1), Colour.RED, Colour.BLUE, "dtype int32"),
        (True, Colour.RED, Shape.SQUARE, "`b` is Shape.SQUARE"),
        (True, "RED", Colour.RED, "`a` is 'RED'"),
    ],
)
def test_where_rejects_bad_arguments(pred, a, b, match):
    with pytest.raises(ValueError, match=match):
        Colour.where(pred, a, b)


def test_subclass_has_parent_members_first():
    assert [MoreResult[m] for m in MoreResult] == [
        "",
        "the solver diverged",
        "ran out of time",
    ]
    assert _describe(MoreResult.diverged) == "MoreResult.diverged"
    assert not isinstance(MoreResult.ok, Result)


def test_promote_maps_parent_members_to_the_child():
    promoted = MoreResult.promote(Result.diverged)
    assert _describe(promoted) == "MoreResult.diverged"
    assert bool(promoted == MoreResult.diverged)
    traced = jax.jit(MoreResult.promote)(Result.ok)
    assert _describe(traced) == "MoreResult.ok"


@pytest.mark.parametrize(
    ("cls", "item", "match"),
    [
        (MoreResult, MoreResult.ok, "inherits from; got MoreResult.ok"),
        (Result, MoreResult.ok, "member of MoreResult"),
        (Colour, Result.ok, "member of Result"),
        (MoreResult, "ok", "needs an enumeration member"),
    ],
)
def test_promote_only_from_parents(cls, item, match):
    with pytest.raises(ValueError, match=match):
        cls.promote(item)


def test_multiple_inheritance_merges_members():
    class Both(Colour, Shape):
        EXTRA = "extra"

    assert [_describe(m) for m in Both] == [
        "Both.RED",
        "Both.GREEN",
        "Both.BLUE",
        "Both.SQUARE",
        "Both.EXTRA",
    ]
    assert _describe(Both.promote(Shape.SQUARE)) == "Both.SQUARE"


def test_redefining_a_parent_member_with_a_new_message_warns():
    with pytest.warns(UserWarning, match="replacing 'the solver diverged'"):

        class Changed(Result):
            diverged = "blew up"

    assert Changed[Changed.diverged] == "blew up"
    assert _describe(Changed.promote(Result.diverged)) == "Changed.diverged"


def test_error_if_raises_the_members_message():
    x = jnp.array([1.0, -1.0])
    assert Result.diverged.error_if(x, jnp.array(False)) is x
    with pytest.raises(pytreemod.EquinoxRuntimeError, match="the solver diverged"):
        Result.diverged.error_if(x, x < 0)


def test_error_if_with_a_traced_member_raises_its_message_at_runtime():
    @jax.jit
    def solve(x):
        result = Result.where(jnp.all(x > 0), Result.ok, Result.diverged)
        return result.error_if(x, result != Result.ok)

    assert jnp.array_equal(solve(jnp.ones(2)), jnp.ones(2))
    with pytest.raises(RuntimeError, match="the solver diverged"):
        solve(-jnp.ones(2))


def test_is_traced():
    assert not Colour.RED.is_traced()
    seen = []
    jax.jit(lambda c: seen.append(c.is_traced()) or c)(Colour.RED)
    assert seen == [True]


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        ({"where": "x"}, ValueError, "cannot have a member called `where`"),
        ({"promote": "x"}, ValueError, "hide the class method `Bad.promote`"),
        ({"RED": 1}, TypeError, "Bad.RED must be a string.*got int 1"),
        ({"method": lambda self: 0}, TypeError, "holds only members"),
    ],
)
def test_bad_class_bodies_are_rejected(body, error, match):
    with pytest.raises(error, match=match):
        type(Enumeration)("Bad", (Enumeration,), dict(body))


def test_enumerations_inherit_only_from_enumerations():
    with pytest.raises(TypeError, match="int, which is not an Enumeration"):

        class Bad(Colour, int):
            pass


def test_enumerations_are_not_instantiated():
    with pytest.raises(TypeError, match=r"use its members, such as `Colour.<member>`"):
        Colour()


@pytest.mark.parametrize(
    ("item", "match"),
    [("RED", "must be a member of Colour, got str"), (Shape.SQUARE, "member of Shape")],
)
def test_message_lookup_needs_a_member(item, match):
    with pytest.raises(ValueError, match=match):
        Colour[item]


_pick = jax.jit(lambda p, a, b: Colour.where(p, a, b))


@settings(max_examples=30, deadline=None)
@given(st.booleans(), st.sampled_from(list(Colour)), st.sampled_from(list(Colour)))
def test_jitted_where_round_trips_members(pred, a, b):
    out = _pick(jnp.array(pred), a, b)
    expected = a if pred else b
    assert bool(out == expected)
    assert _describe(out) == _describe(expected)
    assert Colour[out] == Colour[expected]


def test_signature_of_an_enumeration_is_empty():
    # As in Equinox; it used to show the metaclass's `(*args, **kwargs)`.
    assert str(inspect.signature(Colour)) == "()"
    assert str(inspect.signature(MoreResult)) == "()"
