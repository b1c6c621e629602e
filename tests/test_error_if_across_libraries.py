"""Runtime errors across pytreemod and Equinox, without Equinox installed.

Equinox's side is imitated from the facts pytreemod relies on (its host
callback raises a class named `_EquinoxRuntimeError` whose message ends in
Equinox's footer; `equinox.filter_jit` reads `equinox._jit.last_error_info`),
so that CI checks the recognition whether or not Equinox is there.
`tests/test_error_if_with_equinox.py` runs the same against real Equinox.
"""

import logging
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pytreemod as ptm
from pytreemod._transform._runtime_error import (
    EQUINOX_FOOTER,
    EQUINOX_MARKER,
    as_runtime_error,
    equinox_message,
)

# What Equinox 0.13 appends to the message of its host callback's error.
_EQUINOX_NOTE = (
    EQUINOX_FOOTER + "An error occurred during the runtime of your JAX program! "
    "Unfortunately you do not appear to be using `equinox.filter_jit` (perhaps "
    "you are using `jax.jit` instead?) and so further information about the "
    "error cannot be displayed. Please wrap your program with "
    "`equinox.filter_jit`.\n--------------------\n"
)


class _EquinoxRuntimeError(RuntimeError):
    """Named as the error Equinox's `error_if` raises in its callback."""


def _equinox_like_error_if(x, pred, message):
    """Fails as Equinox's `error_if` does: a `jax.pure_callback` raising
    `_EquinoxRuntimeError` with Equinox's note after the message."""

    def raises(pred):
        if pred:
            raise _EquinoxRuntimeError(message + _EQUINOX_NOTE)
        return np.float32(0)

    zero = jax.pure_callback(raises, jax.ShapeDtypeStruct((), jnp.float32), pred)
    return x + zero


def _jax_text(message):
    return (
        "INTERNAL: CpuCallback error calling callback: Traceback (most recent "
        'call last):\n  File "solver.py", line 3, in step\n'
        f"equinox._errors._EquinoxRuntimeError: {message}{_EQUINOX_NOTE}"
    )


@given(st.text().filter(lambda m: EQUINOX_FOOTER not in m))
def test_equinox_message_is_found_in_jax_text(message):
    assert equinox_message(_jax_text(message)) == message


@pytest.mark.parametrize(
    "text",
    [
        "INTERNAL: CpuCallback error calling callback: ValueError: bad",
        # The marker without Equinox's footer after it is not Equinox's format.
        f"{EQUINOX_MARKER}no footer here",
        "",
    ],
)
def test_other_text_is_not_equinox_message(text):
    assert equinox_message(text) is None
    error = jax.errors.JaxRuntimeError(text)
    assert as_runtime_error(error) is error


def test_equinox_error_becomes_a_clean_equinox_runtime_error():
    error = as_runtime_error(jax.errors.JaxRuntimeError(_jax_text("max_steps hit")))
    assert type(error) is ptm.EquinoxRuntimeError
    text = str(error)
    assert text.startswith("max_steps hit\n")
    # Only the message and pytreemod's note: not JAX's traceback, nor
    # Equinox's advice to wrap the program with `equinox.filter_jit`.
    assert "CpuCallback" not in text and "equinox.filter_jit" not in text
    assert "`pytreemod.filter_jit`" in text


def test_equinox_like_error_inside_filter_jit_is_raised_cleanly(caplog):
    @ptm.filter_jit
    def solve(x):
        return _equinox_like_error_if(x, x > 0, "The maximum number of steps")

    assert solve(jnp.array(-1.0)) == -1.0
    with caplog.at_level(logging.ERROR):
        with pytest.raises(ptm.EquinoxRuntimeError, match=r"^The maximum number of s"):
            solve(jnp.array(1.0))
    # JAX logs a failing `pure_callback` with its traceback; as under
    # `equinox.filter_jit`, that log is dropped for Equinox's error.
    assert not [r for r in caplog.records if "pure_callback failed" in r.message]


def test_other_callback_errors_are_still_logged_and_raised_raw(caplog):
    def raises(x):
        raise ValueError("not an error_if")

    @ptm.filter_jit
    def f(x):
        return jax.pure_callback(raises, jax.ShapeDtypeStruct((), jnp.float32), x)

    with caplog.at_level(logging.ERROR):
        with pytest.raises(jax.errors.JaxRuntimeError, match="not an error_if"):
            f(jnp.array(1.0))
    assert [r for r in caplog.records if "pure_callback failed" in r.message]


@pytest.fixture
def loaded_equinox_jit(monkeypatch):
    """A stand-in for an already imported `equinox._jit`, holding a stale
    error of Equinox's own."""
    module = types.ModuleType("equinox._jit")
    module.last_error_info = ("an earlier Equinox error", ["old stack"])
    monkeypatch.setitem(sys.modules, "equinox._jit", module)
    return module


def test_pytreemod_error_is_handed_to_a_loaded_equinox(loaded_equinox_jit):
    def check(x):
        return ptm.error_if(x, x > 0, "x must be non-positive")

    # `jax.jit` stands for `equinox.filter_jit`, which sees JAX's raw error.
    with pytest.raises(jax.errors.JaxRuntimeError) as raised:
        jax.jit(check)(jnp.array(1.0))
    # What `equinox.filter_jit` looks for: its marker in JAX's text, and the
    # message and stack (as Equinox stores them) in `last_error_info`, which
    # no longer holds the stale error.
    assert EQUINOX_MARKER + "Above is the stack outside of JIT" in str(raised.value)
    message, stack = loaded_equinox_jit.last_error_info
    assert message == "x must be non-positive"
    assert len(stack) == 1 and "in check" in stack[0]


def test_equinox_not_loaded_is_left_alone(monkeypatch):
    monkeypatch.delitem(sys.modules, "equinox._jit", raising=False)
    with pytest.raises(ptm.EquinoxRuntimeError, match="x must be small"):
        ptm.filter_jit(lambda x: ptm.error_if(x, x > 0, "x must be small"))(
            jnp.array(1.0)
        )
    assert "equinox._jit" not in sys.modules
