"""flax msgpack reader: equal to what ``flax.serialization.msgpack_restore`` reports; corrupt files refused."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers import flax_msgpack, read_checkpoint

flax = pytest.importorskip("flax")
from flax import serialization  # noqa: E402


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a restored tree the way ckptlint keys it: ``/``-joined, lists by index."""
    out: dict[str, Any] = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for k, v in items:
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, (dict, list, tuple)) and not isinstance(v, np.ndarray):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def flax_view(raw: bytes) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, Any]]:
    """(arrays: key -> (shape, dtype name), other leaves) as flax itself restores them."""
    leaves = flatten(serialization.msgpack_restore(raw))
    arrays = {
        k: (tuple(v.shape), v.dtype.name)
        for k, v in leaves.items()
        if isinstance(v, (np.ndarray, np.generic))
    }
    others = {k: v for k, v in leaves.items() if k not in arrays}
    return arrays, others


def our_view(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (t.shape, t.dtype) for k, t in read_checkpoint(path).tensors.items()}


@pytest.fixture(scope="module")
def train_state_bytes() -> bytes:
    """A real tiny flax model's params plus optax AdamW state, serialised with flax.serialization.to_bytes."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import linen as nn
    from flax.training import train_state

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            x = nn.Conv(8, (3, 3), name="embedding")(x)
            x = nn.LayerNorm()(x)
            x = nn.Dense(16, param_dtype=jnp.bfloat16)(x)
            return nn.Dense(4)(x.mean(axis=(1, 2)))

    model = Tiny()
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 3)))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adamw(1e-3))
    return serialization.to_bytes(state)


@pytest.fixture(scope="module")
def train_state_file(train_state_bytes: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flax") / "state.msgpack"
    path.write_bytes(train_state_bytes)
    return path


def test_train_state_equals_msgpack_restore(train_state_file: Path, train_state_bytes: bytes) -> None:
    arrays, others = flax_view(train_state_bytes)
    assert our_view(train_state_file) == arrays
    ckpt = read_checkpoint(train_state_file)
    assert ckpt.format == "flax-msgpack" and ckpt.key_sep == "/"
    assert ckpt.groups == ["opt_state", "params"]
    assert ckpt.metadata == others == {"step": 0}
    assert ckpt.tensors["params/Dense_0/kernel"].dtype == "bfloat16"


def test_offsets_point_at_the_array_bytes(train_state_file: Path, train_state_bytes: bytes) -> None:
    leaves = flatten(serialization.msgpack_restore(train_state_bytes))
    for key, info in read_checkpoint(train_state_file).tensors.items():
        expected = np.asarray(leaves[key]).tobytes()
        assert train_state_bytes[info.offset : info.offset + info.nbytes] == expected, key


def test_scalars_complex_strings_and_lists(tmp_path: Path) -> None:
    import ml_dtypes

    tree = {
        "np_scalar": np.float32(1.5),
        "np_int": np.int64(7),
        "zero_d": np.array(3, np.int32),
        "complex": 1 + 2j,
        "text": "hello",
        "long_text": "x" * 5000,
        "none": None,
        "flag": True,
        "ints": {"neg": -5, "big": 2**40, "small": 3},
        "f": 0.25,
        "nested": {"deep": {"deeper": {"arr": np.ones((2, 0, 3), np.float16)}}},
        "types": {
            "bf16": np.ones(3, ml_dtypes.bfloat16),
            "f8": np.ones(5, ml_dtypes.float8_e4m3fn),
            "bool": np.array([True, False]),
            "u8": np.arange(4, dtype=np.uint8),
            "c64": np.ones(2, np.complex64),
            "big": np.arange(1000, dtype=np.float64),  # payload over 64 KiB uses ext32
        },
    }
    raw = serialization.msgpack_serialize(tree)
    path = tmp_path / "misc.msgpack"
    path.write_bytes(raw)
    arrays, others = flax_view(raw)
    assert our_view(path) == arrays
    meta = read_checkpoint(path).metadata
    assert meta["complex"] == str(others["complex"]) and meta["text"] == "hello"
    assert meta["long_text"] == "<str of 5000 bytes>"
    assert {k: meta[k] for k in ("none", "flag", "ints/neg", "ints/big", "ints/small", "f")} == {
        k: others[k] for k in ("none", "flag", "ints/neg", "ints/big", "ints/small", "f")
    }


def test_chunked_arrays_are_one_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrays over MAX_CHUNK_SIZE are written as chunk maps; flax restores one array and so do we."""
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 256)
    tree = {
        "params": {
            "embed": np.arange(1000, dtype=np.float32).reshape(10, 100),
            "small": np.ones(3, np.float32),
        },
        "w": np.arange(700, dtype=np.int16).reshape(7, 10, 10),
    }
    raw = serialization.msgpack_serialize(tree)
    assert b"__msgpack_chunked_array__" in raw
    path = tmp_path / "chunked.msgpack"
    path.write_bytes(raw)
    arrays, _ = flax_view(raw)
    assert our_view(path) == arrays
    ckpt = read_checkpoint(path)
    assert ckpt.tensors["params/embed"].nbytes == 4000 and ckpt.metadata == {}


