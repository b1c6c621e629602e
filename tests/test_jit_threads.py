"""`filter_jit` called from several threads at once."""

import threading

import jax
import jax.numpy as jnp
import numpy as np

import pytreemod as eqx

THREADS = 8


class Affine(eqx.Module):
    weight: jax.Array
    label: str = eqx.field(static=True)

    def __call__(self, x, power):
        return self.weight * x**power, f"{self.label}{power}", x.shape


def _run_threads(target):
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def run(index):
        try:
            barrier.wait()
            target(index)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def test_threads_with_different_static_values_and_shapes():
    jitted = eqx.filter_jit(lambda model, x, power: model(x, power))
    results: dict[tuple[int, int], tuple] = {}

    def work(index):
        # Every thread goes through the same few keys in its own order, so
        # cache misses race with each other and with hits.
        for step in range(6):
            power = (index + step) % 3 + 1
            size = (index * step) % 4 + 1
            x = jnp.arange(size, dtype=jnp.float32) + index
            model = Affine(jnp.full(size, float(index), dtype=jnp.float32), "p")
            out, label, shape = jitted(model, x, power)
            expected = np.full(size, float(index)) * np.asarray(x) ** power
            np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5)
            assert label == f"p{power}" and shape == (size,)
            results[index, step] = (power, size)

    _run_threads(work)
    assert len(results) == THREADS * 6


def test_threads_share_one_compiled_version_per_key():
    counted = eqx.debug.assert_max_traces(lambda x, n: x * n, max_traces=None)
    jitted = eqx.filter_jit(counted)

    def work(index):
        for _ in range(20):
            assert jitted(jnp.ones(2), index % 2).tolist() == [index % 2] * 2

    _run_threads(work)
    # Two keys; a miss raced by two threads may trace twice, but no more
    # than once per thread and key.
    assert 2 <= eqx.debug.get_num_traces(counted) <= 2 * THREADS
    before = eqx.debug.get_num_traces(counted)
    _run_threads(work)
    assert eqx.debug.get_num_traces(counted) == before
