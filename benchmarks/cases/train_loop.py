"""Case `train_loop`: a training loop, each step taking the last step's outputs.

This is how a training loop is written in practice, and the case that
measures what users feel: every call is one step of `filter_jit` around
`filter_value_and_grad` of a mean squared error, an optax Adam update and
`apply_updates`, and it takes the model and optimiser state that the previous
step returned. So every call sees a new model object and new arrays: nothing
can be remembered from the last call by identity, unlike `train_step`, which
passes the same model again.

The floor is `jax.jit` of the same step over flat lists of the model's and the
optimiser state's array leaves, fed back the same way. Equinox runs the very
same source as pytreemod. NNX is written as its documentation writes a
training loop: `nnx.jit` of a step that takes the model and an `nnx.Optimizer`
and updates both in place.

Each contender's answer is the losses and final weights of `ANSWER_STEPS`
steps from the initial model, through the same compiled step as the timed
loop: taken before the timed rounds and again after them, it shows that the
caches still serve the right program after thousands of new models.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any

import jax
import optax

from .._case import FLOOR, PEERS, PYTREEMOD, Case, Contender, Setup
from .._peers import build_peers
from ._models import (
    batch_inputs,
    building_pytreemod,
    canonical_params,
    library_mlp,
    linear_answer,
    mse,
    pytreemod_features,
    split_arrays,
)

#: Adam's learning rate: small enough that a long loop on one batch stays tame.
LEARNING_RATE = 1e-3
#: Steps from the initial model that make up each contender's answer.
ANSWER_STEPS = 3


def optimiser() -> optax.GradientTransformation:
    """Adam: its state has two arrays per parameter and a step count."""
    return optax.adam(LEARNING_RATE)


def loss(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error of the model over the batch."""
    return mse(jax.vmap(model)(x), y)


class Loop:
    """A training loop that one `call` advances by a step.

    Args:
        name: The contender's name.
        step: `step(model, opt_state) -> (model, opt_state, loss)`, jitted.
        start: Returns a fresh initial `(model, opt_state)`.
        weights: The canonical `[w0, b0, ...]` of a model `step` returned.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[Any, Any], tuple[Any, Any, jax.Array]],
        start: Callable[[], tuple[Any, Any]],
        weights: Callable[[Any], list[Any]],
    ):
        self.name = name
        self.step = step
        self.start = start
        self.weights = weights
        self.model, self.opt_state = start()

    def __call__(self) -> jax.Array:
        self.model, self.opt_state, value = self.step(self.model, self.opt_state)
        return value

    def answer(self) -> list[Any]:
        """Losses and final weights of `ANSWER_STEPS` steps from a fresh start."""
        model, opt_state = self.start()
        losses = []
        for _ in range(ANSWER_STEPS):
            model, opt_state, value = self.step(model, opt_state)
            losses.append(value)
        return [*losses, *self.weights(model)]

    def contender(self) -> Contender:
        """The contender: `call` takes a step of the loop."""
        return Contender(self.name, self, self.answer)


def _library(
    name: str, lib: ModuleType, make: Callable[[], Any], x: Any, y: Any
) -> Contender:
    optim = optimiser()

    # As Equinox's documentation writes a training step.
    @lib.filter_jit
    def make_step(model: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        value, grads = lib.filter_value_and_grad(loss)(model, x, y)
        params = lib.filter(model, lib.is_array)
        updates, opt_state = optim.update(grads, opt_state, params)
        model = lib.apply_updates(model, updates)
        return model, opt_state, value

    def start() -> tuple[Any, Any]:
        model = make()
        return model, optim.init(lib.filter(model, lib.is_inexact_array))

    return Loop(
        name,
        lambda model, opt_state: make_step(model, opt_state, x, y),
        start,
        lambda model: linear_answer(model.layers),
    ).contender()


def _floor(model: Any, x: jax.Array, y: jax.Array) -> Contender:
    optim = optimiser()
    arrays, rebuild = split_arrays(model)
    opt_arrays, rebuild_opt = split_arrays(optim.init(arrays))

    @jax.jit
    def step(arrays: list, opt_arrays: list, x: jax.Array, y: jax.Array) -> Any:
        value, grads = jax.value_and_grad(lambda a: loss(rebuild(a), x, y))(arrays)
        updates, opt_state = optim.update(grads, rebuild_opt(opt_arrays), arrays)
        new_arrays = optax.apply_updates(arrays, updates)
        return new_arrays, jax.tree_util.tree_leaves(opt_state), value

    return Loop(
        FLOOR,
        lambda arrays, opt_arrays: step(arrays, opt_arrays, x, y),
        lambda: (arrays, opt_arrays),
        lambda arrays: linear_answer(rebuild(arrays).layers),
    ).contender()


def _nnx(nnx: ModuleType, depth: int, x: jax.Array, y: jax.Array) -> Contender:
    from . import _nnx_models

    tx = optimiser()
    step = _nnx_models.train_step()
    model = _nnx_models.canonical_model(_nnx_models.MLP, depth)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    def answer() -> list[Any]:
        # NNX updates in place: the answer starts from a fresh model and
        # optimiser, through the same jitted step.
        fresh = _nnx_models.canonical_model(_nnx_models.MLP, depth)
        fresh_optimizer = nnx.Optimizer(fresh, tx, wrt=nnx.Param)
        losses = [step(fresh, fresh_optimizer, x, y) for _ in range(ANSWER_STEPS)]
        return [*losses, *_nnx_models.linear_answer(fresh.layers)]

    return Contender("nnx", lambda: step(model, optimizer, x, y), answer)


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for an MLP of `depth` hidden layers."""
    ptm = pytreemod_features(
        "nn.MLP",
        "filter_jit",
        "filter_value_and_grad",
        "apply_updates",
        "filter",
        "is_array",
        "is_inexact_array",
    )
    x, y = batch_inputs()
    with building_pytreemod():
        model = library_mlp(ptm, depth, canonical_params(depth))
        mine = _library(
            PYTREEMOD,
            ptm,
            lambda: library_mlp(ptm, depth, canonical_params(depth)),
            x,
            y,
        )
    floor = _floor(model, x, y)
    built, absent = build_peers(
        {
            "equinox": lambda eqx: _library(
                "equinox",
                eqx,
                lambda: library_mlp(eqx, depth, canonical_params(depth)),
                x,
                y,
            ),
            "nnx": lambda nnx: _nnx(nnx, depth, x, y),
        },
        peers,
    )
    arrays = split_arrays(model)[0]
    leaves = len(arrays) + len(jax.tree_util.tree_leaves(optimiser().init(arrays)))
    return Setup(leaves, [mine, floor, *built], absent)


CASE = Case(
    name="train_loop",
    summary="training loop: filter_jit(value_and_grad + Adam + apply_updates), "
    "each step taking the last step's model and optimiser state",
    size_label="depth",
    sizes=(2, 8, 32),
    quick_sizes=(2, 32),
    build=build,
)
