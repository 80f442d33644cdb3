"""Flax msgpack checkpoints (``flax.serialization.to_bytes``): a header-only, bounded-memory msgpack walk.

What flax writes (``flax/serialization.py``): the state dict as nested msgpack maps with string keys; arrays as
ExtType 1 whose payload is ``msgpack.packb((shape, dtype.name, raw bytes))``; numpy scalars as ExtType 3 with the
same payload; Python complex as ExtType 2 (payload ``packb((real, imag))``); arrays over 2**30 bytes as a map
``{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": 1-D ndarray, ...}}``, which
``msgpack_restore`` turns back into one array when the map sits at the top or directly inside another map.

The walk is hand-written because ``msgpack.Unpacker`` materialises every ExtType payload (each array's bytes) before
an ``ext_hook`` can look at it; here each array's payload header (shape, dtype name, bin length) is decoded and the
raw bytes are skipped by moving the cursor past them, without touching them: the file is read through a small
window (``_Window``), so the skipped bytes are never read from disk. Every length is checked against the bytes that remain and nesting depth
is bounded, so a corrupt file costs at most its header. Non-array leaves (ints, floats, strings, ...) go to
``Checkpoint.metadata`` under their full ``/``-joined key.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from ckptlint.checkpoint import Checkpoint, TensorInfo, tensor_info
from ckptlint.dtypes import ITEM_BITS, NUMPY_TYPESTR
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers.limits import MAX_LEAVES, KeyPaths, LimitExceeded, check_tensor_count
from ckptlint.remote import RemotePath

MAX_DEPTH = 128
MAX_NDIM = 64  # numpy's NPY_MAXDIMS
MAX_VALUES = 10_000  # non-array leaves kept in metadata; more are counted, not kept
MAX_VALUE_CHARS = 1024  # longer strings are summarised, not kept
MAX_KEY_BYTES = 1 << 16
CHUNK_MARKER = "__msgpack_chunked_array__"
EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3

_U8, _U16, _U32, _U64 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
_I8, _I16, _I32, _I64 = struct.Struct(">b"), struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")
_F32, _F64 = struct.Struct(">f"), struct.Struct(">d")
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_INTS = {0xCC: _U8, 0xCD: _U16, 0xCE: _U32, 0xCF: _U64, 0xD0: _I8, 0xD1: _I16, 0xD2: _I32, 0xD3: _I64}


class _Corrupt(Exception):
    """Internal: the msgpack stream is malformed (becomes UnreadableCheckpoint)."""


class _Array:
    """An ndarray ext seen in the stream: header facts only."""

    __slots__ = ("dtype", "nbytes", "offset", "shape")

    def __init__(self, shape: tuple[int, ...], dtype: str, nbytes: int, offset: int):
        self.shape, self.dtype, self.nbytes, self.offset = shape, dtype, nbytes, offset


class _Skipped:
    """A leaf too large to keep (long string, bin, unknown ext): summarised in metadata."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def read(path: Path | RemotePath) -> Checkpoint:
    """Read the structure of the flax msgpack file at ``path`` without reading array data."""
    p = str(path)
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            if size == 0:
                raise UnreadableCheckpoint(p, "empty file")
            # a remote file is read header by header (a window of the whole chunk would fetch tensor data)
            chunk = _Window.CHUNK if isinstance(path, Path) else _Window.REMOTE_CHUNK
            walker = _Walker(_Window(fh, size, chunk), size)
            try:
                walker.walk()
            except _Corrupt as exc:
                raise UnreadableCheckpoint(p, f"corrupt flax msgpack file: {exc}") from None
            except LimitExceeded as exc:
                raise UnreadableCheckpoint(p, f"flax msgpack file refused: {exc}") from None
    except OSError as exc:
        raise UnreadableCheckpoint(p, f"cannot read: {exc.strerror or exc}") from None
    metadata: dict[str, Any] = dict(walker.values)
    if walker.dropped_values:
        metadata["__ckptlint_values_not_kept__"] = walker.dropped_values
    return Checkpoint.model_construct(
        path=p,
        format="flax-msgpack",
        key_sep="/",
        tensors=walker.tensors,
        groups=sorted({k.split("/", 1)[0] for k in walker.tensors if "/" in k}),
        metadata=metadata,
        sidecars=[],
        files=[p],
        findings=[],
    )


