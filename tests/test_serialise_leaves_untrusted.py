"""`tree_deserialise_leaves` on files crafted or damaged by someone else:
reads are bounded, nothing is evaluated, and every problem is a `ValueError`
(also Equinox's `RuntimeError`) naming the leaf. Cases of issue 12."""

import io
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod
from pytreemod import CheckpointError

MEMORY_BOUND = 4 << 20


def _npy(header: str, data: bytes = b"") -> bytes:
    text = header.encode("latin-1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def _load(data: bytes, like):
    return pytreemod.tree_deserialise_leaves(io.BytesIO(data), like)


def test_errors_are_value_errors_and_equinox_runtime_errors():
    with pytest.raises(ValueError, match=r"Error at leaf with path \(\)") as info:
        _load(b"", jnp.zeros(3))
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, CheckpointError)


@pytest.mark.parametrize(
    "like",
    [jnp.zeros(3), jax.ShapeDtypeStruct((2**40,), jnp.float32)],
)
def test_a_huge_declared_array_allocates_nothing(like):
    # Broke: a header declaring a 4 TiB array raised MemoryError.
    data = _npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }\n"
    )
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"shape|only 0 bytes are left"):
            _load(data, [like])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND


class _Stream(io.RawIOBase):
    """A file object that cannot seek, so cannot tell its size."""

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        return self._data.readinto(b)


def test_a_stream_that_ends_early_allocates_only_what_arrives():
    data = _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (268435456,), }\n")
    like = [jax.ShapeDtypeStruct((2**28,), jnp.float32)]
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="ends inside the data"):
            pytreemod.tree_deserialise_leaves(io.BufferedReader(_Stream(data)), like)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize(
    "header, match",
    [
        # Broke: these raised tokenize.TokenError and SyntaxError.
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), \n", "not a dict"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (3,\x00), }\n", "NumPy"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)\"\"\"}\n",
            "malformed",
        ),
        ("{'descr': '<f4', 'fortran_order': Fals, 'shape': (3,), }\n", "NumPy"),
        ("{'descr': '|O', 'fortran_order': False, 'shape': (3,), }\n", "'|O'"),
        ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }\n", ""),
        ("{'descr': '<f4', 'shape': (3,), }\n", "lacks"),
        ("{'descr': '<f4', 'descr': '<f4', 'shape': (3,), }\n", "NumPy"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }\n", "NumPy"),
        ("{'descr': '<V0', 'fortran_order': False, 'shape': (3,), }\n", "plain"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': __import__('os'), }\n", ""),
    ],
)
def test_malformed_npy_headers(header, match):
    with pytest.raises(
        ValueError, match=r"Error at leaf with path \(SequenceKey"
    ) as info:
        _load(_npy(header, bytes(12)), [jnp.zeros(3)])
    assert match in str(info.value)


def test_bad_magic_version_and_header_size():
    with pytest.raises(ValueError, match="expected a NumPy `.npy` record"):
        _load(b"\x93NUMPX\x01\x00" + bytes(20), [jnp.zeros(3)])
    with pytest.raises(ValueError, match="unknown `.npy` format version 7.0"):
        _load(b"\x93NUMPY\x07\x00" + bytes(20), [jnp.zeros(3)])
    huge = b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little")
    with pytest.raises(ValueError, match="declares 2147483648 bytes"):
        _load(huge, [jnp.zeros(3)])
    with pytest.raises(ValueError, match="binary mode"):
        pytreemod.tree_deserialise_leaves(io.StringIO("x"), [jnp.zeros(3)])


def test_trailing_data_is_an_error_for_a_path(tmp_path):
    # Broke: a file from a larger model silently loaded into a smaller one.
    path = tmp_path / "m.eqx"
    pytreemod.tree_serialise_leaves(path, [jnp.ones(3), jnp.ones(2)])
    with pytest.raises(ValueError, match=r"has 136 more bytes after the last leaf"):
        pytreemod.tree_deserialise_leaves(path, [jnp.zeros(3)])


def test_a_file_object_may_hold_more_after_the_pytree():
    # As in Equinox: reading from a file object stops after `like`'s leaves,
    # so several pytrees can be written to one stream and read back in turn.
    f = io.BytesIO()
    pytreemod.tree_serialise_leaves(f, [jnp.ones(3)])
    pytreemod.tree_serialise_leaves(f, {"b": jnp.full(2, 2.0)})
    f.seek(0)
    first = pytreemod.tree_deserialise_leaves(f, [jnp.zeros(3)])
    second = pytreemod.tree_deserialise_leaves(f, {"b": jnp.zeros(2)})
    assert float(first[0][0]) == 1.0 and float(second["b"][0]) == 2.0


def test_a_checkpoint_names_the_function_that_reads_it(tmp_path):
    # Broke: AttributeError: 'NpzFile' object has no attribute 'dtype'.
    path = tmp_path / "m.ckpt"
    pytreemod.save(path, [jnp.ones(3)])
    with pytest.raises(
        ValueError, match=r"written by `pytreemod.save`.*pytreemod.load"
    ):
        pytreemod.tree_deserialise_leaves(path, [jnp.zeros(3)])
    with pytest.raises(ValueError, match=r"pytreemod.load\(path, like\)"):
        pytreemod.tree_deserialise_leaves(path, ["no arrays"])


def test_fortran_order_and_big_endian_load_as_numpy_does():
    value = np.asfortranarray(np.arange(6, dtype=">i4").reshape(2, 3))
    f = io.BytesIO()
    np.save(f, value)
    loaded = _load(f.getvalue(), [np.zeros((2, 3), ">i4")])[0]
    np.testing.assert_array_equal(loaded, value)
    f = io.BytesIO()
    np.save(f, value, allow_pickle=False)
    np.testing.assert_array_equal(
        _load(f.getvalue(), [jnp.zeros((2, 3), jnp.int32)])[0], value
    )


def test_a_scalar_leaf_must_hold_one_value():
    f = io.BytesIO()
    np.save(f, np.zeros(3))
    with pytest.raises(
        ValueError, match=r"changed shape from \(\) in `like` to \(3,\)"
    ):
        _load(f.getvalue(), [0.0])


def test_a_custom_filter_spec_error_is_wrapped_with_the_path():
    def spec(f, x):
        raise KeyError("mine")

    with pytest.raises(
        RuntimeError, match=r"path \(SequenceKey\(idx=0\),\): `\[0\]`: 'mine'"
    ):
        pytreemod.tree_deserialise_leaves(io.BytesIO(), [1.0], filter_spec=spec)
