"""Tensor bytes by byte range: where they are (``Span``), copying them in chunks, and viewing them as numpy arrays.

A tensor as stored is one or more spans of a file or of a zip member, plus how its elements are laid out (strides,
byte order). Copies are streamed in 1 MiB chunks; arrays are read into one buffer the size of the tensor (bfloat16
and float8 through ml_dtypes), never the whole file.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ckptlint.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

CHUNK = 1 << 20
_ML_DTYPES = (
    "bfloat16",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
)


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a canonical dtype name (bfloat16 and float8 from ml_dtypes), little-endian."""
    import numpy as np

    if name in _ML_DTYPES or name in ("int4", "uint4", "float4_e2m1fn"):
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    try:
        return np.dtype(name).newbyteorder("<")
    except TypeError:
        raise UsageError(f"dtype {name} has no numpy equivalent") from None


@dataclass(frozen=True)
class Span:
    """``nbytes`` bytes at ``offset`` of ``path`` — or of zip ``member`` of ``path`` (decompressed offset)."""

    path: Path
    offset: int
    nbytes: int
    member: str | None = None


@dataclass(frozen=True)
class Stored:
    """A tensor as stored: its spans in order; ``strides`` (elements, None = C order) and byte order apply to the
    bytes of the spans joined, element 0 first."""

    spans: tuple[Span, ...]
    shape: tuple[int, ...]
    dtype: str
    strides: tuple[int, ...] | None = None
    big_endian: bool = False

    @property
    def plain(self) -> bool:
        """The joined bytes are the tensor's C-order little-endian bytes: copy them as they are."""
        return not self.big_endian and (self.strides is None or self.strides == c_strides(self.shape))


def c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """C-order strides in elements; dimensions of size 1 get the stride torch gives them."""
    out = []
    step = 1
    for d in reversed(shape):
        out.append(step)
        step *= max(d, 1)
    return tuple(reversed(out))


def same_layout(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """True when ``strides`` walk ``shape`` in C order (sizes 0 and 1 ignore their stride, as torch does)."""
    if any(d == 0 for d in shape):
        return True
    want = c_strides(shape)
    return all(d == 1 or s == w for d, s, w in zip(shape, strides, want, strict=True))


class ZipMembers:
    """A zip archive's directory, read once, and where each stored member's bytes start in the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with zipfile.ZipFile(path) as zf:
            self.infos = {i.filename: i for i in zf.infolist()}
        self._offsets: dict[str, int | None] = {}

    def data_offset(self, name: str) -> int | None:
        """Absolute offset of a stored (uncompressed) member's first byte; None when it is compressed."""
        if name not in self._offsets:
            info = self.infos[name]
            found = None
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                with open(self.path, "rb") as fh:
                    fh.seek(info.header_offset)
                    head = fh.read(30)
                if len(head) != 30 or head[:4] != b"PK\x03\x04":
                    raise UsageError(f"{self.path}: zip member {name} has no local header")
                name_len, extra_len = struct.unpack("<HH", head[26:30])  # the local header's own lengths
                found = info.header_offset + 30 + name_len + extra_len
            self._offsets[name] = found
        return self._offsets[name]


@contextlib.contextmanager
def open_span(span: Span) -> Iterator[IO[bytes]]:
    """A file object positioned at the span's first byte (reads past its end are the caller's to avoid)."""
    if span.member is None:
        with open(span.path, "rb") as fh:
            fh.seek(span.offset)
            yield fh
        return
    with zipfile.ZipFile(span.path) as zf, zf.open(span.member) as fh:
        left = span.offset
        while left:  # a compressed member can only be read forward
            got = fh.read(min(CHUNK, left))
            if not got:
                raise UsageError(f"{span.path}: member {span.member} ends before byte {span.offset}")
            left -= len(got)
        yield fh


def copy_span(span: Span, out: IO[bytes]) -> None:
    """Stream the span's bytes into ``out``."""
    with open_span(span) as fh:
        copy_exact(fh, out, span.nbytes, f"{span.path}{':' + span.member if span.member else ''}")


def copy_exact(src: IO[bytes], out: IO[bytes], nbytes: int, where: str) -> None:
    left = nbytes
    while left:
        chunk = src.read(min(CHUNK, left))
        if not chunk:
            raise UsageError(f"{where}: input ended early while copying tensor bytes")
        out.write(chunk)
        left -= len(chunk)


def copy_file(src: Path, dst: IO[bytes]) -> None:
    with open(src, "rb") as fh:
        shutil.copyfileobj(fh, dst, CHUNK)


def read_spans(spans: tuple[Span, ...]) -> bytearray:
    """The joined bytes of the spans, in one buffer."""
    buf = bytearray(sum(s.nbytes for s in spans))
    view = memoryview(buf)
    pos = 0
    for span in spans:
        with open_span(span) as fh:
            target = view[pos : pos + span.nbytes]
            got = 0
            while got < span.nbytes:
                n = fh.readinto(target[got:])
                if not n:
                    raise UsageError(f"{span.path}: input ended early while reading tensor bytes")
                got += n
        pos += span.nbytes
    return buf


def to_array(stored: Stored) -> np.ndarray:
    """The tensor as a C-contiguous little-endian numpy array (one read of its bytes)."""
    import numpy as np

    dtype = numpy_dtype(stored.dtype)
    buf = read_spans(stored.spans)
    flat = np.frombuffer(buf, dtype=dtype.newbyteorder(">") if stored.big_endian else dtype)
    if stored.strides is None:
        arr = flat.reshape(stored.shape)
    else:
        arr = np.lib.stride_tricks.as_strided(
            flat,
            shape=stored.shape,
            strides=tuple(s * dtype.itemsize for s in stored.strides),
            writeable=False,
        )
    arr = np.array(arr, order="C", copy=None)
    return arr.astype(dtype) if stored.big_endian else arr


def write_stored(stored: Stored, out: IO[bytes]) -> None:
    """Write the tensor's C-order little-endian bytes: the spans as they are when they already are that."""
    if stored.plain:
        for span in stored.spans:
            copy_span(span, out)
    else:
        write_array(to_array(stored), out)


def write_array(arr: np.ndarray, out: IO[bytes]) -> None:
    """Write a C-contiguous array's bytes (without a copy when it already is one)."""
    import numpy as np

    arr = np.array(arr, order="C", copy=None)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.size:
        out.write(memoryview(arr.reshape(-1).view(np.uint8)))
