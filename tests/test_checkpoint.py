"""Path-keyed checkpoints: `save`, `load`, `load_metadata`."""

import os
import stat
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod
from pytreemod import CheckpointError, CheckpointMismatchWarning, Module, field
from pytreemod._serialisation._archive import Archive

try:
    import fcntl
except ImportError:
    fcntl = None


class Dense(Module):
    weight: jax.Array
    bias: jax.Array


class NetV1(Module):
    layers: list
    scale: float
    name: str = field(static=True, default="net")


class NetV2(Module):
    # The refactor: fields reordered, and a new `head` layer.
    scale: float
    head: Dense
    layers: list
    name: str = field(static=True, default="net")


def _dense(seed, n=3, dtype=jnp.float32):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return Dense(
        jax.random.normal(k1, (n, n), dtype), jax.random.normal(k2, (n,), dtype)
    )


def _v1(seed=0):
    return NetV1([_dense(seed), _dense(seed + 1)], 2.0)


def _v2(seed=10):
    return NetV2(0.0, _dense(seed, 2), [_dense(seed + 1), _dense(seed + 2)])


def test_round_trip_with_metadata(tmp_path):
    path = tmp_path / "net.ckpt"
    pytreemod.save(path, _v1(), metadata={"step": 7, "lr": 0.1})
    loaded = pytreemod.load(path, _v1(5))
    assert pytreemod.tree_equal(loaded, _v1(), typematch=True)
    assert pytreemod.load_metadata(path) == {"step": 7, "lr": 0.1}


@pytest.mark.parametrize(
    "dtype", [jnp.bfloat16, jnp.float16, jnp.float8_e4m3fn, jnp.int8, jnp.bool_]
)
def test_jax_dtypes_round_trip(tmp_path, dtype):
    x = jnp.arange(6).reshape(2, 3).astype(dtype)
    pytreemod.save(tmp_path / "x", {"x": x})
    loaded = pytreemod.load(tmp_path / "x", {"x": jnp.zeros((2, 3), dtype)})["x"]
    assert loaded.dtype == dtype
    np.testing.assert_array_equal(
        np.asarray(loaded, np.float32), np.asarray(x, np.float32)
    )


def test_strict_mismatch_lists_every_path(tmp_path):
    path = tmp_path / "net.ckpt"
    pytreemod.save(path, _v1())
    bigger = NetV1([_dense(0, 4), _dense(1)], 2.0)
    with pytest.raises(
        CheckpointError, match=r"layers\[0\].weight: float32\[3, 3\] in"
    ):
        pytreemod.load(path, bigger)
    with pytest.raises(CheckpointError) as info:
        pytreemod.load(path, _v2())
    message = str(info.value)
    assert "missing from the file: head.weight, head.bias" in message
    assert "layers[0].weight" not in message  # same paths still match


def test_refactor_loads_with_strict_false_and_reports_the_new_layer(tmp_path):
    path = tmp_path / "net.ckpt"
    old = _v1()
    pytreemod.save(path, old)
    like = _v2()
    with pytest.warns(CheckpointMismatchWarning) as record:
        loaded = pytreemod.load(path, like, strict=False)
    warning = record[0].message
    assert warning.missing == ["head.weight", "head.bias"]
    assert warning.unexpected == [] and warning.mismatched == []
    # Reordered fields still find their values; the new layer keeps `like`'s.
    assert pytreemod.tree_equal(loaded.layers, old.layers)
    assert loaded.scale == 2.0
    assert loaded.head is like.head or pytreemod.tree_equal(loaded.head, like.head)


def test_model_and_state_in_one_file(tmp_path):
    class Counter(Module):
        dense: Dense
        index: pytreemod.nn.StateIndex

        def __init__(self, seed):
            self.dense = _dense(seed)
            self.index = pytreemod.nn.StateIndex(jnp.zeros(3))

    model, state = pytreemod.nn.make_with_state(Counter)(0)
    state = state.set(model.index, jnp.full(3, 4.0))
    pytreemod.save(tmp_path / "both", (model, state))
    like = pytreemod.nn.make_with_state(Counter)(1)
    new_model, new_state = pytreemod.load(tmp_path / "both", like)
    assert pytreemod.tree_equal(new_model.dense, model.dense)
    np.testing.assert_array_equal(new_state.get(new_model.index), jnp.full(3, 4.0))


