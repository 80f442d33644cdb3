"""Decide what a parsed pickle is and whether loading it runs code, from what its stubs recorded.

After a stub parse (:mod:`ckptlint.readers.pickle_stubs`) every global the loader would import is a stub class,
and every call, ``NEWOBJ``, ``BUILD``, ``APPEND``, ``SETITEMS`` or ``ADDITEMS`` that the loader would perform on a
global or on what a call returned is on record, with its arguments. This module applies the default-deny policy
to those records and rebuilds the tree a checkpoint is made of:

- a global outside the safe set (:mod:`ckptlint.readers.pickle_globals`) is a fact, wherever it is used;
- a global of the safe set is interpreted only in the forms ``torch.save``/``np.save``/``pickle`` of plain data
  produce (``_rebuild_tensor_v2(storage, offset, size, stride, ...)``, ``OrderedDict()`` then ``SETITEMS``, a
  trainer record by ``NEWOBJ`` then ``BUILD`` of an attribute dict...); keyword arguments, operations real
  objects never receive, an attribute planted by ``BUILD`` and then called by the unpickler (``__setstate__``,
  ``append``, ``extend``, ``add``), a call-only global (``torch.storage._load_from_bytes``) used as a value, or
  any other unexpected use is a fact too, saying why;
- every call on record is judged, reachable from the result or not: the loader made it while parsing;
- ``torch.storage._load_from_bytes(b)`` runs an unrestricted ``torch.load`` of ``b``: ``b`` is judged as a whole
  torch file (zip or legacy) by the caller's ``nested`` reader, and the call is accepted only when it verifies.

Values are rebuilt as :mod:`ckptlint.readers.pickle_values` (TensorRef, ArrayRef...), memoised per object and
bounded in count and depth. Integrity errors that make the loader fail too (a tensor larger than its storage)
raise :class:`Corrupt`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ckptlint.dtypes import NUMPY_KIND_NAMES, NUMPY_TYPESTR
from ckptlint.facts import SecurityFacts
from ckptlint.readers.pickle_globals import SAFE_GLOBALS, STORAGE_DTYPES, torch_dtype_name, torch_itemsize
from ckptlint.readers.pickle_stubs import Rec, Session, StubMeta, StubObject, skipped_region, stub_of
from ckptlint.readers.pickle_values import (
    ArrayRef,
    Attrs,
    Blob,
    Composite,
    GlobalValue,
    Instance,
    NpDType,
    Opaque,
    StorageRef,
    TensorRef,
    TextBlob,
)

MAX_DIM = 1 << 62
MAX_NDIM = 64
MAX_DEPTH = 100  # container nesting rebuilt (deeper is summarised)
MAX_VALUES = 1 << 22  # objects rebuilt for one pickle
MAX_NESTED = 3  # pickles nested inside pickles
MAX_MATERIALIZE = (
    256 << 20
)  # a skipped text read back to judge a nested payload stored as text (protocol <= 2)
# safe globals that are harmless only as the callee of the call ckptlint verifies
CALL_ONLY_KINDS = frozenset({"load_from_bytes", "record"})
NESTED_LOADERS = frozenset(
    {"pickle.loads", "_pickle.loads", "pickle._loads", "dill.loads", "cloudpickle.loads"}
)
# attributes an unpickler looks up on an object and calls: planting one with BUILD makes it a callee
PLANTED = {"BUILD": "__setstate__", "APPEND": "append", "EXTEND": "extend", "ADD": "add"}
_CODECS = {
    **dict.fromkeys(("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"), "latin-1"),
    **dict.fromkeys(("utf-8", "utf8"), "utf-8"),
    **dict.fromkeys(("ascii", "us-ascii"), "ascii"),
}
_NP_STRUCT = {"b1": "?", "i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q", "u8": "Q",
              "f2": "e", "f4": "f", "f8": "d"}  # fmt: skip


_PLAIN = frozenset({int, str, float, bool, type(None)})


class Corrupt(Exception):
    """The pickle is inconsistent in a way that makes the loader fail too (e.g. a tensor outside its storage)."""


def short(value: Any) -> str:
    """A short description of an untrusted value for messages (never a recursive repr)."""
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        text = repr(value) if not isinstance(value, int) or abs(value) < 1 << 64 else "<huge int>"
        return text[:40] + ("…" if len(text) > 40 else "")
    return f"a {type(value).__name__}"


def np_dtype(spec: str) -> NpDType:
    """Canonical name and item size of a numpy dtype string without byte order (``f4`` -> float32)."""
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


@dataclass
class StoragePid:
    """The fields of a torch ``('storage', storage_type, key, location, numel[, view_metadata])`` id."""

    key: str
    dtype: str
    untyped: bool
    numel: int
    location: str
    view: tuple[str, int, int] | None = None


def storage_pid(pid: Any, fields: int) -> StoragePid | str:
    """A torch storage persistent id of ``fields`` items (5 in zip archives, 6 in legacy files), rebuilt from
    recorded values; a text saying what is wrong otherwise."""
    if not isinstance(pid, tuple) or len(pid) != fields:
        return f"persistent id is not a {fields}-item storage tuple"
    typename = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
    if typename != "storage":
        return f"persistent id of type {short(typename)}, not 'storage'"
    stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if not isinstance(stype, GlobalValue) or stype.kind != "storage_class":
        return "storage type is not a torch storage class"
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    if isinstance(location, bytes):
        location = location.decode("latin-1")
    if not isinstance(key, (str, int)) or not isinstance(location, str):
        return "storage key or location is not a string"
    if type(numel) is not int or not 0 <= numel < MAX_DIM:
        return "storage size is not a non-negative int"
    cls = stype.name.rsplit(".", 1)[1]
    view = None
    if fields == 6 and pid[5] is not None:
        v = pid[5]
        if (
            not isinstance(v, tuple)
            or len(v) != 3
            or not isinstance(v[0], (str, bytes, int))
            or any(type(x) is not int or x < 0 for x in v[1:])
        ):
            return "storage view metadata is not (key, offset, size)"
        view = (v[0].decode("latin-1") if isinstance(v[0], bytes) else str(v[0]), v[1], v[2])
    untyped = cls in ("UntypedStorage", "TypedStorage")
    return StoragePid(str(key), STORAGE_DTYPES.get(cls, "uint8"), untyped, numel, location[:64], view)


# (data, label, depth, facts) -> value: judge bytes (or a region (offset, length) of the file) as a whole torch
# file, recording into facts as it goes (so that what was seen before a failure is kept)
Nested = Callable[[Any, str, int, SecurityFacts], Any]


class Interpreter:
    """Judges and rebuilds one parsed pickle (see the module docstring)."""

    def __init__(
        self,
        session: Session,
        facts: SecurityFacts,
        *,
        member: str,
        pid: Callable[[Any, Interpreter], Any] | None = None,
        nested: Nested | None = None,
        nested_pickle: Callable[[Any, str, int], SecurityFacts] | None = None,
        reader: Any = None,
        depth: int = 0,
        torchscript: bool = False,
        locate: Callable[[bytes], int | None] | None = None,
    ) -> None:
        self.locate = locate  # where a byte argument is in the file, when known
        self.session = session
        self.facts = facts
        self.member = member
        self.pid_fn = pid
        self.nested = nested
        self.nested_pickle = nested_pickle
        self.reader = reader  # the file object the parse read (for skipped byte arguments)
        self.depth = depth
        self.torchscript = torchscript
        self.torchscript_classes: set[str] = set()
        self._memo: dict[int, Any] = {}
        self._busy: set[int] = set()
        self._count = 0
        self._reported: set[tuple[str, str]] = set()
        self._nested_seen: dict[int, tuple[Any, Any]] = {}  # id(payload) -> (payload, value): judged once

    # -- entry -------------------------------------------------------------------------------------------------

    def run(self, top: Any) -> Any:
        """Report the file's globals and uses, judge every recorded call, and return the rebuilt ``top``."""
        for name, offset, opcode in self.session.calls:
            if SAFE_GLOBALS.get(name) is None:
                if self.torchscript and name.startswith("__torch__."):
                    self.torchscript_classes.add(name)
                else:
                    self.facts.add_global(name, self.member, offset, opcode)
        for cls in self.session.classes.values():
            if cls._grec.ops and SAFE_GLOBALS.get(cls._grec.name) is not None:
                ops = sorted({op[0] for op in cls._grec.ops})
                self.flag(cls._grec, f"{'/'.join(ops)} on the global itself at load time (monkey-patching)")
        value = self.value(top)
        for rec in list(self.session.records):  # calls not reachable from the result ran too
            if id(rec) in self._memo:
                continue
            if rec.kind == "call":
                self.call(rec)
            elif rec.kind == "pid":
                self._memo[id(rec)] = self.pid(rec)
        return value

    def flag(self, g: Rec, why: str) -> None:
        key = (g.name, why)
        if key not in self._reported:
            self._reported.add(key)
            self.facts.add_global(g.name, self.member, g.offset, "GLOBAL", why)

    # -- values ------------------------------------------------------------------------------------------------

    def value(self, obj: Any, depth: int = 0) -> Any:
        """``obj`` (a parsed object: builtins and stubs) rebuilt as checkpoint values."""
        t = type(obj)
        if t is str and len(obj) <= 64 and obj.startswith("\x00"):
            region = skipped_region(obj, self.reader)
            if region is not None:
                return TextBlob(region[1], region[0], region[2])
        if obj is None or t in (str, int, float, bool, complex):
            return obj
        if t is bytes or t is bytearray:
            region = skipped_region(obj, self.reader) if len(obj) <= 64 else None
            if region is not None:
                return Blob(region[1], region[0]) if region[2] == "b" else Opaque(f"int of {region[1]} bytes")
            return obj if t is bytes else bytes(obj)
        key = id(obj)
        if key in self._memo:
            return self._memo[key]
        if key in self._busy:
            return Opaque("cycle")
        self._count += 1
        if self._count > MAX_VALUES:
            raise Corrupt(f"the pickled object holds more than {MAX_VALUES} values")
        if isinstance(obj, StubMeta):
            out: Any = self.global_value(obj._grec)
        elif isinstance(obj, StubObject):
            rec = obj._rec
            if rec.kind == "call":
                out = self.call(rec)
            elif rec.kind == "pid":
                out = self.pid(rec)
                self._memo[id(rec)] = out
            else:
                out = self.joblib_array(rec)
        elif depth >= MAX_DEPTH:
            return Opaque(f"nested deeper than {MAX_DEPTH} levels")
        elif t is list:
            out = self._memo[key] = []
            out.extend(self.value(v, depth + 1) for v in obj)
            return out
        elif t is dict:
            out = self._memo[key] = {}
            for k, v in obj.items():
                out[self._key(k, depth)] = self.value(v, depth + 1)
            return out
        elif t is tuple and all(type(v) in _PLAIN for v in obj):
            out = obj
        elif t is tuple or t is set or t is frozenset:
            self._busy.add(key)
            items = [self.value(v, depth + 1) for v in obj]
            self._busy.discard(key)
            out = tuple(items) if t is tuple else set(map(self._hashable, items))
        else:
            out = Opaque(type(obj).__name__)
        self._memo[key] = out
        return out

    def _key(self, k: Any, depth: int) -> Any:
        return self._hashable(self.value(k, depth + 1))

    @staticmethod
    def _hashable(v: Any) -> Any:
        try:
            hash(v)
        except TypeError:
            return f"<{type(v).__name__}>"
        return v

    def global_value(self, g: Rec) -> Any:
        """A global used as a value (not called): dtypes, storage and tensor classes, numpy types..."""
        kind = SAFE_GLOBALS.get(g.name)
        if kind in CALL_ONLY_KINDS:
            self.flag(g, "used as a value, not only called where it is imported: an unpickler can call it "
                         "through BUILD (__setstate__) or APPEND with arguments ckptlint cannot judge")  # fmt: skip
        return GlobalValue(g.name, kind)

    def pid(self, rec: Rec) -> Any:
        if self.pid_fn is None:
            return Opaque("persistent id")
        pid = self.value(rec.args[0])
        return self.pid_fn(pid, self)

    # -- calls ----------------------------------------------------------------------------------------------

    def call(self, rec: Rec) -> Any:
        key = id(rec)
        if key in self._memo:
            return self._memo[key]
        self._memo[key] = Opaque("cycle")  # a call whose arguments contain its own result
        out = self._call(rec)
        self._memo[key] = out
        return out

    def _call(self, rec: Rec) -> Any:
        callee = stub_of(rec.callee)
        if callee is None:
            return Opaque("call")
        if callee.kind != "global":  # calling what a call returned
            inner = self.call(callee) if callee.kind == "call" else Opaque("persistent id")
            g = self._origin(callee)
            if g is not None and SAFE_GLOBALS.get(g.name) is not None:
                self.flag(g, "what it returns is called again (checkpoints never do this)")
            return Instance(f"{inner!r}(...)", self._args(rec))
        g = callee
        kind = SAFE_GLOBALS.get(g.name)
        args = self._args(rec)
        if kind is None:
            if g.name in NESTED_LOADERS:
                self._nested_pickle(rec, args)
            return Instance(f"{g.name}(...)", args, self._last_state(rec))
        if rec.kwargs:
            names = ", ".join(sorted(str(k) for k in rec.kwargs)[:5])
            self.flag(g, f"called with keyword arguments ({names})")
            return Opaque(f"{g.name}(...)")
        if not isinstance(args, tuple):
            self.flag(g, "called with arguments that are not a tuple")
            return Opaque(f"{g.name}(...)")
        handler = getattr(self, f"_k_{kind}", None)
        if handler is None:
            return self._unexpected(g, rec, "called")
        return handler(g, rec, args)

    def _origin(self, rec: Rec) -> Rec | None:
        """The global a call chain started from."""
        for _ in range(64):
            if rec.kind == "global":
                return rec
            nxt = stub_of(rec.callee) if rec.kind == "call" else None
            if nxt is None:
                return None
            rec = nxt
        return None

    def _args(self, rec: Rec) -> Any:
        return self.value(rec.args)

    def _last_state(self, rec: Rec) -> Any:
        for op in reversed(rec.ops or ()):
            if op[0] == "BUILD":
                return self.value(op[1])
        return None

    def _unexpected(self, g: Rec, rec: Rec, what: str) -> Opaque:
        self.flag(
            g, f"{what} in a way checkpoints never are ({rec.how.lower()} with {len(rec.args)} arguments)"
        )
        return Opaque(f"{g.name}(...)")

    def _no_ops(self, g: Rec, rec: Rec) -> None:
        """Objects that real checkpoints never BUILD, APPEND to or SETITEM on."""
        if rec.ops:
            ops = "/".join(sorted({op[0] for op in rec.ops}))
            self.flag(g, f"{ops} on what it returns (checkpoints never do this)")

    def _attrs(self, g: Rec, rec: Rec, target: dict[Any, Any] | None = None) -> Attrs:
        """An object with a ``__dict__`` (OrderedDict, Namespace, a trainer record) through its operations, as
        CPython applies them: BUILD sets attributes (a dict state, or ``(state, slotstate)``); BUILD, APPEND(S)
        and ADDITEMS call ``__setstate__``/``append``/``extend``/``add`` when an earlier BUILD planted them;
        SETITEMS fills a dict."""
        attrs = Attrs()
        for op in rec.ops or ():
            name = PLANTED.get(op[0])
            if name is not None and name in attrs:
                self.flag(g, f"{op[0]} calls the {name} an earlier BUILD planted on the object "
                             f"({short(attrs[name]) if not isinstance(attrs[name], GlobalValue) else attrs[name].name})")  # fmt: skip
                continue
            if op[0] == "BUILD":
                state = self.value(op[1])
                parts = state if isinstance(state, tuple) and len(state) == 2 else (state, None)
                for i, part in enumerate(parts):
                    if part is None:
                        continue
                    if not isinstance(part, dict):
                        self.flag(g, "BUILD with a state that is not an attribute dict")
                        break
                    for k in part:
                        if i == 1 and isinstance(k, str) and k.startswith("__"):
                            self.flag(g, f"BUILD sets the special attribute {short(k)}")
                    attrs.update(part)
            elif op[0] == "SETITEM" and target is not None:
                target[self._key(op[1], 0)] = self.value(op[2])
            else:
                self.flag(g, f"{op[0]} on what it returns (checkpoints never do this)")
        return attrs

    # -- interpretations of safe globals (kind -> _k_<kind>) --------------------------------------------------

    def _k_dict(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        out: dict[Any, Any] = {}
        if args:
            src = args[0]
            if isinstance(src, dict):
                out.update(src)
            elif isinstance(src, (list, tuple)) and all(
                isinstance(p, (list, tuple)) and len(p) == 2 for p in src
            ):
                for k, v in src:
                    out[self._hashable(k)] = v
            else:
                return self._unexpected(g, rec, "called")
        if len(args) > 1:
            return self._unexpected(g, rec, "called")
        self._attrs(g, rec, out)
        return out

    def _k_namespace(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        if args:
            return self._unexpected(g, rec, "called")
        return self._attrs(g, rec)

    def _k_record(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        if rec.how != "NEW" or args:
            self.flag(g, f"called {'with arguments' if args else 'directly'}, which runs its constructor: "
                         "only its plain rebuild (NEWOBJ, then BUILD of its attributes) is known safe")  # fmt: skip
            return Instance(f"{g.name}(...)", args)
        return self._attrs(g, rec)

    def _k_enum(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        if rec.how != "CALL" or len(args) != 1 or type(args[0]) not in (str, int):
            self.flag(g, "called with something other than one value, which runs its constructor")
            return Opaque(g.name)
        self._no_ops(g, rec)
        return args[0]

    def _k_set(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if not args:
            return set()
        if len(args) == 1 and isinstance(args[0], (list, tuple, set, frozenset)):
            return {self._hashable(v) for v in args[0]}
        return self._unexpected(g, rec, "called")

    _k_frozenset = _k_set

    def _k_complex(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if len(args) <= 2 and all(type(a) in (int, float) for a in args):
            return complex(*args)
        return self._unexpected(g, rec, "called")

    def _k_slice(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if len(args) <= 3 and all(a is None or type(a) is int for a in args):
            return Opaque(g.name.rsplit(".", 1)[1])
        return self._unexpected(g, rec, "called")

    _k_range = _k_slice

    def _k_bytes(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if not args:
            return b""
        if len(args) == 1 and isinstance(args[0], (bytes, Blob)):
            return args[0]
        if len(args) == 2 and isinstance(args[0], (str, TextBlob)) and isinstance(args[1], str):
            return self._encode(args[0], args[1], g, rec)
        if len(args) == 1 and isinstance(args[0], list) and all(type(x) is int for x in args[0][:4096]):
            return Opaque("bytes")
        return self._unexpected(g, rec, "called")  # bytearray(n) would allocate n bytes

    _k_bytearray = _k_bytes

    def _encode(self, text: str | TextBlob, encoding: str, g: Rec, rec: Rec) -> Any:
        codec = _CODECS.get(encoding.lower().replace("_", "-"))
        if codec is None:  # looking an unknown codec up imports encodings.<name from the file>
            return self._unexpected(g, rec, f"called with the codec {short(encoding)}")
        if isinstance(text, TextBlob):
            read = getattr(self.reader, "read_original", None)
            if read is None or text.length > MAX_MATERIALIZE:
                return Opaque(f"text of {text.length} bytes encoded as {codec}")
            raw = read(text.offset, text.length)
            try:
                text = raw.decode("utf-8", "surrogatepass") if text.kind == "u" else raw.decode("latin-1")
            except UnicodeDecodeError:
                return Opaque("text that does not decode")
        try:
            return text.encode(codec)
        except ValueError:
            return Opaque(f"text encoded as {codec}")

    def _k_codecs_encode(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if len(args) == 2 and isinstance(args[0], (str, TextBlob)) and isinstance(args[1], str):
            return self._encode(args[0], args[1], g, rec)
        return self._unexpected(g, rec, "called")

    def _k_size(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if not args:
            return ()
        if len(args) == 1 and isinstance(args[0], (list, tuple)) and len(args[0]) <= MAX_NDIM:
            return tuple(args[0])
        return self._unexpected(g, rec, "called")

    def _k_device(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if args and isinstance(args[0], str) and len(args) <= 2:
            if len(args) == 2 and type(args[1]) is int:
                return f"{args[0]}:{args[1]}"
            return args[0][:64]
        return self._unexpected(g, rec, "called")

    def _k_layout(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if len(args) == 1 and isinstance(args[0], str):
            return Opaque(f"layout {args[0][:32]}")
        return self._unexpected(g, rec, "called")

    # torch tensors ----------------------------------------------------------------------------------------

    def _shape(self, value: Any, what: str, g: Rec) -> tuple[int, ...] | None:
        """A shape/stride tuple of non-negative ints; None (flagged) otherwise."""
        if (
            isinstance(value, (tuple, list))
            and len(value) <= MAX_NDIM
            and all(type(d) is int and 0 <= d < MAX_DIM for d in value)
        ):
            return tuple(value)
        if not isinstance(value, Opaque):
            self.flag(g, f"called with a {what} that is not a tuple of non-negative ints")
        return None

    def _dtype_arg(self, value: Any, g: Rec) -> str | None:
        if isinstance(value, GlobalValue) and value.kind == "torch_dtype":
            return torch_dtype_name(value.name.rsplit(".", 1)[1])
        if not isinstance(value, Opaque) and not (isinstance(value, GlobalValue) and value.kind is None):
            self.flag(g, "called with a dtype that is not a torch dtype")
        return None

    def make_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, dtype: Any, g: Rec) -> Any:
        if not isinstance(storage, StorageRef):
            if not isinstance(storage, Opaque):
                self.flag(g, f"called with a storage that is {short(storage)}")
            return Opaque("tensor")
        shape, strides = self._shape(size, "size", g), self._shape(stride, "stride", g)
        if shape is None or strides is None:
            return Opaque("tensor")
        if type(offset) is not int or not 0 <= offset < MAX_DIM:
            self.flag(g, "called with a storage offset that is not a non-negative int")
            return Opaque("tensor")
        if len(strides) != len(shape):
            raise Corrupt(f"tensor size {list(shape)} and stride {list(strides)} differ in length")
        name = storage.dtype
        if dtype is not None:
            found = self._dtype_arg(dtype, g)
            if found is None:
                return Opaque("tensor")
            name = found
        itemsize = storage.itemsize if name == storage.dtype else torch_itemsize(name)
        if itemsize and storage.nbytes is not None and all(shape):
            extent = offset + 1 + sum((s - 1) * st for s, st in zip(shape, strides, strict=True))
            available = storage.nbytes // itemsize
            if extent > available:
                raise Corrupt(
                    f"tensor of size {list(shape)} at offset {offset} needs {extent} elements of {name} "
                    f"but storage {storage.key} holds {available}"
                )
        return TensorRef(shape, name, storage, offset)

    def _tensor(self, g: Rec, rec: Rec, args: tuple[Any, ...], nargs: int, dtype_at: int | None) -> Any:
        self._no_ops(g, rec)
        if rec.how != "CALL" or len(args) < nargs:
            return self._unexpected(g, rec, "called")
        dtype = args[dtype_at] if dtype_at is not None else None
        return self.make_tensor(args[0], args[1], args[2], args[3], dtype, g)

    def _k_tensor_v1(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        return self._tensor(g, rec, args, 4, None)

    _k_tensor_v2 = _k_tensor_v1
    _k_qtensor = _k_tensor_v1

    def _k_tensor_v3(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        return self._tensor(g, rec, args, 7, 6)

    def _k_parameter(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if not args or (rec.how == "NEW" and g.name.startswith("torch._utils.")):
            return self._unexpected(g, rec, "called")
        if len(args) >= 4 and g.name.endswith("_with_state") and isinstance(args[3], dict):
            for k in args[3]:
                if isinstance(k, str) and (k in PLANTED.values() or k.startswith("__")):
                    self.flag(g, f"called with a state that sets {short(k)} on the tensor")
        value = args[0]
        if isinstance(value, (TensorRef, ArrayRef, Opaque, Composite)):
            return value
        return self._unexpected(g, rec, "called")

    _k_parameter_class = _k_parameter
    _k_device_tensor = _k_parameter

    def _k_meta_tensor(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if len(args) < 3:
            return self._unexpected(g, rec, "called")
        dtype, shape = self._dtype_arg(args[0], g), self._shape(args[1], "size", g)
        return Opaque("tensor") if dtype is None or shape is None else TensorRef(shape, dtype)

    def _k_wrapper_subclass(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if len(args) < 3:
            return self._unexpected(g, rec, "called")
        dtype, shape = self._dtype_arg(args[1], g), self._shape(args[2], "size", g)
        return Opaque("tensor") if dtype is None or shape is None else TensorRef(shape, dtype)

    def _k_composite_tensor(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        parts = list(args[1]) if len(args) > 1 and isinstance(args[1], (list, tuple)) else list(args)
        return Composite("sparse" if "sparse" in g.name else "nested", parts)

    def _k_from_type_v2(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        """``_rebuild_from_type_v2(func, new_type, args, state)`` calls ``func(*args)``: judged as that call."""
        self._no_ops(g, rec)
        if len(args) < 3 or not isinstance(args[2], (tuple, list)):
            return self._unexpected(g, rec, "called")
        func = args[0]
        if not isinstance(func, GlobalValue) or func.kind is None:
            return Opaque("tensor")  # an unsafe func is reported where it is imported
        if len(args) > 3 and isinstance(args[3], dict):
            for k in args[3]:
                if isinstance(k, str) and (k in PLANTED.values() or k.startswith("__")):
                    self.flag(g, f"called with a state that sets {short(k)} on the tensor")
        inner_rec = Rec("call", callee=None, how="CALL", args=tuple(args[2]))
        inner_g = Rec("global", name=func.name, offset=g.offset)
        handler = getattr(self, f"_k_{func.kind}", None)
        if handler is None or func.kind in CALL_ONLY_KINDS:
            self.flag(inner_g, f"called through {g.name}")
            return Opaque("tensor")
        return handler(inner_g, inner_rec, tuple(args[2]))

    def _k_tensor_class(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        """Legacy tensors: ``NEWOBJ`` of a tensor class, then ``BUILD`` (set_) with (storage, offset, size, stride)."""
        if rec.how != "NEW" or args:
            return self._unexpected(g, rec, "called")
        ops = rec.ops or []
        if len(ops) != 1 or ops[0][0] != "BUILD":
            self.flag(g, "a legacy tensor that is not rebuilt by one BUILD")
            return Opaque("tensor")
        state = self.value(ops[0][1])
        if not isinstance(state, tuple) or len(state) != 4:
            self.flag(g, "a legacy tensor whose state is not (storage, offset, size, stride)")
            return Opaque("tensor")
        return self.make_tensor(state[0], state[1], state[2], state[3], None, g)

    def _k_load_from_bytes(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        """``torch.storage._load_from_bytes(b)`` runs ``torch.load(io.BytesIO(b), weights_only=False)``."""
        self._no_ops(g, rec)
        if rec.how != "CALL" or len(args) != 1 or not isinstance(args[0], (bytes, Blob)):
            self.flag(g, "called with something other than one byte string: its nested torch.load cannot be "
                         "verified")  # fmt: skip
            return Opaque("nested torch.load")
        if self.nested is None or self.depth + 1 > MAX_NESTED:
            self.flag(g, f"its nested torch.load payload is nested more than {MAX_NESTED} levels deep")
            return Opaque("nested torch.load")
        data = args[0]
        seen = self._nested_seen.get(id(data))
        if seen is not None and seen[0] is data:  # the same payload through the memo: judged once
            return seen[1]
        label = f"{self.member}[torch.load payload at {g.offset}]"
        found = SecurityFacts()
        try:
            value = self.nested((data.offset, data.length) if isinstance(data, Blob) else data, label,
                                self.depth + 1, found)  # fmt: skip
        except Exception as exc:  # the nested payload does not verify (malformed, refused, corrupt)
            self.flag(g, f"its nested torch.load payload could not be verified: {short(str(exc))}")
            value = Opaque("nested torch.load")
        if found.unsafe:
            self.facts.merge(found)
            self.flag(g, "its nested torch.load payload imports unsafe globals")
        self._nested_seen[id(data)] = (data, value)
        return value

    def _nested_pickle(self, rec: Rec, args: Any) -> None:
        """``pickle.loads(b'...')`` (already reported): its payload's globals are reported too."""
        if self.nested_pickle is None or self.depth + 1 > MAX_NESTED:
            return
        if not isinstance(args, tuple) or not args or not isinstance(args[0], (bytes, Blob)):
            return
        data = args[0]
        g = self._origin(rec)
        label = f"{self.member}[{g.name if g else 'loads'} payload]"
        try:
            found = self.nested_pickle(
                (data.offset, data.length) if isinstance(data, Blob) else data, label, self.depth + 1
            )
        except Exception:  # nothing more can be said: the call itself is reported
            return
        self.facts.merge(found)

    def _k_storage_class(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        return self._unexpected(g, rec, "called")

    _k_torch_dtype = _k_storage_class
    _k_constant = _k_storage_class

    # numpy ------------------------------------------------------------------------------------------------

    def np_dtype_of(self, value: Any) -> NpDType | None:
        if isinstance(value, NpDType):
            return value
        if isinstance(value, str):
            return np_dtype(value)
        if isinstance(value, GlobalValue) and value.kind == "np_type":
            name = value.name.rsplit(".", 1)[1]
            if value.name.startswith("ml_dtypes."):
                return NpDType(name, name, None)
            if value.name.startswith("numpy.dtypes."):
                name = name.removesuffix("DType").lower()
                return NpDType(name, name, None)
            return NpDType(name, name.rstrip("_") if name != "bool_" else "bool", None)
        return None

    def _k_np_dtype(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        found = self.np_dtype_of(args[0]) if args else None
        if found is None or len(args) > 3 or rec.how != "CALL":
            return self._unexpected(g, rec, "called")
        dt = NpDType(found.spec, found.name, found.itemsize, found.byteorder)
        for op in rec.ops or ():
            if op[0] != "BUILD":
                self.flag(g, f"{op[0]} on a numpy dtype (checkpoints never do this)")
                continue
            state = self.value(op[1])
            if not isinstance(state, tuple):
                self.flag(g, "a numpy dtype whose state is not a tuple")
                continue
            if len(state) >= 2 and isinstance(state[1], str):
                dt.byteorder = state[1]
            if len(state) >= 6 and type(state[5]) is int and state[5] > 0:
                dt.itemsize = state[5]
            if len(state) >= 4 and state[3] is not None:  # a dtype with fields: numpy names it void<bits>
                dt.name = f"void{(dt.itemsize or 0) * 8}"
            if dt.name in ("datetime64", "timedelta64") and len(state) >= 9:
                meta = state[8]
                if isinstance(meta, tuple) and len(meta) == 2 and isinstance(meta[1], tuple):
                    meta = meta[1]
                if isinstance(meta, tuple) and meta and isinstance(meta[0], bytes):
                    dt.name = f"{dt.name}[{meta[0].decode('latin-1')[:8]}]"
        return dt

    def _k_np_reconstruct(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        if rec.how != "CALL" or len(args) != 3:
            return self._unexpected(g, rec, "called")
        return self._array(g, rec)

    def _k_np_ndarray(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        if rec.how != "NEW":
            return self._unexpected(g, rec, "called")
        return self._array(g, rec)

    def _array(self, g: Rec, rec: Rec) -> ArrayRef:
        """An array made empty, then filled by one BUILD (``ndarray.__setstate__``)."""
        arr = ArrayRef(pending=True)
        for op in rec.ops or ():
            if op[0] != "BUILD":
                self.flag(g, f"{op[0]} on a numpy array (checkpoints never do this)")
                continue
            self._build_array(arr, self.value(op[1]), g)
        return arr

    def _build_array(self, arr: ArrayRef, state: Any, g: Rec) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            self.flag(g, "a numpy array whose state is not a 4- or 5-tuple")
            return
        _shape, dtype, _fortran, data = state[-4:]
        shape = self._shape(_shape, "shape", g)
        dt = self.np_dtype_of(dtype)
        if shape is None or dt is None:
            return
        arr.shape, arr.dtype, arr.itemsize, arr.pending = shape, dt.name, dt.itemsize, False
        if dt.name == "object":
            arr.items = list(data) if isinstance(data, (list, tuple)) else None
            return
        if isinstance(data, Blob) and data.offset >= 0:
            arr.data_offset = data.offset
        elif isinstance(data, bytes) and self.locate is not None and len(data) >= 1024:
            arr.data_offset = self.locate(data)
        length = data.length if isinstance(data, Blob) else len(data) if isinstance(data, bytes) else None
        if length is not None and dt.itemsize and length != math.prod(shape) * dt.itemsize:
            raise Corrupt(
                f"numpy array data holds {length} bytes, shape {list(shape)} {dt.name} needs more or less"
            )

    def _k_np_frombuffer(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if len(args) < 3:
            return self._unexpected(g, rec, "called")
        dt = self.np_dtype_of(args[1])
        shape = self._shape(args[2], "shape", g)
        if dt is None or shape is None:
            return Opaque("numpy array")
        arr = ArrayRef(shape, dt.name, dt.itemsize)
        if isinstance(args[0], Blob) and args[0].offset >= 0:
            arr.data_offset = args[0].offset
        elif isinstance(args[0], bytes) and self.locate is not None and len(args[0]) >= 1024:
            arr.data_offset = self.locate(args[0])
        return arr

    def _k_np_scalar(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        dt = self.np_dtype_of(args[0]) if args else None
        if dt is None or len(args) != 2:
            return self._unexpected(g, rec, "called")
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

    def _k_np_type(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        return self._unexpected(g, rec, "called")

    # joblib -----------------------------------------------------------------------------------------------

    def _k_joblib_array(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        """A joblib NumpyArrayWrapper whose BUILD the parse did not turn into an array (not joblib's reading)."""
        if rec.how != "NEW" or args:
            return self._unexpected(g, rec, "called")
        return Opaque("joblib array wrapper")

    def joblib_array(self, rec: Rec) -> Any:
        wrapper = rec.args[0]
        callee = stub_of(wrapper.callee)
        g = callee if callee is not None else Rec("global", name="joblib array")
        if wrapper.how != "NEW" or wrapper.args:
            return self._unexpected(g, wrapper, "called")
        state = self._last_state(wrapper)
        if not isinstance(state, dict) or not set(state) <= _JOBLIB_KEYS:
            self.flag(g, "a joblib array wrapper whose state is not the attributes joblib writes")
            return Opaque("joblib array")
        if len([op for op in wrapper.ops or () if op[0] == "BUILD"]) != 1 or len(wrapper.ops or ()) != 1:
            self.flag(g, "a joblib array wrapper rebuilt by more than one BUILD")
        sub = state.get("subclass")
        if not (isinstance(sub, GlobalValue) and sub.name in ("numpy.ndarray", "numpy.memmap")):
            self.flag(g, "a joblib array of a class other than numpy.ndarray")
        dt = self.np_dtype_of(state.get("dtype"))
        shape = self._shape(state.get("shape"), "shape", g)
        if dt is None or shape is None:
            return Opaque("joblib array")
        if rec.how == "objects":
            return ArrayRef(shape, "object", None, items=self._items(rec.kwargs["value"]))
        return ArrayRef(shape, dt.name, dt.itemsize, data_offset=rec.kwargs["offset"])

    def _items(self, value: Any) -> list[Any] | None:
        out = self.value(value)
        if isinstance(out, ArrayRef) and out.items is not None:
            return out.items
        return [out]


_JOBLIB_KEYS = frozenset({"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"})


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
    if not isinstance(shape, tuple) or not all(type(d) is int and 0 <= d < MAX_DIM for d in shape):
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
    return math.prod(shape), itemsize, False, "numpy_array_alignment_bytes" in state
