"""A compressed joblib file read forward as ``joblib.load`` reads it (``joblib/compressor.py``), bounded.

Each call decompresses at most 1 MiB (a bomb never expands in memory), the whole stream at most
MAX_DECOMPRESSED bytes, one read at most MAX_READ; large byte arguments and array data are skipped (read and
dropped) rather than kept, and marked (``Skipped``) like the regions a file parse skips.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import IO, Any

from ckptlint.readers.pickle_stubs import MAX_LINE, MAX_READ, Skipped, StubFailure

MAX_DECOMPRESSED = 256 << 20  # bytes a compressed joblib file may expand to (bz2 decompresses ~50 MB/s)
_STEP = 1 << 20
_ZLIB = type(zlib.decompressobj())


class Decompressed:
    """The decompressed stream of a joblib file, as a forward-only file object for the pure-Python unpickler."""

    def __init__(self, fh: IO[bytes], compression: str) -> None:
        self.fh = fh
        if compression in ("zlib", "gzip"):
            self.dec: Any = zlib.decompressobj(zlib.MAX_WBITS | (16 if compression == "gzip" else 0))
        elif compression == "bz2":
            self.dec = bz2.BZ2Decompressor()
        else:
            self.dec = lzma.LZMADecompressor(lzma.FORMAT_XZ if compression == "xz" else lzma.FORMAT_ALONE)
        self.buf = bytearray()
        self.at = 0  # next unread byte of buf
        self.pos = 0  # decompressed bytes consumed
        self.total = 0  # decompressed bytes produced
        self.eof = False
        self.skipped = Skipped()

    def _fill(self, n: int) -> None:
        """Make ``n`` bytes available (fewer at the end of the stream)."""
        if self.at >= _STEP and self.at * 2 >= len(self.buf):  # drop what was read (amortised linear)
            del self.buf[: self.at]
            self.at = 0
        while len(self.buf) - self.at < n and not self.eof:
            try:
                out = self._more(min(max(n - len(self.buf) + self.at, 1 << 16), _STEP))
            except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
                raise ValueError(f"corrupt compressed data: {exc}") from None
            if out is None:
                self.eof = True
                break
            self.total += len(out)
            if self.total > MAX_DECOMPRESSED:
                raise StubFailure(f"the file decompresses to more than {MAX_DECOMPRESSED} bytes")
            self.buf += out

    def _more(self, want: int) -> bytes | None:
        """At most ``want`` more decompressed bytes; None at the end of the stream."""
        dec = self.dec
        if dec.eof:
            return None
        if isinstance(dec, _ZLIB):
            data = dec.unconsumed_tail or self.fh.read(1 << 16)
            return dec.decompress(data, want) if data else None
        data = self.fh.read(1 << 16) if dec.needs_input else b""
        if dec.needs_input and not data:
            return None
        return dec.decompress(data, want)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise ValueError("unbounded read")
        if n > MAX_READ:
            raise StubFailure(f"a read of {n} bytes (larger than ckptlint reads)")
        self._fill(n)
        end = min(self.at + n, len(self.buf))
        data = bytes(self.buf[self.at : end])
        self.pos += end - self.at
        self.at = end
        return data

    def readinto(self, out: Any) -> int:
        data = self.read(len(out))
        out[: len(data)] = data
        return len(data)

    def readline(self, limit: int = -1) -> bytes:
        while True:
            i = self.buf.find(b"\n", self.at)
            if i >= 0:
                return self.read(i + 1 - self.at)
            have = len(self.buf) - self.at
            if self.eof or have > MAX_LINE:
                return self.read(min(have, MAX_LINE))
            self._fill(have + (1 << 16))

    def skip(self, n: int) -> None:
        """Drop ``n`` bytes (array data, a large argument) without keeping them."""
        while n > 0:
            self._fill(min(n, _STEP))
            take = min(n, len(self.buf) - self.at)
            if take <= 0:
                raise StubFailure("data runs past the end of the decompressed stream")
            self.at += take
            self.pos += take
            n -= take

    def tell(self) -> int:
        return self.pos
