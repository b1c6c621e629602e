# pyright: strict
"""A user's file, as type checkers see it: `tests/test_typing.py` runs pyright
(strict) and mypy on it and compares their diagnostics with the markers.

`# error` marks a line that both checkers must flag; `# reveal: TEXT` marks a
`reveal_type` whose revealed type must contain TEXT (after the test strips
module prefixes and brackets, which the two checkers spell differently);
`# unflagged` marks a mistake that neither checker can see (see below). Every
other line must be clean: in particular the `self.x = ...` lines of a custom
`__init__`, the way Modules are usually written. This file is never run:
pytest does not collect it.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from typing_extensions import reveal_type

import pytreemod as ptm


class Counter(ptm.Module):
    n: int


class Block(ptm.Module):
    weight: jax.Array
    size: int = ptm.field(static=True)
    name: str = ptm.field(static=True, default="block")


class Model(ptm.Module):
    layers: list[ptm.nn.Linear]
    scale: float

    def __init__(self, width: int, *, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.layers = [
            ptm.nn.Linear(2, width, key=k1),
            ptm.nn.Linear(width, 1, key=k2),
        ]
        self.scale = 1.0

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return self.scale * x


key = jax.random.key(0)
x, y = jax.random.normal(key, (2,)), jax.random.normal(key, (1,))

# What the checkers know about correct code.
counter = Counter(1)
reveal_type(counter)  # reveal: Counter
reveal_type(counter.n)  # reveal: int
block = Block(x, size=3)
reveal_type(block.size)  # reveal: int
reveal_type(block.name)  # reveal: str
model = Model(8, key=key)
reveal_type(model)  # reveal: Model
reveal_type(model.layers)  # reveal: list[Linear]
reveal_type(ptm.nn.Linear(2, 3, key=key))  # reveal: Linear


def loss(model: Model, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((model(x) - y) ** 2)


step = ptm.filter_jit(loss)
reveal_type(step)  # reveal: model: Model, x: Array, y: Array
reveal_type(step(model, x, y))  # reveal: Array
decorated: Callable[[Model, jax.Array, jax.Array], jax.Array] = ptm.filter_jit(
    donate="all"
)(loss)

# Nine mistakes: each one is flagged.
Counter("1")  # error: wrong field type
Counter()  # error: a missing field
Counter(1, 2)  # error: too many positional arguments
Model("8", key=key)  # error: a wrong `__init__` argument
Model(8)  # error: the keyword `key` missing
Model(8, key)  # error: a keyword-only argument passed positionally
Block(x, size="3")  # error: a static field of the wrong type
ptm.nn.Linear("2", 3, key=key)  # error: a wrong layer argument
step(model, x)  # error: the compiled function's signature is kept

# Assigning to a field of a built Module raises `FrozenInstanceError` at run
# time, but neither checker can flag it without also flagging every
# `self.x = ...` in a custom `__init__` (both treat a frozen dataclass's fields
# as read-only there too), so `Module` does not declare itself frozen to them.
counter.n = 2  # unflagged: assignment to a field of a frozen Module
