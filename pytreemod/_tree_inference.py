"""`tree_inference`: Equinox's old name of `nn.inference_mode`, kept so that
code written for Equinox runs unchanged."""

import warnings
from typing import TypeVar

from .nn import inference_mode

_T = TypeVar("_T")


def tree_inference(pytree: _T, value: bool = True) -> _T:
    """Deprecated: use `pytreemod.nn.inference_mode`; kept because Equinox has it.

    Same as `pytreemod.nn.inference_mode(pytree, value)`, and warns with a
    `DeprecationWarning` that names the replacement.

    Example:
        >>> import warnings
        >>> import pytreemod
        >>> dropout = pytreemod.nn.Dropout(0.5)
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     evaluating = pytreemod.tree_inference(dropout, True)
        >>> evaluating.inference
        True
    """
    warnings.warn(
        "`equinox.tree_inference` is deprecated in favour of "
        "`equinox.nn.inference_mode`: write "
        "`pytreemod.nn.inference_mode(pytree, value)`.",
        DeprecationWarning,
        stacklevel=2,
    )
    return inference_mode(pytree, value)
