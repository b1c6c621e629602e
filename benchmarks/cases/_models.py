"""What the cases share: sizes, canonical weights, the floor's dataclasses, and
helpers to move arrays in and out of any library's model.

Every contender of a case works on the same arrays: the weights are drawn once
here (`canonical_params`) and written into each library's model by key path,
so that answers can be compared with `allclose`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._case import Contender, Unavailable

#: Width of every layer (input, hidden and output size of the MLPs).
WIDTH = 8
#: Examples in a batch.
BATCH = 4
#: The seed every case draws its weights and inputs from.
SEED = 0
#: SGD with momentum, so that the optimiser state has array leaves too.
LEARNING_RATE = 1e-2
MOMENTUM = 0.9

Params = list[tuple[jax.Array, jax.Array]]


def layer_sizes(depth: int) -> list[tuple[int, int]]:
    """`(in, out)` of each Linear layer of an MLP of `depth` hidden layers."""
    return [(WIDTH, WIDTH)] * (depth + 1)


def canonical_params(depth: int, seed: int = SEED) -> Params:
    """The weights every contender uses: `(weight (out, in), bias (out,))` per layer,
    uniform in `[-1/sqrt(in), 1/sqrt(in)]`."""
    keys = jr.split(jr.key(seed), depth + 1)
    params = []
    for (n_in, n_out), key in zip(layer_sizes(depth), keys, strict=True):
        weight_key, bias_key = jr.split(key)
        lim = 1 / math.sqrt(n_in)
        params.append(
            (
                jr.uniform(weight_key, (n_out, n_in), minval=-lim, maxval=lim),
                jr.uniform(bias_key, (n_out,), minval=-lim, maxval=lim),
            )
        )
    return params


def stack_params(many: Sequence[Params]) -> Params:
    """Stacks several models' params along a new leading axis (an ensemble)."""
    return [
        (jnp.stack([p[i][0] for p in many]), jnp.stack([p[i][1] for p in many]))
        for i in range(len(many[0]))
    ]


def batch_inputs(seed: int = SEED) -> tuple[jax.Array, jax.Array]:
    """An input batch `x` and regression targets `y`, both `(BATCH, WIDTH)`."""
    x_key, y_key = jr.split(jr.key(seed + 1))
    return jr.normal(x_key, (BATCH, WIDTH)), jr.normal(y_key, (BATCH, WIDTH))


def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error."""
    return jnp.mean((pred - y) ** 2)


# --- pytreemod ---------------------------------------------------------------


def pytreemod_features(*names: str) -> ModuleType:
    """Imports pytreemod and checks that it has every feature a case needs.

    Args:
        *names: Dotted names under `pytreemod`, e.g. `"nn.MLP"`, `"filter_jit"`.

    Returns:
        The `pytreemod` module.

    Raises:
        Unavailable: naming the first feature that is not there yet.
    """
    try:
        import pytreemod
    except Exception as e:
        raise Unavailable(f"`import pytreemod` fails ({type(e).__name__}: {e})") from e
    for name in names:
        obj: Any = pytreemod
        for part in name.split("."):
            if not hasattr(obj, part):
                raise Unavailable(f"pytreemod.{name} is not there yet")
            obj = getattr(obj, part)
    return pytreemod


@contextlib.contextmanager
def building_pytreemod() -> Iterator[None]:
    """Turns a failure while building pytreemod's objects into `Unavailable`.

    pytreemod is written alongside this suite: a half-finished feature should
    show up as an unavailable row saying what failed, not stop the whole run.
    """
    try:
        yield
    except Unavailable:
        raise
    except Exception as e:
        raise Unavailable(
            f"building the pytreemod contender failed ({type(e).__name__}: {e})"
        ) from e


# --- moving arrays in and out of models ----------------------------------------


def is_array(x: Any) -> bool:
    """Whether `x` is a JAX or NumPy array."""
    return isinstance(x, (jax.Array, np.ndarray))


def is_inexact_array(x: Any) -> bool:
    """Whether `x` is a floating or complex JAX or NumPy array."""
    return is_array(x) and jnp.issubdtype(x.dtype, jnp.inexact)


def count_arrays(tree: Any) -> int:
    """The number of array leaves of `tree`."""
    return sum(map(is_array, jax.tree_util.tree_leaves(tree)))


def split_arrays(
    tree: Any, keep: Callable[[Any], bool] = is_array
) -> tuple[list[Any], Callable[[Sequence[Any]], Any]]:
    """Splits a pytree into a flat list of its array leaves and a function that
    puts such a list back.

    This is how the floor hands a model to `jax.jit`: as a flat list of arrays,
    with everything else (treedef, functions, other leaves) closed over.

    Args:
        tree: Any pytree, of any library.
        keep: Which leaves go in the list; the rest are closed over.

    Returns:
        `(arrays, rebuild)` with `rebuild(arrays)` equal to `tree`.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    kept = [keep(leaf) for leaf in leaves]
    arrays = [leaf for leaf, k in zip(leaves, kept, strict=True) if k]
    others = [leaf for leaf, k in zip(leaves, kept, strict=True) if not k]

    def rebuild(new_arrays: Sequence[Any]) -> Any:
        arrays_it, others_it = iter(new_arrays), iter(others)
        merged = [next(arrays_it) if k else next(others_it) for k in kept]
        return jax.tree_util.tree_unflatten(treedef, merged)

    return arrays, rebuild


