"""End to end: the small CNN of `docs/nn.md` (Conv2d, GroupNorm, pooling,
Dropout, Linear), trained with optax through `filter_jit` +
`filter_value_and_grad`.

The model and the training loop live in the docs' "convolution, pooling,
attention" section, and this test runs that section's code blocks in order,
in one namespace, so that the example cannot rot; the assertions here check
what it claims.
"""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

import pytreemod as eqx

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "nn.md"
SECTION = "<!-- section: convolution, pooling, attention -->"


def _run_section() -> dict:
    text = DOC.read_text()
    section = text[text.index(SECTION) + len(SECTION) :].split("<!-- section:")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2, "expected an attention block and the CNN block"
    namespace: dict = {}
    # Standard promotion, as users have it: optax's Adam mixes an int32 and a
    # float in its bias correction, which the suite's strict mode refuses.
    with jax.numpy_dtype_promotion("standard"):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


def test_the_docs_cnn_learns_on_synthetic_data_and_attention_example_runs():
    namespace = _run_section()
    assert namespace["y"].shape == (10, 32)

    losses = namespace["cnn_losses"]
    assert len(losses) == 25 and all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    assert float(namespace["accuracy"]) >= 0.9

    model, initial = namespace["model"], namespace["CNN"](key=jax.random.key(0))
    layers = [
        eqx.nn.Conv2d,
        eqx.nn.GroupNorm,
        eqx.nn.MaxPool2d,
        eqx.nn.Conv2d,
        eqx.nn.AdaptiveAvgPool2d,
        eqx.nn.Dropout,
        eqx.nn.Linear,
    ]
    children = [getattr(model, f) for f in type(model).__dataclass_fields__]
    assert [type(child) for child in children] == layers
    # Training changed every parameter array and kept the static configuration.
    trained = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    start = jax.tree_util.tree_leaves(eqx.filter(initial, eqx.is_inexact_array))
    assert len(trained) == len(start) == 8
    assert all(not jnp.allclose(a, b) for a, b in zip(trained, start, strict=True))
    assert model.conv1.kernel_size == (3, 3) and model.pool.stride == (2, 2)
    assert model.dropout.inference is False
    assert namespace["evaluation"].dropout.inference is True