def _dtype_name(raw: str) -> tuple[str, int | None]:
    """Canonical dtype name and bits per element (None when unknown) of flax's ``dtype.name`` string."""
    if raw in ITEM_BITS:
        return raw, ITEM_BITS[raw]
    stripped = raw.lstrip("<>|=")
    if stripped in NUMPY_TYPESTR:
        name = NUMPY_TYPESTR[stripped]
        return name, ITEM_BITS[name]
    return raw, None


class _Window:
    """Random access to the file through one small read-ahead window.

    Not ``mmap``: on kernels that map page-cache folios whole, touching one header byte per array maps megabytes,
    so a 1 GiB file showed ~500 MB of RSS. Reading the few bytes each header needs keeps memory at the window.
    """

    CHUNK = 64 << 10
    REMOTE_CHUNK = 256

    def __init__(self, fh: Any, size: int, chunk: int = CHUNK) -> None:
        self.fh = fh
        self.size = size
        self.chunk = chunk
        self.start = 0
        self.data = b""

    def slice(self, a: int, b: int) -> bytes:
        """Bytes ``[a, b)``; callers have checked ``b <= size``."""
        if self.start <= a and b <= self.start + len(self.data):
            return self.data[a - self.start : b - self.start]
        if b - a > self.chunk:
            self.fh.seek(a)
            return self.fh.read(b - a)
        self.fh.seek(a)
        self.start, self.data = a, self.fh.read(min(self.chunk, self.size - a))
        return self.data[: b - a]

    def byte(self, pos: int) -> int:
        return self.slice(pos, pos + 1)[0]

    def unpack(self, st: struct.Struct, pos: int) -> Any:
        return st.unpack(self.slice(pos, pos + st.size))


