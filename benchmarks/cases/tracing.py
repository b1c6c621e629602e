"""Case `tracing`: 1,000 calls, each with a new model, trace exactly once.

Each call passes a new model (a new object, equal to the last: the same
structure and arrays, as a training loop hands each step a new model) and one
of a few input batches in turn. The new models are built before each timed
batch, untimed (`Contender.prepare`), so what is timed is the call alone. After
the timed rounds, calls are topped up to at least 1,000 and the number of
traces is asserted to be exactly 1: for pytreemod and Equinox with
`debug.get_num_traces` of a function wrapped in `debug.assert_max_traces`, for
the floor and NNX with a counter in the traced function. The reported time is
per call.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Collection
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
#: Input batches, used in turn.
INPUTS = 4

TRACED_AGAIN = """\
Case `tracing`: `{name}` traced {traces} times over {calls} calls whose arguments
all have the same structure; it should trace exactly once. A cache key that
changes from call to call (an identity, a fresh object hashed by id, a value
that should be static but is traced, or the reverse) makes every new model
instance retrace."""


class Counted:
    """Calls a contender's function with a new model each time, counting calls.

    Args:
        name: The contender's name.
        fn: The jitted function, `fn(model, x)`.
        renew: Returns a new model equal to the first one (a new object).
        traces: Returns how many times `fn` has been traced so far.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        renew: Callable[[], Any],
        traces: Callable[[], int],
    ):
        self.name = name
        self.fn = fn
        self.renew = renew
        self.traces = traces
        self.inputs = [batch_inputs(seed=s)[0] for s in range(INPUTS)]
        self.cycle = itertools.cycle(self.inputs)
        self.ready: collections.deque[tuple[Any, jax.Array]] = collections.deque()
        self.calls = 0

    def prepare(self, calls: int) -> None:
        """Builds the arguments of the next `calls` calls (untimed)."""
        self.ready.clear()
        self.ready.extend((self.renew(), next(self.cycle)) for _ in range(calls))

    def __call__(self) -> Any:
        self.calls += 1
        if self.ready:
            return self.fn(*self.ready.popleft())
        return self.fn(self.renew(), next(self.cycle))

    def contender(self) -> Contender:
        """The contender; its answer is the output for a new model and the
        first input batch."""
        return Contender(
            self.name,
            self,
            lambda: [self.fn(self.renew(), self.inputs[0])],
            self.prepare,
        )

    def finish(self) -> None:
        """Tops the calls up to `CALLS`, then asserts there was one trace."""
        while self.calls < CALLS:
            self()
        jax.block_until_ready(self.fn(self.renew(), self.inputs[0]))
        if self.traces() != 1:
            raise AssertionError(
                TRACED_AGAIN.format(
                    name=self.name, traces=self.traces(), calls=self.calls
                )
            )


def renewer(model: Any) -> Callable[[], Any]:
    """A function returning a new object equal to `model` each call: its
    leaves put back into its structure, as any transform's output is built."""
    leaves, treedef = jax.tree_util.tree_flatten(model)
    return lambda: jax.tree_util.tree_unflatten(treedef, leaves)


def _library(name: str, lib: ModuleType, depth: int) -> Counted:
    model = library_mlp(lib, depth, canonical_params(depth))

    # A fresh function for each build: trace counts are kept per function.
    def body(model: Any, x: jax.Array) -> jax.Array:
        return forward(model, x)

    traced = lib.debug.assert_max_traces(body, max_traces=1)
    return Counted(
        name,
        lib.filter_jit(traced),
        renewer(model),
        lambda: lib.debug.get_num_traces(traced),
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

    model = _nnx_models.canonical_model(_nnx_models.MLP, depth)
    graphdef, state = nnx.split(model)
    counted, count = _counting(lambda model, x: model(x))
    # A new NNX model object each call, as `nnx.merge` of the same state.
    return Counted(
        "nnx", nnx.jit(counted), lambda: nnx.merge(graphdef, state), lambda: count[0]
    )


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for MLPs of `depth` hidden layers."""
    ptm = pytreemod_features(
        "nn.MLP", "filter_jit", "debug.assert_max_traces", "debug.get_num_traces"
    )
    with building_pytreemod():
        mine = _library(PYTREEMOD, ptm, depth)
        arrays, rebuild = split_arrays(mine.renew())
    counted, count = _counting(lambda arrays, x: forward(rebuild(arrays), x))
    # The floor's new argument each call is a new list of the same arrays.
    floor = Counted(FLOOR, jax.jit(counted), lambda: list(arrays), lambda: count[0])
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
        len(arrays), [mine.contender(), floor.contender(), *built], absent, after
    )


CASE = Case(
    name="tracing",
    summary="1,000 calls of filter_jit, a new (equal) model each call, one trace",
    size_label="depth",
    sizes=(8,),
    quick_sizes=(8,),
    build=build,
)
