"""`load` and `load_metadata` on files crafted or damaged by someone else:
every read is bounded, every problem is a `CheckpointError` that says what is
wrong, and nothing else escapes. Each test reproduces a case of issue 12."""

import json
import os
import struct
import tracemalloc
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod
from pytreemod import CheckpointError

LIKE = {"w": jnp.ones(3), "b": 2.0}
# What loading any of these small files may allocate, at most.
MEMORY_BOUND = 4 << 20


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.ckpt"
    pytreemod.save(path, LIKE, metadata={"step": 1})
    with zipfile.ZipFile(path) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    return path, members


def _header(members):
    return json.loads(members["header.json"])


def _rebuild(path, members, compress=None):
    """Write `members` (name -> bytes) as a zip; `compress` maps names to a
    compression method."""
    compress = compress or {}
    with zipfile.ZipFile(path, "w") as out:
        for name, data in members.items():
            if not isinstance(data, bytes):
                data = json.dumps(data).encode()
            out.writestr(zipfile.ZipInfo(name), data, compress.get(name, 0))


def _peak(load):
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            load()
        return tracemalloc.get_traced_memory()[1], str(info.value)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_DEFLATED])
def test_a_compressed_leaf_is_refused_before_it_is_inflated(saved, method):
    # Broke: `archive.read` inflated a ~1 KB bzip2 member to 460 MB before
    # comparing its size with the header's.
    path, members = saved
    leaf = _header(members)["leaves"][1]["member"]
    _rebuild(path, {**members, leaf: bytes(64 << 20)}, {leaf: method})
    assert os.path.getsize(path) < 1 << 20
    peak, message = _peak(lambda: pytreemod.load(path, LIKE))
    assert peak < MEMORY_BOUND
    assert "is compressed" in message


def test_a_compressed_header_is_refused_by_load_metadata(saved):
    # Broke: `load_metadata` inflated a compressed header and returned.
    path, members = saved
    header = _header(members)
    header["metadata"] = "x" * (64 << 20)
    _rebuild(path, {**members, "header.json": header}, {"header.json": 8})
    peak, message = _peak(lambda: pytreemod.load_metadata(path))
    assert peak < MEMORY_BOUND
    assert "`header.json` is compressed" in message


def test_an_oversized_header_is_refused_before_it_is_read(saved):
    path, members = saved
    header = _header(members)
    header["metadata"] = "x" * (16 << 20)
    _rebuild(path, {**members, "header.json": header})
    peak, message = _peak(lambda: pytreemod.load_metadata(path))
    assert peak < MEMORY_BOUND
    assert "more than the" in message


def test_a_huge_declared_shape_is_compared_with_like_first(saved):
    path, members = saved
    header = _header(members)
    header["leaves"][1]["shape"] = [2**40]
    _rebuild(path, {**members, "header.json": header})
    with pytest.raises(CheckpointError, match=r"float32\[1099511627776\] in the f"):
        pytreemod.load(path, LIKE)
    # Even when `like` asks for it, the member's real size decides.
    skeleton = {"w": jax.ShapeDtypeStruct((2**40,), jnp.float32), "b": 2.0}
    peak, message = _peak(lambda: pytreemod.load(path, skeleton))
    assert peak < MEMORY_BOUND
    assert "holds 12 bytes, expected 4398046511104" in message


@pytest.mark.parametrize(
    "header, match",
    [
        ([], "it is a JSON list, not an object"),
        ("x", "it is a JSON str, not an object"),
        (b"[" * 200_000, "nested too deeply"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_a_header_that_is_not_an_object(saved, header, match):
    # Broke: AttributeError for a list or string, RecursionError when nested.
    path, members = saved
    _rebuild(path, {**members, "header.json": header})
    for read in (
        lambda: pytreemod.load(path, LIKE),
        lambda: pytreemod.load_metadata(path),
    ):
        with pytest.raises(CheckpointError, match=match):
            read()


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda h: h.update(leaves=None), 'lacks the "leaves" list'),
        (lambda h: h["leaves"][1].update(shape=12), '"shape" = 12, not a list'),
        (lambda h: h["leaves"][1].update(shape=[-1]), r'"shape" = \[-1\]'),
        (lambda h: h["leaves"][1].update(shape=[True]), r'"shape" = \[True\]'),
        (lambda h: h["leaves"][1].update(path=["w"]), r"\"path\" = \['w'\]"),
        (lambda h: h["leaves"][1].update(dtype="object"), "dtype 'object'"),
        (lambda h: h["leaves"][1].update(dtype="<U3"), "dtype '<U3'"),
        (lambda h: h["leaves"][1].update(kind=3), '"kind" = 3'),
        (lambda h: h["leaves"][1].update(crc32="x"), "not a CRC-32"),
        (lambda h: h["leaves"][1].update(member="leaves/0"), "used twice"),
        (lambda h: h["leaves"][1].update(path="['b']"), "appears twice"),
        (lambda h: h["leaves"].append(1), "leaf 2 is int, not an object"),
        (lambda h: h.update(version=True), "version True checkpoint"),
        (lambda h: h.update(version=9), "version 9 checkpoint"),
        (lambda h: h.update(format="other"), "not a pytreemod checkpoint"),
    ],
)
def test_every_header_field_is_checked(saved, edit, match):
    # Broke: `"leaves": null` gave TypeError (and `load_metadata` returned
    # None), `"shape": 12` and `"path": ["w"]` gave TypeError.
    path, members = saved
    header = _header(members)
    edit(header)
    _rebuild(path, {**members, "header.json": header})
    for read in (
        lambda: pytreemod.load(path, LIKE),
        lambda: pytreemod.load_metadata(path),
    ):
        with pytest.raises(CheckpointError, match=match):
            read()