class _Walker:
    """Cursor over the file; emits arrays into ``tensors`` and other leaves into ``values``."""

    def __init__(self, buf: _Window, size: int) -> None:
        self.buf = buf
        self.end = size
        self.pos = 0
        self.tensors: dict[str, TensorInfo] = {}
        self.values: dict[str, Any] = {}
        self.dropped_values = 0
        self.keys = KeyPaths("/")

    # -- primitive reads, each bounded by the end of the file --------------------------------------------------
    def _need(self, n: int, what: str) -> int:
        start = self.pos
        if n > self.end - start:
            raise _Corrupt(f"truncated: {what} at byte {start} needs {n} bytes, {self.end - start} remain")
        self.pos = start + n
        return start

    def _unpack(self, st: struct.Struct, what: str) -> Any:
        return self.buf.unpack(st, self._need(st.size, what))[0]

    def _byte(self, what: str) -> int:
        return self.buf.byte(self._need(1, what))

    def _count(self, n: int, per_item: int, what: str) -> int:
        if n * per_item > self.end - self.pos:
            raise _Corrupt(
                f"{what} at byte {self.pos} claims {n} entries, more than the {self.end - self.pos} bytes left"
            )
        return n

    # -- structure -----------------------------------------------------------------------------------------------
    def walk(self) -> None:
        marker = self.buf.byte(0)
        if not (0x80 <= marker <= 0x8F or marker in (0xDE, 0xDF)):
            raise _Corrupt(f"top-level value is not a map (first byte 0x{marker:02x})")
        self._value("", 0, unchunk=True)
        if self.pos != self.end:
            raise _Corrupt(
                f"{self.end - self.pos} trailing bytes after the msgpack state dict (at byte {self.pos})"
            )

    def _container_header(self, b: int) -> tuple[str, int] | None:
        """(``map``|``array``, entry count) when the type byte ``b`` (already consumed) starts a container."""
        if 0x80 <= b <= 0x8F:
            return "map", b & 0x0F
        if 0x90 <= b <= 0x9F:
            return "array", b & 0x0F
        if b == 0xDE:
            return "map", self._unpack(_U16, "map16 length")
        if b == 0xDF:
            return "map", self._unpack(_U32, "map32 length")
        if b == 0xDC:
            return "array", self._unpack(_U16, "array16 length")
        if b == 0xDD:
            return "array", self._unpack(_U32, "array32 length")
        return None

    def _value(self, key: str, depth: int, *, unchunk: bool) -> None:
        """Consume one value at ``key``; containers recurse, leaves are emitted.

        ``unchunk``: every ancestor is a map, so flax's ``_unchunk_array_leaves_in_place`` (which does not look
        inside lists) would turn a chunked-array map here back into one array.
        """
        if depth > MAX_DEPTH:
            raise _Corrupt(f"nesting deeper than {MAX_DEPTH} levels at {key!r}")
        start = self.pos
        b = self._byte("type byte")
        container = self._container_header(b)
        if container is None:
            self.pos = start
            self._emit(key, self._scalar(key, depth))
            return
        kind, n = container
        if kind == "array":
            self._count(n, 1, "array")
            for i in range(n):
                self._value(self.keys.join(key or None, str(i)), depth + 1, unchunk=False)
            return
        self._count(n, 2, "map")
        entries = self.pos
        marks = (len(self.tensors), len(self.values), self.dropped_values)
        for i in range(n):
            k = self._key(depth)
            if k == CHUNK_MARKER and unchunk:
                # flax.serialization._unchunk_array_leaves_in_place: this map is one array; undo what its
                # earlier entries emitted (flax writes the marker first, so normally nothing) and re-read it.
                if i:
                    self._rollback(marks)
                self.pos = entries
                self._chunked(key, n, depth)
                return
            self._value(self.keys.join(key or None, k), depth + 1, unchunk=unchunk)

    def _rollback(self, marks: tuple[int, int, int]) -> None:
        n_tensors, n_values, dropped = marks
        while len(self.tensors) > n_tensors:
            self.tensors.popitem()
        while len(self.values) > n_values:
            self.values.popitem()
        self.dropped_values = dropped

    def _key(self, depth: int) -> str:
        """A map key as flax's ``msgpack_restore`` sees it (``strict_map_key=False``), as text."""
        start = self.pos
        b = self._byte("map key")
        if self._container_header(b) is not None:
            raise _Corrupt(f"map key at byte {start} is a container")
        self.pos = start
        value = self._scalar("<key>", depth, max_chars=MAX_KEY_BYTES, keep=True)
        if isinstance(value, (_Array, _Skipped)):
            raise _Corrupt(f"map key at byte {start} is not a string (of at most 64 KiB) or a number")
        if isinstance(value, bytes):
            return value.decode("utf-8", "backslashreplace")
        return str(value)

    def _chunked(self, key: str, n: int, depth: int) -> None:
        shape: list[Any] | None = None
        chunks: list[_Array] | None = None
        for _ in range(n):
            k = self._key(depth)
            if k == "shape":
                shape = self._small_tuple(key, depth + 1, scalars=True)
            elif k == "chunks":
                chunks = self._small_tuple(key, depth + 1, scalars=False)
            else:
                self._skip(depth + 1)
        if shape is None or chunks is None:
            raise _Corrupt(f"chunked array {key!r} lacks its 'shape' or 'chunks' entry")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise _Corrupt(f"chunked array {key!r}: shape {shape!r} is not a tuple of non-negative ints")
        if not chunks:
            raise _Corrupt(f"chunked array {key!r} has no chunks")
        dtypes = {c.dtype for c in chunks}
        if len(dtypes) != 1:
            raise _Corrupt(f"chunked array {key!r}: chunks have different dtypes {sorted(dtypes)}")
        numel = 1
        for d in shape:
            numel *= d
        have = 0
        for c in chunks:
            m = 1
            for d in c.shape:
                m *= d
            have += m
        if have != numel:
            raise _Corrupt(f"chunked array {key!r}: chunks hold {have} elements, shape {shape} needs {numel}")
        check_tensor_count(len(self.tensors) + 1)
        self.tensors[key] = tensor_info(
            tuple(shape), chunks[0].dtype, nbytes=sum(c.nbytes for c in chunks), offset=chunks[0].offset
        )

    def _small_tuple(self, key: str, depth: int, *, scalars: bool) -> list[Any]:
        """flax's ``_dict_to_tuple``: a map ``{"0": v0, "1": v1, ...}`` (or an array) read into a list."""
        b = self._byte("chunked array entry")
        container = self._container_header(b)
        if container is None:
            raise _Corrupt(f"chunked array {key!r}: 'shape'/'chunks' is not a map")
        kind, n = container
        self._count(n, 1, kind)
        items: dict[str, Any] = {}
        for i in range(n):
            k = self._key(depth) if kind == "map" else str(i)
            if self._next_is_container():
                raise _Corrupt(f"chunked array {key!r}: entry {k!r} is a container")
            value = self._scalar(key, depth, keep=True)
            if scalars == isinstance(value, _Array):
                raise _Corrupt(f"chunked array {key!r}: entry {k!r} has the wrong type")
            items[k] = value
        try:
            return [items[str(i)] for i in range(len(items))]
        except KeyError:
            raise _Corrupt(f"chunked array {key!r}: entries are not numbered 0..{len(items) - 1}") from None

    def _next_is_container(self) -> bool:
        if self.pos >= self.end:
            raise _Corrupt(f"truncated: value expected at byte {self.pos}, end of file")
        b = self.buf.byte(self.pos)
        return 0x80 <= b <= 0x9F or b in (0xDC, 0xDD, 0xDE, 0xDF)

    def _skip(self, depth: int) -> None:
        """Consume one value without emitting anything."""
        if depth > MAX_DEPTH:
            raise _Corrupt(f"nesting deeper than {MAX_DEPTH} levels")
        start = self.pos
        container = self._container_header(self._byte("type byte"))
        if container is None:
            self.pos = start
            self._scalar("<skipped>", depth, keep=False)
            return
        kind, n = container
        self._count(n, 2 if kind == "map" else 1, kind)
        for _ in range(n * 2 if kind == "map" else n):
            self._skip(depth + 1)

    def _emit(self, key: str, value: Any) -> None:
        if isinstance(value, _Array):
            check_tensor_count(len(self.tensors) + 1)
            self.tensors[key] = tensor_info(
                value.shape, value.dtype, nbytes=value.nbytes, offset=value.offset
            )
            return
        if len(self.values) >= MAX_VALUES:
            self.dropped_values += 1
            if self.dropped_values + MAX_VALUES + len(self.tensors) > MAX_LEAVES:
                raise LimitExceeded(f"it holds more than {MAX_LEAVES} values")
            return
        if isinstance(value, _Skipped):
            value = value.text
        elif isinstance(value, bytes):
            value = f"<{len(value)} bytes>"
        elif isinstance(value, complex):
            value = str(value)
        self.values[key] = value

    # -- leaves --------------------------------------------------------------------------------------------------
    def _scalar(self, key: str, depth: int, *, max_chars: int = MAX_VALUE_CHARS, keep: bool = True) -> Any:
        """Consume one non-container value: nil/bool/int/float/str/bin/ext; arrays come back as ``_Array``."""
        start = self.pos
        b = self._byte("type byte")
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0xA0 <= b <= 0xBF:
            return self._text(b & 0x1F, max_chars, keep)
        if b == 0xC0:
            return None
        if b == 0xC2:
            return False
        if b == 0xC3:
            return True
        if b in _INTS:
            return self._unpack(_INTS[b], "integer")
        if b == 0xCA:
            return self._unpack(_F32, "float32")
        if b == 0xCB:
            return self._unpack(_F64, "float64")
        if b in (0xD9, 0xDA, 0xDB):
            n = self._unpack((_U8, _U16, _U32)[b - 0xD9], "str length")
            return self._text(n, max_chars, keep)
        if b in (0xC4, 0xC5, 0xC6):
            n = self._unpack((_U8, _U16, _U32)[b - 0xC4], "bin length")
            at = self._need(n, "bin data")
            if keep and n <= max_chars:
                return self.buf.slice(at, at + n)
            return _Skipped(f"<{n} bytes>")
        if b in _FIXEXT:
            n = _FIXEXT[b]
        elif b in (0xC7, 0xC8, 0xC9):
            n = self._unpack((_U8, _U16, _U32)[b - 0xC7], "ext length")
        else:
            raise _Corrupt(f"invalid msgpack type byte 0x{b:02x} at byte {start}")
        code = self._unpack(_I8, "ext type")
        payload = self._need(n, "ext data")
        if code in (EXT_NDARRAY, EXT_NPSCALAR):
            return self._ndarray(key, payload, n, depth)
        if code == EXT_COMPLEX:
            return self._complex(key, payload, n, depth)
        return _Skipped(f"<msgpack ext type {code}, {n} bytes>")

    def _text(self, n: int, max_chars: int, keep: bool) -> Any:
        at = self._need(n, "str data")
        if not keep or n > max_chars:
            return _Skipped(f"<str of {n} bytes>")
        try:
            return self.buf.slice(at, at + n).decode("utf-8")
        except UnicodeDecodeError:
            raise _Corrupt(f"str at byte {at} is not valid UTF-8") from None

    def _sub(self, start: int, n: int) -> _Walker:
        """A walker confined to an ext payload ``[start, start + n)``."""
        sub = _Walker(self.buf, start + n)
        sub.pos = start
        return sub

    def _ndarray(self, key: str, start: int, n: int, depth: int) -> _Array:
        """flax's ``_ndarray_from_bytes``: payload = msgpack (shape, dtype name, raw bytes); the bytes are skipped."""
        sub = self._sub(start, n)
        header = sub._container_header(sub._byte("ndarray payload"))
        if header != ("array", 3):
            raise _Corrupt(f"array {key!r}: ext payload is not a (shape, dtype, data) triple")
        dims = sub._container_header(sub._byte("ndarray shape"))
        if dims is None or dims[0] != "array" or dims[1] > MAX_NDIM:
            raise _Corrupt(f"array {key!r}: shape is not a list of at most {MAX_NDIM} ints")
        shape = []
        for _ in range(dims[1]):
            d = sub._scalar(key, depth + 1)
            if not isinstance(d, int) or isinstance(d, bool) or d < 0:
                raise _Corrupt(f"array {key!r}: shape entry {d!r} is not a non-negative int")
            shape.append(d)
        raw = sub._scalar(key, depth + 1, max_chars=64)
        if isinstance(raw, bytes):
            raw = raw.decode("ascii", "replace")
        if not isinstance(raw, str):
            raise _Corrupt(f"array {key!r}: dtype name is not a short string")
        dtype, bits = _dtype_name(raw)
        kind = sub._byte("ndarray data")
        if kind in (0xC4, 0xC5, 0xC6):
            length = sub._unpack((_U8, _U16, _U32)[kind - 0xC4], "ndarray data length")
        elif 0xA0 <= kind <= 0xBF:
            length = kind & 0x1F
        elif kind in (0xD9, 0xDA, 0xDB):
            length = sub._unpack((_U8, _U16, _U32)[kind - 0xD9], "ndarray data length")
        else:
            raise _Corrupt(f"array {key!r}: data is not a bin")
        data_at = sub._need(length, f"array {key!r} data")  # skipped, never read
        if sub.pos != sub.end:
            raise _Corrupt(f"array {key!r}: {sub.end - sub.pos} unexpected bytes after the data")
        numel = 1
        for d in shape:
            numel *= d
        if bits is not None and (numel * bits + 7) // 8 != length:
            raise _Corrupt(
                f"array {key!r}: shape {shape} x {dtype} needs {(numel * bits + 7) // 8} bytes, data has {length}"
            )
        return _Array(tuple(shape), dtype, length, data_at)

    def _complex(self, key: str, start: int, n: int, depth: int) -> complex:
        sub = self._sub(start, n)
        if sub._container_header(sub._byte("complex payload")) != ("array", 2):
            raise _Corrupt(f"value {key!r}: complex ext payload is not a (real, imag) pair")
        real, imag = sub._scalar(key, depth + 1), sub._scalar(key, depth + 1)
        if sub.pos != sub.end or not all(isinstance(x, (int, float)) for x in (real, imag)):
            raise _Corrupt(f"value {key!r}: malformed complex ext payload")
        return complex(real, imag)
