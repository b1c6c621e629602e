"""`pytreemod.debug.announce_transform`, `backward_nan`, `breakpoint_if`,
`store_dce` and `inspect_dce`."""

import jax
import jax.numpy as jnp
import pytest

import pytreemod as eqx

# --- announce_transform ---


def _announced(transform, x):
    log = []
    fn = lambda x: eqx.debug.announce_transform(x, announce=log.append)
    transform(fn)(x)
    return log


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (lambda f: f, ["impl"]),
        (jax.jit, ["abstract", "mlir"]),
        (eqx.filter_jit, ["abstract", "mlir"]),
        (jax.vmap, ["vmap:impl"]),
        (lambda f: jax.jit(jax.vmap(f)), ["vmap:abstract", "vmap:mlir"]),
    ],
)
def test_announce_transform_reports_jit_and_vmap(transform, expected):
    assert _announced(transform, jnp.arange(3.0)) == expected


@pytest.mark.parametrize("outer", [lambda f: f, jax.jit])
def test_announce_transform_reports_grad_stages(outer):
    log = []

    def loss(x):
        return 2.0 * eqx.debug.announce_transform(x, announce=log.append)

    grad = outer(jax.grad(loss))(jnp.array(1.0))
    assert grad == 2.0
    final = "mlir" if outer is jax.jit else "impl"
    assert log[0] == ("jvp_p:abstract" if outer is jax.jit else "jvp_p:impl")
    assert f"jvp_t:transpose:{final}" in log
    assert all(entry.startswith(("jvp_p:", "jvp_t:")) for entry in log)


def test_announce_transform_name_and_intermediates():
    log = []
    fn = lambda x: eqx.debug.announce_transform(
        x, name="h", intermediates=True, announce=log.append
    )
    jax.vmap(fn)(jnp.ones(2))
    assert log == ["(h) vmap", "(h) vmap:impl"]


def test_announce_transform_is_the_identity_on_any_pytree():
    tree = {"w": jnp.arange(3.0), "act": "relu", "n": 3}

    @eqx.filter_jit
    def f(tree):
        return eqx.debug.announce_transform(tree, announce=lambda _: None)

    out = f(tree)
    assert out["act"] == "relu" and out["n"] == 3
    assert jnp.array_equal(out["w"], tree["w"])


def test_announce_transform_with_an_unused_output_under_grad():
    # An output whose cotangent is a symbolic zero must not be bound again.
    log = []

    def loss(x):
        a, _ = eqx.debug.announce_transform((x, 2 * x), announce=log.append)
        return 3.0 * a

    assert jax.grad(loss)(jnp.array(1.0)) == 3.0
    assert any("transpose" in entry for entry in log)


def test_announce_transform_without_arrays_announces_nothing():
    log = []
    assert eqx.debug.announce_transform("text", announce=log.append) == "text"
    assert log == []


# --- backward_nan ---


def test_backward_nan_prints_primal_and_cotangent(capsys):
    def f(x):
        return 3.0 * eqx.debug.backward_nan(x, name="probe")

    grad = jax.grad(f)(jnp.float32(2.0))
    jax.effects_barrier()
    assert grad == 3.0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "probe:"
    assert "primals=Array(2., dtype=float32)" in out
    assert "cotangents=Array(3., dtype=float32)" in out


def test_backward_nan_prints_nothing_on_the_forward_pass(capsys):
    x = jnp.array([1.0, 2.0])
    assert jnp.array_equal(eqx.debug.backward_nan(x), x)
    jax.effects_barrier()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("wrap", [lambda f: f, eqx.filter_jit])
def test_backward_nan_raises_on_a_nan_cotangent(wrap, capsys):
    def loss(x):
        return jnp.sum(jnp.sqrt(eqx.debug.backward_nan(x, name="before_sqrt")))

    grad = wrap(jax.grad(loss))
    with pytest.raises(
        eqx.PytreemodRuntimeError, match=r"backward_nan\('before_sqrt'\)` received"
    ):
        grad(jnp.array([1.0, -1.0]))
    jax.effects_barrier()
    assert "cotangents=Array([0.5, nan], dtype=float32)" in capsys.readouterr().out


@eqx.filter_custom_vjp
def _nan_gradient(x):
    return x


@_nan_gradient.def_fwd
def _nan_gradient_fwd(perturbed, x):
    return x, None


@_nan_gradient.def_bwd
def _nan_gradient_bwd(residuals, grad_x, perturbed, x):
    return jnp.nan  # a Python float, which JAX accepts as a cotangent


@pytest.mark.parametrize("terminate", [False, True])
def test_backward_nan_sees_a_python_scalar_cotangent_as_an_array(terminate, capsys):
    # A backward rule after the probe returned a Python float: it used to be
    # printed as `nan` (not an array) and slip past the NaN check.
    @eqx.filter_jit
    @jax.grad
    def grad(x):
        probed = eqx.debug.backward_nan(x, name="p", terminate=terminate)
        return _nan_gradient(probed)

    if terminate:
        message = r"\nEncountered NaN\. `backward_nan"
        with pytest.raises(eqx.EquinoxRuntimeError, match=message):
            grad(jnp.array(1.0))
    else:
        assert jnp.isnan(grad(jnp.array(1.0)))
    jax.effects_barrier()
    out = capsys.readouterr().out
    assert out.startswith("p:\n   primals=Array(1., dtype=float32)\n")
    assert "cotangents=Array(nan, dtype=float32" in out


