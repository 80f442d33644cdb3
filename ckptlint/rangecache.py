"""The bytes of one remote file that were fetched, by range request: fetch only what the readers touch.

A read that misses fetches the missing bytes plus a read-ahead that depends on how the file is being read:
the first read of a file brings ``FIRST`` bytes (a safetensors header, a pickle's start, a sniff); a read that
continues where the last fetch ended doubles the read-ahead (a ``data.pkl``, a zip's central directory), up to
``FIRST``; any other read (the next npy header of an npz, the next array of a flax msgpack file, a zip's end
record) brings only ``SPARSE`` bytes beyond what it asked for. So the bytes fetched beyond what the readers read
stay a few hundred per header and at most ``FIRST`` per sequential run, never the tensor data between headers.

Written here rather than with fsspec's caches so that every request is retried, checked for truncation and
counted (``netfaults``); the fetch itself is the caller's function ``fetch(start, stop) -> bytes``.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Callable
from typing import Any

FIRST = 16 * 1024  # what the first read of a file, and the longest read-ahead, bring
SPARSE = 256  # read-ahead of a read that jumps (a header between tensors)
MAX_CACHED = 4 << 20  # bytes kept per file; the least recently used ranges go first


class Ranges:
    """Non-overlapping fetched ranges of one file of ``size`` bytes, fetched through ``fetch(start, stop)``."""

    def __init__(self, size: int, fetch: Callable[[int, int], bytes]) -> None:
        self.size = size
        self._fetch = fetch
        self._starts: list[int] = []  # sorted starts of the cached ranges
        self._data: dict[int, bytes] = {}
        self._used: dict[int, int] = {}  # start -> last use (for eviction)
        self._clock = 0
        self._cached = 0
        self._last_end: int | None = None  # where the last fetch ended
        self._ahead = SPARSE

    def seed(self, start: int, data: bytes) -> None:
        """Take ``data`` at ``start`` as already fetched (e.g. the first block a size probe brought)."""
        if data:
            self._put(start, data)
            self._last_end = start + len(data)
            self._ahead = FIRST

    def read(self, pos: int, n: int) -> bytes:
        end = min(pos + n, self.size)
        if pos >= end:
            return b""
        parts: list[bytes] = []
        at = pos
        while at < end:
            piece = self._cached_at(at, end)
            if piece is None:
                nxt = self._next_start(at)
                stop = min(end, nxt) if nxt is not None else end
                piece = self._miss(at, stop, nxt)[: stop - at]
            parts.append(piece)
            at += len(piece)
        return b"".join(parts)

    def _cached_at(self, at: int, end: int) -> bytes | None:
        i = bisect.bisect_right(self._starts, at) - 1
        if i < 0:
            return None
        start = self._starts[i]
        data = self._data[start]
        if at >= start + len(data):
            return None
        self._clock += 1
        self._used[start] = self._clock
        return data[at - start : end - start]

    def _next_start(self, at: int) -> int | None:
        i = bisect.bisect_right(self._starts, at)
        return self._starts[i] if i < len(self._starts) else None

    def _miss(self, at: int, stop: int, limit: int | None) -> bytes:
        if self._last_end is None:
            ahead = FIRST
        elif at == self._last_end:
            ahead = min(self._ahead * 2, FIRST)
        else:
            ahead = SPARSE
        self._ahead = ahead
        upto = min(max(stop, at + ahead), self.size, limit if limit is not None else self.size)
        data = self._fetch(at, upto)
        self._last_end = upto
        self._put(at, data)
        return data

    def _put(self, start: int, data: bytes) -> None:
        if start in self._data:
            self._cached -= len(self._data[start])
        else:
            bisect.insort(self._starts, start)
        self._data[start] = data
        self._clock += 1
        self._used[start] = self._clock
        self._cached += len(data)
        while self._cached > MAX_CACHED and len(self._starts) > 1:
            oldest = min(self._used, key=self._used.__getitem__)
            self._cached -= len(self._data.pop(oldest))
            del self._used[oldest]
            self._starts.remove(oldest)


class View(io.RawIOBase):
    """An independent read position over a file's shared ``Ranges``; closing it leaves the cache open."""

    def __init__(self, ranges: Ranges) -> None:
        super().__init__()
        self._ranges = ranges
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._ranges.read(self._pos, len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._ranges.size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos


class RemoteFile(io.BufferedReader):
    """A remote file as the readers see it. Readers that read ahead generously on disk ask it how much to read
    here, so that they do not fetch tensor data they will skip: ``window`` for walkers reading large windows
    (the pickle walker), ``head_bytes`` for a header of unknown length (an npz member's npy header, which
    numpy pads to 64 bytes: 128 for all but very wide arrays; a longer one is read again through zipfile)."""

    window = 4096
    head_bytes = 128
