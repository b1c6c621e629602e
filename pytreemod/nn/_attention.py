"""`MultiheadAttention`: scaled dot-product attention with several heads."""

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._module._field import field
from .._module._module import Module
from ._dropout import Dropout
from ._init import resolve_dtype
from ._linear import Linear, check_layer_axes

ProcessHeads = Callable[
    [jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]
]


_DETERMINISTIC = (
    "MultiheadAttention()(deterministic=...) is deprecated in favour of "
    "MultiheadAttention()(inference=...)"
)


_PROJECTIONS = ("query", "key", "value", "output")

AttentionAxes = Mapping[str, tuple[str | None, str | None] | None]


def _projection_axes(axes: AttentionAxes | None) -> dict[str, Any]:
    """`MultiheadAttention(axes=...)` checked: a mapping from some of
    `_PROJECTIONS` to the `axes=` of that projection's `Linear`."""
    if axes is None:
        return {}
    if not isinstance(axes, Mapping):
        raise TypeError(
            "`MultiheadAttention(axes=...)` must be a dict from 'query', 'key', "
            "'value', 'output' to each projection's `Linear(axes=...)`, e.g. "
            '`{"query": ("heads", "embed"), ..., "output": ("embed", "heads")}`; '
            f"got {axes!r}."
        )
    unknown = sorted(set(axes) - set(_PROJECTIONS), key=str)
    if unknown:
        raise ValueError(
            f"`MultiheadAttention(axes=...)` has unknown keys {unknown}; the "
            "projections are 'query', 'key', 'value' and 'output'."
        )
    return {
        name: check_layer_axes(
            "MultiheadAttention",
            names,
            ("out", "in"),
            what=f"`MultiheadAttention(axes={{{name!r}: ...}})`",
        )
        for name, names in axes.items()
    }


