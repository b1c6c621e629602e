r"""Select parts of any pytree by key path, type, field name or value.

One mechanism for everything that targets parts of a model: optimiser masks
and labels (freezing, parameter groups, weight decay), sharding rules, dtype
policies, re-initialisation. A selector is built once and applied to a tree
when a step is built or traced, never per call.

Example:
    >>> import jax, pytreemod as ptm
    >>> from pytreemod import select
    >>> mlp = ptm.nn.MLP(2, 1, 8, 2, key=jax.random.key(0))
    >>> head = select.path(r"\.layers\[2\]")
    >>> decay = select.field("weight") & ~head
    >>> [p for p, _ in decay.pairs(mlp)]
    ['.layers[0].weight', '.layers[1].weight']
"""

from ._rules import Labels as Labels, labels as labels
from ._selector import (
    Selector as Selector,
    everything as everything,
    field as field,
    instance as instance,
    path as path,
    where as where,
)
