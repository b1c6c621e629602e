"""Fuzzing both file formats: valid files, mutated (bit flips, truncation,
insertions, header edits, member/record swaps, compression changes), must
load as the identical model or raise the documented error, within a memory
bound. Reproducible: the hypothesis profile in conftest derandomises."""

import io
import json
import tracemalloc
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytreemod
from pytreemod import CheckpointError

MODEL = {
    "w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
    "h": jnp.ones(2, jnp.bfloat16),
    "n": np.arange(3, dtype=np.int8),
    "s": 1.5,
    "i": 3,
    "f": np.float32(2.0),
}
METADATA = {"step": 7, "tags": ["a"]}
# Loading a file of a few KB into a model of a few bytes: far below this.
MEMORY_BOUND = 4 << 20
FUZZ = settings(
    max_examples=150,
    deadline=5000,  # nothing may hang; generous for a busy CI machine
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _like():
    return jax.tree_util.tree_map(
        lambda x: x * 0 if isinstance(x, (jax.Array, np.ndarray)) else x, MODEL
    )


def _within_memory(read):
    """`read()`'s result, or the exception it raised, and its memory peak."""
    tracemalloc.start()
    try:
        try:
            result = read()
        except Exception as e:
            result = e
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["float32", "bfloat16", "int8", "object", "leaves/0", "w"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c),
    max_leaves=5,
)


def _checkpoint_bytes(tmp_path) -> bytes:
    pytreemod.save(tmp_path / "base.ckpt", MODEL, metadata=METADATA)
    return (tmp_path / "base.ckpt").read_bytes()


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(i.filename, archive.read(i)) for i in archive.infolist()]


def _zip(members: list[tuple[str, bytes]], methods: dict[str, int]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name), data, methods.get(name, 0))
    return out.getvalue()


@st.composite
def _byte_mutation(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        mutated = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            mutated[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(mutated)
    if kind == "truncate":
        return data[:at]
    junk = draw(st.binary(min_size=1, max_size=24))
    if kind == "insert":
        return data[:at] + junk + data[at:]
    return data[:at] + junk + data[at + len(junk) :]


@st.composite
def _checkpoint_mutation(draw, data: bytes) -> tuple[str, bytes]:
    members = _members(data)
    kind = draw(st.sampled_from(["bytes", "header", "swap", "compress", "drop"]))
    if kind == "bytes":
        return kind, draw(_byte_mutation(data))
    if kind == "header":
        header = json.loads(dict(members)["header.json"])
        target = draw(st.sampled_from([header, *header["leaves"]]))
        key = draw(st.sampled_from([*target, "extra"]))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
        edited = json.dumps(header).encode()
        return kind, _zip(
            [(n, edited if n == "header.json" else d) for n, d in members], {}
        )
    if kind == "swap":
        names = draw(st.permutations([n for n, _ in members]))
        return kind, _zip(list(zip(names, [d for _, d in members], strict=True)), {})
    if kind == "compress":
        name = draw(st.sampled_from([n for n, _ in members]))
        method = draw(
            st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
        )
        return kind, _zip(members, {name: method})
    dropped = draw(st.integers(0, len(members) - 1))
    return kind, _zip(members[:dropped] + members[dropped + 1 :], {})


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoints_load_identically_or_raise(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    kind, mutated = data.draw(_checkpoint_mutation(_checkpoint_bytes(folder)))
    path = folder / "mutated.ckpt"
    path.write_bytes(mutated)
    loaded, peak = _within_memory(lambda: pytreemod.load(path, _like()))
    assert peak < MEMORY_BOUND
    if not isinstance(loaded, CheckpointError):
        assert not isinstance(loaded, Exception), repr(loaded)
        assert pytreemod.tree_equal(loaded, MODEL, typematch=True)
    metadata, peak = _within_memory(lambda: pytreemod.load_metadata(path))
    assert peak < MEMORY_BOUND
    if not isinstance(metadata, CheckpointError):
        assert not isinstance(metadata, Exception), repr(metadata)
        assert kind == "header" or metadata == METADATA


def _leaf_file() -> tuple[bytes, list[int]]:
    """The Equinox-layout file of MODEL, and where each record starts."""
    f = io.BytesIO()
    starts = []
    for leaf in jax.tree_util.tree_leaves(MODEL):
        starts.append(f.tell())
        pytreemod.default_serialise_filter_spec(f, leaf)
    return f.getvalue(), starts


npy_headers = st.builds(
    lambda descr, order, shape, pad: (
        f"{{'descr': {descr}, 'fortran_order': {order}, 'shape': {shape}, }}"
        + " " * pad
        + "\n"
    ),
    st.sampled_from(
        ["'<f4'", "'<V2'", "'|i1'", "'<f8'", "'>f4'", "'|O'", "'<i8'", "3"]
    ),
    st.sampled_from(["False", "True", "0", "'x'"]),
    st.sampled_from(
        ["()", "(3,)", "(2, 3)", "(3, 2)", "(2,)", "(1099511627776,)", "[3]"]
    ),
    st.integers(0, 70),
) | st.text(max_size=40)


@st.composite
def _leaf_mutation(draw, data: bytes, starts: list[int]) -> bytes:
    records = [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]
    kind = draw(st.sampled_from(["bytes", "header", "swap", "append"]))
    if kind == "bytes":
        return draw(_byte_mutation(data))
    if kind == "swap":
        return b"".join(draw(st.permutations(records)))
    if kind == "append":
        return data + draw(st.binary(max_size=16) | st.sampled_from(records))
    index = draw(st.integers(0, len(records) - 1))
    record = records[index]
    size = int.from_bytes(record[8:10], "little")
    text = draw(npy_headers).encode("utf-8")
    version = draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00"]))
    length = len(text).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    records[index] = b"\x93NUMPY" + version + length + text + record[10 + size :]
    return b"".join(records)


def _signature(tree):
    def one(x):
        if isinstance(x, (jax.Array, np.ndarray)):
            return type(x).__name__, x.shape, x.dtype
        return type(x).__name__

    return jax.tree_util.tree_map(one, tree)


@FUZZ
@given(data=st.data())
def test_fuzzed_leaf_files_load_alike_or_raise(tmp_path_factory, data):
    # The layout has no checksum, so damaged values may load; the structure,
    # types, shapes and dtypes never differ from `like`.
    raw, starts = _leaf_file()
    path = tmp_path_factory.mktemp("fuzz") / "mutated.eqx"
    path.write_bytes(data.draw(_leaf_mutation(raw, starts)))
    loaded, peak = _within_memory(
        lambda: pytreemod.tree_deserialise_leaves(path, _like())
    )
    assert peak < MEMORY_BOUND
    if isinstance(loaded, ValueError):
        assert isinstance(loaded, RuntimeError)  # Equinox's type too
        assert "path" in str(loaded) or "after the last leaf" in str(loaded)
    else:
        assert not isinstance(loaded, Exception), repr(loaded)
        assert _signature(loaded) == _signature(MODEL)


@pytest.mark.parametrize("size", [0, 1, 7, 100])
def test_files_of_zeros(tmp_path, size):
    path = tmp_path / "zeros.bin"
    path.write_bytes(bytes(size))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        pytreemod.load(path, _like())
    with pytest.raises(ValueError, match=r"Error at leaf with path \(DictKey"):
        pytreemod.tree_deserialise_leaves(path, _like())
