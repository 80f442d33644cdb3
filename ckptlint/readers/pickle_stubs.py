"""CPython's own unpicklers, parsing a pickle with inert recording stubs in place of every global.

``pickle.load``, ``torch.load(weights_only=False)`` and ``np.load(allow_pickle=True)`` parse with the C unpickler
(``_pickle.Unpickler``); ``joblib.load`` drives the pure-Python one (``pickle._Unpickler``), reading each array's
raw bytes inline from the stream after its wrapper's BUILD. Both are subclassed here so that ``find_class`` and
``persistent_load`` return stubs: ``find_class`` never imports anything and returns a stub *class* (``NEWOBJ``
needs a type) standing for the global; calling it, ``NEWOBJ`` on it, ``BUILD``/``APPEND``/``SETITEMS``/``ADDITEMS``
on it or on what a call of it returned only record what was asked, with the arguments. The unpicklers call
nothing else of the file's: every object on their stack is a builtin container, a scalar or a stub (C looks
``__setstate__``/``append``/``extend``/``add`` up on the object, and a stub answers them all with recorders;
stub instances have no ``__dict__``, so nothing can be planted on them). So parsing, framing, the memo, integer
syntax and protocol handling are exactly the loader's, and nothing from the file runs.

Every stream the C unpickler parses was first walked by :mod:`ckptlint.readers.pickle_walker`, which refuses
what would make the C unpickler allocate without bound or crash; the pure-Python one is guarded by its own
overrides (bounded reads, hash cost of keys, opcode and object counts).
"""

from __future__ import annotations

import _pickle
import bisect
import io
import math
import pickle
import secrets
import struct
import threading
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from typing import IO, Any, ClassVar

from ckptlint.readers.pickle_scan import MAX_HASH_COST, MAX_OBJECTS, MAX_OPS, SKIP_ARG, ScanGlobal, Source
from ckptlint.readers.pickle_values import np_dtype

MAX_LINE = 64 << 20
MAX_READ = (
    64 << 20
)  # one read by an unpickler from a region (frames are smaller, large arguments are skipped)
# torch.load's renames (torch/serialization.py, UnpicklerWrapper.find_class)
TORCH_MODULE_MAPPING = {"torch.tensor": "torch._tensor"}


class StubFailure(Exception):
    """The parse must stop here: ckptlint refuses to go on (a bound, or parsers that disagree)."""


class Rec:
    """What happened to one stub: the global it stands for, or the call that made it, then what was done to it."""

    __slots__ = ("args", "callee", "how", "kind", "kwargs", "name", "offset", "ops")

    def __init__(self, kind: str, name: str = "", callee: Any = None, how: str = "", args: Any = (),
                 kwargs: Any = None, offset: int | None = None) -> None:  # fmt: skip
        self.kind = kind  # global | call | pid | joblib-array
        self.name = name
        self.callee = callee
        self.how = how  # CALL (REDUCE, INST/OBJ with arguments) | NEW (NEWOBJ, NEWOBJ_EX, bare INST/OBJ)
        self.args = args
        self.kwargs = kwargs
        self.offset = offset
        self.ops: list[tuple[Any, ...]] | None = None

    def did(self, *op: Any) -> None:
        if self.ops is None:
            self.ops = []
        self.ops.append(op)


class StubMeta(type):
    """The type of the stub classes that stand for globals: calling one, or mutating it, only records."""

    _grec: Rec

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return _made(cls, cls, "CALL", args, kwargs)

    # BUILD / APPEND(S) / ADDITEMS on the global itself (monkey-patching a real class at load time)
    @property
    def __setstate__(cls) -> Any:
        return lambda state: cls._grec.did("BUILD", state)

    @property
    def append(cls) -> Any:
        return lambda item: cls._grec.did("APPEND", item)

    @property
    def extend(cls) -> Any:
        return lambda items: cls._grec.did("EXTEND", list(items) if isinstance(items, list) else items)

    @property
    def add(cls) -> Any:
        return lambda item: cls._grec.did("ADD", item)

    def __setitem__(cls, key: Any, value: Any) -> None:
        cls._grec.did("SETITEM", key, value)


