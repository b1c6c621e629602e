"""Case `tracing`: 1,000 calls with the same structure trace exactly once.

Each call passes a different model instance (4 MLPs of the same structure and
different weights, in turn) and a different input batch, as a training loop
does. After the timed rounds, calls are topped up to at least 1,000 and the
number of traces is asserted to be exactly 1: for pytreemod and Equinox with
`debug.get_num_traces` of a function wrapped in `debug.assert_max_traces`,
for the floor and NNX with a counter in the traced function. The reported
time is per call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from types import ModuleType
from typing import Any

import jax

from .._case import FLOOR, PEERS, PYTREEMOD, Case, Contender, Setup
from .._peers import build_peers
from ._models import (
    batch_inputs,
    building_pytreemod,
    canonical_params,
    library_mlp,
    pytreemod_features,
    split_arrays,
)
from .jit_forward import forward

#: The calls each contender must make, all with one trace.
CALLS = 1_000
#: Distinct model instances and input batches, used in turn.
POOL = 4

TRACED_AGAIN = """\
Case `tracing`: `{name}` traced {traces} times over {calls} calls whose arguments
all have the same structure; it should trace exactly once. A cache key that
changes from call to call (an identity, a fresh object hashed by id, a value
that should be static but is traced, or the reverse) makes every new model
instance retrace."""


class Counted:
    """Calls a contender's function over a pool of arguments, counting calls.

    Args:
        name: The contender's name.
        fn: The jitted function.
        pool: Argument tuples, used in turn.
        traces: Returns how many times `fn` has been traced so far.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        pool: Sequence[tuple[Any, ...]],
        traces: Callable[[], int],
    ):
        self.name = name
        self.fn = fn
        self.cycle = itertools.cycle(pool)
        self.pool = pool
        self.traces = traces
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.fn(*next(self.cycle))

    def contender(self) -> Contender:
        """The contender; its answer is the output for the pool's first entry."""
        return Contender(self.name, self, lambda: [self.fn(*self.pool[0])])

    def finish(self) -> None:
        """Tops the calls up to `CALLS`, then asserts there was one trace."""
        while self.calls < CALLS:
            self()
        jax.block_until_ready(self.fn(*self.pool[0]))
        if self.traces() != 1:
            raise AssertionError(
                TRACED_AGAIN.format(
                    name=self.name, traces=self.traces(), calls=self.calls
                )
            )


def inputs() -> list[jax.Array]:
    """`POOL` different input batches."""
    return [batch_inputs(seed=s)[0] for s in range(POOL)]


def _library(name: str, lib: ModuleType, depth: int) -> Counted:
    pool = [
        (library_mlp(lib, depth, canonical_params(depth, seed=s)), x)
        for s, x in enumerate(inputs())
    ]

    # A fresh function for each build: trace counts are kept per function.
    def body(model: Any, x: jax.Array) -> jax.Array:
        return forward(model, x)

    traced = lib.debug.assert_max_traces(body, max_traces=1)
    return Counted(
        name, lib.filter_jit(traced), pool, lambda: lib.debug.get_num_traces(traced)
    )


def _counting(fn: Callable[..., Any]) -> tuple[Callable[..., Any], list[int]]:
    """`fn` wrapped to count how often it runs (that is, is traced under jit)."""
    count = [0]

    def counted(*args: Any) -> Any:
        count[0] += 1
        return fn(*args)

    return counted, count


def _nnx(nnx: ModuleType, depth: int) -> Counted:
    from . import _nnx_models

    pool = []
    for s, x in enumerate(inputs()):
        model = _nnx_models.canonical_model(_nnx_models.MLP, depth, seed=s)
        pool.append((model, x))
    counted, count = _counting(lambda model, x: model(x))
    return Counted("nnx", nnx.jit(counted), pool, lambda: count[0])


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for MLPs of `depth` hidden layers."""
    ptm = pytreemod_features(
        "nn.MLP", "filter_jit", "debug.assert_max_traces", "debug.get_num_traces"
    )
    with building_pytreemod():
        mine = _library(PYTREEMOD, ptm, depth)
    floor_pool = []
    rebuild = None
    for model, x in mine.pool:
        arrays, rebuild = split_arrays(model)
        floor_pool.append((arrays, x))
    assert rebuild is not None
    counted, count = _counting(lambda arrays, x: forward(rebuild(arrays), x))
    floor = Counted(FLOOR, jax.jit(counted), floor_pool, lambda: count[0])
    counters = [mine, floor]

    def peer(make: Callable[[], Counted]) -> Contender:
        counter = make()
        counters.append(counter)
        return counter.contender()

    built, absent = build_peers(
        {
            "equinox": lambda eqx: peer(lambda: _library("equinox", eqx, depth)),
            "nnx": lambda nnx: peer(lambda: _nnx(nnx, depth)),
        },
        peers,
    )

    def after() -> None:
        for counter in counters:
            counter.finish()

    return Setup(
        len(floor_pool[0][0]),
        [mine.contender(), floor.contender(), *built],
        absent,
        after,
    )


CASE = Case(
    name="tracing",
    summary="1,000 calls of filter_jit, new model instance each call, one trace",
    size_label="depth",
    sizes=(8,),
    quick_sizes=(8,),
    build=build,
)
