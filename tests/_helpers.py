"""Helpers shared by several test files: random arrays and layers, a stateful
counter model, and a runner for scripts that need several CPU devices."""

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import pytreemod
from pytreemod.nn import StateIndex


def rng_array(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """A float32 NumPy array of standard normal draws."""
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def random_layer(make: Callable[[], Any]) -> Any:
    """The layer `make()` builds, with its arrays drawn from NumPy instead.

    Running a layer's initialiser compiles `jax.random.uniform` once per
    parameter shape, which dominates the time of these tests; the value tests
    need some parameters, not those, so they build the layer abstractly
    (`jax.eval_shape`) and fill in its arrays. The initialiser has its own
    tests.
    """
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.uniform(-0.5, 0.5, s.shape).astype(s.dtype)),
        jax.eval_shape(make),
    )


class Counter(pytreemod.Module):
    """Adds how often it was called before to its input; the count starts at
    0 and lives in the `State`."""

    index: StateIndex

    def __init__(self):
        self.index = StateIndex(jnp.array(0.0))

    def __call__(self, x, state):
        count = state.get(self.index)
        return x + count, state.set(self.index, count + 1)


def run_on_cpu_devices(
    script: str,
    devices: int,
    *,
    python_options: Sequence[str] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `script` in a new Python process whose JAX has `devices` CPU
    devices, and return the finished process with its output as text."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    return subprocess.run(
        [sys.executable, *python_options, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