def test_like_may_be_a_skeleton(tmp_path):
    pytreemod.save(tmp_path / "net", _v1())
    skeleton = pytreemod.filter_eval_shape(_v1, 3)
    loaded = pytreemod.load(tmp_path / "net", skeleton)
    assert pytreemod.tree_equal(loaded, _v1())


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "net.ckpt"
    pytreemod.save(path, _v1())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        pytreemod.load(path, _v1())


def test_corrupted_bytes_are_a_clear_error_not_a_partial_load(tmp_path):
    path = tmp_path / "net.ckpt"
    pytreemod.save(path, _v1())
    data = bytearray(path.read_bytes())
    # Flip a byte inside the first array's data (after the header member).
    offset = data.index(b"leaves/0") + 40
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        pytreemod.load(path, _v1())


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        pytreemod.load(path, _v1())


def test_unserialisable_metadata_and_skeleton_saves_are_errors(tmp_path):
    with pytest.raises(TypeError, match="`metadata` must be JSON-serialisable"):
        pytreemod.save(tmp_path / "m", _v1(), metadata={"f": print})
    with pytest.raises(CheckpointError, match="has no values to save"):
        pytreemod.save(tmp_path / "m", pytreemod.filter_eval_shape(_v1, 0))
    assert not (tmp_path / "m").exists()
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_a_crash_mid_write_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "big.ckpt"
    pytreemod.save(path, {"x": jnp.ones(4)}, metadata="old")
    script = textwrap.dedent(
        f"""
        import numpy as np, pytreemod
        big = {{f"a{{i}}": np.ones(2**20, np.float32) for i in range(128)}}
        while True:
            pytreemod.save({str(path)!r}, big, metadata="new")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not any(p.endswith(".tmp") for p in os.listdir(tmp_path)):
            assert time.monotonic() < deadline, "the save never started"
            time.sleep(0.005)
        proc.kill()
    finally:
        proc.wait()
    assert pytreemod.load_metadata(path) in ("old", "new")
    like = {"x": jnp.zeros(4)}
    if pytreemod.load_metadata(path) == "old":
        assert float(pytreemod.load(path, like)["x"][0]) == 1.0
    # The killed save's temporary file (if the kill came mid-write) is
    # removed by the next save of the path.
    pytreemod.save(path, {"x": jnp.ones(4)})
    assert os.listdir(tmp_path) == ["big.ckpt"]


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="no file modes")
def test_save_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    # Broke: a 0644 file was replaced by a 0600 one (from `mkstemp`).
    path = tmp_path / "m.ckpt"
    pytreemod.save(path, [1.0])
    os.chmod(path, 0o640)
    pytreemod.save(path, [2.0])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


@pytest.mark.skipif(not hasattr(os, "umask"), reason="no umask")
def test_a_new_file_gets_the_umasks_default_mode(tmp_path):
    old = os.umask(0o027)
    try:
        pytreemod.save(tmp_path / "m.ckpt", [1.0])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.ckpt").st_mode) == 0o640


def test_save_writes_through_a_symlink(tmp_path):
    # Broke: the link was replaced by a regular file.
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "real.ckpt"
    pytreemod.save(target, [1.0])
    link = tmp_path / "latest.ckpt"
    link.symlink_to(target)
    pytreemod.save(link, [2.0], metadata="via link")
    assert link.is_symlink()
    assert pytreemod.load_metadata(target) == "via link"
    assert pytreemod.load(link, [0.0]) == [2.0]
    assert sorted(os.listdir(tmp_path / "runs")) == ["real.ckpt"]
    # A dangling link gets its target created.
    dangling = tmp_path / "new.ckpt"
    dangling.symlink_to(tmp_path / "runs" / "new-target.ckpt")
    pytreemod.save(dangling, [3.0])
    assert dangling.is_symlink() and pytreemod.load(dangling, [0.0]) == [3.0]


@pytest.mark.skipif(fcntl is None, reason="no flock")
def test_leftovers_are_removed_but_a_running_save_is_left_alone(tmp_path):
    # Broke: 20 killed saves left 13 files (264 MiB) that nothing removed.
    path = tmp_path / "m.ckpt"
    stale = [tmp_path / f".m.ckpt.{i:012x}.tmp" for i in range(3)]
    for leftover in stale:
        leftover.write_bytes(b"half a checkpoint")
    running = tmp_path / ".m.ckpt.abcdef123456.tmp"
    running.write_bytes(b"being written")
    other = [tmp_path / ".other.ckpt.abcdef123456.tmp", tmp_path / "m.ckpt.tmp"]
    for name in other:
        name.write_bytes(b"not ours")
    with open(running, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as a live save holds it
        pytreemod.save(path, [1.0])
    assert not any(leftover.exists() for leftover in stale)
    assert running.exists() and all(name.exists() for name in other)


def test_weights_and_metadata_come_from_one_snapshot(tmp_path, monkeypatch):
    # Broke: `load` and `load_metadata` opened the file separately, so a
    # reader racing a writer could mix two saves.
    path = tmp_path / "m.ckpt"
    pytreemod.save(path, {"x": jnp.zeros(3)}, metadata={"step": 0})
    real_read = Archive.read
    raced = []

    def read_then_race(self, name, *args, **kwargs):
        data = real_read(self, name, *args, **kwargs)
        if not raced:  # another process saves right after the header is read
            raced.append(True)
            pytreemod.save(path, {"x": jnp.ones(3)}, metadata={"step": 1})
        return data

    monkeypatch.setattr(Archive, "read", read_then_race)
    tree, metadata = pytreemod.load(path, {"x": jnp.ones(3)}, with_metadata=True)
    assert raced and metadata == {"step": 0}
    np.testing.assert_array_equal(tree["x"], jnp.zeros(3))
    monkeypatch.undo()
    assert pytreemod.load(path, {"x": jnp.zeros(3)}, with_metadata=True)[1] == {
        "step": 1
    }


leaf_arrays = st.builds(
    lambda shape, dtype, seed: jnp.asarray(
        np.random.default_rng(seed).normal(size=shape), dtype=dtype
    ),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32, jnp.uint8]),
    st.integers(0, 50),
)
trees = st.recursive(
    st.one_of(leaf_arrays, st.floats(allow_nan=False), st.integers(-9, 9), st.none()),
    lambda c: st.one_of(
        st.lists(c, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), c, max_size=3),
        st.builds(Dense, c, c),
    ),
    max_leaves=8,
)


@settings(max_examples=30, deadline=None)
@given(trees)
def test_round_trip_property(tmp_path_factory, tree):
    path = tmp_path_factory.mktemp("ckpt") / "t"
    pytreemod.save(path, tree)
    like = jax.tree_util.tree_map(
        lambda x: jnp.zeros_like(x) if isinstance(x, jax.Array) else x, tree
    )
    assert pytreemod.tree_equal(pytreemod.load(path, like), tree, typematch=True)


def test_load_places_on_the_asked_sharding_and_keeps_numpy_on_the_host(tmp_path):
    cpu = jax.devices("cpu")[0]
    path = tmp_path / "m.ckpt"
    tree = {"w": jnp.arange(3.0), "n": np.ones(2, np.float32), "s": 2.0}
    pytreemod.save(path, tree)
    like = {"w": jnp.zeros(3), "n": np.zeros(2, np.float32), "s": 0.0}
    out = pytreemod.load(path, like, shardings=cpu)
    assert out["w"].sharding == jax.sharding.SingleDeviceSharding(cpu)
    assert isinstance(out["n"], np.ndarray) and out["s"] == 2.0
    np.testing.assert_array_equal(out["w"], tree["w"])
    out = pytreemod.load(path, like, shardings={"w": None, "n": cpu, "s": None})
    np.testing.assert_array_equal(out["w"], tree["w"])


def test_load_with_shardings_of_another_structure_is_an_error(tmp_path):
    path = tmp_path / "m.ckpt"
    pytreemod.save(path, {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="`shardings` must be a"):
        pytreemod.load(path, {"w": jnp.ones(2)}, shardings=[jax.devices()[0]])
