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
from ._module._field import static_field as static_field
from ._module._module import Module as Module
from ._module._module import StrictConfig as StrictConfig
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
from ._transform._filters import combine as combine
from ._transform._filters import filter as filter
from ._transform._filters import partition as partition

# --- layer 2: filter_jit ---
from ._transform._caches import clear_caches as clear_caches
from ._transform._jit import filter_jit as filter_jit

# --- layer 2: autodiff transforms and apply_updates ---
from ._transform._checkpoint import filter_checkpoint as filter_checkpoint
from ._transform._closure_convert import (
    filter_closure_convert as filter_closure_convert,
)
from ._transform._custom_jvp import filter_custom_jvp as filter_custom_jvp
from ._transform._custom_vjp import filter_custom_vjp as filter_custom_vjp
from ._transform._grad import filter_grad as filter_grad
from ._transform._grad import filter_value_and_grad as filter_value_and_grad
from ._transform._jacobian import filter_hessian as filter_hessian
from ._transform._jacobian import filter_jacfwd as filter_jacfwd
from ._transform._jacobian import filter_jacrev as filter_jacrev
from ._transform._jvp import filter_jvp as filter_jvp
from ._transform._update import apply_updates as apply_updates
from ._transform._vjp import filter_vjp as filter_vjp

# --- layer 2: vmap, pmap, eval_shape, make_jaxpr, pure_callback, shard ---
from ._transform._callback import filter_pure_callback as filter_pure_callback
from ._transform._eval_shape import filter_eval_shape as filter_eval_shape
from ._transform._make_jaxpr import filter_make_jaxpr as filter_make_jaxpr
from ._transform._pmap import filter_pmap as filter_pmap
from ._transform._shard import filter_shard as filter_shard
from ._transform._vmap import filter_vmap as filter_vmap, if_array as if_array

# --- error_if and Enumeration (pytreemod._errors, on layers 1-2) ---
from ._errors._enumeration import Enumeration as Enumeration
from ._errors._error_if import (
    branched_error_if as branched_error_if,
    error_if as error_if,
)
from ._transform._runtime_error import (
    EquinoxRuntimeError as EquinoxRuntimeError,
    EquinoxTracetimeError as EquinoxTracetimeError,
    PytreemodRuntimeError as PytreemodRuntimeError,
)

# --- on top: serialisation ---
from ._serialisation._checkpoint import (
    CheckpointMismatchWarning as CheckpointMismatchWarning,
    load as load,
    load_metadata as load_metadata,
    save as save,
)
from ._serialisation._errors import CheckpointError as CheckpointError
from ._serialisation._leaves import (
    default_deserialise_filter_spec as default_deserialise_filter_spec,
    default_serialise_filter_spec as default_serialise_filter_spec,
    tree_deserialise_leaves as tree_deserialise_leaves,
    tree_serialise_leaves as tree_serialise_leaves,
)

# The public packages on top, imported last: they build on the names above.
from . import debug as debug, nn as nn, select as select, sharding as sharding
from . import policy as policy
from . import surgery as surgery
from .nn._inference import tree_inference as tree_inference
from .sharding._summary import Summary as Summary, summary as summary

__version__ = "0.1.0"