def test_backward_nan_without_terminate_only_reports(capsys):
    def loss(x):
        return jnp.sum(jnp.sqrt(eqx.debug.backward_nan(x, terminate=False)))

    grad = jax.grad(loss)(jnp.array([1.0, -1.0]))
    jax.effects_barrier()
    assert jnp.isnan(grad[1]) and grad[0] == 0.5
    assert "nan" in capsys.readouterr().out


def test_backward_nan_passes_non_arrays_through(capsys):
    def loss(tree):
        x, _, _ = eqx.debug.backward_nan(tree)
        return 2.0 * x

    grads = eqx.filter_grad(loss)((jnp.array(1.0), "tag", jnp.array(1)))
    jax.effects_barrier()
    assert grads[0] == 2.0 and grads[1] is None and grads[2] is None
    assert "'tag'" in capsys.readouterr().out


# --- breakpoint_if ---


def test_breakpoint_if_false_under_jit_does_not_stop():
    @jax.jit
    def f(x):
        eqx.debug.breakpoint_if(x < 0)
        return x + 1

    assert jnp.array_equal(f(jnp.arange(3.0)), jnp.arange(1.0, 4.0))
    assert eqx.debug.breakpoint_if(False) is None


@pytest.fixture
def opened(monkeypatch):
    """Replace the debugger with a probe that records, at run time, that it
    was reached."""
    reached = []

    def fake_breakpoint(**kwargs):
        jax.debug.callback(lambda: reached.append(kwargs))
        return kwargs.get("token")

    monkeypatch.setattr(jax.debug, "breakpoint", fake_breakpoint)
    return reached


@pytest.mark.parametrize(
    ("transform", "x", "count"),
    [
        (jax.jit, jnp.array(0.0), 0),
        (jax.jit, jnp.array(2.0), 1),
        (jax.vmap, jnp.array([0.0, 2.0, 3.0]), 1),
        (lambda f: jax.jit(jax.vmap(f)), jnp.array([2.0, 3.0]), 1),
        (lambda f: jax.jit(jax.vmap(f)), jnp.zeros(3), 0),
        (lambda f: f, jnp.array(2.0), 1),
        (lambda f: f, jnp.array(0.0), 0),
    ],
)
def test_breakpoint_if_opens_once_exactly_when_pred_holds(opened, transform, x, count):
    def probe(x):  # a new function each time, so that no jit cache is shared
        eqx.debug.breakpoint_if(x > 1, num_frames=2)
        return x

    transform(probe)(x)
    jax.effects_barrier()
    assert len(opened) == count
    assert all(kwargs == {"num_frames": 2} for kwargs in opened)


def test_breakpoint_if_returns_the_token_untouched():
    token = jnp.array(7)
    assert eqx.debug.breakpoint_if(jnp.array([False, False]), token=token) is token


# --- store_dce and inspect_dce ---


def test_store_dce_reports_what_was_eliminated(capsys):
    @jax.jit
    def f(x):
        used, unused, kept = eqx.debug.store_dce((x + 1, x * 2, x - 1), "three")
        return used + kept

    assert jnp.array_equal(f(jnp.arange(3)), 2 * jnp.arange(3))
    capsys.readouterr()
    eqx.debug.inspect_dce("three")
    assert capsys.readouterr().out == (
        "Found 1 call to `pytreemod.debug.store_dce` with name 'three'.\n"
        "Entry 0:\n"
        "(i32[3], <DCE'd>, i32[3])\n"
    )


def test_store_dce_keeps_non_arrays_and_separates_names(capsys):
    @eqx.filter_jit
    def f(x):
        a = eqx.debug.store_dce({"x": x, "act": "relu"}, ("tuple", "name"))
        eqx.debug.store_dce(x * 3.0, ("tuple", "name"))  # unused: eliminated
        assert a["act"] == "relu"
        return a["x"]

    f(jnp.ones(2))
    capsys.readouterr()
    eqx.debug.inspect_dce(("tuple", "name"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Found 2 calls")
    assert lines[1:] == [
        "Entry 0:",
        "{'act': 'relu', 'x': f32[2]}",
        "Entry 1:",
        "<DCE'd>",
    ]


def test_inspect_dce_with_an_unknown_name(capsys):
    eqx.debug.inspect_dce("never used")
    out = capsys.readouterr().out
    assert (
        out == "Found 0 calls to `pytreemod.debug.store_dce` with name 'never used'.\n"
    )


def test_store_dce_outside_jit_is_an_error():
    with pytest.raises(RuntimeError, match=r"`store_dce` was called outside of"):
        eqx.debug.store_dce(jnp.ones(2))


def test_inspect_dce_inside_jit_is_an_error():
    @jax.jit
    def f(x):
        eqx.debug.inspect_dce()
        return x

    with pytest.raises(RuntimeError, match=r"`inspect_dce` was called inside"):
        f(jnp.ones(2))
