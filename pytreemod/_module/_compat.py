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
    """`(True, value)` with `x`, a value made under the current trace, as a
    value that may be used under `trace` (an enclosing one), or `(False, x)`
    if `x` belongs to a transform begun inside `trace` that is not a
    `jax.vmap` (a `jax.jit`, a `scan`, a `jax.grad`), whose tracers will be
    dead by the time the value is used.

    Each `jax.vmap` between the current trace and `trace` is undone as the
    vmap itself would with `out_axes=0`: the mapped axis moves to the front
    (the outermost vmap's first), and a value that does not depend on the
    mapped input is broadcast along it. This reads JAX's private trace
    objects; should they move, every tracer not of `trace` is refused."""
    if trace is None:
        return True, x
    try:
        from jax._src.core import set_current_trace
        from jax._src.interpreters.batching import BatchTrace, BatchTracer
    except ImportError:  # pragma: no cover - depends on the JAX version
        return not isinstance(x, jax.core.Tracer) or x._trace is trace, x
    chain = _ancestry(current_trace())
    inside = []
    for level in chain:
        if level is trace:
            break
        inside.append(level)
    else:
        inside = []  # not under `trace`: only its own tracers are fine
    for level in inside:  # innermost first
        own = getattr(x, "_trace", None) if isinstance(x, jax.core.Tracer) else None
        if own is level:
            if not isinstance(x, BatchTracer):
                return False, x
            dim = x.batch_dim
            if not (dim is None or isinstance(dim, int)):
                return False, x
            with set_current_trace(level.parent_trace):
                x = _batch_first(x.val, dim, level)
        elif isinstance(level, BatchTrace):
            with set_current_trace(level.parent_trace):
                x = _batch_first(x, None, level)
    if isinstance(x, jax.core.Tracer):
        enclosing = {id(t) for t in _ancestry(trace)}
        return id(getattr(x, "_trace", None)) in enclosing, x
    return True, x


def _batch_first(value: Any, dim: int | None, level: Any) -> Any:
    """`value` with the mapped axis `dim` of a vmap at `level` first, or
    broadcast along a new first axis of that vmap's size if `dim` is None."""
    if dim is not None:
        return jax.numpy.moveaxis(value, dim, 0)
    size = level.axis_data.size
    return jax.numpy.broadcast_to(value, (size, *jax.numpy.shape(value)))