class MultiheadAttention(Module):
    """Multi-head scaled dot-product attention over one example.

    The query, key and value sequences are each projected by a `Linear` map
    (without bias by default) into `num_heads` heads; each head `i` computes
    `softmax(Q_i K_i^T / sqrt(qk_size)) V_i`, where masked-out positions get
    no weight; the heads are concatenated and projected to `output_size`.
    Dropout, if `dropout_p > 0`, acts on the attention weights.

    Args:
        num_heads: the number of heads.
        query_size: the number of channels of the query.
        key_size: the number of channels of the key; defaults to `query_size`.
        value_size: the number of channels of the value; defaults to
            `query_size`.
        output_size: the number of output channels; defaults to `query_size`.
        qk_size: the channels per head in which query and key are compared;
            defaults to `query_size // num_heads`.
        vo_size: the channels per head of the projected values; defaults to
            `query_size // num_heads`.
        use_query_bias: whether the query projection has a bias.
        use_key_bias: whether the key projection has a bias.
        use_value_bias: whether the value projection has a bias.
        use_output_bias: whether the output projection has a bias.
        dropout_p: the dropout probability on the attention weights.
        inference: if `True`, dropout is off; `pytreemod.nn.inference_mode`
            sets it, and the `inference` argument of a call overrides it.
        dtype: the dtype of the parameters; defaults to `float32` (`float64`
            when JAX runs with `jax_enable_x64`).
        key: a `jax.random` key for the initialisation (keyword only).
        axes: optional logical axis names for `pytreemod.sharding` (keyword
            only): a dict from `"query"`, `"key"`, `"value"`, `"output"` to
            that projection's `Linear(axes=(out_name, in_name))`; a projection
            left out is unnamed. The usual tensor-parallel layout splits the
            heads:
            `{"query": ("heads", "embed"), "key": ("heads", "embed"),
            "value": ("heads", "embed"), "output": ("embed", "heads")}`.
            Default `None`: all unnamed (replicated). Static metadata, held by
            the projections: it adds no leaf.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> attention = eqx.nn.MultiheadAttention(num_heads=2, query_size=8,
        ...                                       key=jax.random.key(0))
        >>> x = jnp.ones((5, 8))  # (sequence length, channels)
        >>> causal = jnp.tril(jnp.ones((5, 5), dtype=bool))
        >>> attention(x, x, x, mask=causal).shape
        (5, 8)
    """

    query_proj: Linear
    key_proj: Linear
    value_proj: Linear
    output_proj: Linear
    dropout: Dropout

    num_heads: int = field(static=True)
    query_size: int = field(static=True)
    key_size: int = field(static=True)
    value_size: int = field(static=True)
    output_size: int = field(static=True)
    qk_size: int = field(static=True)
    vo_size: int = field(static=True)
    use_query_bias: bool = field(static=True)
    use_key_bias: bool = field(static=True)
    use_value_bias: bool = field(static=True)
    use_output_bias: bool = field(static=True)

    def __init__(
        self,
        num_heads: int,
        query_size: int,
        key_size: int | None = None,
        value_size: int | None = None,
        output_size: int | None = None,
        qk_size: int | None = None,
        vo_size: int | None = None,
        use_query_bias: bool = False,
        use_key_bias: bool = False,
        use_value_bias: bool = False,
        use_output_bias: bool = False,
        dropout_p: float = 0.0,
        inference: bool = False,
        dtype: Any = None,
        *,
        key: jax.Array,
        axes: AttentionAxes | None = None,
    ):
        names = _projection_axes(axes)
        if (
            isinstance(num_heads, bool)
            or not isinstance(num_heads, int)
            or num_heads < 1
        ):
            raise ValueError(f"`num_heads` must be a positive int; got {num_heads!r}.")
        key_size = query_size if key_size is None else key_size
        value_size = query_size if value_size is None else value_size
        output_size = query_size if output_size is None else output_size
        qk_size = query_size // num_heads if qk_size is None else qk_size
        vo_size = query_size // num_heads if vo_size is None else vo_size
        for name, size in (("qk_size", qk_size), ("vo_size", vo_size)):
            if size < 1:
                raise ValueError(
                    f"`{name}` is {size}: with num_heads={num_heads} and "
                    f"query_size={query_size} it defaults to "
                    "`query_size // num_heads`. Pass it explicitly, e.g. "
                    f"`{name}=16`, or use fewer heads."
                )
        dtype = resolve_dtype(dtype)
        query_key, key_key, value_key, output_key = jr.split(key, 4)
        self.query_proj = Linear(
            query_size,
            num_heads * qk_size,
            use_query_bias,
            dtype,
            key=query_key,
            axes=names.get("query"),
        )
        self.key_proj = Linear(
            key_size,
            num_heads * qk_size,
            use_key_bias,
            dtype,
            key=key_key,
            axes=names.get("key"),
        )
        self.value_proj = Linear(
            value_size,
            num_heads * vo_size,
            use_value_bias,
            dtype,
            key=value_key,
            axes=names.get("value"),
        )
        self.output_proj = Linear(
            num_heads * vo_size,
            output_size,
            use_output_bias,
            dtype,
            key=output_key,
            axes=names.get("output"),
        )
        self.dropout = Dropout(dropout_p, inference=inference)
        self.num_heads = num_heads
        self.query_size = query_size
        self.key_size = key_size
        self.value_size = value_size
        self.output_size = output_size
        self.qk_size = qk_size
        self.vo_size = vo_size
        self.use_query_bias = use_query_bias
        self.use_key_bias = use_key_bias
        self.use_value_bias = use_value_bias
        self.use_output_bias = use_output_bias

    def _name(self) -> str:
        return (
            f"MultiheadAttention(num_heads={self.num_heads}, "
            f"query_size={self.query_size})"
        )

    def _check_inputs(
        self, query: jax.Array, key_: jax.Array, value: jax.Array, mask: Any
    ) -> None:
        name = self._name()
        for arg, x, size, seq in (
            ("query", query, self.query_size, "query_seq_length"),
            ("key_", key_, self.key_size, "kv_seq_length"),
            ("value", value, self.value_size, "kv_seq_length"),
        ):
            shape = tuple(np.shape(x))
            if len(shape) != 2 or shape[1] != size:
                hint = ""
                if len(shape) == 3 and shape[2] == size:
                    hint = (
                        " It looks like a batch of sequences: attention acts on one "
                        "example; map it over the batch with `jax.vmap` or "
                        "`pytreemod.filter_vmap`."
                    )
                raise ValueError(
                    f"{name}: `{arg}` must have shape ({seq}, {size}); got shape "
                    f"{shape}.{hint}"
                )
        if key_.shape[0] != value.shape[0]:
            raise ValueError(
                f"{name}: `key_` and `value` must have the same sequence length; "
                f"got shapes {key_.shape} and {value.shape}."
            )
        if mask is not None:
            seqs = (query.shape[0], key_.shape[0])
            if tuple(np.shape(mask)) not in (seqs, (self.num_heads,) + seqs):
                raise ValueError(
                    f"{name}: `mask` must have shape (query_seq_length, "
                    f"kv_seq_length) = {seqs} or (num_heads, query_seq_length, "
                    f"kv_seq_length) = {(self.num_heads,) + seqs}; got shape "
                    f"{tuple(np.shape(mask))}."
                )

    def _project(self, linear: Linear, x: jax.Array) -> jax.Array:
        """Project each position of `x` and split it into heads:
        `(seq, channels) -> (seq, num_heads, channels_per_head)`."""
        projected = jax.vmap(linear)(x)
        return projected.reshape(x.shape[0], self.num_heads, -1)

    def __call__(
        self,
        query: jax.Array,
        key_: jax.Array,
        value: jax.Array,
        mask: jax.Array | None = None,
        *,
        key: jax.Array | None = None,
        inference: bool | None = None,
        deterministic: bool | None = None,
        process_heads: ProcessHeads | None = None,
    ) -> jax.Array:
        """Attend from each query position to the key/value positions.

        Args:
            query: shape `(query_seq_length, query_size)`.
            key_: shape `(kv_seq_length, key_size)`.
            value: shape `(kv_seq_length, value_size)`.
            mask: `None`, or a boolean array of shape
                `(query_seq_length, kv_seq_length)`, or
                `(num_heads, query_seq_length, kv_seq_length)` for one mask
                per head. `False` means the query position may not attend to
                that key position. A query row that is fully masked attends
                uniformly to every position.
            key: a `jax.random` key for dropout; needed only when dropout is
                active (keyword only).
            inference: overrides the `inference` field of the dropout for this
                call when not `None` (keyword only).
            deterministic: the deprecated name of `inference` (warns, as in
                Equinox).
            process_heads: a function called on the projected heads,
                `(query_heads, key_heads, value_heads) -> (query_heads,
                key_heads, value_heads)`, each of shape
                `(seq_length, num_heads, size_per_head)`, e.g. to apply a
                `RotaryPositionalEmbedding`; it must keep the shapes
                (keyword only).

        Returns:
            An array of shape `(query_seq_length, output_size)`.
        """
        if deterministic is not None:
            warnings.warn(_DETERMINISTIC, DeprecationWarning, stacklevel=2)
            inference = deterministic
        self._check_inputs(query, key_, value, mask)
        query_heads = self._project(self.query_proj, query)
        key_heads = self._project(self.key_proj, key_)
        value_heads = self._project(self.value_proj, value)
        if process_heads is not None:
            before = (query_heads.shape, key_heads.shape, value_heads.shape)
            query_heads, key_heads, value_heads = process_heads(
                query_heads, key_heads, value_heads
            )
            after = (query_heads.shape, key_heads.shape, value_heads.shape)
            if after != before:
                raise ValueError(
                    f"{self._name()}: `process_heads` must return query, key and "
                    f"value heads of the shapes it was given, {before}; it returned "
                    f"shapes {after}."
                )

        # (query_seq, heads, qk) x (kv_seq, heads, qk) -> (heads, query_seq, kv_seq)
        scaled_query = query_heads / math.sqrt(self.qk_size)
        logits = jnp.einsum("qhd,khd->hqk", scaled_query, key_heads)
        if mask is not None:
            mask = jnp.broadcast_to(mask, logits.shape)
            logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        # Softmax in at least float32, so that half precision stays accurate.
        with jax.numpy_dtype_promotion("standard"):
            softmax_dtype = jnp.promote_types(logits.dtype, jnp.float32)
        weights = jax.nn.softmax(logits.astype(softmax_dtype), axis=-1)
        weights = weights.astype(logits.dtype)
        if key is None:
            weights = self.dropout(weights, inference=inference)
        else:
            # One key per head, each head dropped independently.
            head_keys = jr.split(key, self.num_heads)
            weights = jax.vmap(
                lambda w, k: self.dropout(w, key=k, inference=inference)
            )(weights, head_keys)
        attended = jnp.einsum("hqk,khd->qhd", weights, value_heads)
        attended = attended.reshape(query.shape[0], self.num_heads * self.vo_size)
        return jax.vmap(self.output_proj)(attended)
