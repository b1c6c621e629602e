r"""Model surgery and activation capture, by selection.

Replace, wrap, remove or insert submodules of any Module (`replace`,
`insert_before`, `insert_after`), read the outputs of submodules during a
call (`capture`) or change them (`intervene`), without editing any
`__call__`; add low-rank adapters to linear layers and merge them back
(`LoRALinear`, `add_lora`, `merge_lora`). Every function takes the same
selections as `pytreemod.select`: a selector, a key-path pattern or a type,
and a selection that matches nothing is an error unless `missing_ok=True`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import pytreemod as ptm
    >>> from pytreemod import surgery
    >>> mlp = ptm.nn.MLP(2, 1, 4, 2, key=jax.random.key(0))
    >>> y, acts = surgery.capture(ptm.nn.Linear)(mlp, jnp.ones(2))
    >>> sorted(acts)
    ['.layers[0]', '.layers[1]', '.layers[2]']
"""

from .._transform._recording import CaptureError as CaptureError
from ._capture import Captured as Captured, capture as capture
from ._insert import insert_after as insert_after, insert_before as insert_before
from ._lora import (
    LoRALinear as LoRALinear,
    add_lora as add_lora,
    merge_lora as merge_lora,
)
from ._intervene import Intervened as Intervened, intervene as intervene
from ._replace import replace as replace
