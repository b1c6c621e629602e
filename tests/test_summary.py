"""`pytreemod.summary`: a table of what a model holds, and its data."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import pytreemod as eqx


class Block(eqx.Module):
    up: jax.Array = eqx.field(axes=("mlp", "embed"))
    bias: np.ndarray
    scale: float
    name: str = eqx.field(static=True, default="block")


class Model(eqx.Module):
    embed: jax.Array
    blocks: list
    act: str = eqx.field(static=True, default="relu")


def _model() -> Model:
    block = lambda: Block(jnp.ones((8, 4)), np.zeros(8, np.float32), 0.5)
    return Model(jnp.ones((10, 4), jnp.bfloat16), [block(), block()])


def test_rows_hold_path_type_shape_dtype_counts_axes_and_sharding():
    rows = {r["path"]: r for r in eqx.summary(_model()).to_dict()["arrays"]}
    assert list(rows) == [
        ".embed",
        ".blocks[0].up",
        ".blocks[0].bias",
        ".blocks[1].up",
        ".blocks[1].bias",
    ]
    up = rows[".blocks[1].up"]
    assert up["type"] == "Block" and up["shape"] == [8, 4]
    assert up["dtype"] == "float32" and up["params"] == 32 and up["bytes"] == 128
    assert up["axes"] == ["mlp", "embed"]
    assert up["sharding"] == f"cpu:{jax.devices('cpu')[0].id}"
    assert rows[".blocks[0].bias"]["sharding"] == "host"
    assert rows[".blocks[0].bias"]["axes"] is None
    assert rows[".embed"]["bytes"] == 80  # bfloat16: 2 bytes


def test_totals_per_top_level_field_and_overall():
    data = eqx.summary(_model()).to_dict()
    assert data["fields"] == {
        ".embed": {"arrays": 1, "params": 40, "bytes": 80},
        ".blocks": {"arrays": 4, "params": 80, "bytes": 320},
    }
    assert data["total"] == {"arrays": 5, "params": 120, "bytes": 400}


def test_static_fields_and_other_leaves_are_listed_compactly():
    data = eqx.summary(_model()).to_dict()
    assert data["static"][0] == {
        "path": "<root>",
        "type": "Model",
        "fields": {"act": "'relu'"},
    }
    assert {"path": ".blocks[0].scale", "type": "float", "value": "0.5"} in data[
        "other"
    ]
    text = str(eqx.summary(_model()))
    assert "<root>  Model  act='relu'" in text
    assert ".blocks[1]  Block  name='block'" in text


def test_the_table_lists_every_row_and_total():
    lines = str(eqx.summary(_model())).splitlines()
    assert lines[0].split() == [
        "path",
        "type",
        "shape",
        "dtype",
        "params",
        "bytes",
        "axes",
        "sharding",
    ]
    assert lines[3].split()[:6] == [
        ".blocks[0].up",
        "Block",
        "(8,",
        "4)",
        "float32",
        "32",
    ]
    assert "(mlp, embed)" in lines[3]
    assert any(line.startswith(".blocks (4 arrays)") for line in lines)
    total = next(line for line in lines if line.startswith("total (5 arrays)"))
    assert total.split()[-3:] == ["120", "400", "B"]
    assert repr(eqx.summary(_model())) == "Summary(5 arrays, 120 parameters, 400 B)"


def test_an_abstract_model_is_summarised_without_memory():
    # 40 GB of float32 if it were allocated.
    abstract = eqx.filter_eval_shape(
        eqx.nn.Linear, 100_000, 100_000, key=jax.random.key(0)
    )
    data = eqx.summary(abstract).to_dict()
    assert data["total"]["bytes"] == 4 * (100_000 * 100_000 + 100_000)
    assert data["arrays"][0]["sharding"] is None
    assert "37.3 GiB" in str(eqx.summary(abstract))


def test_rules_give_axes():
    rules = [(r"\.embed", ("vocab", "embed"))]
    rows = eqx.summary(_model(), rules).to_dict()["arrays"]
    assert rows[0]["axes"] == ["vocab", "embed"]


def test_a_single_array_and_scalars():
    data = eqx.summary(jnp.float32(2.0)).to_dict()
    assert data["arrays"][0]["path"] == "<root>"
    assert data["arrays"][0]["shape"] == [] and data["total"]["params"] == 1
    assert str(eqx.summary({})).splitlines()[-1].startswith("total (0 arrays)")


@given(st.lists(st.lists(st.integers(0, 5), max_size=3), max_size=5))
def test_totals_are_the_sums_of_the_rows(shapes):
    tree = [np.zeros(shape, np.float32) for shape in shapes]
    data = eqx.summary(tree).to_dict()
    assert [r["shape"] for r in data["arrays"]] == shapes
    assert data["total"]["params"] == sum(int(np.prod(s)) for s in shapes)
    assert data["total"]["bytes"] == 4 * data["total"]["params"]
    assert sum(t["params"] for t in data["fields"].values()) == data["total"]["params"]
