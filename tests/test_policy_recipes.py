"""The mixed-precision and initialisation recipes of docs/policies.md run as
written, and each gives, bit for bit, what the same thing written the
Equinox way (hand casts, `tree_at`) gives on the same page."""

import pathlib
import re

import jax
import numpy as np
import pytest

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "policies.md"


def _recipe(name: str) -> str:
    found = dict(
        re.findall(r"```python\n# recipe: (\w+)\n(.*?)```", PAGE.read_text(), re.DOTALL)
    )
    assert name in found, f"docs/policies.md has no block `# recipe: {name}`"
    return found[name]


def _run(*names: str) -> dict:
    namespace: dict = {}
    for name in ("policy_setup", *names):
        exec(compile(_recipe(name), f"policies.md:{name}", "exec"), namespace)
    return namespace


def _same_bits(a, b) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if isinstance(x, jax.Array) or isinstance(x, np.ndarray):
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == y.dtype and x.shape == y.shape
            bits = lambda v: v.reshape(-1).view(np.uint8)  # noqa: E731
            np.testing.assert_array_equal(bits(x), bits(y))
        else:
            assert x is y or x == y


@pytest.fixture(autouse=True)
def _standard_promotion():
    # optax's updates, as users run them, need JAX's standard promotion
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_mixed_precision_recipe_equals_hand_casts():
    ns = _run("precision", "precision_by_hand")
    _same_bits(ns["value"], ns["value_by_hand"])
    _same_bits(ns["grads"], ns["grads_by_hand"])
    assert ns["grads"].up.weight.dtype == np.float32
    # and it really computed in bfloat16: float32 gives another loss
    assert float(ns["value"]) != float(
        jax.numpy.mean((jax.vmap(ns["model"])(ns["x"]) - ns["y"]) ** 2)
    )


def test_loss_scale_recipe_equals_hand_written_scaling():
    ns = _run("precision", "precision_by_hand", "loss_scale", "loss_scale_by_hand")
    model, opt_state, scale = ns["state"]
    model_h, opt_state_h, scale_h, counter_h = ns["by_hand"]
    _same_bits(model, model_h)
    _same_bits(opt_state, opt_state_h)
    _same_bits(scale.loss_scale, scale_h)
    assert int(scale.counter) == int(counter_h)
    # 2**30 overflows float16 at first: steps were skipped and the scale fell
    assert float(scale.loss_scale) < 2.0**20
    # ... and then training happened
    assert not np.array_equal(model.up.weight, ns["model"].up.weight)


def test_init_recipe_equals_tree_at_by_hand():
    ns = _run("precision", "precision_by_hand", "init", "init_by_hand")
    _same_bits(ns["model_init"], ns["model_init_by_hand"])
    assert ns["model_init"].norm.weight is ns["model"].norm.weight


def test_sharded_init_recipe_equals_building_whole_and_moving():
    ns = _run(
        "precision", "precision_by_hand", "init", "init_sharded", "init_sharded_by_hand"
    )
    _same_bits(ns["big"], ns["big_by_hand"])
    for a, b, s in zip(
        jax.tree.leaves(ns["big"]),
        jax.tree.leaves(ns["big_by_hand"]),
        jax.tree.leaves(ns["shardings"]),
        strict=True,
    ):
        assert a.sharding == s and b.sharding == s
