"""`tree_pformat` / `tree_pprint`: layout and how each kind of object prints."""

import dataclasses
import functools
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from typing import Any, List, Optional  # noqa: UP035 - printing these

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pytreemod import Module, Partial, field, tree_pformat, tree_pprint


class Linear(Module):
    weight: jax.Array
    bias: jax.Array | None
    in_features: int = field(static=True)
    out_features: int = field(static=True)

    def __call__(self, x):
        return self.weight @ x + self.bias


class MLP(Module):
    layers: tuple
    activation: Callable
    depth: int = field(static=True)


def _linear(n_in, n_out):
    return Linear(jnp.zeros((n_out, n_in)), jnp.zeros(n_out), n_in, n_out)


def _mlp():
    return MLP((_linear(2, 4), _linear(4, 3)), jax.nn.relu, 2)


MLP_AT_80 = """\
MLP(
  layers=(
    Linear(weight=f32[4,2], bias=f32[4], in_features=2, out_features=4),
    Linear(weight=f32[3,4], bias=f32[3], in_features=4, out_features=3)
  ),
  activation=<function relu>,
  depth=2
)"""

MLP_AT_20 = """\
MLP(
  layers=(
    Linear(
      weight=f32[4,2],
      bias=f32[4],
      in_features=2,
      out_features=4
    ),
    Linear(
      weight=f32[3,4],
      bias=f32[3],
      in_features=4,
      out_features=3
    )
  ),
  activation=<function relu>,
  depth=2
)"""


# Between "all on one line" and "one child per line", a group whose children
# fit together on one indented line puts them there (as Equinox does). As in
# Equinox, the last child of a split group has no comma after it.
MLP_AT_70 = """\
MLP(
  layers=(
    Linear(
      weight=f32[4,2], bias=f32[4], in_features=2, out_features=4
    ),
    Linear(
      weight=f32[3,4], bias=f32[3], in_features=4, out_features=3
    )
  ),
  activation=<function relu>,
  depth=2
)"""


@pytest.mark.parametrize(
    "width, expected", [(80, MLP_AT_80), (70, MLP_AT_70), (20, MLP_AT_20)]
)
def test_a_small_mlp(width, expected):
    assert tree_pformat(_mlp(), width=width) == expected


def test_module_repr_is_tree_pformat():
    assert repr(_mlp()) == MLP_AT_80


def test_indent():
    out = tree_pformat({"a": [1, 2]}, width=8, indent=4)
    assert out == "{\n    'a': [\n        1,\n        2\n    ]\n}"


def test_lines_fit_the_width_where_they_can():
    tree = {"layer": _linear(3, 5), "items": list(range(12))}
    for width in (20, 40, 60):
        lines = tree_pformat(tree, width=width).splitlines()
        assert len(lines) > 1
        assert all(len(line) <= width for line in lines)


def test_one_line_when_it_fits_exactly():
    # "[1, 2, 3]" is 9 characters.
    assert tree_pformat([1, 2, 3], width=9) == "[1, 2, 3]"
    assert tree_pformat([1, 2, 3], width=8) == "[\n  1,\n  2,\n  3\n]"


Point = namedtuple("Point", "x y")


@dataclasses.dataclass
class Plain:
    a: int
    hidden: int = dataclasses.field(default=0, repr=False)


class Fn(Module):
    def method(self, x):
        return x


def _f(x, y=0):
    return x


