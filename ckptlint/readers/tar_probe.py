"""Whether ``torch.load`` would read a file as a legacy tar archive (``ckptlint.readers.torch_tar`` reads it).

Kept apart from the reader so that sniffing a file does not import the pickle machinery (start-up time).
"""

from __future__ import annotations

import io
from typing import IO

BLOCK = 512  # a tar header block
MAX_TAR_READ = 1 << 20  # one read by tarfile (GNU long names, pax headers); larger ones are refused


class TooLarge(Exception):
    """tarfile asked for more bytes in one read than ckptlint allows (an absurd extended header)."""


class BoundedReader(io.RawIOBase):
    """The file as tarfile sees it, refusing single reads larger than MAX_TAR_READ."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if n is None or n < 0 or n > MAX_TAR_READ:
            raise TooLarge(f"a tar header asks to read {n} bytes at once")
        return self._fh.read(n)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(pos, whence)

    def tell(self) -> int:
        return self._fh.tell()


def is_torch_tar(fh: IO[bytes]) -> bool | None:
    """Whether ``torch.load`` takes the tar path for this file: ``tarfile.open(mode="r:")`` accepts it (torch's
    own test, ``_legacy_load``). None when tarfile fails otherwise (torch.load fails before unpickling)."""
    fh.seek(0)
    if _not_a_tar(fh.read(BLOCK)):
        return False
    import tarfile  # ~3 ms of start-up (it imports shutil, bz2, lzma): only for a file that may be a tar

    fh.seek(0)
    try:
        tarfile.open(fileobj=BoundedReader(fh), mode="r:").close()
    except tarfile.TarError:
        return False
    except TooLarge:
        return True  # tarfile would read on: judged (and refused) by read_tar
    except Exception:  # tarfile fails in a way torch.load does not catch: it loads nothing
        return None
    return True


def _not_a_tar(first: bytes) -> bool:
    """True when ``tarfile.open`` surely fails on the first header block, so tarfile need not be imported.

    tarfile's first test (``TarInfo.frombuf``): a file shorter than one block is a truncated header; a block of
    zeros is an (empty) archive; otherwise the checksum field (bytes 148-156) must be a number as tarfile reads
    it: base-256 when its first byte is 0x80 or 0xFF, else octal text up to the first NUL (the same ``int(…, 8)``
    it calls). Only those failures are decided here; every other block goes to tarfile itself.
    """
    if len(first) < BLOCK:
        return True
    if not first.strip(b"\0"):
        return False
    field = first[148:156]
    if field[0] in (0o200, 0o377):
        return False
    try:
        int(field.split(b"\0", 1)[0].decode("ascii").strip() or "0", 8)
    except ValueError:
        return True
    return False