def _set_flag(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<H", value) + data[offset + 2 :]


@pytest.mark.parametrize(
    "field, value, match",
    [
        (10, 99, "is compressed"),  # compression method in the central directory
        (8, 1, "encrypted"),  # flag bits: encrypted
        (8, 8, "encrypted or streamed"),  # flag bits: data descriptor
    ],
)
def test_zip_structure_edits(saved, field, value, match):
    # Broke: an unknown method gave NotImplementedError, the encryption flag
    # RuntimeError, a damaged deflate stream zlib.error.
    path, _ = saved
    data = path.read_bytes()
    at = data.index(b"PK\x01\x02")  # the first central-directory entry
    path.write_bytes(_set_flag(data, at + field, value))
    with pytest.raises(CheckpointError, match=match):
        pytreemod.load(path, LIKE)


def test_a_damaged_deflate_stream_is_a_checkpoint_error(saved):
    path, members = saved
    _rebuild(path, {**members, "leaves/1": b"\x00" * 12}, {"leaves/1": 8})
    data = bytearray(path.read_bytes())
    data[data.index(b"leaves/1") + 8] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        pytreemod.load(path, LIKE)


@pytest.mark.parametrize("extra", [b"\x00", b"PK\x05\x06" + bytes(18)])
def test_trailing_data_is_an_error(saved, extra):
    path, _ = saved
    path.write_bytes(path.read_bytes() + extra)
    with pytest.raises(CheckpointError, match="data appended|central directory"):
        pytreemod.load(path, LIKE)


def test_a_member_not_in_the_header_is_an_error(saved):
    path, members = saved
    _rebuild(path, {**members, "leaves/9": b"x"})
    with pytest.raises(CheckpointError, match=r"members \['leaves/9'\] are not in"):
        pytreemod.load(path, LIKE)


def test_swapped_members_are_caught_by_the_header_crc(tmp_path):
    path = tmp_path / "m.ckpt"
    pytreemod.save(path, {"a": jnp.zeros(3), "b": jnp.ones(3)})
    with zipfile.ZipFile(path) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    a, b = members["leaves/0"], members["leaves/1"]
    _rebuild(path, {**members, "leaves/0": b, "leaves/1": a})
    with pytest.raises(CheckpointError, match="members were swapped or replaced"):
        pytreemod.load(path, {"a": jnp.zeros(3), "b": jnp.zeros(3)})


def test_a_leaf_order_file_names_the_function_that_reads_it(tmp_path):
    path = tmp_path / "m.eqx"
    pytreemod.tree_serialise_leaves(path, [jnp.ones(3)])
    for read in (
        lambda: pytreemod.load(path, LIKE),
        lambda: pytreemod.load_metadata(path),
    ):
        with pytest.raises(CheckpointError, match="tree_deserialise_leaves"):
            read()


def test_version_1_files_still_load(saved):
    path, members = saved
    header = _header(members)
    header["version"] = 1
    for leaf in header["leaves"]:
        del leaf["crc32"]
    _rebuild(path, {"header.json": header, **members} | {"header.json": header})
    loaded = pytreemod.load(path, {"w": jnp.zeros(3), "b": 0.0})
    assert pytreemod.tree_equal(loaded, LIKE)


def test_numpy_leaves_load_writable_and_native(tmp_path):
    big_endian = np.arange(3, dtype=">f4")
    pytreemod.save(tmp_path / "m", {"x": big_endian})
    loaded = pytreemod.load(tmp_path / "m", {"x": np.zeros(3, np.float32)})["x"]
    np.testing.assert_array_equal(loaded, [0.0, 1.0, 2.0])
    loaded[0] = 5.0  # writable
