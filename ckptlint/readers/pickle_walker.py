"""Walk a pickle stream opcode by opcode and rebuild only what checkpoints are made of — never executing it.

Why not ``pickle.Unpickler`` with a restricted ``find_class``: it still runs the reduce calls of allowed
globals (allocating whatever sizes the file asks for) and stops at the first refusal, while a linter must see the
whole file. Why not plain ``pickletools.genops``: it reads every argument into memory before yielding it (a
4 GiB ``BINBYTES`` length is allocated before anyone can refuse it) and does not track the stack. So this module
is a bounded equivalent of ``genops`` (same opcodes and argument encodings, protocols 0-5) that also keeps the
unpickler's stack, mark stack and memo, and:

- bounds every length by the bytes that remain, skips large byte strings without reading them, bounds the memo,
  the stack, the mark depth and the opcode count;
- resolves every ``GLOBAL``/``STACK_GLOBAL``/``INST``/``EXT*`` against the default-deny safe set of
  :mod:`ckptlint.readers.pickle_globals`; anything else is logged (CK301) and continues as an opaque placeholder,
  so the rest of the file is still judged and its tensors recovered;
- interprets calls of safe globals symbolically: torch rebuild functions become :class:`TensorRef`, numpy
  reconstructs become :class:`ArrayRef`, ``OrderedDict`` a dict, and so on;
- follows the unpickler where it calls an object's own attributes (BUILD's instance ``__setstate__``, APPEND's
  ``append``, ...), and reports the safe globals that are safe only as direct callees (``CALL_ONLY_KINDS``)
  when they escape into the data;
- fails closed: a malformed stream raises :class:`MalformedPickle`; a construct it cannot judge is logged.
"""

from __future__ import annotations

import codecs
import io
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any

from ckptlint.dtypes import NUMPY_KIND_NAMES
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers.pickle_globals import (
    SAFE_GLOBALS,
    STORAGE_DTYPES,
    SecurityLog,
    one_line,
    torch_dtype_name,
    torch_itemsize,
)

INLINE_BYTES = 64 << 10  # byte/str arguments up to this size are read; larger ones are skipped as Blob
MAX_LINE = 64 << 10  # protocol-0 text arguments
MAX_MEMO = 1 << 22
MAX_STACK = 1 << 22  # items on the stack plus the marked stacks below it
MAX_MARK_DEPTH = 10_000
MAX_OPS = 1 << 24  # opcodes per stream: bounds time and the number of objects built
MAX_MATERIALIZE = 64 << 20  # a nested payload stored as text (protocol <= 2) is decoded up to this size
MAX_NESTED = 3  # pickles nested inside pickles (torch.storage._load_from_bytes, pickle.loads payloads)
MAX_DIM = 1 << 62
MAX_LONG_BYTES = 4096
CHECK_EVERY = 1 << 14  # opcodes between checks of the memo and stack bounds
MAX_KEY_DEPTH = 32  # nesting of tuples used as dict keys / set items
MAX_KEY_ITEMS = 10_000
# Safe globals whose safety depends on how they are called: torch.storage._load_from_bytes runs an unrestricted
# torch.load of its argument (accepted only when the walker verifies that argument), trainer records run their
# constructor when called with arguments. Each time one is pushed on the stack (imported, fetched from the memo,
# duplicated) it must be consumed as the callee of a call the walker judges; otherwise it has escaped into the
# data, where an unpickler can still call it (BUILD looks __setstate__ up on the instance, APPEND calls the
# object's own ``append``), and the global is reported at STOP.
CALL_ONLY_KINDS = frozenset({"load_from_bytes", "record"})
_NESTED_LOADERS = {"pickle.loads", "_pickle.loads", "cPickle.loads", "pickle._loads", "dill.loads"}


class MalformedPickle(Exception):
    """The stream is not a valid pickle (or exceeds a bound); the caller turns it into UnreadableCheckpoint."""

    def __init__(self, member: str, offset: int, reason: str) -> None:
        super().__init__(f"malformed pickle in {member} at offset {offset}: {reason}")
        self.member = member
        self.offset = offset
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------------
# Values the walker builds in place of the real objects
# ---------------------------------------------------------------------------------------------------------------


class Opaque:
    """Something the walker does not (or must not) rebuild: results of unsafe calls, out-of-band buffers."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


class Instance(Opaque):
    """An object of an unsafe class (already logged); its BUILD state is kept so tensors inside are found."""

    __slots__ = ("args", "state")

    def __init__(self, what: str, args: Any) -> None:
        super().__init__(what)
        self.args = args
        self.state: Any = None


@dataclass(eq=False)
class GlobalRef:
    """A global named by the pickle; ``kind`` is its safe-set interpretation, None when unsafe."""

    fullname: str
    kind: str | None

    def __repr__(self) -> str:
        return self.fullname


@dataclass(eq=False)
class Blob:
    """A byte or text argument too large to read: where it is, and how to turn it into bytes if ever needed.

    ``text`` is None for raw bytes, else how the file encodes the text (``utf-8`` for BINUNICODE, ``latin-1``
    for Python 2 strings, ``string-line``/``unicode-line`` for protocol-0 lines); ``encoding`` is set when
    ``_codecs.encode(text, encoding)`` turned the text into bytes (protocol <= 2 pickles of bytes).
    """

    length: int
    offset: int
    text: str | None = None
    encoding: str | None = None

    @property
    def raw(self) -> bool:
        """True when the file's bytes are the value's bytes (so their offset and length are the data's)."""
        return self.text is None or (self.text == "latin-1" and self.encoding in ("latin1", "latin-1"))

    def __repr__(self) -> str:
        return f"<{'bytes' if self.text is None or self.encoding else 'text'} of {self.length} bytes>"


@dataclass(eq=False)
class StorageRef:
    """A torch storage: its key, element dtype, element count and where its bytes are (member and/or offset)."""

    key: str
    dtype: str
    numel: int  # elements of ``dtype`` (bytes for UntypedStorage)
    location: str = "cpu"
    member: str | None = None  # zip member holding the bytes; None: the file itself
    data_offset: int | None = None  # byte offset of element 0 inside ``member`` (or the file)
    untyped: bool = False
    itemsize: int | None = field(init=False)
    nbytes: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.itemsize = 1 if self.untyped else torch_itemsize(self.dtype)
        self.nbytes = None if self.itemsize is None else self.numel * self.itemsize


@dataclass(eq=False)
class TensorRef:
    """A tensor rebuilt from its storage: shape, dtype, storage and element offset into it."""

    shape: tuple[int, ...]
    dtype: str
    storage: StorageRef | None = None
    offset: int = 0  # in elements of ``dtype``
    pending: bool = False  # created by NEWOBJ of a tensor class; BUILD (set_) fills it in
    stride: tuple[int, ...] | None = None  # in elements; None when not given (meta tensors)


@dataclass(eq=False)
class ArrayRef:
    """A numpy array: shape and dtype; object arrays keep their items (they are pickled inline)."""

    shape: tuple[int, ...] = ()
    dtype: str = "float64"
    itemsize: int | None = None
    items: list[Any] | None = None
    data_offset: int | None = None
    pending: bool = False


@dataclass(eq=False)
class NpDType:
    """A numpy dtype: its type string (``f4``, ``V2``, ``U3``) and canonical name."""

    spec: str
    name: str
    itemsize: int | None
    byteorder: str = "="


class Attrs(dict):  # type: ignore[type-arg]
    """An object whose state is a plain attribute dict (argparse.Namespace): reported like a dict."""


class ODict(dict):  # type: ignore[type-arg]
    """A ``collections.OrderedDict``: a dict that remembers it was one and the attributes BUILD gave it (a
    state_dict's ``_metadata``), so that a writer can emit it again as ``torch.save`` did."""

    attrs: dict[Any, Any] | None = None


@dataclass(eq=False)
class Composite:
    """A tensor made of other tensors (sparse, nested): its parts are reported under numbered sub-keys."""

    kind: str
    parts: list[Any] = field(default_factory=list)


_CODECS = {
    **dict.fromkeys(("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"), "latin-1"),
    **dict.fromkeys(("utf-8", "utf8"), "utf-8"),
    **dict.fromkeys(("ascii", "us-ascii"), "ascii"),
}
_ROT13 = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)
_INT4, _UINT2, _UINT4, _UINT8, _FLOAT8 = (struct.Struct(f) for f in ("<i", "<H", "<I", "<Q", ">d"))
PersistentLoad = Callable[[Any, int], Any]

