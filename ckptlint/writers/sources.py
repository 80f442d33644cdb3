"""Where each input tensor's bytes are, for every format ckptlint reads: ``open_source(path) -> Source``.

The readers already give each tensor's byte offset (safetensors, flax msgpack) or its zip member (npz); what a
copy needs beyond that — strides of torch views, the byte order and Fortran order of npy arrays, the chunks of a
flax array over 1 GiB — is looked up here, from headers only.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UsageError
from ckptlint.writers.arrays import Span, Stored, ZipMembers, c_strides, to_array, write_stored
from ckptlint.writers.torch_source import TORCH_FORMATS, TorchTree, load_torch_tree

if TYPE_CHECKING:
    import numpy as np

FOLDER_FORMATS = frozenset({"hf-dir", "open_clip-dir"})
SHARDED_FORMATS = frozenset({"safetensors-sharded", "torch-sharded"})


class Source:
    """One input checkpoint: its header view (``ckpt``) and each tensor's bytes."""

    def __init__(self, ckpt: Checkpoint, path: Path, kind: str) -> None:
        self.ckpt = ckpt
        self.path = path  # the weights file (or shard index) actually read
        self.kind = kind  # file format of the weights: safetensors, torch-zip, npz, sharded...
        self.torch: TorchTree | None = None
        self._cache: dict[str, Stored] = {}

    def stored(self, key: str) -> Stored:
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._locate(key)
        return found

    def _locate(self, key: str) -> Stored:
        info = self.ckpt.tensors[key]
        if info.offset is None:
            raise UsageError(f"{self.path}: no byte offset known for {key}")
        return Stored((Span(self.path, info.offset, info.nbytes),), tuple(info.shape), info.dtype)

    def write(self, key: str, out: IO[bytes]) -> None:
        """Write the tensor's C-order little-endian bytes (copied as they are when stored that way)."""
        write_stored(self.stored(key), out)

    def array(self, key: str) -> np.ndarray:
        """The tensor as a numpy array, read by byte range."""
        return to_array(self.stored(key))

    def slab(self, key: str, index: int) -> np.ndarray:
        """Slice ``index`` of the tensor's leading axis, reading only its bytes when they are contiguous."""
        stored = self.stored(key)
        if not stored.plain or len(stored.spans) != 1 or not stored.shape:
            return to_array(stored)[index]
        span = stored.spans[0]
        size = span.nbytes // stored.shape[0] if stored.shape[0] else 0
        part = Span(span.path, span.offset + index * size, size, span.member)
        return to_array(Stored((part,), stored.shape[1:], stored.dtype))

    def close(self) -> None:
        """Nothing stays open between reads; kept for symmetry with callers' ``with`` blocks."""


class TorchSource(Source):
    def __init__(self, ckpt: Checkpoint, path: Path, kind: str) -> None:
        super().__init__(ckpt, path, kind)
        self.torch = load_torch_tree(ckpt, path)

    def _locate(self, key: str) -> Stored:
        assert self.torch is not None
        return self.torch.stored(key)


class NpzSource(Source):
    """npz members (or one npy file): the npy header is parsed again with numpy for byte order and order."""

    def __init__(self, ckpt: Checkpoint, path: Path, kind: str) -> None:
        super().__init__(ckpt, path, kind)
        self._zip = ZipMembers(path) if kind == "npz" else None

    def _locate(self, key: str) -> Stored:
        member: str | None = None
        if self._zip is not None:
            info = self._zip.infos[f"{key}.npy"]
            base = self._zip.data_offset(info.filename)
            if base is None:  # compressed: read through zipfile, from the member's start
                with zipfile.ZipFile(self.path) as zf, zf.open(info) as fh:
                    shape, fortran, dtype = _npy_header(fh)
                    start = fh.tell()
                member = info.filename
            else:
                with open(self.path, "rb") as fh:
                    fh.seek(base)
                    shape, fortran, dtype = _npy_header(fh)
                    start = fh.tell()
        else:
            with open(self.path, "rb") as fh:
                shape, fortran, dtype = _npy_header(fh)
                start = fh.tell()
        span_path, member_name = self.path, member
        if dtype.hasobject:
            raise UsageError(f"{self.path}: {key} is an object array, which cannot be copied as a tensor")
        canonical = self.ckpt.tensors[key].dtype
        shape = tuple(int(d) for d in shape)
        numel = 1
        for d in shape:
            numel *= d
        strides = tuple(reversed(c_strides(shape[::-1]))) if fortran and len(shape) > 1 else None
        return Stored(
            (Span(span_path, start, numel * dtype.itemsize, member_name),),
            shape,
            canonical,
            strides=strides,
            big_endian=dtype.byteorder == ">",
        )


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    from numpy.lib import format as npformat

    version = npformat.read_magic(fh)
    if version == (1, 0):
        return npformat.read_array_header_1_0(fh)
    if version == (2, 0):
        return npformat.read_array_header_2_0(fh)
    return npformat._read_array_header(fh, version)  # 3.0 (utf-8 header) has no public reader


class FlaxSource(Source):
    """flax msgpack: an array's raw bytes, or for an array over 1 GiB the bytes of each of its 1-D chunks."""

    def _locate(self, key: str) -> Stored:
        info = self.ckpt.tensors[key]
        if info.offset is None:
            raise UsageError(f"{self.path}: no byte offset known for {key}")
        first = _bin_length_before(self.path, info.offset)
        if first is None or first >= info.nbytes:
            return Stored((Span(self.path, info.offset, info.nbytes),), tuple(info.shape), info.dtype)
        spans = [Span(self.path, info.offset, first)]
        total = first
        pos = info.offset + first
        with open(self.path, "rb") as fh:
            while total < info.nbytes:
                start, length = _next_chunk(fh, pos, len(spans), self.path)
                spans.append(Span(self.path, start, length))
                total += length
                pos = start + length
        if total != info.nbytes:
            raise UsageError(f"{self.path}: the chunks of {key} do not add up to its {info.nbytes} bytes")
        return Stored(tuple(spans), tuple(info.shape), info.dtype)


