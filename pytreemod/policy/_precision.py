r"""`MixedPrecision`: which dtype each part of a model is stored, computed and
returned in.

Three dtypes, as in jmp: `param` (the master weights the optimiser updates,
usually float32), `compute` (what the forward pass runs in, e.g. bfloat16)
and `output` (what the loss sees, usually float32); and ordered rules
`(selection, dtype)` that give parts of the model another compute dtype (every
norm layer in float32) or leave them as they are (`KEEP`). Only floating
arrays are ever cast: integer arrays, PRNG keys and non-array leaves are the
same objects afterwards.

Casting to the compute dtype belongs *inside* the differentiated function:
the gradient of `x.astype(bfloat16)` is cast back to `x`'s dtype, so gradients
come back in float32, the dtype of the master weights.
"""

import dataclasses
from typing import Any

import jax.tree_util as jtu
import numpy as np

from ..select._rules import Rule, first_matches, parse_rules
from ._dtypes import float_dtype, is_float_array

__all__ = ["KEEP", "MixedPrecision"]


class _Keep:
    """The rule value that leaves the selected arrays as they are."""

    _instance = None

    def __new__(cls) -> "_Keep":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "KEEP"

    def __reduce__(self) -> str:
        return "KEEP"


KEEP = _Keep()
"""Rule value of `MixedPrecision`: leave the selected arrays in the dtype they
have, in both directions (`cast_to_compute` and `cast_to_param`); they stay
the same objects."""


def _cast(x: Any, dtype: np.dtype) -> Any:
    if is_float_array(x) and x.dtype != dtype:
        return x.astype(dtype)
    return x


def _cast_all(tree: Any, dtype: np.dtype) -> Any:
    return jtu.tree_map(lambda x: _cast(x, dtype), tree)


