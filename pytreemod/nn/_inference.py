"""`inference_mode`: set every `inference` flag in a model."""

import dataclasses
from typing import Any, TypeVar

import jax

_T = TypeVar("_T")

_INFERENCE = jax.tree_util.GetAttrKey("inference")


def _has_static_inference(node: Any) -> bool:
    return dataclasses.is_dataclass(node) and any(
        f.name == "inference" and f.metadata.get("static", False)
        for f in dataclasses.fields(node)
    )


def _set_flags(node: Any, value: bool) -> Any:
    children, treedef = jax.tree_util.tree_flatten_with_path(
        node, is_leaf=lambda x: x is not node
    )
    if jax.tree_util.treedef_is_leaf(treedef):
        return node
    new_children = [
        value if path == (_INFERENCE,) else _set_flags(child, value)
        for path, child in children
    ]
    new = treedef.unflatten(new_children)
    if _has_static_inference(new):
        # A static flag is in the treedef, not a child. `new` is a fresh copy
        # made by unflatten, so writing to it changes nothing the caller holds.
        object.__setattr__(new, "inference", value)
    return new


def inference_mode(pytree: _T, value: bool = True) -> _T:
    """A copy of `pytree` with every `inference` flag set to `value`.

    Layers that act differently in training and in evaluation (`Dropout`,
    `BatchNorm`, `SpectralNorm`, ...) have an `inference` field; this sets it
    everywhere in a model, however deeply nested, including in your own
    Modules that declare an `inference` field.

    Args:
        pytree: the model (any pytree).
        value: `True` for inference (evaluation), `False` for training.

    Returns:
        The model with the same structure and leaves, and the flags changed.

    Example:
        >>> import pytreemod
        >>> model = [pytreemod.nn.Dropout(0.5), pytreemod.nn.Dropout(0.1)]
        >>> evaluation = pytreemod.nn.inference_mode(model)
        >>> [layer.inference for layer in evaluation]
        [True, True]
        >>> training = pytreemod.nn.inference_mode(evaluation, value=False)
        >>> [layer.inference for layer in training]
        [False, False]
    """
    return _set_flags(pytree, value)


def tree_inference(pytree: _T, value: bool = True) -> _T:
    """Old name of `pytreemod.nn.inference_mode`, kept because Equinox still
    has it as `equinox.tree_inference`: prefer `pytreemod.nn.inference_mode`.

    It does exactly what `inference_mode` does. Like Equinox's, it does not
    warn: code that runs with warnings as errors keeps running.

    Args:
        pytree: the model (any pytree).
        value: `True` for inference (evaluation), `False` for training.

    Returns:
        The model with every `inference` flag set to `value`.

    Example:
        >>> import pytreemod
        >>> model = pytreemod.tree_inference([pytreemod.nn.Dropout(0.5)], True)
        >>> model[0].inference
        True
    """
    return _set_flags(pytree, value)