def _bin_length_before(path: Path, offset: int) -> int | None:
    """Length of the msgpack bin whose data starts at ``offset`` (None when no bin header precedes it)."""
    with open(path, "rb") as fh:
        fh.seek(max(offset - 5, 0))
        head = fh.read(offset - max(offset - 5, 0))
    if len(head) == 5 and head[0] == 0xC6:
        return struct.unpack(">I", head[1:])[0]
    if len(head) >= 3 and head[-3] == 0xC5:
        return struct.unpack(">H", head[-2:])[0]
    if len(head) >= 2 and head[-2] == 0xC4:
        return head[-1]
    return None


def _next_chunk(fh: IO[bytes], pos: int, index: int, path: Path) -> tuple[int, int]:
    """The (data offset, length) of chunk ``index`` of a flax chunked array, whose entry starts at ``pos``: key
    ``str(index)``, ext 1 holding msgpack ``((n,), dtype name, bin)``."""
    fh.seek(pos)
    head = fh.read(64)

    def bad(what: str) -> UsageError:
        return UsageError(f"{path}: cannot find chunk {index} of a chunked array at byte {pos} ({what})")

    at = 0

    def take(n: int) -> bytes:
        nonlocal at
        if at + n > len(head):
            raise bad("truncated")
        out = head[at : at + n]
        at += n
        return out

    b = take(1)[0]
    if 0xA0 <= b <= 0xBF:
        key = take(b & 0x1F)
    elif b == 0xD9:
        key = take(take(1)[0])
    else:
        raise bad("no chunk key")
    if key != str(index).encode():
        raise bad(f"key {key!r}")
    b = take(1)[0]
    if b == 0xC7:
        take(1)
    elif b == 0xC8:
        take(2)
    elif b == 0xC9:
        take(4)
    elif not 0xD4 <= b <= 0xD8:
        raise bad("no ext")
    if take(1) != b"\x01" or take(1) != b"\x93" or take(1) != b"\x91":
        raise bad("not an ndarray ext")
    b = take(1)[0]
    if b > 0x7F:
        widths = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
        if b not in widths:
            raise bad("chunk size")
        take(widths[b])
    b = take(1)[0]
    if 0xA0 <= b <= 0xBF:
        take(b & 0x1F)
    elif b == 0xD9:
        take(take(1)[0])
    else:
        raise bad("dtype name")
    b = take(1)[0]
    fmt = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}.get(b)
    if fmt is None:
        raise bad("data is not a bin")
    (n,) = struct.unpack(fmt, take(struct.calcsize(fmt)))
    return pos + at, n


class ShardedSource(Source):
    """A shard index: each tensor read from the shard the index names."""

    def __init__(self, ckpt: Checkpoint, path: Path, kind: str) -> None:
        super().__init__(ckpt, path, kind)
        self.weight_map, self.index_metadata = read_index(path)
        self._shards: dict[str, Source] = {}

    def shard(self, name: str) -> Source:
        found = self._shards.get(name)
        if found is None:
            found = self._shards[name] = open_source(self.path.parent / name)
        return found

    def shard_of(self, key: str) -> str:
        storage = self.ckpt.tensors[key].storage or ""
        return storage.split(":", 1)[0] or self.weight_map[key]

    def _locate(self, key: str) -> Stored:
        return self.shard(self.shard_of(key)).stored(key)


def read_index(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """A shard index's ``weight_map`` and ``metadata`` (the sharded reader has validated it)."""
    from ckptlint.readers.jsonfile import load_json

    doc = load_json(path, "shard index")
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict):
        raise UsageError(f"{path}: shard index without a weight_map")
    return {str(k): str(v) for k, v in weight_map.items()}, meta if isinstance(meta, dict) else {}


_SOURCES: dict[str, type[Source]] = {
    "safetensors": Source,
    "npz": NpzSource,
    "npy": NpzSource,
    "flax-msgpack": FlaxSource,
    **dict.fromkeys(TORCH_FORMATS, TorchSource),
    **dict.fromkeys(SHARDED_FORMATS, ShardedSource),
}


def open_source(path: str | Path, ckpt: Checkpoint | None = None) -> Source:
    """The input at ``path`` (a file, a shard index or a checkpoint folder), read by ``read_checkpoint``."""
    from ckptlint.readers import read_checkpoint

    p = Path(path)
    if ckpt is None:
        ckpt = read_checkpoint(p)
    weights = p
    kind = ckpt.format
    if p.is_dir():
        weights = p / str(ckpt.metadata.get("weights_file", ""))
        kind = str(ckpt.metadata.get("weights_format", ckpt.format))
        if kind in FOLDER_FORMATS or not weights.is_file():
            raise UsageError(f"{path}: cannot tell which weights file of the folder to read")
        inner = read_checkpoint(weights)  # the weights file's own view (a folder's metadata is the folder's)
        src = open_source(weights, inner)
        src.ckpt = ckpt
        return src
    cls = _SOURCES.get(kind)
    if cls is None:
        raise UsageError(f"{path}: ckptlint cannot rewrite a {kind} file")
    return cls(ckpt, weights, kind)
