"""Writers for the key -> array formats: safetensors, npz and flax msgpack, each streaming one tensor at a time.

Every output tensor is an ``Item``: its key, shape, dtype, size and a function that writes its C-order
little-endian bytes. Headers that need sizes up front (safetensors' JSON header, an npy header, a msgpack ext
length) are computed from the items, then the bytes are streamed after them.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ckptlint.dtypes import SAFETENSORS
from ckptlint.errors import UsageError

_ST_CODE = {canonical: code for code, canonical in SAFETENSORS.items()}
FLAX_CHUNK = 1 << 30  # flax.serialization.MAX_CHUNK_SIZE: arrays larger than this are written in 1-D chunks
_NPZ_DTYPES = {
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
}


@dataclass
class Item:
    """One output tensor: where its bytes come from is ``write``'s business."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    write: Callable[[IO[bytes]], None]


def check_dtypes(items: list[Item], fmt: str) -> None:
    """UsageError naming the first tensor whose dtype ``fmt`` cannot hold."""
    allowed = set(_ST_CODE) if fmt == "safetensors" else _NPZ_DTYPES
    for item in items:
        if item.dtype not in allowed:
            raise UsageError(f"{item.key} has dtype {item.dtype}, which {fmt} cannot hold")


# --- safetensors ------------------------------------------------------------------------------------------


def write_safetensors(fh: IO[bytes], items: list[Item], metadata: dict[str, str] | None) -> None:
    """Header (8-byte length, JSON padded with spaces to 8 bytes), then each tensor's bytes in order."""
    check_dtypes(items, "safetensors")
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for item in items:
        header[item.key] = {
            "dtype": _ST_CODE[item.dtype],
            "shape": list(item.shape),
            "data_offsets": [offset, offset + item.nbytes],
        }
        offset += item.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    fh.write(struct.pack("<Q", len(raw)))
    fh.write(raw)
    for item in items:
        item.write(fh)


# --- npz --------------------------------------------------------------------------------------------------


def npy_descr(dtype: str) -> str:
    """The npy ``descr`` of a canonical dtype; bfloat16 is raw 2-byte void, as big_vision's np.savez stores it."""
    if dtype == "bfloat16":
        return "<V2"
    from ckptlint.writers.arrays import numpy_dtype

    return numpy_dtype(dtype).str


def write_npz(fh: IO[bytes], items: list[Item], members: dict[str, tuple[Path, str]] | None = None) -> None:
    """One ``KEY.npy`` member per item; ``members`` maps keys to an input npz member copied as it is (same
    compression), which keeps an npz rewrite byte for byte."""
    import contextlib

    from numpy.lib import format as npformat

    check_dtypes(items, "npz")
    members = members or {}
    with contextlib.ExitStack() as stack, zipfile.ZipFile(fh, "w", allowZip64=True) as zout:
        sources: dict[Path, zipfile.ZipFile] = {}  # each input archive opened once
        for item in items:
            name = f"{item.key}.npy"
            source = members.get(item.key)
            if source is not None:
                if source[0] not in sources:
                    sources[source[0]] = stack.enter_context(zipfile.ZipFile(source[0]))
                _copy_member(zout, sources[source[0]], source[1], name)
                continue
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with zout.open(info, "w", force_zip64=True) as member:
                header = {"descr": npy_descr(item.dtype), "fortran_order": False, "shape": tuple(item.shape)}
                try:
                    npformat.write_array_header_1_0(member, header)
                except ValueError:  # a header over 64 KiB (a very long shape): format 2.0
                    npformat.write_array_header_2_0(member, header)
                item.write(member)  # type: ignore[arg-type]


def _copy_member(zout: zipfile.ZipFile, zin: zipfile.ZipFile, member: str, name: str) -> None:
    """An input npz member into OUT under ``name``: its content byte for byte, compressed as it was."""
    import shutil

    info = zin.getinfo(member)
    new = zipfile.ZipInfo(name, date_time=info.date_time)
    new.compress_type = info.compress_type
    new.external_attr = info.external_attr
    new.file_size = info.file_size
    with zin.open(info) as fsrc, zout.open(new, "w", force_zip64=True) as fdst:
        shutil.copyfileobj(fsrc, fdst, 1 << 20)


# --- flax msgpack -----------------------------------------------------------------------------------------


