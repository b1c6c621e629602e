"""Checkpoint folders (the format of saves on many processes) on one
process: round trips, any grid of shards read back into any layout, and
folders crafted or damaged by someone else (every problem a
`CheckpointError` saying what is wrong). The multi-process tests are in
test_checkpoint_many_processes.py."""

import itertools
import json
import os
import shutil
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import run_on_cpu_devices
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod
from pytreemod import CheckpointError

TREE = {"w": jnp.arange(12.0).reshape(4, 3), "n": 3, "a": np.ones(2, np.int8)}


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    pytreemod.save(path, TREE, metadata={"step": 1})
    return path


def _header(path):
    return json.loads((path / "header.json").read_text())


def _write_header(path, header):
    (path / "header.json").write_text(json.dumps(header))


def _data_file(path, process=0):
    return path / _header(path)["data"] / f"process-{process}.zip"


def test_round_trip_and_metadata(folder):
    out, metadata = pytreemod.load(folder, TREE, with_metadata=True)
    assert pytreemod.tree_equal(out, TREE)
    assert metadata == {"step": 1} == pytreemod.load_metadata(folder)
    assert isinstance(out["a"], np.ndarray) and out["a"].flags.writeable
    header = _header(folder)
    assert header["version"] == 3 and header["processes"] == 1
    assert sorted(os.listdir(folder)) == sorted(["header.json", header["data"]])


def test_a_second_save_keeps_the_previous_data_for_readers_and_no_older(folder):
    first = _header(folder)["data"]
    pytreemod.save(folder, {**TREE, "n": 4})
    second = _header(folder)["data"]
    assert {first, second} <= set(os.listdir(folder))
    pytreemod.save(folder, {**TREE, "n": 5})
    assert first not in os.listdir(folder)
    assert pytreemod.load(folder, TREE)["n"] == 5


def test_strict_and_partial_loads_work_on_folders(folder):
    like = {**TREE, "w": jnp.zeros((4, 3)), "extra": jnp.zeros(2)}
    with pytest.raises(CheckpointError, match=r"missing from the file: \['extra'\]"):
        pytreemod.load(folder, like)
    with pytest.warns(pytreemod.CheckpointMismatchWarning, match="extra"):
        out = pytreemod.load(folder, like, strict=False)
    assert np.array_equal(out["w"], TREE["w"]) and np.array_equal(out["extra"], [0, 0])


def _craft(path, array, cuts, owners):
    """A folder checkpoint of `{"w": array}` written by hand: dimension `d`
    cut at `cuts[d]`, the shards spread over processes by `owners`."""
    shutil.rmtree(path, ignore_errors=True)
    data = path / "data-0123456789ab"
    data.mkdir(parents=True)
    bounds = [
        list(zip([0, *c], [*c, n], strict=True))
        for c, n in zip(cuts, array.shape, strict=True)
    ]
    shards, files = [], {}
    for number, cell in enumerate(itertools.product(*bounds)):
        process = owners[number % len(owners)]
        member = f"leaves/0/{number}"
        piece = np.ascontiguousarray(array[tuple(slice(a, b) for a, b in cell)])
        files.setdefault(process, []).append((member, piece.tobytes()))
        shards.append(
            {
                "start": [a for a, _ in cell],
                "stop": [b for _, b in cell],
                "process": process,
                "member": member,
                "crc32": zipfile.crc32(piece.tobytes()),
            }
        )
    for process, members in files.items():
        with zipfile.ZipFile(data / f"process-{process}.zip", "w") as out:
            for member, raw in members:
                out.writestr(member, raw)
    leaf = {"path": "['w']", "kind": "numpy", "dtype": array.dtype.name}
    leaf.update(shape=list(array.shape), shards=shards)
    header = {"format": "pytreemod-checkpoint", "version": 3, "metadata": None}
    header.update(data=data.name, processes=max(owners) + 1, leaves=[leaf])
    _write_header(path, header)


@st.composite
def grids(draw):
    shape = draw(st.lists(st.integers(1, 6), min_size=0, max_size=3))
    cuts = [
        sorted(draw(st.sets(st.integers(1, n - 1), max_size=3))) if n > 1 else []
        for n in shape
    ]
    owners = draw(st.lists(st.integers(0, 3), min_size=1, max_size=4))
    return tuple(shape), cuts, owners


@settings(max_examples=40, deadline=None)
@given(grids())
def test_any_grid_of_shards_reads_back_whole(tmp_path_factory, grid):
    shape, cuts, owners = grid
    path = tmp_path_factory.mktemp("grid") / "ckpt"
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    _craft(path, array, cuts, owners)
    out = pytreemod.load(path, {"w": np.zeros(shape, np.float32)})
    np.testing.assert_array_equal(out["w"], array)