@pytest.mark.parametrize(
    "obj, expected",
    [
        (jnp.zeros((8, 8)), "f32[8,8]"),
        (jnp.zeros((), jnp.int32), "i32[]"),
        (jnp.zeros(2, jnp.bfloat16), "bf16[2]"),
        (jnp.zeros(2, jnp.bool_), "bool[2]"),
        (jnp.zeros(2, jnp.complex64), "c64[2]"),
        (jnp.zeros(2, jnp.uint8), "u8[2]"),
        (np.zeros((8, 8), np.float32), "f32[8,8](numpy)"),
        (np.float64(1.0), "np.float64(1.0)"),  # a NumPy scalar by its repr
        (np.int32(3), "np.int32(3)"),
        (jax.random.key(0), "key<fry>[]"),
        (
            jax.ShapeDtypeStruct((2,), jnp.float32),
            "ShapeDtypeStruct(shape=(2,), dtype=float32)",
        ),
        ((1,), "(1,)"),
        ((), "()"),
        ([], "[]"),
        ({}, "{}"),
        ([None, "s", 1.5, True], "[None, 's', 1.5, True]"),
        ({1: (2, 3), "k": [4]}, "{1: (2, 3), 'k': [4]}"),
        (Point(1, (2,)), "Point(x=1, y=(2,))"),
        (OrderedDict(a=1), "OrderedDict({'a': 1})"),
        (Plain(1, 2), "Plain(a=1)"),
        (_f, "<function _f>"),
        (print, "<built-in function print>"),
        (jax.nn.relu, "<function relu>"),
        (jax.jit(_f), "<function _f>"),
        (Fn().method, "<bound method Fn.method>"),
        (Plain(1).__eq__, "<bound method Plain.__eq__>"),
        (Point._make, "<bound method Point._make>"),
        (functools.partial(_f, 1, y=2), "partial(<function _f>, 1, y=2)"),
        (jax.tree_util.Partial(_f, jnp.ones(2)), "Partial(<function _f>, f32[2])"),
        (Partial(_f, 1), "Partial(func=<function _f>, args=(1,), keywords={})"),
        (Plain, f"{__name__}.Plain"),
        (object, "object"),
        (type(None), "None"),
        (jnp.float32, "jax.numpy.float32"),
        (Any, "Any"),
        (int | None, "int | None"),
        (Optional[str], "str | None"),  # noqa: UP045 - printed as the new spelling
        (list[int], "list[int]"),
        (List[Plain], f"list[{__name__}.Plain]"),  # noqa: UP006
        (..., "..."),
        ({1}, "{1}"),
        (set(), "set()"),
        (frozenset({jnp.float32}), "frozenset({jax.numpy.float32})"),
    ],
)
def test_how_objects_print(obj, expected):
    assert tree_pformat(obj) == expected


def test_short_arrays_false_prints_values_aligned():
    out = tree_pformat({"a": jnp.ones((2, 2))}, short_arrays=False)
    assert out == (
        "{\n  'a': Array([[1., 1.],\n              [1., 1.]], dtype=float32)\n}"
    )


def test_struct_as_array():
    struct = jax.ShapeDtypeStruct((2, 3), jnp.int8)
    assert tree_pformat([struct], struct_as_array=True) == "[i8[2,3]]"


def test_truncate_leaf():
    tree = [_linear(2, 2), 1]
    out = tree_pformat(tree, truncate_leaf=lambda x: isinstance(x, Linear))
    assert out == "[Linear(...), 1]"


@pytest.mark.parametrize("kind", ["list", "dict", "module"])
def test_recursive_structures_do_not_loop(kind):
    if kind == "list":
        obj = [1]
        obj.append(obj)
        expected = "[1, <recursive>]"
    elif kind == "dict":
        obj = {"a": 1}
        obj["self"] = obj
        expected = "{'a': 1, 'self': <recursive>}"
    else:
        holder = []
        obj = MLP((holder,), print, 1)
        holder.append(obj)
        expected = (
            "MLP(layers=([<recursive>],), activation=<built-in function print>, "
            "depth=1)"
        )
    assert tree_pformat(obj) == expected


def test_repeated_but_not_recursive_objects_print_in_full():
    shared = [1, 2]
    assert tree_pformat([shared, shared]) == "[[1, 2], [1, 2]]"


def test_a_field_not_yet_set_prints_as_uninitialised():
    plain = Plain(1)
    del plain.a
    assert tree_pformat(plain) == "Plain(a=<uninitialised>)"


def test_tree_pprint_prints_the_same(capsys):
    tree_pprint(_mlp(), width=20)
    assert capsys.readouterr().out == MLP_AT_20 + "\n"