def nest(keys_values: list[tuple[str, Any]], sep: str = "/") -> dict[str, Any]:
    """Nested dicts from ``sep``-joined keys; UsageError when a key is both a leaf and a prefix."""
    root: dict[str, Any] = {}
    for key, value in keys_values:
        parts = key.split(sep)
        node = root
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"{key}: {sep.join(parts[: i + 1])} is both a value and a group")
            node = child
        if parts[-1] in node:
            raise UsageError(f"{key}: written twice or both a value and a group")
        node[parts[-1]] = value
    return root


def write_msgpack(fh: IO[bytes], tree: dict[str, Any]) -> None:
    """``flax.serialization.to_bytes`` layout: nested maps, arrays as ExtType 1 = packb((shape, dtype name,
    bytes)), arrays over ``FLAX_CHUNK`` bytes as flax's chunked-array maps; other leaves packed as they are."""
    _map_header(fh, len(tree))
    for key, value in tree.items():
        fh.write(_pack(key))
        if isinstance(value, dict):
            write_msgpack(fh, value)
        elif isinstance(value, Item):
            _array(fh, value)
        else:
            fh.write(_pack(value))


def _pack(value: Any) -> bytes:
    import msgpack

    return msgpack.packb(value, use_bin_type=True)


def _map_header(fh: IO[bytes], n: int) -> None:
    if n < 16:
        fh.write(bytes([0x80 | n]))
    elif n < 1 << 16:
        fh.write(b"\xde" + struct.pack(">H", n))
    else:
        fh.write(b"\xdf" + struct.pack(">I", n))


def _ext_header(n: int, code: int) -> bytes:
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if n in fixed:
        return bytes([fixed[n], code])
    if n < 1 << 8:
        return b"\xc7" + struct.pack(">B", n) + bytes([code])
    if n < 1 << 16:
        return b"\xc8" + struct.pack(">H", n) + bytes([code])
    return b"\xc9" + struct.pack(">I", n) + bytes([code])


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + struct.pack(">B", n)
    if n < 1 << 16:
        return b"\xc5" + struct.pack(">H", n)
    return b"\xc6" + struct.pack(">I", n)


def _ndarray_head(shape: tuple[int, ...], dtype: str, nbytes: int) -> bytes:
    """ExtType 1 header and payload start, up to the raw bytes."""
    head = b"\x93" + _pack(list(shape)) + _pack(dtype) + _bin_header(nbytes)
    return _ext_header(len(head) + nbytes, 1) + head


def _array(fh: IO[bytes], item: Item) -> None:
    if item.dtype not in _NPZ_DTYPES:
        raise UsageError(f"{item.key} has dtype {item.dtype}, which flax msgpack cannot hold")
    if item.nbytes <= FLAX_CHUNK:
        fh.write(_ndarray_head(item.shape, item.dtype, item.nbytes))
        item.write(fh)
        return
    from ckptlint.writers.arrays import numpy_dtype

    itemsize = numpy_dtype(item.dtype).itemsize
    per_chunk = max(1, FLAX_CHUNK // itemsize) * itemsize
    sizes = [min(per_chunk, item.nbytes - start) for start in range(0, item.nbytes, per_chunk)]
    _map_header(fh, 3)
    fh.write(_pack("__msgpack_chunked_array__") + _pack(True) + _pack("shape"))
    _map_header(fh, len(item.shape))
    for i, d in enumerate(item.shape):
        fh.write(_pack(str(i)) + _pack(d))
    fh.write(_pack("chunks"))
    _map_header(fh, len(sizes))
    splitter = _ChunkWriter(fh, sizes, item.dtype, itemsize)
    item.write(splitter)  # type: ignore[arg-type]
    splitter.finish(item.key)


class _ChunkWriter:
    """Passes a tensor's bytes through, writing each 1-D chunk's key and ext header where the chunk starts."""

    def __init__(self, fh: IO[bytes], sizes: list[int], dtype: str, itemsize: int) -> None:
        self.fh, self.sizes, self.dtype, self.itemsize = fh, sizes, dtype, itemsize
        self.index = -1
        self.left = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while len(view):
            if self.left == 0:
                self.index += 1
                if self.index >= len(self.sizes):
                    raise UsageError("more bytes than the chunked array holds")
                size = self.sizes[self.index]
                self.fh.write(
                    _pack(str(self.index)) + _ndarray_head((size // self.itemsize,), self.dtype, size)
                )
                self.left = size
            n = min(self.left, len(view))
            self.fh.write(view[:n])
            view = view[n:]
            self.left -= n
        return total

    def finish(self, key: str) -> None:
        if self.left or self.index != len(self.sizes) - 1:
            raise UsageError(f"{key}: fewer bytes than the chunked array holds")