def test_chunk_marker_not_first_is_still_one_array(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """flax unchunks a map holding the marker wherever the marker sits among the keys."""
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 64)
    chunked = serialization._chunk(np.arange(40, dtype=np.float32).reshape(4, 10))
    reordered = {"chunks": chunked["chunks"], "shape": chunked["shape"], "__msgpack_chunked_array__": True}
    raw = msgpack.packb({"a": reordered, "b": 1}, default=serialization._msgpack_ext_pack, strict_types=True)
    path = tmp_path / "reordered.msgpack"
    path.write_bytes(raw)
    arrays, others = flax_view(raw)
    assert our_view(path) == arrays == {"a": ((4, 10), "float32")}
    assert read_checkpoint(path).metadata == others


def test_chunk_map_inside_a_list_is_not_unchunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """flax does not look inside lists for chunk maps; neither do we."""
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 64)
    chunked = serialization._chunk(np.arange(40, dtype=np.float32))
    raw = msgpack.packb({"l": [chunked]}, default=serialization._msgpack_ext_pack, strict_types=True)
    path = tmp_path / "inlist.msgpack"
    path.write_bytes(raw)
    assert our_view(path) == flax_view(raw)[0]


def test_every_truncation_is_unreadable(train_state_bytes: bytes, tmp_path: Path) -> None:
    out = tmp_path / "cut.msgpack"
    for cut in range(1, len(train_state_bytes)):
        out.write_bytes(train_state_bytes[:cut])
        with pytest.raises(UnreadableCheckpoint) as info:
            read_checkpoint(out)
        assert "\n" not in str(info.value)
    with pytest.raises(Exception):  # noqa: B017 - flax raises whatever msgpack raises
        serialization.msgpack_restore(train_state_bytes[:-1])


def test_mutations_agree_with_flax(train_state_bytes: bytes, tmp_path: Path) -> None:
    """Bytes of a real file flipped: never another exception; when both accept, same arrays."""
    raw = train_state_bytes
    out = tmp_path / "m.msgpack"
    agree = 0
    for i in range(0, len(raw), 3):
        mutated = raw[:i] + bytes([raw[i] ^ 0x41]) + raw[i + 1 :]
        out.write_bytes(mutated)
        try:
            ours = our_view(out)
        except UnreadableCheckpoint as exc:
            assert "\n" not in str(exc)
            continue
        try:
            theirs = flax_view(mutated)[0]
        except Exception:  # flax may fail on dtype names we accept as unknown
            continue
        assert ours == theirs, i
        agree += 1
    assert agree > 50


def test_deep_nesting_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "deep.msgpack"
    path.write_bytes(b"\x81\xa1a" * 100_000 + b"\xc0")
    with pytest.raises(UnreadableCheckpoint, match="nesting"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xdf\xff\xff\xff\xff",  # map32 claiming 4 billion entries
        b"\x81\xa1a\xdd\xff\xff\xff\xff",  # array32 claiming 4 billion items
        b"\x81\xa1a\xdb\xff\xff\xff\xff",  # str32 of 4 GB
        b"\x81\xa1a\xc9\xff\xff\xff\xff\x01",  # ext32 of 4 GB
        b"\x81\xa1a\xc6\xff\xff\xff\xf0",  # bin32 of 4 GB
    ],
)
def test_huge_lengths_are_refused_without_allocating(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "huge.msgpack"
    path.write_bytes(raw + b"\0" * 64)
    tracemalloc.start()
    with pytest.raises(UnreadableCheckpoint):
        read_checkpoint(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_ndarray_payload_inconsistent_with_shape(tmp_path: Path) -> None:
    payload = msgpack.packb(((1 << 40,), "float32", b"\0" * 16), use_bin_type=True)
    raw = msgpack.packb({"a": msgpack.ExtType(1, payload)})
    path = tmp_path / "bad.msgpack"
    path.write_bytes(raw)
    with pytest.raises(UnreadableCheckpoint, match="'a'"):
        read_checkpoint(path)
    with pytest.raises(ValueError):
        serialization.msgpack_restore(raw)


def test_trailing_bytes_are_refused(train_state_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "trailing.msgpack"
    path.write_bytes(train_state_bytes + b"\x00")
    with pytest.raises(UnreadableCheckpoint, match="trailing"):
        read_checkpoint(path)
    with pytest.raises(msgpack.ExtraData):
        serialization.msgpack_restore(train_state_bytes + b"\x00")


def test_many_values_are_counted_not_kept(tmp_path: Path) -> None:
    n = flax_msgpack.MAX_VALUES + 5
    path = tmp_path / "values.msgpack"
    path.write_bytes(msgpack.packb({"v": {str(i): i for i in range(n)}, "a": {"x": 1}}))
    meta = read_checkpoint(path).metadata
    assert len(meta) == flax_msgpack.MAX_VALUES + 1
    assert meta["__ckptlint_values_not_kept__"] == 6


def test_array_data_is_never_read(tmp_path: Path) -> None:
    """A 64 MiB array: reading its header allocates almost nothing."""
    big = np.zeros((16, 1 << 20), np.float32)
    path = tmp_path / "big.msgpack"
    path.write_bytes(serialization.msgpack_serialize({"params": {"big": big}}))
    del big
    tracemalloc.start()
    ckpt = read_checkpoint(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ckpt.tensors["params/big"].nbytes == 64 << 20
    assert peak < 1 << 20
