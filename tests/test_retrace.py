"""Retrace explanations: `pytreemod.debug.explain_retraces` and the
`PYTREEMOD_EXPLAIN_RETRACES` environment variable."""

import logging
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

import pytreemod as eqx
from pytreemod._transform import _retrace


class Layer(eqx.Module):
    weight: jax.Array
    activation: str = eqx.field(static=True)

    def __call__(self, x):
        out = self.weight * x
        return jax.nn.relu(out) if self.activation == "relu" else jax.nn.gelu(out)


class Model(eqx.Module):
    layers: list

    def __call__(self, x):
        return self.apply(x)

    def apply(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def model(activations=("relu",) * 4, size=1):
    return Model([Layer(jnp.ones(size), a) for a in activations])


@pytest.fixture
def explain(caplog):
    """Explanations on for one test; returns the logged messages so far."""
    caplog.set_level(logging.WARNING, logger="pytreemod")
    previous = eqx.debug.explain_retraces(True)
    yield lambda: [r.getMessage() for r in caplog.records if r.name == "pytreemod"]
    eqx.debug.explain_retraces(previous)


def apply(model, x):
    return model(x)


def test_off_by_default_nothing_is_logged(caplog):
    caplog.set_level(logging.WARNING, logger="pytreemod")
    previous = eqx.debug.explain_retraces(False)
    try:
        f = eqx.filter_jit(apply)
        f(model(), jnp.ones(2))
        f(model(), jnp.ones(3))
    finally:
        eqx.debug.explain_retraces(previous)
    assert not [r for r in caplog.records if r.name == "pytreemod"]


def test_returns_the_previous_setting():
    previous = eqx.debug.explain_retraces(True)
    try:
        assert eqx.debug.explain_retraces(False) is True
        assert eqx.debug.explain_retraces(False) is False
    finally:
        eqx.debug.explain_retraces(previous)


def test_static_field_change_names_the_path(explain):
    f = eqx.filter_jit(apply)
    f(model(), jnp.ones(2))
    f(model(("relu", "relu", "relu", "gelu")), jnp.ones(2))
    (message,) = explain()
    # Traces are counted per function: every `filter_jit(apply)` shares them.
    assert re.search(r"filter_jit\(apply\) is tracing again \(trace \d+ ", message)
    assert "model.layers[3].activation: 'relu' -> 'gelu'" in message


def test_shape_and_dtype_changes(explain):
    f = eqx.filter_jit(lambda model, x: x)
    f(model(), jnp.ones(8))
    f(model(), jnp.ones(16))
    f(model(), jnp.ones(16, dtype=jnp.int32))
    first, second = explain()
    assert "  x: f32[8] -> f32[16]" in first.splitlines()
    assert "  x: f32[16] -> i32[16]" in second.splitlines()


def test_weak_type_change(explain):
    f = eqx.filter_jit(lambda x: x)
    f(jnp.asarray(1.0, dtype=jnp.float32))
    f(jnp.asarray(1.0))  # weakly typed
    (message,) = explain()
    assert "x: f32[] -> f32[] (weakly typed)" in message


def test_structure_change(explain):
    f = eqx.filter_jit(apply)
    f(model(), jnp.ones(2))
    f(model(("relu",) * 3), jnp.ones(2))
    (message,) = explain()
    assert "model.layers: list of length 4 -> list of length 3" in message


def test_compares_with_the_closest_earlier_call(explain):
    f = eqx.filter_jit(lambda model, x: x)
    f(model(size=1), jnp.ones(2))
    f(model(size=2), jnp.ones(3))
    # Closest to the second call: only x differs.
    f(model(size=2), jnp.ones(4))
    *_, message = explain()
    lines = message.splitlines()[1:]
    assert lines == ["  x: f32[3] -> f32[4]"]


def test_keyword_and_variadic_arguments(explain):
    @eqx.filter_jit
    def f(x, *rest, scale=1.0, **options):
        return x * scale

    f(jnp.ones(2), 1, 2, scale=2.0, mode="a")
    f(jnp.ones(2), 1, 3, scale=3.0, mode="b")
    (message,) = explain()
    assert "  rest[1]: 2 -> 3" in message
    assert "  scale: 2.0 -> 3.0" in message
    assert "  mode: 'a' -> 'b'" in message


def test_new_keyword_argument(explain):
    f = eqx.filter_jit(lambda x, **kw: x)
    f(jnp.ones(2))
    f(jnp.ones(2), extra=1)
    (message,) = explain()
    assert "keyword arguments: [] -> ['extra']" in message


def test_positional_names_without_a_signature(explain):
    class NoSignature:
        __signature__ = "not a signature"  # inspect.signature raises

        def __call__(self, *args):
            return args[0]

    f = eqx.filter_jit(NoSignature())
    f(jnp.ones(2), 1)
    f(jnp.ones(2), 2)
    (message,) = explain()
    assert "  args[1]: 1 -> 2" in message


def test_module_as_the_function_is_self(explain):
    f = eqx.filter_jit(model(size=1))
    f(jnp.ones(1))
    jax.tree_util.tree_map(lambda a: jnp.ones(2), f)(jnp.ones(2))
    (message,) = explain()
    assert "  self.layers[0].weight: f32[1] -> f32[2]" in message
    assert "  x: f32[1] -> f32[2]" in message


def test_bound_method_and_method_decorator_are_self(explain):
    class Scaled(eqx.Module):
        weight: jax.Array

        @eqx.filter_jit
        def __call__(self, x, n):
            return self.weight * x * n

    Scaled(jnp.ones(2))(jnp.ones(2), 1)
    Scaled(jnp.ones(3))(jnp.ones(3), 1)
    (message,) = explain()
    assert "  self.weight: f32[2] -> f32[3]" in message

    bound = eqx.filter_jit(model(size=1).apply)
    bound(jnp.ones(1))
    jax.tree_util.tree_map(lambda a: jnp.ones(2), bound)(jnp.ones(1))
    assert "  self.layers[0].weight: f32[1] -> f32[2]" in explain()[-1]


def test_dropped_compilation_says_nothing_differs(explain):
    f = eqx.filter_jit(lambda x: x + 1)
    f(jnp.ones(2))
    jax.clear_caches()
    f(jnp.ones(2))
    (message,) = explain()
    assert "nothing differs" in message


def test_clear_caches_starts_a_new_history(explain):
    f = eqx.filter_jit(lambda x: x + 1)
    f(jnp.ones(2))
    eqx.clear_caches()
    f(jnp.ones(2))
    assert explain() == []


def test_computed_only_on_a_retrace(explain, monkeypatch):
    calls = []
    original = _retrace._closest_difference

    def spy(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(_retrace, "_closest_difference", spy)
    f = eqx.filter_jit(apply)
    for _ in range(5):
        f(model(), jnp.ones(2))
    assert calls == []
    f(model(), jnp.ones(3))
    for _ in range(5):
        f(model(), jnp.ones(3))
    assert calls == [1]
    assert len(explain()) == 1


def test_environment_variable_turns_it_on(tmp_path: pathlib.Path):
    script = textwrap.dedent(
        """
        import jax.numpy as jnp
        import pytreemod

        f = pytreemod.filter_jit(lambda x, n: x * n)
        f(jnp.ones(2), 1)
        f(jnp.ones(2), 2)
        """
    )
    path = tmp_path / "retrace.py"
    path.write_text(script)
    env = {**os.environ, "PYTREEMOD_EXPLAIN_RETRACES": "1"}
    result = subprocess.run(
        [sys.executable, str(path)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "n: 1 -> 2" in result.stderr
    env["PYTREEMOD_EXPLAIN_RETRACES"] = "0"
    result = subprocess.run(
        [sys.executable, str(path)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "tracing again" not in result.stderr
