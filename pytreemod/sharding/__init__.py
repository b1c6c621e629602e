"""Logical-axis sharding: name array dimensions (`pytreemod.field(axes=...)`
or rules by key path), map the names to mesh axes, and place any pytree.

    specs = pytreemod.sharding.logical_specs(model)
    model = pytreemod.sharding.shard(model, mesh, {"mlp": "model", "batch": "data"})
"""

from ._shard import named_shardings as named_shardings, shard as shard
from ._specs import logical_specs as logical_specs