# Saved on one sharding of 8 devices, restored on another: each device's box
# is cut from the saved shards that overlap it.
_RESHARD = """
import json, tempfile, os
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import pytreemod
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
specs = [P(), P("a"), P("b"), P("a", "b"), P("b", "a"), P(("a", "b")), P(None, "b")]
host = np.arange(8 * 12, dtype=np.float32).reshape(8, 12)
ok = []
for saved in specs:
    path = os.path.join(tempfile.mkdtemp(), "ckpt")
    os.mkdir(path)
    x = jax.device_put(host, NamedSharding(mesh, saved))
    pytreemod.save(path, {"x": x})
    for wanted in specs:
        like = {"x": jax.ShapeDtypeStruct(host.shape, host.dtype,
                                          sharding=NamedSharding(mesh, wanted))}
        y = pytreemod.load(path, like)["x"]
        ok.append(bool(np.array_equal(np.asarray(y), host))
                  and y.sharding.spec == wanted)
print(json.dumps(ok))
"""


def test_restoring_onto_every_other_sharding_of_eight_devices():
    done = run_on_cpu_devices(_RESHARD, 8, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ok = json.loads(done.stdout.strip().splitlines()[-1])
    assert ok == [True] * 49


def _w(header):
    (leaf,) = [leaf for leaf in header["leaves"] if leaf["path"] == "['w']"]
    return leaf


def _edit_shard(edit):
    def apply(header):
        edit(_w(header)["shards"][0], header)

    return apply


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda h: h.update(data="../../etc"), "not a data folder name"),
        (lambda h: h.update(data=7), "not a data folder name"),
        (lambda h: h.update(processes=0), "not a process count"),
        (lambda h: h.update(processes=True), "not a process count"),
        (lambda h: h.update(version=2), "version 2 is the header of a single file"),
        (lambda h: h["leaves"][0].update(shards=[]), 'has no "shards" list'),
        (lambda h: h["leaves"][0].update(shards=None), 'has no "shards" list'),
        (lambda h: h["leaves"][0]["shards"].append(1), "not an object"),
        (_edit_shard(lambda s, h: s.update(stop=[5, 3])), "not a box of its shape"),
        (_edit_shard(lambda s, h: s.update(start=[0])), "not a box of its shape"),
        (_edit_shard(lambda s, h: s.update(start=[True, 0])), "not a box"),
        (_edit_shard(lambda s, h: s.update(stop=[2, 3])), "do not cover dimension 0"),
        (_edit_shard(lambda s, h: s.update(process=1)), '"process" = 1'),
        (_edit_shard(lambda s, h: s.update(member=3)), '"member" = 3'),
        (_edit_shard(lambda s, h: s.update(crc32=-1)), "not a CRC-32"),
        (
            lambda h: h["leaves"][1]["shards"][0].update(
                member=h["leaves"][0]["shards"][0]["member"]
            ),
            "used twice",
        ),
        (
            lambda h: _w(h)["shards"].append(_w(h)["shards"][0]),
            "do not tile its array exactly once",
        ),
    ],
)
def test_every_folder_header_field_is_checked(folder, edit, match):
    header = _header(folder)
    edit(header)
    _write_header(folder, header)
    for read in (
        lambda: pytreemod.load(folder, TREE),
        lambda: pytreemod.load_metadata(folder),
    ):
        with pytest.raises(CheckpointError, match=match):
            read()


def test_shards_that_overlap_or_miss_a_cell_are_refused(tmp_path):
    path = tmp_path / "ckpt"
    array = np.arange(16.0, dtype=np.float32).reshape(4, 4)
    like = {"w": np.zeros((4, 4), np.float32)}
    _craft(path, array, [[2], [2]], [0])
    header = _header(path)
    shards = header["leaves"][0]["shards"]
    # Four cells, one listed twice under another member: a cell is missing.
    _write_header(
        path, {**header, "leaves": [{**header["leaves"][0], "shards": shards[:3] + [
            {**shards[0], "member": "leaves/0/9"}]}]}
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="do not tile its array exactly once"):
        pytreemod.load(path, like)
    # Cut along dimension 0 at 1 for one shard and at 2 for the others.
    _write_header(
        path, {**header, "leaves": [{**header["leaves"][0], "shards": [
            {**shards[0], "stop": [1, 2]}, *shards[1:]]}]}
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="overlap or leave a gap"):
        pytreemod.load(path, like)


def test_a_folder_without_a_header_holds_no_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="holds no committed checkpoint"):
        pytreemod.load(tmp_path, TREE)
    with pytest.raises(CheckpointError, match="holds no committed checkpoint"):
        pytreemod.load_metadata(tmp_path)


