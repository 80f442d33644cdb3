"""What a pickle walk is given and gives back: its bounds, the bytes it reads, the budget a file's streams share,
and what it found (:mod:`ckptlint.readers.pickle_walker` walks; the stub parser and the format readers use these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

MAX_OPS = 1 << 22  # opcodes per file (all its streams); a torch pickle takes ~30 per tensor
# objects an unpickler would create for one file (a dict or set counts 8: it takes ~8x the memory of an int or
# a short tuple); a torch pickle makes ~14 per tensor, so ~140k tensors fit in one pickle
MAX_OBJECTS = 1 << 21
MAX_MEMO_INDEX = 1 << 22  # C resizes its memo to twice the largest index written
MAX_MEMO_ENTRIES = 1 << 21
MAX_STACK = 1 << 22
MAX_MARKS = 1 << 16
MAX_LINE = 64 << 20  # a protocol-0 argument (text line)
MAX_NAME = 1 << 20  # a STACK_GLOBAL name longer than this cannot be imported
MAX_FRAME = 16 << 20  # picklers write frames of ~64 KiB; larger ones are refused
MAX_HASH_COST = 1 << 16  # tuple nodes hashed for one dict key or set item
CHUNK = 1 << 20
BLOB_BYTES = 1024  # byte arguments at least this long are located (array data: its offset is reported)
SKIP_ARG = 1 << 20  # arguments at least this long are never read into memory
MAX_BLOBS = 1 << 16
HIGHEST_PROTOCOL = 5


class ScanError(Exception):
    """The stream does not parse (``refused=False``: the loaders fail on it too) or ckptlint will not judge it
    (``refused=True``: a bound, or loaders that would read it differently)."""

    def __init__(self, member: str, offset: int, reason: str, *, refused: bool) -> None:
        super().__init__(
            f"{'refused' if refused else 'malformed'} pickle in {member} at offset {offset}: {reason}"
        )
        self.member = member
        self.offset = offset
        self.reason = reason
        self.refused = refused
        self.globals: list[ScanGlobal] = []  # the globals imported before this point
        self.numbers = False  # refused for a text number's form only (a lenient walk can go on: ``strict``)


@dataclass
class ScanGlobal:
    """A global the stream imports, in the order the unpickler calls ``find_class``."""

    module: str
    name: str
    opcode: str
    offset: int
    proto: int  # the protocol in effect (below 3, Python 2 names are mapped)


@dataclass
class Scan:
    """One stream: where it starts and ends (just past STOP), and the globals it imports."""

    start: int
    end: int
    globals: list[ScanGlobal] = field(default_factory=list)
    ops: int = 0
    persistent_ids: int = 0
    blobs: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of large byte arguments
    # (opcode offset, width of its count, length, kind) of arguments of SKIP_ARG bytes or more outside frames:
    # the C parse reads them as short markers (see pickle_stubs.PatchedReader)
    big: list[tuple[int, int, int, str]] = field(default_factory=list)
    # INST, OBJ or PERSID: opcodes whose C and pure-Python readings ckptlint checks side by side (text numbers,
    # where the two differ, are refused unless written as picklers write them; tests/test_pickle_differential.py)
    loose: bool = False


@dataclass
class Budget:
    """What the streams of one file may cost together."""

    ops: int = 0
    objects: int = 0
    # small streams without globals already judged, by their bytes -> (value, opcodes): the header streams every
    # nested legacy payload repeats (a stream's parse depends only on its bytes)
    plain: dict[bytes, tuple[object, int]] = field(default_factory=dict)


class Source:
    """A file region (or bytes) read through a window; offsets are the file's (or the bytes')."""

    def __init__(self, data: bytes | None = None, fh: IO[bytes] | None = None, start: int = 0, end: int = 0):
        self.data = data
        self.fh = fh
        self.start = start
        self.end = len(data) if data is not None else end

    @classmethod
    def of_file(cls, fh: IO[bytes], start: int = 0, end: int | None = None) -> Source:
        if end is None:
            end = fh.seek(0, 2)
        return cls(fh=fh, start=start, end=end)

    def window(self, pos: int, need: int) -> tuple[bytes, int]:
        """``(buf, base)``: bytes from ``pos`` (at least ``need`` of them, or to the end) and their offset."""
        if self.data is not None:
            return self.data, 0
        assert self.fh is not None
        # a remote file's window is small: its bytes are fetched by range request as the walk reaches them
        size = min(max(need, getattr(self.fh, "window", CHUNK)), self.end - pos)
        self.fh.seek(pos)
        return self.fh.read(size), pos

    def read(self, pos: int, n: int) -> bytes:
        """Exactly the bytes ``[pos, pos + n)`` (fewer at the end)."""
        n = max(0, min(n, self.end - pos))
        if self.data is not None:
            return self.data[pos : pos + n]
        assert self.fh is not None
        self.fh.seek(pos)
        return self.fh.read(n)
