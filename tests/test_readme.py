"""The README's example runs, and its training step learns."""

import pathlib
import re

import jax
import jax.numpy as jnp

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_trains():
    source = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)[1]
    namespace: dict = {}
    exec(compile(source, "README.md", "exec"), namespace)
    step, model, opt_state = (
        namespace["step"],
        namespace["model"],
        namespace["opt_state"],
    )
    x = jax.random.normal(jax.random.key(1), (64, 2))
    y = jnp.sin(x[:, 0]) * x[:, 1]
    # optax's Adam mixes a Python float with an int32 step count, which the
    # strict promotion of conftest.py rejects; users run with the default.
    with jax.numpy_dtype_promotion("standard"):
        model, opt_state, first = step(model, opt_state, x, y)
        for _ in range(100):
            model, opt_state, loss = step(model, opt_state, x, y)
    assert float(loss) < 0.5 * float(first)
