"""Runtime errors of `error_if` when a program mixes pytreemod and real
Equinox (libraries such as diffrax bring Equinox along): each library's
`filter_jit` raises the other's error as cleanly as its own.

Needs Equinox (the `test` extra installs it); pytreemod itself never imports
it. `tests/test_error_if_across_libraries.py` checks the same recognition
without Equinox.
"""

import jax.numpy as jnp
import pytest

equinox = pytest.importorskip(
    "equinox",
    reason="equinox is not installed; these tests mix pytreemod with real Equinox",
)

import pytreemod as ptm  # noqa: E402


def _equinox_check(x):
    return equinox.error_if(x, x > 0, "equinox: x must be non-positive")


def _pytreemod_check(x):
    return ptm.error_if(x, x > 0, "pytreemod: x must be non-positive")


def test_equinox_is_real_and_not_pytreemod():
    assert equinox.filter_jit is not ptm.filter_jit
    assert equinox.EquinoxRuntimeError is not ptm.EquinoxRuntimeError


def test_equinox_error_inside_pytreemod_filter_jit():
    f = ptm.filter_jit(_equinox_check)
    assert f(jnp.array(-1.0)) == -1.0
    with pytest.raises(ptm.EquinoxRuntimeError) as raised:
        f(jnp.array(1.0))
    text = str(raised.value)
    assert text.startswith("equinox: x must be non-positive\n")
    # Not JAX's ~2 KB traceback, nor Equinox's advice to use its filter_jit.
    assert "CpuCallback" not in text and "wrap your program" not in text
    assert len(text) < 1000


def test_pytreemod_error_inside_equinox_filter_jit():
    f = equinox.filter_jit(_pytreemod_check)
    assert f(jnp.array(-1.0)) == -1.0
    with pytest.raises(equinox.EquinoxRuntimeError) as raised:
        f(jnp.array(1.0))
    text = str(raised.value)
    assert text.startswith("Above is the stack outside of JIT.")
    assert "pytreemod: x must be non-positive" in text
    assert "in _pytreemod_check" in text  # where the check was traced
    assert "CpuCallback" not in text


def test_pytreemod_error_after_an_equinox_error_is_not_reported_as_it():
    # Equinox keeps its last error in a global; a pytreemod error under
    # `equinox.filter_jit` must replace it, not be reported as it.
    with pytest.raises(equinox.EquinoxRuntimeError, match="equinox: x must"):
        equinox.filter_jit(_equinox_check)(jnp.array(2.0))
    with pytest.raises(equinox.EquinoxRuntimeError) as raised:
        equinox.filter_jit(_pytreemod_check)(jnp.array(2.0))
    assert "pytreemod: x must be non-positive" in str(raised.value)
    assert "equinox: x must" not in str(raised.value)


@pytest.mark.parametrize(
    ("outer", "inner", "check", "error"),
    [
        ("ptm", "eqx", _equinox_check, "ptm"),
        ("eqx", "ptm", _pytreemod_check, "eqx"),
    ],
)
def test_nested_jits_raise_the_outer_librarys_error(outer, inner, check, error):
    jits = {"ptm": ptm.filter_jit, "eqx": equinox.filter_jit}
    errors = {"ptm": ptm.EquinoxRuntimeError, "eqx": equinox.EquinoxRuntimeError}
    f = jits[outer](lambda x: jits[inner](check)(x) * 2)
    with pytest.raises(errors[error], match="x must be non-positive"):
        f(jnp.array(3.0))
