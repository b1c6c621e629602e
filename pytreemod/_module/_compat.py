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


def current_trace() -> Any:
    """The trace JAX runs under now (the evaluation trace outside every
    transform). `pytreemod.surgery.capture` compares it with the trace a
    captured value belongs to, so that no tracer leaves the transform that
    made it. Should JAX's private accessor move, this is `None` and capture
    checks nothing (as JAX itself would then, later, with its own error)."""
    try:
        from jax._src import core
    except ImportError:  # pragma: no cover - depends on the JAX version
        return None
    get = getattr(core, "unsafe_get_current_trace", None)
    return get() if get is not None else None


def _ancestry(trace: Any) -> list[Any]:
    chain = []
    while trace is not None:
        chain.append(trace)
        trace = getattr(trace, "parent_trace", None)
    return chain


def lift_to(x: Any, trace: Any) -> tuple[bool, Any]:
    """`(True, value)` with `x` as a value that may be used under `trace`, or
    `(False, x)` if `x` is a tracer of a trace that does not enclose `trace`
    (one made by a transform inside it, such as a `jax.jit` or a `scan`,
    which will have ended by the time the value is used).

    A tracer of a `jax.vmap` applied inside `trace` is unwrapped: its
    batched value, with the mapped axis moved to the front, is a value of
    the vmap's parent (an unmapped value is broadcast along that axis).
    This is what the vmap itself returns with `out_axes=0`, read where the
    vmap's own output is not. It reads JAX's private `BatchTracer`; should
    that move, such values are refused as any other inner tracer."""
    if trace is None or not isinstance(x, jax.core.Tracer):
        return True, x
    enclosing = {id(t) for t in _ancestry(trace)}
    try:
        from jax._src.core import set_current_trace
        from jax._src.interpreters.batching import BatchTracer
    except ImportError:  # pragma: no cover - depends on the JAX version
        BatchTracer = ()  # noqa: N806
    while isinstance(x, jax.core.Tracer):
        own = getattr(x, "_trace", None)
        if id(own) in enclosing:
            return True, x
        if not (BatchTracer and isinstance(x, BatchTracer)):
            return False, x
        dim = x.batch_dim
        size = getattr(getattr(own, "axis_data", None), "size", None)
        if not (dim is None or isinstance(dim, int)) or (dim is None and size is None):
            return False, x
        with set_current_trace(own.parent_trace):
            value = x.val
            if dim is None:
                value = jax.numpy.broadcast_to(value, (size, *jax.numpy.shape(value)))
            else:
                value = jax.numpy.moveaxis(value, dim, 0)
        x = value
    return True, x
