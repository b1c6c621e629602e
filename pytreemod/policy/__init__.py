r"""Training policies set from selections (`pytreemod.select`): mixed
precision with loss scaling, and re-initialisation.

Example:
    >>> import jax, pytreemod as ptm
    >>> from pytreemod import select
    >>> policy = ptm.policy.MixedPrecision(
    ...     compute="bfloat16", rules=[(select.instance(ptm.nn.LayerNorm), "float32")]
    ... )
    >>> model = [ptm.nn.Linear(2, 2, key=jax.random.key(0)), ptm.nn.LayerNorm(2)]
    >>> [str(leaf.dtype) for leaf in jax.tree.leaves(policy.cast_to_compute(model))]
    ['bfloat16', 'bfloat16', 'float32', 'float32']
"""

from ._precision import KEEP as KEEP, MixedPrecision as MixedPrecision
from ._finite import all_finite as all_finite, select_tree as select_tree
from ._loss_scale import (
    DynamicLossScale as DynamicLossScale,
    NoOpLossScale as NoOpLossScale,
    StaticLossScale as StaticLossScale,
)
from ._initialise import initialise as initialise, path_key as path_key