def test_an_oversized_folder_header_is_refused_before_it_is_read(folder):
    with open(folder / "header.json", "ab") as f:
        f.truncate(9 << 20)
    with pytest.raises(CheckpointError, match="more than the 8388608"):
        pytreemod.load_metadata(folder)


def test_a_folder_header_in_a_file_and_a_file_header_in_a_folder(folder, tmp_path):
    single = tmp_path / "single.ckpt"
    with zipfile.ZipFile(single, "w") as out:
        out.writestr("header.json", (folder / "header.json").read_text())
    with pytest.raises(CheckpointError, match="version 3 is the header of a folder"):
        pytreemod.load(single, TREE)


def test_damaged_data_files(folder):
    data = _data_file(folder)
    original = data.read_bytes()
    like = TREE

    # The data's bytes, changed in place (same size): the CRC-32 catches it.
    raw = bytearray(original)
    at = raw.index(np.asarray(TREE["w"]).tobytes()[:8])
    raw[at] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="fails its CRC-32 check"):
        pytreemod.load(folder, like)

    # Truncated.
    data.write_bytes(original[:-10])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        pytreemod.load(folder, like)

    # A member more than the header lists.
    with zipfile.ZipFile(data, "w") as out:
        with zipfile.ZipFile(__import__("io").BytesIO(original)) as old:
            for info in old.infolist():
                out.writestr(info, old.read(info))
        out.writestr("leaves/9/0", b"extra")
    with pytest.raises(CheckpointError, match="not the ones the checkpoint's header"):
        pytreemod.load(folder, like)

    # Another member's bytes under this name (its own CRC is fine).
    header = _header(folder)
    _w(header)["shards"][0]["crc32"] ^= 1
    data.write_bytes(original)
    _write_header(folder, header)
    with pytest.raises(CheckpointError, match="another CRC-32"):
        pytreemod.load(folder, like)

    # Gone.
    data.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        pytreemod.load(folder, like)


def test_a_file_named_like_a_folder_checkpoint_is_read_as_a_file(tmp_path):
    # `save` writes a file unless more than one process saves or `path` is a
    # folder: a new path gets the single-file format, as before.
    path = tmp_path / "new"
    pytreemod.save(path, TREE)
    assert path.is_file()
    assert pytreemod.tree_equal(pytreemod.load(path, TREE), TREE)


def test_a_sharded_array_is_saved_as_one_shard_by_one_process(folder):
    # On one process every array is one shard: nothing is split or repeated.
    header = _header(folder)
    assert [len(leaf["shards"]) for leaf in header["leaves"]] == [1, 1, 1]
    assert jax.process_count() == 1


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**33) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fuzzed_folders_load_identically_or_raise(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "ckpt"
    _craft(path, np.arange(24.0, dtype=np.float32).reshape(4, 6), [[2], [3]], [0, 1])
    like = {"w": np.zeros((4, 6), np.float32)}
    if data.draw(st.booleans()):  # a header field changed or dropped
        header = _header(path)
        leaf = header["leaves"][0]
        target = data.draw(st.sampled_from([header, leaf, *leaf["shards"]]))
        key = data.draw(st.sampled_from([*target, "extra"]))
        if data.draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = data.draw(_json_values)
        _write_header(path, header)
    else:  # bytes of a data file or of the header flipped, cut or appended
        file = data.draw(
            st.sampled_from([path / "header.json", *sorted(path.glob("data-*/*"))])
        )
        raw = bytearray(file.read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1))
        kind = data.draw(st.sampled_from(["flip", "cut", "append"]))
        if kind == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[at:]
        else:
            raw += b"PK\x05\x06" + bytes(at % 40)
        file.write_bytes(bytes(raw))
    try:
        loaded = pytreemod.load(path, like)
    except CheckpointError:
        return
    np.testing.assert_array_equal(
        loaded["w"], np.arange(24.0, dtype=np.float32).reshape(4, 6)
    )


def test_a_save_of_more_processes_than_files_kept_open_reads_back(tmp_path):
    # One process restoring a save of many: data files are opened as needed,
    # and the least recently used closed, so file descriptors stay bounded.
    from pytreemod._serialisation._folder import MAX_OPEN

    n = MAX_OPEN + 6
    array = np.arange(2 * n, dtype=np.float32)
    _craft(tmp_path / "ckpt", array, [list(range(2, 2 * n, 2))], list(range(n)))
    before = len(os.listdir("/proc/self/fd"))
    out = pytreemod.load(tmp_path / "ckpt", {"w": np.zeros(2 * n, np.float32)})
    np.testing.assert_array_equal(out["w"], array)
    assert len(os.listdir("/proc/self/fd")) == before