@dataclasses.dataclass(frozen=True, init=False)
class MixedPrecision:
    r"""A mixed-precision policy: parameter, compute and output dtypes, and
    ordered rules that set the compute dtype of parts of a model.

    Args:
        param: the dtype of the master weights (what `cast_to_param` gives and
            the optimiser updates); default float32.
        compute: the dtype the forward pass runs in (`cast_to_compute`,
            `cast_inputs`); default `param`.
        output: the dtype of the outputs the loss sees (`cast_to_output`);
            default `param`.
        rules: `(selection, dtype)` pairs, in order (first match wins): the
            selected floating arrays are cast to `dtype` instead of `compute`
            by `cast_to_compute`, or left as they are with `KEEP`. A selection
            is a `pytreemod.select` selector, a key-path pattern or a type.
        missing_ok: allow rules that match nothing in the tree cast (by
            default that is an error: a typo would silently keep nothing).

    Dtypes may be given as dtypes (`jnp.bfloat16`) or names (`"bfloat16"`,
    `"bf16"`, `"f32"`). `compute`, `output` and every rule's dtype must be
    floating.

    Raises:
        TypeError: for a non-floating dtype, or a rule that is not a
            `(selection, dtype)` pair.
        ValueError: for a name that is no dtype.

    Example:
        >>> import jax, jax.numpy as jnp, pytreemod as ptm
        >>> from pytreemod import select
        >>> norms = select.instance(ptm.nn.LayerNorm, ptm.nn.RMSNorm)
        >>> policy = ptm.policy.MixedPrecision(
        ...     param="float32", compute="bfloat16", output="float32",
        ...     rules=[(norms, "float32")],
        ... )
        >>> model = [ptm.nn.Linear(4, 4, key=jax.random.key(0)), ptm.nn.LayerNorm(4)]
        >>> running = policy.cast_to_compute(model)
        >>> running[0].weight.dtype, running[1].weight.dtype
        (dtype(bfloat16), dtype('float32'))
        >>> x = policy.cast_inputs(jnp.ones(4))
        >>> y = policy.cast_to_output(running[1](running[0](x)))
        >>> x.dtype, y.dtype
        (dtype(bfloat16), dtype('float32'))
    """

    param: np.dtype
    compute: np.dtype
    output: np.dtype
    rules: tuple[Rule[Any], ...]
    missing_ok: bool

    def __init__(
        self,
        param: Any = "float32",
        compute: Any = None,
        output: Any = None,
        *,
        rules: Any = (),
        missing_ok: bool = False,
    ):
        param = float_dtype(param, "`param`")
        set_ = object.__setattr__
        set_(self, "param", param)
        for name, value in (("compute", compute), ("output", output)):
            dtype = param if value is None else float_dtype(value, f"`{name}`")
            set_(self, name, dtype)

        def check(value: Any, index: int) -> Any:
            if value is KEEP:
                return KEEP
            return float_dtype(value, f"rule {index} of `rules`: its dtype")

        set_(
            self,
            "rules",
            parse_rules(
                rules, what="`rules`", value="dtype", example='"float32"', check=check
            ),
        )
        set_(self, "missing_ok", bool(missing_ok))

    @classmethod
    def from_string(
        cls, spec: str, *, rules: Any = (), missing_ok: bool = False
    ) -> "MixedPrecision":
        """A policy from a string of comma-separated `name=dtype` pairs, as jmp
        writes them: `"params=float32,compute=bfloat16,output=float32"`. The
        names may be shortened to `p`, `c`, `o` (and `param`), the dtypes
        written as `MixedPrecision` takes them (`"bf16"`, `"f32"`).

        Raises:
            ValueError: naming the part of `spec` that is not `name=dtype` or
                whose name is not one of params, compute, output.

        Example:
            >>> import pytreemod as ptm
            >>> p = ptm.policy.MixedPrecision.from_string("p=f32,c=bf16,o=f32")
            >>> p.param.name, p.compute.name, p.output.name
            ('float32', 'bfloat16', 'float32')
        """
        names = {"p": "param", "param": "param", "params": "param"}
        names |= {"c": "compute", "compute": "compute"}
        names |= {"o": "output", "output": "output"}
        dtypes: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, equals, dtype = (x.strip() for x in part.partition("="))
            if not equals or name.lower() not in names:
                raise ValueError(
                    f"{spec!r} is not a precision policy: {part!r} should be "
                    "`name=dtype` with name one of params, compute, output (or "
                    "p, c, o), e.g. 'params=float32,compute=bfloat16,output=float32'."
                )
            dtypes[names[name.lower()]] = dtype
        return cls(**dtypes, rules=rules, missing_ok=missing_ok)

    def _leaf_dtypes(self, tree: Any, leaves: list[Any]) -> list[Any]:
        """The compute dtype (or `KEEP`, or `None`) of each of `leaves`, the
        leaves of `tree`."""
        matched = first_matches(tree, self.rules, missing_ok=self.missing_ok)
        return [
            (self.compute if rule is None else rule.value)
            if is_float_array(leaf)
            else None
            for leaf, rule in zip(leaves, matched, strict=True)
        ]

    def compute_dtypes(self, tree: Any) -> Any:
        """The compute dtype of every leaf of `tree`: a tree of its structure
        with a dtype (or `KEEP`) at every floating array and `None` at every
        other leaf. What `cast_to_compute` does, to read or test.

        Example:
            >>> import jax.numpy as jnp, pytreemod as ptm
            >>> policy = ptm.policy.MixedPrecision(
            ...     compute="bf16", rules=[(r"\\['b'\\]", ptm.policy.KEEP)]
            ... )
            >>> policy.compute_dtypes({"a": jnp.ones(2), "b": jnp.ones(2), "n": 1})
            {'a': dtype(bfloat16), 'b': KEEP, 'n': None}
        """
        leaves, treedef = jtu.tree_flatten(tree)
        out = self._leaf_dtypes(tree, leaves)
        return jtu.tree_unflatten(treedef, out)

    def cast_to_compute(self, tree: Any) -> Any:
        """`tree` (a model, or its parameters) for the forward pass: every
        floating array cast to the compute dtype its rule gives (or `compute`
        where no rule matches; left as it is under `KEEP`). Call it inside the
        function you differentiate, so that gradients come back in the
        parameters' dtype.

        Example:
            >>> import jax.numpy as jnp, pytreemod as ptm
            >>> policy = ptm.policy.MixedPrecision(compute="bfloat16")
            >>> out = policy.cast_to_compute({"w": jnp.ones(2), "step": jnp.array(3)})
            >>> out["w"].dtype, out["step"].dtype
            (dtype(bfloat16), dtype('int32'))
        """
        leaves, treedef = jtu.tree_flatten(tree)
        dtypes = self._leaf_dtypes(tree, leaves)
        out = [
            leaf if dtype is None or dtype is KEEP else _cast(leaf, dtype)
            for leaf, dtype in zip(leaves, dtypes, strict=True)
        ]
        return jtu.tree_unflatten(treedef, out)

    def cast_to_param(self, tree: Any) -> Any:
        """Every floating array of `tree` cast to `param`, except those a
        `KEEP` rule selects.

        Example:
            >>> import jax.numpy as jnp, pytreemod as ptm
            >>> policy = ptm.policy.MixedPrecision(compute="bfloat16")
            >>> policy.cast_to_param(jnp.ones(2, jnp.bfloat16)).dtype
            dtype('float32')
        """
        keep = [r for r in self.rules if r.value is KEEP]
        if not keep:
            return _cast_all(tree, self.param)
        matched = first_matches(tree, tuple(keep), missing_ok=True)
        leaves, treedef = jtu.tree_flatten(tree)
        out = [
            leaf if rule is not None else _cast(leaf, self.param)
            for leaf, rule in zip(leaves, matched, strict=True)
        ]
        return jtu.tree_unflatten(treedef, out)

    def cast_inputs(self, tree: Any) -> Any:
        """Every floating array of `tree` (a batch, say) cast to `compute`.

        Example:
            >>> import jax.numpy as jnp, pytreemod as ptm
            >>> ptm.policy.MixedPrecision(compute="bf16").cast_inputs(jnp.ones(2)).dtype
            dtype(bfloat16)
        """
        return _cast_all(tree, self.compute)

    def cast_to_output(self, tree: Any) -> Any:
        """Every floating array of `tree` (a model's output) cast to `output`.

        Example:
            >>> import jax.numpy as jnp, pytreemod as ptm
            >>> policy = ptm.policy.MixedPrecision(compute="bf16", output="f32")
            >>> policy.cast_to_output(jnp.ones(2, jnp.bfloat16)).dtype
            dtype('float32')
        """
        return _cast_all(tree, self.output)