def test_module_with_its_own_repr_prints_with_it():
    # Regression: nested Modules that override __repr__ (e.g. enumeration
    # items) were printed field by field, ignoring their repr.
    class Named(Module):
        value: int

        def __repr__(self):
            return f"Named<{self.value}>"

    assert tree_pformat([Named(1)]) == "[Named<1>]"


def test_a_deep_mlp_prints_a_layer_per_line_group():
    # A regression: each field of a layer went on its own line once the layer
    # passed 80 columns, twice as long as Equinox's 39 lines for this model.
    from pytreemod import nn

    mlp = nn.MLP(2, 1, 8, 8, key=jax.random.key(0))
    lines = repr(mlp).splitlines()
    assert len(lines) <= 40
    assert all(len(line) <= 80 for line in lines)
    assert lines[3].strip() == (
        "weight=f32[8,2], bias=f32[8], in_features=2, out_features=8, use_bias=True"
    )


def test_a_model_nested_deeply_stays_within_the_width():
    tree = _linear(2, 2)
    for _ in range(12):
        tree = MLP((tree, _linear(3, 3)), jax.nn.relu, 2)
    lines = tree_pformat(tree).splitlines()
    assert max(len(line) for line in lines) <= 80
    assert sum("Linear(" in line for line in lines) == 13


@pytest.mark.parametrize(
    "obj, expected",
    [
        (jnp.array(1), "weak_i32[]"),
        (jnp.array(1.0), "weak_f32[]"),
        (jnp.array([1.0]), "f32[1]"),
        (jnp.array(1, jnp.int32), "i32[]"),
        (jax.ShapeDtypeStruct((), jnp.float32, weak_type=True), "weak_f32[]"),
    ],
)
def test_weak_types_say_so(obj, expected):
    assert tree_pformat(obj, struct_as_array=True) == expected


def test_weak_types_inside_a_trace():
    seen = []
    jax.jit(lambda x: seen.append(tree_pformat((x, x * 2.0))))(1.0)
    assert seen == ["(weak_f32[], weak_f32[])"]


def _outer():
    def inner(x):
        return x

    @functools.wraps(inner)
    def wrapper(x):
        return inner(x)

    return inner, wrapper


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: _outer()[0], "<function _outer.<locals>.inner>"),
        (lambda: _outer()[1], "<wrapped function _outer.<locals>.inner>"),
        (lambda: lambda x: x, "<function <lambda>.<locals>.<lambda>>"),
        (lambda: jax.vmap(_f), "<wrapped function _f>"),
        (lambda: jax.custom_jvp(_f), "<function _f>"),
        (lambda: jax.custom_vjp(_f), "<function _f>"),
        (lambda: Fn.method, "<function Fn.method>"),
        (
            lambda: functools.partial(_outer()[0]),
            "partial(<function _outer.<locals>.inner>)",
        ),
    ],
)
def test_functions_print_by_qualified_name(make, expected):
    assert tree_pformat(make()) == expected


class Defaults(Module):
    a: tuple = ()
    b: object = None
    c: int = 7
    d: list = field(default_factory=list)
    e: float = 0.5


@pytest.mark.parametrize(
    "obj, expected",
    [
        (Defaults(), "Defaults(d=[])"),
        (Defaults(c=8), "Defaults(c=8, d=[])"),
        # Equal to the default is not enough: it must be the default itself.
        (Defaults(e=float("0.5")), "Defaults(d=[], e=0.5)"),
        (Defaults(a=[]), "Defaults(a=[], d=[])"),
    ],
)
def test_fields_holding_their_default_are_left_out(obj, expected):
    # As in Equinox: a field whose value is its default object is not printed.
    assert tree_pformat(obj) == expected


def test_private_field_names_print_as_written():
    class Secret(Module):
        __key: int

        def __init__(self):
            self.__key = 1

    assert tree_pformat(Secret()) == "Secret(__key=1)"


def test_a_lone_tuple_element_keeps_its_comma_when_split():
    assert tree_pformat(("x" * 90,)) == "(\n  '" + "x" * 90 + "',\n)"