# ---------------------------------------------------------------------------------------------------------------
# numpy dtype strings
# ---------------------------------------------------------------------------------------------------------------

_NP_STRUCT = {
    "b1": "?",
    "i1": "b",
    "u1": "B",
    "i2": "h",
    "u2": "H",
    "i4": "i",
    "u4": "I",
    "i8": "q",
    "u8": "Q",
}
_NP_STRUCT.update({"f2": "e", "f4": "f", "f8": "d"})


def np_dtype(spec: str) -> NpDType:
    """Canonical name and item size of a numpy dtype string without byte order (``f4`` -> float32)."""
    from ckptlint.dtypes import NUMPY_TYPESTR

    spec = spec.lstrip("<>|=")
    if spec in NUMPY_TYPESTR:
        digits = "".join(c for c in spec if c.isdigit())
        return NpDType(spec, NUMPY_TYPESTR[spec], int(digits) if digits else None)
    kind, digits = spec[:1], spec[1:]
    size = int(digits) if digits.isdigit() else None
    if kind == "O":
        return NpDType(spec, "object", size)
    if kind in ("M", "m"):
        return NpDType(spec, "datetime64" if kind == "M" else "timedelta64", 8)
    if kind == "U" and size is not None:
        return NpDType(spec, f"str{size * 32}", size * 4)
    if kind in NUMPY_KIND_NAMES and size is not None:
        return NpDType(spec, f"{NUMPY_KIND_NAMES[kind]}{size * 8}", size)
    return NpDType(spec, spec or "unknown", size)


# ---------------------------------------------------------------------------------------------------------------
# The walker
# ---------------------------------------------------------------------------------------------------------------


class _Region:
    """A view of ``fh`` that ends at ``end`` (absolute offsets kept), for pickles embedded in a larger file.

    It shares ``fh`` with the walker of the enclosing pickle, so every read seeks to its own position first.
    """

    def __init__(self, fh: IO[bytes], end: int) -> None:
        self._fh = fh
        self._end = end
        self._pos = fh.tell()

    def read(self, n: int = -1) -> bytes:
        n = self._end - self._pos if n < 0 else min(n, self._end - self._pos)
        if n <= 0:
            return b""
        self._fh.seek(self._pos)
        data = self._fh.read(n)
        self._pos += len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        limit = self._end - self._pos if limit < 0 else min(limit, self._end - self._pos)
        if limit <= 0:
            return b""
        self._fh.seek(self._pos)
        line = self._fh.readline(limit)
        self._pos += len(line)
        return line

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        self._pos = (
            self._end + pos if whence == io.SEEK_END else self._pos + pos if whence == io.SEEK_CUR else pos
        )
        return self._pos

    def tell(self) -> int:
        return self._pos


