"""pytreemod: neural networks as frozen dataclasses that are JAX pytrees.

Write a model as a `Module` (a frozen dataclass that is a pytree), transform it
with the filtered transforms (`filter_jit`, `filter_grad`, `filter_vmap`, ...)
that split arrays from everything else by themselves, and keep mutable values
in an explicit `pytreemod.nn.State`.
"""

# --- layer 1: the Module core ---
from ._module._abstract import (
    AbstractClassVar as AbstractClassVar,
    AbstractVar as AbstractVar,
)
from ._module._field import field as field
from ._module._module import Module as Module
from ._module._partial import (
    Partial as Partial,
    module_update_wrapper as module_update_wrapper,
)

# --- layer 1: tree utilities ---
from ._module._is_array import (
    is_array as is_array,
    is_array_like as is_array_like,
    is_inexact_array as is_inexact_array,
    is_inexact_array_like as is_inexact_array_like,
)
from ._module._pformat import tree_pformat as tree_pformat
from ._module._pformat import tree_pprint as tree_pprint
from ._module._tree_at import tree_at as tree_at
from ._module._tree_check import tree_check as tree_check
from ._module._tree_equal import tree_equal as tree_equal
from ._module._tree_flatten_one_level import (
    tree_flatten_one_level as tree_flatten_one_level,
)

# --- layer 2: filters ---
# --- layer 2: filter_jit ---
# --- layer 2: autodiff transforms and apply_updates ---
# --- layer 2: vmap, pmap, eval_shape, make_jaxpr, pure_callback, shard ---
# --- on top: serialisation ---

# The public packages on top, imported last: they build on the names above.
from . import debug as debug, nn as nn

__version__ = "0.1.0"
