"""Everything that depends on JAX internals or versions, in one place.

Each shim degrades gracefully: should a JAX release move an internal, the
shim falls back to a conservative answer instead of failing.
"""

from typing import Any

import jax


def is_traced_by(x: Any, trace: Any) -> bool:
    """Whether `x` is a tracer of `trace`. JAX has no public way to ask a
    tracer for its trace, so this reads the private `_trace`; should that go
    away, every tracer counts (`filter_jvp` then gives zero tangents instead
    of `None` for outputs that do not depend on the inputs)."""
    return isinstance(x, jax.core.Tracer) and getattr(x, "_trace", trace) is trace


def is_symbolic_zero(x: Any) -> bool:
    """Whether `x` is JAX's symbolic zero (`ad.Zero`), the tangent or cotangent
    that autodiff rules receive for values known to be zero. Should the class
    move, nothing counts as one (rules then see only ordinary arrays, which is
    what JAX gives them when it instantiates zeros)."""
    try:
        from jax.interpreters.ad import Zero
    except ImportError:  # pragma: no cover - depends on the JAX version
        return False
    return isinstance(x, Zero)


def define_primitive(
    name: str,
    *,
    impl: Any,
    abstract_eval: Any,
    jvp: Any,
    transpose: Any,
    batch: Any,
    lowering: Any,
) -> Any:
    """A new primitive with multiple results and the given rules, or `None`.

    `impl(*args, **params)` runs it eagerly, `abstract_eval(*avals, **params)`
    gives the output avals, `jvp(primals, tangents, **params)`,
    `transpose(cotangents, *primals, **params)` and
    `batch(args, dims, **params)` are the usual rules, and `lowering(*args,
    **params)` is a JAX function that `mlir.lower_fun` lowers. Defining a
    primitive needs `jax.extend` and `jax.interpreters`; should any of it have
    moved, this returns `None` and the caller falls back to doing without.
    """
    try:
        from jax.extend.core import Primitive
        from jax.interpreters import ad, batching, mlir
    except ImportError:  # pragma: no cover - depends on the JAX version
        return None
    try:
        primitive = Primitive(name)
        primitive.multiple_results = True
        primitive.def_impl(impl)
        primitive.def_abstract_eval(abstract_eval)
        ad.primitive_jvps[primitive] = jvp
        ad.primitive_transposes[primitive] = transpose
        batching.primitive_batchers[primitive] = batch
        mlir.register_lowering(
            primitive, mlir.lower_fun(lowering, multiple_results=True)
        )
    except (AttributeError, TypeError):  # pragma: no cover - JAX version
        return None
    return primitive


def jax_transform_types() -> frozenset[type]:
    """The types of the callables that `jax.jit`, `jax.grad`, `jax.vmap` and
    the other JAX function transforms return (several are plain functions).
    A Module field holding one of these, wrapped around a pytree with arrays,
    hides those arrays from every later transform; the construction warning
    for that looks for these types."""
    transforms = (
        jax.jit,
        jax.grad,
        jax.vmap,
        jax.value_and_grad,
        jax.jacfwd,
        jax.jacrev,
        jax.hessian,
        jax.custom_jvp,
        jax.custom_vjp,
        jax.checkpoint,
        jax.pmap,
    )
    types: set[type] = set()
    for transform in transforms:
        try:
            types.add(type(transform(_identity)))
        except Exception:  # pragma: no cover - depends on the JAX version
            continue
    return frozenset(types)


def _identity(x: Any) -> Any:
    return x


def distributed_client() -> Any:
    """The client of JAX's distributed runtime (`jax.distributed.initialize`),
    whose barriers take a timeout and whose key-value store shares small
    strings between processes, or `None`. JAX has no public handle on it;
    should the private one move, callers fall back to device collectives
    (`jax.experimental.multihost_utils`), which wait without a timeout."""
    try:
        from jax._src.distributed import global_state
    except ImportError:  # pragma: no cover - depends on the JAX version
        return None
    client = getattr(global_state, "client", None)
    needed = ("wait_at_barrier", "key_value_set", "blocking_key_value_get")
    if client is None or not all(hasattr(client, n) for n in needed):
        return None  # pragma: no cover - depends on the JAX version
    return client