class PickleWalker:
    """Walks pickle streams from a seekable binary file object between ``start`` and ``end``.

    ``member`` names the pickle in messages (zip member or file name); ``storage_name`` is what tensors rebuilt
    from nested blobs report as their storage (None for the file itself). ``persistent`` resolves persistent
    ids (torch storages); without it a persistent id is logged as unverifiable.
    """

    def __init__(
        self,
        fh: IO[bytes],
        *,
        log: SecurityLog,
        member: str,
        start: int = 0,
        end: int | None = None,
        persistent: PersistentLoad | None = None,
        storage_name: str | None = None,
        depth: int = 0,
        absolute: bool = True,
    ) -> None:
        self.fh = fh
        self.absolute = absolute  # offsets in ``fh`` are offsets in ``storage_name`` (False: a nested copy)
        self.log = log
        self.member = member
        self.persistent = persistent
        self.storage_name = storage_name
        self.depth = depth
        if end is None:
            end = fh.seek(0, io.SEEK_END)
        else:
            fh = self.fh = _Region(fh, end)  # reads stop at ``end``: the loop needs no bounds checks
        self.end = end
        self.pos = start
        self._read = fh.read
        self._tell = fh.tell
        self._globals: dict[str, GlobalRef] = {}
        self.nested_cache: dict[int, tuple[Any, Any]] = {}  # shared with sub-walkers, see _seen_nested
        self._handlers = self._dispatch_table()
        self.proto = 0

    # -- public ---------------------------------------------------------------------------------------------

    def at_end(self) -> bool:
        """True when no byte of the region is left after the last stream walked."""
        return self.pos >= self.end

    def walk(self) -> Any:
        """Walk one pickle stream from the current position to its STOP; return the rebuilt top object."""
        self.fh.seek(self.pos)
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        # safe globals that are safe only where they are called (see CALL_ONLY_KINDS): pushes vs calls
        self._pushed: dict[str, int] = {}
        self._called: dict[str, int] = {}
        self._first_push: dict[str, int] = {}
        read, handlers = self._read, self._handlers
        try:
            for _ in range(MAX_OPS // CHECK_EVERY):
                for _ in range(CHECK_EVERY):
                    code = read(1)
                    if not code:
                        raise self.malformed("data ends before the pickle's STOP opcode")
                    if handlers[code[0]]():
                        self.pos = self._tell()
                        return self._result
                self._check_limits()
        except IndexError:
            raise self.malformed("stack underflow") from None
        except KeyError as exc:
            raise self.malformed(
                f"memo key {short(exc.args[0] if exc.args else None)} was never stored"
            ) from None
        raise self.malformed(f"more than {MAX_OPS} opcodes in one stream")

    def _check_limits(self) -> None:
        """Bounds checked every CHECK_EVERY opcodes (each opcode adds at most one item, so the overshoot is small)."""
        if len(self.memo) > MAX_MEMO:
            raise self.malformed(f"memo grows beyond {MAX_MEMO} entries")
        if len(self.stack) + sum(len(s) for s in self.metastack) > MAX_STACK:
            raise self.malformed(f"stack grows beyond {MAX_STACK} items")

    # -- reading --------------------------------------------------------------------------------------------

    def _offset(self) -> int:
        """Offset of the opcode just read."""
        return self._tell() - 1

    def malformed(self, reason: str, offset: int | None = None) -> MalformedPickle:
        """The error to raise for ``reason`` at ``offset`` (default: the opcode just read)."""
        return MalformedPickle(self.member, self._offset() if offset is None else offset, reason)

    def _take(self, n: int) -> bytes:
        if n < 0:
            raise self.malformed(f"negative length {n}")
        if n > self.end - self._tell():
            raise self.malformed(f"argument of {n} bytes runs past the end of the data")
        data = self._read(n)
        if len(data) != n:
            raise self.malformed("truncated argument")
        return data

    def _skip_or_take(self, n: int, text: str | None = None) -> bytes | Blob:
        """Read a byte/text argument of ``n`` bytes, or skip it and return a Blob when it is large."""
        if n <= INLINE_BYTES:
            return self._take(n)
        here = self._tell()
        if n > self.end - here:
            raise self.malformed(f"argument of {n} bytes runs past the end of the data")
        self.fh.seek(here + n)
        return Blob(n, here, text)

    def _line(self) -> bytes:
        limit = min(MAX_LINE, self.end - self._tell())
        line = self.fh.readline(limit)
        if not line.endswith(b"\n"):
            raise self.malformed("text argument without newline (truncated or longer than 64 KiB)")
        return line[:-1]

    def _fixed(self, fmt: struct.Struct) -> Any:
        data = self._read(fmt.size)
        if len(data) != fmt.size:
            raise self.malformed("truncated argument")
        return fmt.unpack(data)[0]

    def _byte(self) -> int:
        data = self._read(1)
        if not data:
            raise self.malformed("truncated argument")
        return data[0]

    # -- stack ----------------------------------------------------------------------------------------------

    def _push(self, value: Any) -> None:
        self.stack.append(value)

    def _pop(self) -> Any:
        return self.stack.pop()  # IndexError -> "stack underflow" in walk()

    def _top(self) -> Any:
        return self.stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise self.malformed("no MARK on the stack")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    # -- opcode handlers (return True at STOP) ---------------------------------------------------------------

    def _dispatch_table(self) -> list[Callable[[], bool | None]]:
        """Opcode byte -> handler (returns True at STOP); unknown bytes raise."""
        h: dict[bytes, Callable[[], bool | None]] = {
            b"\x80": self._op_proto,
            b"\x95": self._op_frame,
            b".": self._op_stop,
            b"(": self._op_mark,
            b"0": self._op_pop,
            b"1": self._op_pop_mark,
            b"2": self._op_dup,
            b"N": lambda: self.stack.append(None),
            b"\x88": lambda: self.stack.append(True),
            b"\x89": lambda: self.stack.append(False),
            b"I": self._op_int,
            b"J": lambda: self.stack.append(self._fixed(_INT4)),
            b"K": self._op_binint1,
            b"M": lambda: self.stack.append(self._fixed(_UINT2)),
            b"L": self._op_long,
            b"\x8a": lambda: self.stack.append(self._long(self._byte())),
            b"\x8b": lambda: self.stack.append(self._long(self._fixed(_INT4))),
            b"F": self._op_float,
            b"G": lambda: self.stack.append(self._fixed(_FLOAT8)),
            b"S": self._op_string,
            b"T": lambda: self.stack.append(self._py2str(self._fixed(_INT4))),
            b"U": lambda: self.stack.append(self._py2str(self._byte())),
            b"B": lambda: self.stack.append(self._skip_or_take(self._fixed(_UINT4))),
            b"C": lambda: self.stack.append(self._take(self._byte())),
            b"\x8e": lambda: self.stack.append(self._skip_or_take(self._fixed(_UINT8))),
            b"\x96": lambda: self.stack.append(self._skip_or_take(self._fixed(_UINT8))),
            b"\x97": self._op_next_buffer,
            b"\x98": self._op_readonly_buffer,
            b"V": self._op_unicode,
            b"X": self._op_binunicode,
            b"\x8c": lambda: self.stack.append(self._text(self._byte())),
            b"\x8d": lambda: self.stack.append(self._text(self._fixed(_UINT8))),
            b"]": lambda: self.stack.append([]),
            b"l": self._op_list,
            b"a": self._op_append,
            b"e": self._op_appends,
            b")": lambda: self.stack.append(()),
            b"t": self._op_tuple,
            b"\x85": self._op_tuple1,
            b"\x86": self._op_tuple2,
            b"\x87": self._op_tuple3,
            b"}": lambda: self.stack.append({}),
            b"d": self._op_dict,
            b"s": self._op_setitem,
            b"u": self._op_setitems,
            b"\x8f": lambda: self.stack.append(set()),
            b"\x90": self._op_additems,
            b"\x91": self._op_frozenset,
            b"g": lambda: self._push_memo(self.memo[self._int_line()]),
            b"h": self._op_binget,
            b"j": lambda: self._push_memo(self.memo[self._fixed(_UINT4)]),
            b"p": lambda: self._put(self._int_line()),
            b"q": self._op_binput,
            b"r": self._op_long_binput,
            b"\x94": lambda: self._put(len(self.memo)),
            b"c": self._op_global,
            b"\x93": self._op_stack_global,
            b"i": self._op_inst,
            b"\x82": lambda: self._op_ext(self._byte()),
            b"\x83": lambda: self._op_ext(self._fixed(_UINT2)),
            b"\x84": lambda: self._op_ext(self._fixed(_INT4)),
            b"R": self._op_reduce,
            b"b": self._op_build,
            b"o": self._op_obj,
            b"\x81": self._op_newobj,
            b"\x92": self._op_newobj_ex,
            b"P": self._op_persid,
            b"Q": self._op_binpersid,
        }
        table: list[Callable[[], bool | None]] = [partial(self._op_unknown, code) for code in range(256)]
        for code, handler in h.items():
            table[code[0]] = handler
        return table

    def _op_unknown(self, code: int) -> None:
        raise self.malformed(f"unknown opcode 0x{code:02x}")

    def _op_binunicode(self) -> None:
        size = self._read(4)
        if len(size) != 4:
            raise self.malformed("truncated argument")
        n = _UINT4.unpack(size)[0]
        if n <= 256:  # the common case: keys, storage keys, locations
            data = self._read(n)
            if len(data) == n:
                try:
                    self.stack.append(data.decode("utf-8", "surrogatepass"))
                    return
                except UnicodeDecodeError:
                    raise self.malformed("invalid UTF-8 in a text argument") from None
            raise self.malformed("truncated argument")
        self.stack.append(self._text(n))

    def _op_binint1(self) -> None:
        value = self._read(1)
        if not value:
            raise self.malformed("truncated argument")
        self.stack.append(value[0])

    def _op_long_binput(self) -> None:
        index = self._read(4)
        if len(index) != 4:
            raise self.malformed("truncated argument")
        self.memo[_UINT4.unpack(index)[0]] = self.stack[-1]

    def _op_binput(self) -> None:
        index = self._read(1)
        if not index:
            raise self.malformed("truncated argument")
        self.memo[index[0]] = self.stack[-1]

    def _op_binget(self) -> None:
        index = self._read(1)
        if not index:
            raise self.malformed("truncated argument")
        self._push_memo(self.memo[index[0]])

    def _push_memo(self, value: Any) -> None:
        if type(value) is GlobalRef and value.kind in CALL_ONLY_KINDS:
            self._pushed[value.fullname] = self._pushed.get(value.fullname, 0) + 1
        self.stack.append(value)

    def _op_list(self) -> None:
        items = self._pop_mark()  # before touching self.stack: popping the mark replaces it
        self.stack.append(items)

    def _op_tuple(self) -> None:
        items = self._pop_mark()
        self.stack.append(tuple(items))

    def _op_tuple1(self) -> None:
        stack = self.stack
        stack[-1] = (stack[-1],)

    def _op_tuple2(self) -> None:
        stack = self.stack
        stack[-2:] = [(stack[-2], stack[-1])]

    def _op_tuple3(self) -> None:
        stack = self.stack
        stack[-3:] = [(stack[-3], stack[-2], stack[-1])]

    def _op_proto(self) -> None:
        proto = self._byte()
        if proto > 5:
            raise self.malformed(f"unsupported pickle protocol {proto}")
        self.proto = proto

    def _op_frame(self) -> None:
        size = self._fixed(_UINT8)
        if size > self.end - self._tell():
            raise self.malformed(f"frame of {size} bytes runs past the end of the data")

    def _op_stop(self) -> bool:
        self._result = self._pop()
        if self._pushed:
            self._check_call_only()
        return True

    def _check_call_only(self) -> None:
        """Report call-only globals that escaped into the data (see CALL_ONLY_KINDS). Copies left below the
        result on the stack at STOP are discarded by an unpickler, so they do not count as escaped."""
        left: dict[str, int] = {}
        for items in (*self.metastack, self.stack):
            for item in items:
                if type(item) is GlobalRef and item.kind in CALL_ONLY_KINDS:
                    left[item.fullname] = left.get(item.fullname, 0) + 1
        for fullname, pushed in self._pushed.items():
            if pushed > self._called.get(fullname, 0) + left.get(fullname, 0):
                self.log.unsafe_global(
                    fullname,
                    self.member,
                    self._first_push[fullname],
                    "GLOBAL",
                    note="It is also used as a value, not only called where it is imported: an unpickler then "
                    "calls it through BUILD (__setstate__) or APPEND with arguments ckptlint cannot judge.",
                )

    def _op_mark(self) -> None:
        if len(self.metastack) >= MAX_MARK_DEPTH:
            raise self.malformed(f"more than {MAX_MARK_DEPTH} nested MARKs")
        self.metastack.append(self.stack)
        self.stack = []

    def _op_pop(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def _op_pop_mark(self) -> None:
        self._pop_mark()

    def _op_dup(self) -> None:
        self._push_memo(self._top())

    def _int_line(self) -> int:
        try:
            return int(self._line())
        except ValueError:
            raise self.malformed("invalid decimal argument") from None

    def _op_int(self) -> None:
        line = self._line()
        if line == b"00":
            self._push(False)
        elif line == b"01":
            self._push(True)
        else:
            try:
                self._push(int(line))
            except ValueError:
                raise self.malformed("invalid INT argument") from None

    def _op_long(self) -> None:
        line = self._line()
        try:
            self._push(int(line[:-1] if line.endswith(b"L") else line))
        except ValueError:
            raise self.malformed("invalid LONG argument") from None

    def _long(self, n: int) -> int | Opaque:
        if n < 0:
            raise self.malformed("negative LONG4 length")
        if n > MAX_LONG_BYTES:
            self._skip_or_take(n)
            return Opaque(f"int of {n} bytes")
        return int.from_bytes(self._take(n), "little", signed=True)

    def _op_float(self) -> None:
        try:
            self._push(float(self._line()))
        except ValueError:
            raise self.malformed("invalid FLOAT argument") from None

    def _op_string(self) -> None:
        data = self._data_line("string-line")
        if isinstance(data, Blob):
            self._push(data)
            return
        if len(data) < 2 or data[0] != data[-1] or data[:1] not in (b"'", b'"'):
            raise self.malformed("STRING argument is not quoted")
        try:
            self._push(codecs.escape_decode(data[1:-1])[0].decode("latin-1"))
        except ValueError:
            raise self.malformed("invalid STRING escape") from None

    def _data_line(self, text: str) -> bytes | Blob:
        """A protocol-0 data line (STRING/UNICODE): read when short, else skipped as a Blob of unknown text."""
        start = self._tell()
        line = self.fh.readline(min(INLINE_BYTES, self.end - start))
        if line.endswith(b"\n"):
            return line[:-1]
        while line and not line.endswith(b"\n"):
            line = self.fh.readline(min(INLINE_BYTES, self.end - self._tell()))
        if not line:
            raise self.malformed("data line without newline (truncated)", start)
        return Blob(self._tell() - start - 1, start, text)

    def _py2str(self, n: int) -> str | Blob:
        data = self._skip_or_take(n, "latin-1")
        return data if isinstance(data, Blob) else data.decode("latin-1")

    def _op_unicode(self) -> None:
        data = self._data_line("unicode-line")
        if isinstance(data, Blob):
            self._push(data)
            return
        try:
            self._push(str(data, "raw-unicode-escape"))
        except UnicodeDecodeError:
            raise self.malformed("invalid UNICODE argument") from None

    def _text(self, n: int) -> str | Blob:
        data = self._skip_or_take(n, "utf-8")
        if isinstance(data, Blob):
            return data
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self.malformed("invalid UTF-8 in a text argument") from None

    def _op_next_buffer(self) -> None:
        raise self.malformed("out-of-band buffer (NEXT_BUFFER) without buffers: not loadable from a file")

    def _op_readonly_buffer(self) -> None:
        self._top()

    # containers -------------------------------------------------------------------------------------------

    def _mutable_target(self, target: Any, want: type | tuple[type, ...], op: str) -> bool:
        """Whether ``op`` may add to ``target``; False (ignore) for opaque ones, raise for a type confusion."""
        if isinstance(target, want):
            return True
        if isinstance(target, Opaque):
            return False
        if isinstance(target, GlobalRef):
            self.log.cannot_verify(
                f"{op} on the imported object {target.fullname}",
                self.member,
                self._offset(),
                f"{op} mutates an imported object at load time (monkey-patching).",
            )
            return False
        raise self.malformed(f"{op} on a {type(target).__name__}")

    def _op_append(self) -> None:
        value = self._pop()
        target = self._top()
        if isinstance(target, Attrs):
            self._method_call(target, ("append",), [value], "APPEND")
        elif self._mutable_target(target, list, "APPEND"):
            target.append(value)

    def _op_appends(self) -> None:
        items = self._pop_mark()
        target = self._top()
        if isinstance(target, Attrs):
            self._method_call(target, ("extend", "append"), items, "APPENDS")
        elif self._mutable_target(target, list, "APPENDS"):
            target.extend(items)

    def _method_call(self, target: Attrs, names: tuple[str, ...], items: list[Any], op: str) -> None:
        """APPEND/APPENDS/ADDITEMS on an object that is not a list or set: the unpickler calls the object's own
        ``append``/``extend``/``add`` attribute, which BUILD may have set to any callable of the file."""
        for name in names:
            if name in target:
                for args in [(items,)] if name == "extend" else [(item,) for item in items]:
                    self._call(target[name], args, None, op)
                return
        raise self.malformed(f"{op} on an object without {'/'.join(names)}")

    def _hashable(self, key: Any) -> Any:
        """``key`` if it can be hashed safely: CPython hashes nested tuples recursively in C, so a key nested
        a million levels deep would crash the interpreter; such keys are refused before hashing."""
        if type(key) is str or type(key) is int:
            return key
        todo, seen = [(key, 0)], 0
        while todo:
            value, depth = todo.pop()
            if type(value) in (tuple, frozenset):
                seen += len(value)
                if depth >= MAX_KEY_DEPTH or seen > MAX_KEY_ITEMS:
                    raise self.malformed("dict key or set item nested too deeply or too large")
                todo.extend((item, depth + 1) for item in value)
            elif isinstance(value, (list, dict, set, bytearray)):
                raise self.malformed(f"unhashable dict key or set item of type {type(value).__name__}")
        return key

    def _set(self, target: dict[Any, Any], key: Any, value: Any) -> None:
        target[self._hashable(key)] = value

    def _op_dict(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise self.malformed("DICT with an odd number of items")
        d: dict[Any, Any] = {}
        for i in range(0, len(items), 2):
            self._set(d, items[i], items[i + 1])
        self._push(d)

    def _op_setitem(self) -> None:
        value = self._pop()
        key = self._pop()
        target = self._top()
        if self._mutable_target(target, dict, "SETITEM"):
            self._set(target, key, value)

    def _op_setitems(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise self.malformed("SETITEMS with an odd number of items")
        target = self._top()
        if self._mutable_target(target, dict, "SETITEMS"):
            for i in range(0, len(items), 2):
                self._set(target, items[i], items[i + 1])

    def _op_additems(self) -> None:
        items = self._pop_mark()
        target = self._top()
        if isinstance(target, Attrs):
            self._method_call(target, ("add",), items, "ADDITEMS")
        elif self._mutable_target(target, set, "ADDITEMS"):
            target.update(self._hashable(item) for item in items)

    def _op_frozenset(self) -> None:
        self._push(frozenset(self._hashable(item) for item in self._pop_mark()))

    # memo -------------------------------------------------------------------------------------------------

    def _put(self, index: int) -> None:
        if index < 0:
            raise self.malformed("negative memo key")
        self.memo[index] = self.stack[-1]

    # globals ----------------------------------------------------------------------------------------------

    def _resolve(self, module: str, name: str, opcode: str, offset: int) -> GlobalRef:
        if self.proto < 3:  # pickle maps Python 2 names when loading protocol 0-2 (fix_imports)
            from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

            if (module, name) in NAME_MAPPING:
                module, name = NAME_MAPPING[(module, name)]
            elif module in IMPORT_MAPPING:
                module = IMPORT_MAPPING[module]
        fullname = f"{module}.{name}"
        ref = self._globals.get(fullname)
        if ref is None:
            ref = self._globals[fullname] = GlobalRef(fullname, SAFE_GLOBALS.get(fullname))
        if ref.kind is None:
            self.log.unsafe_global(fullname, self.member, offset, opcode)
        elif ref.kind in CALL_ONLY_KINDS:
            self._pushed[fullname] = self._pushed.get(fullname, 0) + 1
            self._first_push.setdefault(fullname, offset)
        return ref

    def _global_lines(self) -> tuple[str, str]:
        try:
            return self._line().decode("utf-8"), self._line().decode("utf-8")
        except UnicodeDecodeError:
            raise self.malformed("global name is not UTF-8") from None

    def _op_global(self) -> None:
        offset = self._offset()
        module, name = self._global_lines()
        self._push(self._resolve(module, name, "GLOBAL", offset))

    def _op_stack_global(self) -> None:
        offset = self._offset()
        name = self._pop()
        module = self._pop()
        if type(module) is str and type(name) is str:
            self._push(self._resolve(module, name, "STACK_GLOBAL", offset))
            return
        if isinstance(module, (Opaque, Blob)) or isinstance(name, (Opaque, Blob)):
            self.log.cannot_verify(
                "a STACK_GLOBAL whose name is computed or too long to read",
                self.member,
                offset,
                "The global's module or name is not a plain string in the file.",
            )
            self._push(Opaque("computed global"))
            return
        raise self.malformed("STACK_GLOBAL needs two strings")

    def _op_inst(self) -> None:
        offset = self._offset()
        module, name = self._global_lines()
        ref = self._resolve(module, name, "INST", offset)
        self._push(self._call(ref, tuple(self._pop_mark()), None, "INST"))

    def _op_ext(self, code: int) -> None:
        offset = self._offset()
        self.log.cannot_verify(
            f"extension code {code}",
            self.member,
            offset,
            "EXT opcodes import a global registered with copyreg in the loading process; the file does not say which.",
        )
        self._push(Opaque(f"extension {code}"))

    # calls ------------------------------------------------------------------------------------------------

    def _op_reduce(self) -> None:
        args = self._pop()
        func = self._pop()
        self._push(self._call(func, args, None, "REDUCE"))

    def _op_newobj(self) -> None:
        args = self._pop()
        cls = self._pop()
        self._push(self._call(cls, args, None, "NEWOBJ"))

    def _op_newobj_ex(self) -> None:
        kwargs = self._pop()
        args = self._pop()
        cls = self._pop()
        self._push(self._call(cls, args, kwargs, "NEWOBJ_EX"))

    def _op_obj(self) -> None:
        items = self._pop_mark()
        if not items:
            raise self.malformed("OBJ without a class")
        self._push(self._call(items[0], tuple(items[1:]), None, "OBJ"))

    def _call(self, func: Any, args: Any, kwargs: Any, op: str) -> Any:
        if isinstance(func, GlobalRef):
            if func.kind in CALL_ONLY_KINDS:
                self._called[func.fullname] = self._called.get(func.fullname, 0) + 1
            if isinstance(args, list):
                args = tuple(args)
            if func.kind is None:
                if func.fullname in _NESTED_LOADERS:
                    self._walk_nested_pickle(func, args)
                return Instance(f"{func.fullname}(...)", args)
            if not isinstance(args, tuple):
                if isinstance(args, Opaque):
                    return Opaque(f"{func.fullname}(...)")
                raise self.malformed(f"{op} arguments are a {type(args).__name__}, not a tuple")
            if func.kind in ("record", "enum"):
                return self._data_class(func, args, kwargs, op)
            interpret = getattr(self, f"_k_{func.kind}")
            return interpret(func, args, op)
        if isinstance(func, Opaque):
            return Opaque("call of an opaque object")
        raise self.malformed(f"{op} calls a {type(func).__name__}, which is not callable")

    def _op_build(self) -> None:
        state = self._pop()
        inst = self._top()
        if isinstance(inst, TensorRef):
            if inst.pending:
                self._build_legacy_tensor(inst, state)
        elif isinstance(inst, ArrayRef):
            self._build_array(inst, state)
        elif isinstance(inst, NpDType):
            self._build_dtype(inst, state)
        elif isinstance(inst, Instance):
            inst.state = state
        elif isinstance(inst, Attrs):
            # BUILD looks __setstate__ up on the instance first: an attribute an earlier BUILD may have set
            if "__setstate__" in inst:
                self._call(inst["__setstate__"], (state,), None, "BUILD")
            elif isinstance(state, dict):
                inst.update(state)
            elif (
                isinstance(state, tuple) and len(state) == 2
            ):  # (__dict__ state, slot state): both set attributes
                for part in state:
                    if isinstance(part, dict):
                        inst.update(part)
        elif isinstance(inst, ODict) and isinstance(state, dict):
            inst.attrs = state  # OrderedDict attributes (state_dict._metadata)
        elif isinstance(inst, (Opaque, dict, Composite, StorageRef)):
            pass  # OrderedDict attributes (state_dict._metadata), parameter state, opaque objects
        elif isinstance(inst, GlobalRef):
            self.log.cannot_verify(
                f"BUILD on the imported object {inst.fullname}",
                self.member,
                self._offset(),
                "BUILD sets attributes of an imported class or function at load time (monkey-patching).",
            )
        elif state:
            raise self.malformed(f"BUILD on a {type(inst).__name__}")

    # persistent ids ---------------------------------------------------------------------------------------

    def _op_persid(self) -> None:
        offset = self._offset()
        try:
            pid = self._line().decode("ascii")
        except UnicodeDecodeError:
            raise self.malformed("PERSID argument is not ASCII") from None
        self._push(self._persistent(pid, offset))

    def _op_binpersid(self) -> None:
        offset = self._offset()
        self._push(self._persistent(self._pop(), offset))

    def _persistent(self, pid: Any, offset: int) -> Any:
        if self.persistent is not None:
            return self.persistent(pid, offset)
        self.log.cannot_verify(
            "a persistent id",
            self.member,
            offset,
            "Persistent ids are resolved by the loading program's own code, not by the file.",
        )
        return Opaque("persistent id")

    # nested pickles ---------------------------------------------------------------------------------------

    def sub_walker(self, data: bytes | Blob, member: str) -> PickleWalker:
        """A walker over a nested byte string: a region of this file, or a copy in memory.

        Raises MalformedPickle when nested too deeply or when a text blob cannot be turned into its bytes.
        """
        if self.depth + 1 > MAX_NESTED:
            raise MalformedPickle(member, 0, f"pickles nested more than {MAX_NESTED} levels deep")
        sub = self._new_sub_walker(data, member)
        sub.nested_cache = self.nested_cache
        return sub

    def _new_sub_walker(self, data: bytes | Blob, member: str) -> PickleWalker:
        if isinstance(data, Blob) and data.raw:
            return PickleWalker(
                self.fh,
                log=self.log,
                member=member,
                start=data.offset,
                end=data.offset + data.length,
                storage_name=self.storage_name,
                depth=self.depth + 1,
                absolute=self.absolute,
            )
        if isinstance(data, Blob):
            data = self._materialize(data, member)
        return PickleWalker(
            io.BytesIO(data),
            log=self.log,
            member=member,
            storage_name=self.storage_name,
            depth=self.depth + 1,
            absolute=False,
        )

    def _materialize(self, blob: Blob, member: str) -> bytes:
        """The bytes of a text blob that ``_codecs.encode`` turned into bytes (protocol <= 2 pickles)."""
        if blob.length > MAX_MATERIALIZE or blob.encoding is None:
            raise MalformedPickle(member, 0, f"nested payload of {blob.length} bytes stored as text")
        here = self._tell()
        try:
            self.fh.seek(blob.offset)
            raw = self.fh.read(blob.length)
        finally:
            self.fh.seek(here)
        try:
            if blob.text == "utf-8":
                text = raw.decode("utf-8", "surrogatepass")
            elif blob.text == "latin-1":
                text = raw.decode("latin-1")
            elif blob.text == "string-line":
                text = codecs.escape_decode(raw[1:-1])[0].decode("latin-1")
            else:
                text = str(raw, "raw-unicode-escape")
            codec = _CODECS.get(blob.encoding.lower().replace("_", "-"))
            if codec is None:  # looking an unknown codec up would import encodings.<name from the file>
                raise MalformedPickle(
                    member, 0, f"nested payload text in codec {one_line(blob.encoding, 20)}"
                )
            return text.encode(codec)
        except (UnicodeError, ValueError, LookupError) as exc:
            raise MalformedPickle(member, 0, f"nested payload text does not decode: {exc}") from None

    def _seen_nested(self, data: bytes | Blob, value: Any = None, store: bool = False) -> Any:
        """Nested payloads are walked once per object: a memoised payload called a million times must not be
        walked a million times. Returns the earlier result (or None); ``store`` records ``value``."""
        if store:
            self.nested_cache[id(data)] = (data, value)  # keeps ``data`` alive so its id stays unique
            return value
        hit = self.nested_cache.get(id(data))
        return hit if hit is not None and hit[0] is data else None

    def _walk_nested_pickle(self, func: GlobalRef, args: tuple[Any, ...]) -> None:
        """Judge the payload of ``pickle.loads(b'...')`` too (the call itself is already logged)."""
        if not args or not isinstance(args[0], (bytes, Blob)) or self._seen_nested(args[0]) is not None:
            return
        self._seen_nested(args[0], None, store=True)
        here = self._tell()
        try:
            self.sub_walker(args[0], f"{self.member}[{func.fullname} payload]").walk()
        except MalformedPickle:
            pass
        finally:
            self.fh.seek(here)

    # -- interpretations of safe globals (``kind`` -> _k_<kind>) --------------------------------------------

    def _k_constant(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        return Opaque(f"{g.fullname}(...)")

    _k_np_type = _k_constant
    _k_torch_dtype = _k_constant
    _k_storage_class = _k_constant
    _k_layout = _k_constant

    def _k_dict(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        kind = ODict if g.fullname == "collections.OrderedDict" else dict
        if not args:
            return kind()
        src = args[0]
        if isinstance(src, dict):
            return kind(src)
        if isinstance(src, (list, tuple)):
            out: dict[Any, Any] = kind()
            for pair in src:
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise self.malformed(f"{g.fullname} items are not pairs")
                self._set(out, pair[0], pair[1])
            return out
        return Opaque(f"{g.fullname}(...)")

    def _data_class(self, g: GlobalRef, args: tuple[Any, ...], kwargs: Any, op: str) -> Any:
        """A trainer record rebuilt as pickle rebuilds plain objects (NEWOBJ without arguments, then BUILD), or a
        str enum called with its value; any other call runs library code with the file's arguments: unsafe."""
        if g.kind == "record" and op in ("NEWOBJ", "NEWOBJ_EX") and not args and not kwargs:
            return Attrs()
        if g.kind == "enum" and op == "REDUCE" and len(args) == 1 and type(args[0]) in (str, int):
            return args[0]
        how = "with arguments" if g.kind == "record" else "with something other than one value"
        self.log.unsafe_global(
            g.fullname,
            self.member,
            self._offset(),
            op,
            note=f"It is called by {op} {how}, which runs its constructor: only its plain rebuild is known safe.",
        )
        return Instance(f"{g.fullname}(...)", args)

    def _k_namespace(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        return Attrs()  # attributes arrive through BUILD

    def _k_set(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if not args:
            return set()
        if isinstance(args[0], (list, tuple, set, frozenset)):
            items = [self._hashable(item) for item in args[0]]
            return set(items) if g.kind == "set" else frozenset(items)
        return Opaque(f"{g.fullname}(...)")

    _k_frozenset = _k_set

    def _k_complex(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if all(isinstance(a, (int, float)) for a in args) and len(args) <= 2:
            return complex(*args)
        return Opaque("complex")

    def _k_slice(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        return Opaque(g.fullname.rsplit(".", 1)[1])

    _k_range = _k_slice

    def _k_bytes(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if not args:
            return b""
        if isinstance(args[0], (bytes, Blob)):
            return args[0]
        if isinstance(args[0], str) and len(args) == 2 and isinstance(args[1], str):
            encoded = self._encode(args[0], args[1])
            return (
                encoded if not isinstance(encoded, str) else Opaque(f"{g.fullname}(...)")
            )  # not a bytes codec
        return Opaque(f"{g.fullname}(...)")  # bytearray(n) would allocate n bytes: not rebuilt

    _k_bytearray = _k_bytes

    def _encode(self, text: str, encoding: str) -> bytes | str | Opaque:
        """``_codecs.encode(text, encoding)`` for the codecs pickles use (latin-1 for protocol <= 2 bytes,
        utf-8, ascii) and rot13 (text to text: a way to compute a global's name). Any other codec is not looked
        up: that would import ``encodings.<name from the file>``; the result stays opaque."""
        codec = encoding.lower().replace("_", "-")
        if codec in ("rot13", "rot-13"):
            return text.translate(_ROT13)
        if codec not in _CODECS:
            return Opaque(f"text encoded as {one_line(encoding, 20)}")
        try:
            return text.encode(_CODECS[codec])
        except ValueError:  # text the codec cannot encode
            return Opaque(f"text encoded as {codec}")

    def _k_codecs_encode(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if len(args) == 2 and isinstance(args[1], str):
            if isinstance(args[0], Blob) and args[0].text is not None:
                return Blob(args[0].length, args[0].offset, args[0].text, args[1])
            if isinstance(args[0], str):
                return self._encode(args[0], args[1])
        return Opaque("_codecs.encode(...)")

    def _k_size(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if not args:
            return ()
        if isinstance(args[0], (list, tuple)):
            return tuple(args[0])
        return Opaque("torch.Size(...)")

    def _k_device(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if args and isinstance(args[0], str):
            if len(args) > 1 and isinstance(args[1], int):
                return f"{args[0]}:{args[1]}"
            return args[0]
        return Opaque("torch.device(...)")

    def _k_parameter(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if not args:
            raise self.malformed(f"{g.fullname} without data")
        return self._tensor_arg(args[0], g)

    _k_parameter_class = _k_parameter
    _k_device_tensor = _k_parameter

    def _tensor_arg(self, value: Any, g: GlobalRef) -> Any:
        if isinstance(value, (TensorRef, ArrayRef, Opaque, Composite)):
            return value
        raise self.malformed(f"{g.fullname} applied to a {type(value).__name__}")

    def _k_tensor_class(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if op in ("NEWOBJ", "NEWOBJ_EX") and not args:
            # legacy: BUILD then calls set_(storage, offset, size, stride)
            return TensorRef((0,), "float32", pending=True)
        return Opaque(f"{g.fullname}(...)")

    def _build_legacy_tensor(self, inst: TensorRef, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 4:
            built = self._make_tensor(state[0], state[1], state[2], state[3], None, "torch.Tensor")
            if isinstance(built, TensorRef):
                inst.shape, inst.dtype, inst.storage = built.shape, built.dtype, built.storage
                inst.offset, inst.stride, inst.pending = built.offset, built.stride, False

    def _k_tensor_v1(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if len(args) < 4:
            raise self.malformed(f"{g.fullname} needs 4 arguments, got {len(args)}")
        return self._make_tensor(args[0], args[1], args[2], args[3], None, g.fullname)

    _k_tensor_v2 = _k_tensor_v1
    _k_qtensor = _k_tensor_v1

    def _k_tensor_v3(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if len(args) < 7:
            raise self.malformed(f"{g.fullname} needs 7 arguments, got {len(args)}")
        return self._make_tensor(args[0], args[1], args[2], args[3], args[6], g.fullname)

    def _k_meta_tensor(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if len(args) < 3:
            raise self.malformed(f"{g.fullname} needs 3 arguments")
        dtype, shape = self._dtype_arg(args[0], g.fullname), self._shape(args[1], "size", g.fullname)
        if dtype is None or shape is None:
            return Opaque("tensor")
        return TensorRef(shape, dtype)

    def _k_wrapper_subclass(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if len(args) < 3:
            raise self.malformed(f"{g.fullname} needs 3 arguments")
        dtype, shape = self._dtype_arg(args[1], g.fullname), self._shape(args[2], "size", g.fullname)
        if dtype is None or shape is None:
            return Opaque("tensor")
        return TensorRef(shape, dtype)

    def _k_composite_tensor(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        parts = list(args[1]) if len(args) > 1 and isinstance(args[1], (list, tuple)) else list(args)
        return Composite("sparse" if "sparse" in g.fullname else "nested", parts)

    def _k_from_type_v2(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if len(args) < 3:
            raise self.malformed(f"{g.fullname} needs 4 arguments")
        inner_args = args[2]
        if isinstance(inner_args, list):
            inner_args = tuple(inner_args)
        return self._call(args[0], inner_args, None, "REDUCE")

    def _k_load_from_bytes(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        """``torch.storage._load_from_bytes(b)``: a nested legacy ``torch.save``; verified by walking it."""
        offset = self._offset()
        data = args[0] if args else None
        if not isinstance(data, (bytes, Blob)):
            self.log.unsafe_global(
                g.fullname, self.member, offset, "REDUCE", note="Its argument is not a byte string."
            )
            return Opaque("nested torch.load")
        from ckptlint.readers.pickle_file import walk_legacy  # the legacy stacked-pickle layout lives there

        seen = self._seen_nested(data)
        if seen is not None:
            return seen[1]
        label = f"{self.member}[torch.load payload at {offset}]"
        before = self.log.events
        here = self._tell()
        try:
            value = walk_legacy(self.sub_walker(data, label))
        except MalformedPickle as exc:
            self.log.unsafe_global(
                g.fullname,
                self.member,
                offset,
                "REDUCE",
                note=f"Its nested payload could not be verified: {exc.reason}.",
            )
            return self._seen_nested(data, Opaque("nested torch.load"), store=True)
        finally:
            self.fh.seek(here)
        if self.log.events > before:
            self.log.unsafe_global(
                g.fullname, self.member, offset, "REDUCE", note="Its nested payload imports unsafe globals."
            )
        return self._seen_nested(data, value, store=True)

    # tensors ----------------------------------------------------------------------------------------------

    def _shape(self, value: Any, what: str, where: str) -> tuple[int, ...] | None:
        """A shape/stride tuple of non-negative ints; None when it derives from something opaque."""
        if type(value) is tuple and all(type(d) is int and 0 <= d < MAX_DIM for d in value):
            return value
        if isinstance(value, Opaque):
            return None
        if not isinstance(value, (tuple, list)):
            raise self.malformed(f"{where}: {what} is a {type(value).__name__}, not a tuple")
        out = []
        for d in value:
            if isinstance(d, Opaque):
                return None
            if type(d) is not int or not 0 <= d < MAX_DIM:
                raise self.malformed(f"{where}: invalid {what} entry {short(d)}")
            out.append(d)
        return tuple(out)

    def _dtype_arg(self, value: Any, where: str) -> str | None:
        if isinstance(value, GlobalRef) and value.kind == "torch_dtype":
            return torch_dtype_name(value.fullname.rsplit(".", 1)[1])
        if isinstance(value, Opaque) or (isinstance(value, GlobalRef) and value.kind is None):
            return None
        raise self.malformed(f"{where}: dtype argument is not a torch dtype")

    def _make_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, dtype: Any, where: str) -> Any:
        if isinstance(storage, Opaque):
            return Opaque("tensor on an opaque storage")
        if not isinstance(storage, StorageRef):
            raise self.malformed(f"{where}: storage argument is a {type(storage).__name__}")
        shape = self._shape(size, "size", where)
        strides = self._shape(stride, "stride", where)
        if isinstance(offset, Opaque) or shape is None or strides is None:
            return Opaque("tensor")
        if type(offset) is not int or not 0 <= offset < MAX_DIM:
            raise self.malformed(f"{where}: invalid storage offset")
        if len(strides) != len(shape):
            raise self.malformed(f"{where}: size {list(shape)} and stride {list(strides)} differ in length")
        name = storage.dtype
        if dtype is not None:
            name = self._dtype_arg(dtype, where)
            if name is None:
                return Opaque("tensor")
        itemsize = storage.itemsize if name == storage.dtype else torch_itemsize(name)
        if itemsize and storage.nbytes is not None and all(shape):
            extent = offset + 1
            for s, st in zip(shape, strides, strict=True):
                extent += (s - 1) * st
            available = storage.nbytes // itemsize
            if extent > available:
                raise self.malformed(
                    f"tensor of size {list(shape)} at offset {offset} needs {extent} elements of {name} "
                    f"but storage {storage.key} holds {available}"
                )
        return TensorRef(shape, name, storage, offset, stride=strides)

    # numpy ------------------------------------------------------------------------------------------------

    def _k_np_reconstruct(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        return ArrayRef(pending=True)

    def _k_np_ndarray(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        return ArrayRef(pending=True) if op in ("NEWOBJ", "NEWOBJ_EX") else Opaque("numpy.ndarray(...)")

    def _np_dtype_of(self, value: Any) -> NpDType | None:
        if isinstance(value, NpDType):
            return value
        if isinstance(value, str):
            return np_dtype(value)
        if isinstance(value, GlobalRef) and value.kind == "np_type":
            name = value.fullname.rsplit(".", 1)[1]
            if value.fullname.startswith("ml_dtypes."):
                return NpDType(name, name, None)
            if value.fullname.startswith("numpy.dtypes."):
                name = name.removesuffix("DType").lower()
                return NpDType(name, name, None)
            return NpDType(name, name.rstrip("_") if name != "bool_" else "bool", None)
        return None

    def _k_np_dtype(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        found = self._np_dtype_of(args[0]) if args else None
        if found is None:
            if args and isinstance(args[0], Opaque):
                return Opaque("numpy dtype")
            raise self.malformed("numpy.dtype of an unknown type")
        return NpDType(found.spec, found.name, found.itemsize, found.byteorder)

    def _build_dtype(self, dt: NpDType, state: Any) -> None:
        if isinstance(state, tuple) and len(state) >= 2 and isinstance(state[1], str):
            dt.byteorder = state[1]
        if isinstance(state, tuple) and len(state) >= 6 and type(state[5]) is int and state[5] > 0:
            dt.itemsize = state[5]
        if dt.name in ("datetime64", "timedelta64") and isinstance(state, tuple) and len(state) >= 9:
            meta = state[8]  # (metadata dict or None, (unit, num, den, events))
            if isinstance(meta, tuple) and len(meta) == 2 and isinstance(meta[1], tuple):
                meta = meta[1]
            if isinstance(meta, tuple) and meta and isinstance(meta[0], bytes):
                dt.name = f"{dt.name}[{meta[0].decode('latin-1')[:8]}]"

    def _build_array(self, arr: ArrayRef, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            if isinstance(state, Opaque):
                return
            raise self.malformed("numpy array state is not a 4- or 5-tuple")
        _shape, dtype, _fortran, data = state[-4:]
        shape = self._shape(_shape, "shape", "numpy array")
        dt = self._np_dtype_of(dtype)
        if shape is None or dt is None:
            return
        arr.shape, arr.dtype, arr.itemsize, arr.pending = shape, dt.name, dt.itemsize, False
        if dt.name == "object":
            arr.items = list(data) if isinstance(data, (list, tuple)) else None
            return
        numel = math.prod(shape)
        length = data.length if isinstance(data, Blob) else len(data) if isinstance(data, bytes) else None
        if isinstance(data, Blob) and data.raw:
            arr.data_offset = data.offset
        if length is not None and dt.itemsize and length != numel * dt.itemsize and not _latin1_blob(data):
            raise self.malformed(
                f"numpy array data holds {length} bytes, shape {list(shape)} {dt.name} needs more or less"
            )

    def _k_np_frombuffer(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        if len(args) < 3:
            raise self.malformed("numpy _frombuffer needs 4 arguments")
        dt = self._np_dtype_of(args[1])
        shape = self._shape(args[2], "shape", "numpy array")
        if dt is None or shape is None:
            return Opaque("numpy array")
        arr = ArrayRef(shape, dt.name, dt.itemsize)
        if isinstance(args[0], Blob) and args[0].raw:
            arr.data_offset = args[0].offset
        return arr

    def _k_np_scalar(self, g: GlobalRef, args: tuple[Any, ...], op: str) -> Any:
        dt = self._np_dtype_of(args[0]) if args else None
        if dt is None or len(args) < 2:
            return Opaque("numpy scalar")
        data = args[1]
        if dt.name == "object":
            return data
        fmt = _NP_STRUCT.get(dt.spec)
        if isinstance(data, bytes):
            order = ">" if dt.byteorder == ">" else "<"
            if fmt and struct.calcsize(fmt) == len(data):
                return struct.unpack(order + fmt, data)[0]
            if dt.spec in ("c8", "c16") and len(data) in (8, 16):
                re, im = struct.unpack(order + ("ff" if len(data) == 8 else "dd"), data)
                return complex(re, im)
            if dt.name == "bfloat16" and len(data) == 2:
                return struct.unpack("<f", b"\x00\x00" + data)[0]
        return Opaque(f"numpy {dt.name} scalar")


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by the pickle-based readers
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class StoragePid:
    """The fields of a torch ``('storage', storage_type, key, location, numel[, view_metadata])`` id."""

    key: str
    dtype: str
    untyped: bool
    numel: int
    location: str
    view: tuple[str, int, int] | None = None


def parse_storage_pid(walker: PickleWalker, pid: Any, offset: int, fields: int) -> StoragePid | Opaque:
    """Validate a torch storage persistent id of ``fields`` items (5 in zip archives, 6 in legacy files).

    Returns an Opaque when a part of it comes from something opaque (already logged); raises MalformedPickle
    when it is not a storage id at all.
    """
    if isinstance(pid, Opaque):
        return Opaque("storage")
    if not isinstance(pid, tuple) or len(pid) != fields:
        raise walker.malformed(f"persistent id is not a {fields}-item storage tuple", offset)
    typename = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
    if typename != "storage":
        raise walker.malformed(f"persistent id of type {short(typename)}, not 'storage'", offset)
    stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if any(isinstance(v, Opaque) for v in (stype, key, location, numel)):
        return Opaque("storage")
    if not isinstance(stype, GlobalRef):
        raise walker.malformed("storage type is not a class", offset)
    if stype.kind != "storage_class":
        return Opaque("storage of an unsafe type")  # the global itself is already logged
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    if isinstance(location, bytes):
        location = location.decode("latin-1")
    if not isinstance(key, (str, int)) or not isinstance(location, str):
        raise walker.malformed("storage key or location is not a string", offset)
    if type(numel) is not int or not 0 <= numel < MAX_DIM:
        raise walker.malformed("storage size is not a non-negative int", offset)
    cls = stype.fullname.rsplit(".", 1)[1]
    untyped = cls in ("UntypedStorage", "TypedStorage")
    view = None
    if fields == 6 and pid[5] is not None:
        v = pid[5]
        if (
            not isinstance(v, tuple)
            or len(v) != 3
            or not isinstance(v[0], (str, bytes, int))
            or any(type(x) is not int or x < 0 for x in v[1:])
        ):
            raise walker.malformed("storage view metadata is not (key, offset, size)", offset)
        view = (v[0].decode("latin-1") if isinstance(v[0], bytes) else str(v[0]), v[1], v[2])
    return StoragePid(str(key), STORAGE_DTYPES.get(cls, "uint8"), untyped, numel, location[:64], view)


def unreadable(path: str, reason: str, log: SecurityLog) -> UnreadableCheckpoint:
    """An UnreadableCheckpoint that still names the unsafe globals seen before the failure.

    The findings are attached as ``exc.findings`` so a caller can report them next to the error.
    """
    reason = one_line(reason, 500)
    seen = log.summary()
    return UnreadableCheckpoint(
        path, reason + (f"; before that it imports unsafe globals: {seen}" if seen else ""), log.findings()
    )


def _latin1_blob(data: Any) -> bool:
    """Protocol-2 numpy data arrives through ``_codecs.encode(text, 'latin1')``; a skipped text blob's byte
    count is its UTF-8 length, not the array's, so it cannot be checked."""
    return isinstance(data, Blob) and not data.raw


def short(value: Any) -> str:
    """A short description of an untrusted value for messages (never a recursive repr)."""
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        text = repr(value) if not isinstance(value, int) or abs(value) < 1 << 64 else "<huge int>"
        return text[:40] + ("…" if len(text) > 40 else "")
    return f"a {type(value).__name__}"