def replace_leaves(tree: Any, new: Mapping[str, Any]) -> Any:
    """Returns `tree` with the leaves at the given key paths replaced.

    Args:
        tree: Any pytree whose leaves have key paths (`jax.tree_util.keystr`
            form, e.g. `".layers[0].weight"`).
        new: The replacement for each key path; shapes must match.

    Returns:
        The new pytree.

    Raises:
        ValueError: a key path is not in `tree`, or a shape differs.
    """
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves, found = [], set()
    for path, leaf in with_paths:
        name = jax.tree_util.keystr(path)
        if name in new:
            if np.shape(leaf) != np.shape(new[name]):
                raise ValueError(
                    f"`{name}` has shape {np.shape(leaf)}, the replacement "
                    f"{np.shape(new[name])}"
                )
            leaf = new[name]
            found.add(name)
        leaves.append(leaf)
    missing = sorted(set(new) - found)
    if missing:
        names = [jax.tree_util.keystr(p) for p, _ in with_paths]
        raise ValueError(f"no leaf at {missing}; the leaves are at {names}")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def params_by_path(params: Params, field: str = ".layers") -> dict[str, jax.Array]:
    """`{".layers[i].weight": w, ".layers[i].bias": b}` for `replace_leaves`."""
    new = {}
    for i, (weight, bias) in enumerate(params):
        new[f"{field}[{i}].weight"] = weight
        new[f"{field}[{i}].bias"] = bias
    return new


def linear_answer(layers: Sequence[Any]) -> list[jax.Array]:
    """`[w0, b0, w1, b1, ...]` of Linear layers with `weight` and `bias`
    attributes (pytreemod, Equinox and the floor alike)."""
    return [a for layer in layers for a in (layer.weight, layer.bias)]


def library_mlp(lib: ModuleType, depth: int, params: Params) -> Any:
    """`lib.nn.MLP` (pytreemod or Equinox) of `depth`, holding `params`."""
    model = lib.nn.MLP(WIDTH, WIDTH, WIDTH, depth, key=jr.key(SEED))
    return replace_leaves(model, params_by_path(params))


def contender(
    name: str,
    call: Callable[[], Any],
    answer: Callable[[Any], Sequence[Any]],
) -> Contender:
    """A contender whose answer is `answer(call())`."""
    return Contender(name, call, lambda: answer(call()))


# --- the floor: frozen dataclasses registered with register_dataclass -----------


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["weight", "bias"],
    meta_fields=["in_features", "out_features"],
)
@dataclasses.dataclass(frozen=True)
class FloorLinear:
    """A Linear layer as a plain frozen dataclass: the least a pytree can be."""

    weight: jax.Array
    bias: jax.Array
    in_features: int
    out_features: int

    @classmethod
    def create(cls, n_in: int, n_out: int, key: jax.Array) -> FloorLinear:
        """Draws weights as `nn.Linear` does: uniform in `[-1/sqrt(in), 1/sqrt(in)]`."""
        weight_key, bias_key = jr.split(key)
        lim = 1 / math.sqrt(n_in)
        weight = jr.uniform(weight_key, (n_out, n_in), minval=-lim, maxval=lim)
        bias = jr.uniform(bias_key, (n_out,), minval=-lim, maxval=lim)
        return cls(weight, bias, n_in, n_out)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.weight @ x + self.bias


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["layers"],
    meta_fields=["activation", "final_activation"],
)
@dataclasses.dataclass(frozen=True)
class FloorMLP:
    """An MLP as plain frozen dataclasses, with the activations static."""

    layers: tuple[FloorLinear, ...]
    activation: Callable[[jax.Array], jax.Array] = jax.nn.relu
    final_activation: Callable[[jax.Array], jax.Array] = lambda x: x

    @classmethod
    def from_params(cls, params: Params) -> FloorMLP:
        """An MLP holding `params`."""
        layers = tuple(FloorLinear(w, b, w.shape[1], w.shape[0]) for w, b in params)
        return cls(layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.final_activation(self.layers[-1](x))