class StubObject:
    """What a call of a stub returned; every operation an unpickler applies to it is recorded."""

    __slots__ = ("_rec",)
    _rec: Rec

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # NEWOBJ / NEWOBJ_EX / bare INST, OBJ
        if not isinstance(cls, StubMeta):
            raise TypeError("__new__ of a stub needs a stub class")
        return _made(cls, cls, "NEW", args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _made(type(self), self, "CALL", args, kwargs)

    def __setstate__(self, state: Any) -> None:
        self._rec.did("BUILD", state)

    def append(self, item: Any) -> None:
        self._rec.did("APPEND", item)

    def extend(self, items: Any) -> None:
        self._rec.did("EXTEND", items)

    def add(self, item: Any) -> None:
        self._rec.did("ADD", item)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._rec.did("SETITEM", key, value)

    def __repr__(self) -> str:
        return f"<stub {self._rec.kind} {self._rec.name}>"


class _Pid(StubObject, metaclass=StubMeta):
    """What ``persistent_load`` returned."""

    __slots__ = ()


class _Joblib(StubObject, metaclass=StubMeta):
    """An array joblib read inline from the stream after its wrapper's BUILD."""

    __slots__ = ()


def _made(cls: type, callee: Any, how: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StubObject:
    session = _current.session
    if session is None:
        raise TypeError("stub used outside a parse")
    session.objects += 1
    if session.objects > MAX_OBJECTS:
        raise StubFailure(f"more than {MAX_OBJECTS} objects to build")
    inst = object.__new__(cls)
    where = session.where_fn
    rec = inst._rec = Rec(
        "call", "", callee, how, args, kwargs or None, where() if where is not None else None
    )
    session.records.append(rec)
    return inst


class _Current(threading.local):
    session: Session | None = None


_current = _Current()  # the parse under way in this thread (stubs record into it)


def resolve(module: str, name: str, proto: int, *, torch: bool) -> str:
    """The ``module.name`` a loader imports for a GLOBAL: torch's renames, then Python 2 names (protocol < 3)."""
    if torch:
        module = TORCH_MODULE_MAPPING.get(module, module)
    if proto < 3:
        if (module, name) in NAME_MAPPING:
            module, name = NAME_MAPPING[(module, name)]
        elif module in IMPORT_MAPPING:
            module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


class Session:
    """One parse of one stream: the stub classes handed out and every find_class call, in order."""

    def __init__(self, member: str, *, torch: bool = False, expected: list[ScanGlobal] | None = None) -> None:
        self.member = member
        self.torch = torch
        self.expected = expected  # the walk's globals: find_class calls must follow them exactly
        self.classes: dict[str, StubMeta] = {}
        self.calls: list[tuple[str, int | None, str]] = []  # (fullname, offset, opcode)
        self.records: list[Rec] = []  # every call and persistent id, in the order the unpickler made them
        self.objects = 0
        self.where_fn: Any = None  # () -> offset of the opcode being parsed, when known

    def where(self) -> int | None:
        return self.where_fn() if self.where_fn is not None else None

    def count(self) -> None:
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise StubFailure(f"more than {MAX_OBJECTS} objects to build")

    def find_class(self, module: Any, name: Any, proto: int | None = None) -> StubMeta:
        index = len(self.calls)
        offset, opcode = self.where(), "GLOBAL"
        if self.expected is not None:
            if index >= len(self.expected):
                raise StubFailure("the unpickler imports a global the opcode walk did not see")
            seen = self.expected[index]
            if (seen.module, seen.name) != (module, name):
                raise StubFailure(
                    f"the unpickler imports {module}.{name} where the opcode walk saw {seen.module}.{seen.name}"
                )
            proto, offset, opcode = seen.proto, seen.offset, seen.opcode
        if not isinstance(module, str) or not isinstance(name, str):
            raise StubFailure("a global whose name is not text")
        fullname = resolve(module, name, proto or 0, torch=self.torch)
        self.calls.append((fullname, offset, opcode))
        cls = self.classes.get(fullname)
        if cls is None:
            short = (name.rsplit(".", 1)[-1] or "global")[:64]
            short = short if short.isidentifier() else "global"
            cls = StubMeta(short, (StubObject,), {"__slots__": (), "_grec": Rec("global", name=fullname)})
            cls._grec.offset = offset
            self.classes[fullname] = cls
        return cls

    def persistent(self, pid: Any) -> StubObject:
        self.count()
        inst = object.__new__(_Pid)
        inst._rec = Rec("pid", args=(pid,), offset=self.where())
        self.records.append(inst._rec)
        return inst

    def __enter__(self) -> Session:
        self._saved = _current.session
        _current.session = self
        return self

    def __exit__(self, *exc: object) -> None:
        _current.session = self._saved


def stub_of(value: Any) -> Rec | None:
    """The record of a stub (a global's class or a stub object), else None."""
    if isinstance(value, StubMeta):
        return value._grec
    if isinstance(value, StubObject):
        return value._rec
    return None


# ---------------------------------------------------------------------------------------------------------------
# The C unpickler (pickle.load, torch.load, np.load)
# ---------------------------------------------------------------------------------------------------------------


class _CStub(_pickle.Unpickler):
    def __init__(self, file: IO[bytes], session: Session, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._session = session

    def find_class(self, module: str, name: str) -> Any:
        return self._session.find_class(module, name)


class _CStubPersistent(_CStub):
    def persistent_load(self, pid: Any) -> Any:
        return self._session.persistent(pid)


def parse_c(
    data: bytes | IO[bytes], session: Session, *, encoding: str = "ASCII", persistent: bool = False
) -> tuple[Any, int]:
    """Parse one stream with the C unpickler under stubs; return ``(top object, bytes consumed)``.

    ``data`` is the stream's bytes (as the walk delimited them) or a file object positioned at its start.
    Raises whatever the unpickler raises (the loader fails there too) or StubFailure.
    """
    fh = io.BytesIO(data) if isinstance(data, bytes) else data
    start = fh.tell()
    unpickler = (_CStubPersistent if persistent else _CStub)(fh, session, encoding)
    with session:
        value = unpickler.load()
    return value, fh.tell() - start


# ---------------------------------------------------------------------------------------------------------------
# Large arguments: never read into memory; a marker stands for them
# ---------------------------------------------------------------------------------------------------------------


class Skipped:
    """Markers for the arguments a parse did not read: the marker is ASCII (valid as bytes and as text in any
    encoding an unpickler uses) and carries a random nonce, so that no file can forge one."""

    def __init__(self) -> None:
        self.prefix = "\x00ckptlint-skipped-" + secrets.token_hex(8) + "-"
        self.regions: dict[str, tuple[int, int, str]] = {}  # marker -> (offset, length, kind)

    def marker(self, offset: int, length: int, kind: str) -> bytes:
        text = f"{self.prefix}{len(self.regions)}"
        self.regions[text] = (offset, length, kind)
        return text.encode("ascii")

    def region(self, value: Any) -> tuple[int, int, str] | None:
        """``(offset, length, kind)`` when ``value`` (bytes or text) is one of this parse's markers."""
        if isinstance(value, (bytes, bytearray)):
            if len(value) > 64 or not value.startswith(self.prefix.encode("ascii")):
                return None
            value = bytes(value).decode("ascii")
        elif not isinstance(value, str) or len(value) > 64 or not value.startswith(self.prefix):
            return None
        return self.regions.get(value)


class RegionReader(io.RawIOBase):
    """``[start, end)`` of a file, as a file object for the unpicklers; reads and lines are bounded."""

    def __init__(self, fh: IO[bytes], start: int, end: int) -> None:
        self.fh = fh
        self.pos = start
        self.end = end
        self.skipped = Skipped()

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if n is None or n < 0:
            n = self.end - self.pos
        if n > MAX_READ:
            raise StubFailure(f"a read of {n} bytes (larger than ckptlint reads)")
        n = min(n, self.end - self.pos)
        self.fh.seek(self.pos)
        data = self.fh.read(n)
        self.pos += len(data)
        return data

    def readinto(self, buf: Any) -> int:  # type: ignore[override]
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readline(self, limit: int = -1) -> bytes:  # type: ignore[override]
        self.fh.seek(self.pos)
        line = self.fh.readline(min(MAX_LINE, self.end - self.pos))
        self.pos += len(line)
        return line

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise StubFailure("array data runs past the end of the file")
        self.pos += n

    def read_original(self, offset: int, n: int) -> bytes:
        self.fh.seek(offset)
        return self.fh.read(n)


_WIDTH = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


class PatchedReader(io.RawIOBase):
    """One stream of ``src`` as the C unpickler reads it, with each large argument the walk found (outside
    frames) replaced by a short marker of the same opcode: the unpickler parses the same opcodes, builds the
    same objects but for those values, and never holds the large ones in memory."""

    def __init__(self, src: Source, start: int, end: int, big: list[tuple[int, int, int, str]]) -> None:
        self.src = src
        self.skipped = Skipped()
        # (virtual start, original start, size, replacement bytes or None for the original bytes)
        self.pieces: list[tuple[int, int, int, bytes | None]] = []
        vpos, cur = 0, start
        for at, width, length, kind in big:
            head = at + 1  # keep the opcode; replace its count and data
            self.pieces.append((vpos, cur, head - cur, None))
            vpos += head - cur
            payload = self.skipped.marker(head + width, length, kind)
            repl = struct.pack(_WIDTH[width], len(payload)) + payload
            self.pieces.append((vpos, head, len(repl), repl))
            vpos += len(repl)
            cur = head + width + length
        self.pieces.append((vpos, cur, end - cur, None))
        self.starts = [p[0] for p in self.pieces]
        self.size = vpos + end - cur
        self.vpos = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.vpos

    def read_original(self, offset: int, n: int) -> bytes:
        return self.src.read(offset, n)

    def _piece(self, vpos: int) -> tuple[int, int, int, bytes | None]:
        return self.pieces[bisect.bisect_right(self.starts, vpos) - 1]

    def original(self, vpos: int) -> int:
        """The file offset of a position of this view (inside a marker: where its argument starts)."""
        start, orig, _, repl = self._piece(vpos)
        return orig + (vpos - start) if repl is None else orig

    def _read(self, n: int) -> bytes:
        out = []
        while n > 0 and self.vpos < self.size:
            start, orig, size, repl = self._piece(self.vpos)
            inside = self.vpos - start
            take = min(n, size - inside)
            out.append(self.src.read(orig + inside, take) if repl is None else repl[inside : inside + take])
            self.vpos += take
            n -= take
        return b"".join(out)

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if n is None or n < 0:
            n = self.size - self.vpos
        if n > MAX_READ:
            raise StubFailure(f"a read of {n} bytes (larger than ckptlint reads)")
        return self._read(n)

    def readinto(self, buf: Any) -> int:  # type: ignore[override]
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readline(self, limit: int = -1) -> bytes:  # type: ignore[override]
        out = b""
        while len(out) < MAX_LINE:
            chunk = self._read(min(4096, self.size - self.vpos))
            if not chunk:
                break
            i = chunk.find(b"\n")
            if i >= 0:
                self.vpos -= len(chunk) - i - 1
                return out + chunk[: i + 1]
            out += chunk
        return out


def skipped_region(data: Any, reader: Any) -> tuple[int, int, str] | None:
    """``(offset, length, kind)`` of an argument that ``reader`` did not read, when ``data`` is its marker."""
    skipped = getattr(reader, "skipped", None)
    return skipped.region(data) if skipped is not None else None


# ---------------------------------------------------------------------------------------------------------------
# The pure-Python unpickler, as joblib drives it
# ---------------------------------------------------------------------------------------------------------------

JOBLIB_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
JOBLIB_OLD_WRAPPER = "joblib.numpy_pickle_compat.NDArrayWrapper"


def _hash_cost(value: Any, budget: int = MAX_HASH_COST) -> int:
    """Tuple nodes hashing ``value`` visits (shared sub-tuples counted each time, as ``hash`` does)."""
    cost, todo = 0, [value]
    while todo:
        item = todo.pop()
        cost += 1
        if cost > budget:
            return cost
        if type(item) is tuple:
            todo.extend(item)
    return cost


class _PyStub(pickle._Unpickler):  # type: ignore[name-defined]
    """``pickle._Unpickler`` under stubs; with ``joblib`` set, BUILD of a joblib array wrapper reads (skips) the
    array's bytes inline, as ``joblib.numpy_pickle.NumpyUnpickler`` does."""

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: Any, session: Session, *, joblib: bool, arrays: list[Rec]) -> None:
        super().__init__(file)
        self._session = session
        self._file = file
        self._joblib = joblib
        self._arrays = arrays  # joblib arrays read so far (records with the data offset)
        self._frame_base = 0

    def find_class(self, module: str, name: str) -> Any:
        return self._session.find_class(module, name, proto=self.proto)

    def position(self) -> int:
        frame = self._unframer.current_frame
        if frame is not None:
            return self._frame_base + frame.tell()
        return self._file.tell()

    def load(self) -> Any:
        unframer = pickle._Unframer(self._file_read, self._file_readline)  # type: ignore[attr-defined]
        self._unframer = unframer
        self.read, self.readinto, self.readline = unframer.read, unframer.readinto, unframer.readline
        self.metastack, self.stack, self.proto = [], [], 0
        self.append = self.stack.append
        read, dispatch, ops = self.read, self.dispatch, 0
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError
                dispatch[key[0]](self)
                ops += 1
                if not ops & 0xFFF:
                    if ops > MAX_OPS:
                        raise StubFailure(f"more than {MAX_OPS} opcodes")
                    if len(self.memo) > MAX_OBJECTS or len(self.stack) > MAX_OBJECTS:
                        raise StubFailure("the pickle builds too many objects")
        except pickle._Stop as stop:  # type: ignore[attr-defined]
            return stop.value

    # -- guards --------------------------------------------------------------------------------------------------

    def _hashed(self, items: Any) -> None:
        for item in items:
            if type(item) is tuple and _hash_cost(item) > MAX_HASH_COST:
                raise StubFailure("a dict key or set item nested too deeply to hash (the loader may crash)")

    def load_frame(self) -> None:
        self._frame_base = self._file.tell() + 8
        pickle._Unpickler.load_frame(self)  # type: ignore[attr-defined]

    def load_dict(self) -> None:
        self._hashed(self.stack[::2])
        pickle._Unpickler.load_dict(self)  # type: ignore[attr-defined]

    def load_setitem(self) -> None:
        self._hashed(self.stack[-2:-1])
        pickle._Unpickler.load_setitem(self)  # type: ignore[attr-defined]

    def load_setitems(self) -> None:
        self._hashed(self.stack[::2])
        pickle._Unpickler.load_setitems(self)  # type: ignore[attr-defined]

    def load_additems(self) -> None:
        self._hashed(self.stack)
        pickle._Unpickler.load_additems(self)  # type: ignore[attr-defined]

    def load_frozenset(self) -> None:
        self._hashed(self.stack)
        pickle._Unpickler.load_frozenset(self)  # type: ignore[attr-defined]

    def load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        self.append(bytearray(self._bytes(n)))

    def load_binbytes8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        self.append(self._bytes(n))

    def load_binbytes(self) -> None:
        (n,) = struct.unpack("<I", self.read(4))
        self.append(self._bytes(n))

    def _bytes(self, n: int) -> bytes:
        reader = self._file
        if self._unframer.current_frame is None and n >= SKIP_ARG and hasattr(reader, "skip"):
            tag = reader.skipped.marker(reader.tell(), n, "b")
            reader.skip(n)
            return tag
        data = self.read(n)
        if len(data) != n:
            raise pickle.UnpicklingError("pickle data was truncated")
        return data

    for _op, _fn in (
        (pickle.DICT, load_dict), (pickle.SETITEM, load_setitem), (pickle.SETITEMS, load_setitems),
        (pickle.ADDITEMS, load_additems), (pickle.FROZENSET, load_frozenset), (pickle.FRAME, load_frame),
        (pickle.BYTEARRAY8, load_bytearray8), (pickle.BINBYTES8, load_binbytes8), (pickle.BINBYTES, load_binbytes),
    ):  # fmt: skip
        dispatch[_op[0]] = _fn

    # -- joblib ----------------------------------------------------------------------------------------------

    def load_build(self) -> None:
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        if not self._joblib:
            return
        rec = stub_of(self.stack[-1])
        callee = stub_of(rec.callee) if rec is not None and rec.kind == "call" else None
        if callee is None or callee.name not in (JOBLIB_WRAPPER, JOBLIB_OLD_WRAPPER):
            return
        self.stack.pop()
        self._session.count()
        array = object.__new__(_Joblib)
        array._rec = Rec("joblib-array", args=(rec,), offset=self.position())
        if callee.name == JOBLIB_WRAPPER:
            self._read_array(rec, array._rec)
        self.stack.append(array)

    dispatch[pickle.BUILD[0]] = load_build

    def _read_array(self, wrapper: Rec, out: Rec) -> None:
        """What ``NumpyArrayWrapper.read_array`` reads from the stream: a nested pickle for object arrays, else
        an optional padding then the raw bytes (skipped here)."""
        layout = joblib_layout(wrapper)
        if layout is None:
            raise StubFailure("a joblib array whose shape or dtype ckptlint cannot read")
        count, itemsize, has_object, aligned = layout
        out.kwargs = {"start": self._file.tell()}
        self._arrays.append(out)
        if has_object:
            nested = _PyStub(self._file, self._session, joblib=False, arrays=self._arrays)
            nested.find_class = self.find_class  # type: ignore[method-assign]  (joblib routes it to the outer one)
            out.how = "objects"
            out.kwargs["value"] = nested.load()
            out.kwargs["offset"] = self._file.tell()
            return
        if aligned:
            pad = self._file.read(1)
            if len(pad) != 1:
                raise pickle.UnpicklingError("array data truncated")
            if pad[0]:
                self._file.read(pad[0])
        nbytes = count * itemsize
        out.how = "raw"
        out.kwargs.update(offset=self._file.tell(), nbytes=nbytes)
        self._skip_raw(nbytes)

    def _skip_raw(self, n: int) -> None:
        skip = getattr(self._file, "skip", None)
        if skip is not None:
            skip(n)
            return
        while n > 0:  # a decompressed stream: read and drop
            chunk = self._file.read(min(n, 1 << 20))
            if not chunk:
                raise pickle.UnpicklingError("array data truncated")
            n -= len(chunk)


def parse_python(file: Any, session: Session, *, joblib: bool = True) -> tuple[Any, list[Rec]]:
    """Parse one stream with the pure-Python unpickler under stubs (joblib's reading of array data when
    ``joblib``); return ``(top object, joblib arrays)``. Raises what the unpickler raises, or StubFailure."""
    arrays: list[Rec] = []
    unpickler = _PyStub(file, session, joblib=joblib, arrays=arrays)
    session.where_fn = unpickler.position
    with session:
        value = unpickler.load()
    return value, arrays


def joblib_layout(wrapper: Rec) -> tuple[int, int, bool, bool] | None:
    """``(element count, item size, holds objects, has alignment padding)`` of a joblib array wrapper, read from
    its recorded BUILD state during the parse (joblib reads the array right after that BUILD)."""
    state = None
    for op in reversed(wrapper.ops or ()):
        if op[0] == "BUILD":
            state = op[1]
            break
    if not isinstance(state, dict):
        return None
    shape, dtype = state.get("shape"), state.get("dtype")
    if not isinstance(shape, tuple) or not all(type(d) is int and 0 <= d < 1 << 62 for d in shape):
        return None
    rec = stub_of(dtype)
    if rec is None or rec.kind != "call" or not rec.args or not isinstance(rec.args[0], str):
        return None
    g = stub_of(rec.callee)
    if g is None or g.name not in ("numpy.dtype", "numpy.core.multiarray.dtype"):
        return None
    dt = np_dtype(rec.args[0])
    itemsize = dt.itemsize
    for op in rec.ops or ():
        if op[0] == "BUILD" and isinstance(op[1], tuple) and len(op[1]) >= 6:
            if op[1][3] is not None:  # fields: a structured dtype
                return None
            if type(op[1][5]) is int and op[1][5] > 0:
                itemsize = op[1][5]
    if dt.name == "object":
        return math.prod(shape), 8, True, False
    if not itemsize:
        return None
    # joblib reads a padding whenever the attribute is not None (files written to unseekable streams have None)
    return math.prod(shape), itemsize, False, state.get("numpy_array_alignment_bytes") is not None
