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

import sys
from collections.abc import Callable
from typing import Any

from ckptlint.facts import SecurityFacts
from ckptlint.readers.pickle_globals import SAFE_GLOBALS
from ckptlint.readers.pickle_stubs import Rec, Session, StubMeta, StubObject, skipped_region, stub_of
from ckptlint.readers.pickle_tensors import (
    CALL_ONLY_KINDS,
    MAX_NDIM,
    MAX_NESTED,
    PLANTED,
    StoragePid,
    TensorKinds,
    storage_pid,
)
from ckptlint.readers.pickle_values import (
    Attrs,
    Blob,
    Corrupt,
    GlobalValue,
    Instance,
    ODict,
    Opaque,
    TextBlob,
    np_dtype,
    short,
)

__all__ = ["Corrupt", "Interpreter", "Nested", "StoragePid", "np_dtype", "short", "storage_pid"]

MAX_DEPTH = 100  # container nesting rebuilt (deeper is summarised)
MAX_VALUES = 1 << 21  # objects rebuilt for one pickle
# a skipped text read back to judge a nested payload stored as text (protocol <= 2)
MAX_MATERIALIZE = 256 << 20
NESTED_LOADERS = frozenset(
    {"pickle.loads", "_pickle.loads", "pickle._loads", "dill.loads", "cloudpickle.loads"}
)
_CODECS = {
    **dict.fromkeys(("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"), "latin-1"),
    **dict.fromkeys(("utf-8", "utf8"), "utf-8"),
    **dict.fromkeys(("ascii", "us-ascii"), "ascii"),
}
_SCALARS = frozenset({int, float, bool, complex, type(None)})  # value() returns them as they are
_LEAF_TUPLE = 16
_SHARED = 6  # references (beyond the few of the call) that make a leaf tuple worth remembering
_MISSING = object()
_CYCLE = Opaque("cycle")


def _is_leaf(items: tuple[Any, ...]) -> bool:
    """A tuple of scalars and plain strings (no skipped-argument markers): value() keeps it as it is."""
    for v in items:
        tv = type(v)
        if tv not in _SCALARS and (tv is not str or v[:1] == "\x00"):
            return False
    return True


# (data, label, depth, facts) -> value: judge bytes (or a region (offset, length) of the file) as a whole torch
# file, recording into facts as it goes (so that what was seen before a failure is kept)
Nested = Callable[[Any, str, int, SecurityFacts], Any]


class Interpreter(TensorKinds):
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
        self._handlers: dict[str, Any] = {}
        self._leaves: dict[int, tuple[Any, ...]] = {}  # leaf tuples referenced from many places
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
        if t in _SCALARS:
            return obj
        if t is str:
            if obj[:1] == "\x00" and len(obj) <= 64:
                region = skipped_region(obj, self.reader)
                if region is not None:
                    return TextBlob(region[1], region[0], region[2])
            return obj
        if t is bytes or t is bytearray:
            region = skipped_region(obj, self.reader) if len(obj) <= 64 else None
            if region is not None:
                return Blob(region[1], region[0]) if region[2] == "b" else Opaque(f"int of {region[1]} bytes")
            return obj if t is bytes else bytes(obj)
        if t is tuple and len(obj) <= _LEAF_TUPLE:
            if id(obj) in self._leaves:
                return obj
            if _is_leaf(obj):  # sizes, strides, names: as they are, not memoised unless shared (memoised or
                if sys.getrefcount(obj) > _SHARED:  # not, the result is the same: only the cost differs)
                    self._leaves[id(obj)] = obj
                return obj
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
            out.extend(v if type(v) in _SCALARS else self.value(v, depth + 1) for v in obj)
            return out
        elif t is dict:
            out = self._memo[key] = {}
            for k, v in obj.items():  # plain str keys and scalar values (most of them) as they are
                k = k if type(k) is str and k[:1] != "\x00" else self._key(k, depth)
                out[k] = v if type(v) in _SCALARS else self.value(v, depth + 1)
            return out
        elif t is tuple or t is set or t is frozenset:
            self._busy.add(key)
            items = [v if type(v) in _SCALARS else self.value(v, depth + 1) for v in obj]
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
        self._memo[key] = _CYCLE  # a call whose arguments contain its own result
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
        handler = self._handlers.get(kind, _MISSING)
        if handler is _MISSING:
            handler = self._handlers[kind] = getattr(self, f"_k_{kind}", None)
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
                self._planted_call(g, op, attrs[name], name)
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

    def _planted_call(self, g: Rec, op: tuple[Any, ...], planted: Any, name: str) -> None:
        """The unpickler calls ``planted`` (an attribute BUILD set): flagged, and judged as that call."""
        shown = planted.name if isinstance(planted, GlobalValue) else short(planted)
        self.flag(g, f"{op[0]} calls the {name} an earlier BUILD planted on the object ({shown})")
        if isinstance(planted, GlobalValue) and planted.kind == "load_from_bytes":
            callee = Rec("global", name=planted.name, offset=g.offset)
            arg = self.value(op[1])
            if op[0] == "EXTEND" and isinstance(arg, list) and len(arg) == 1:
                arg = arg[0]
            self._k_load_from_bytes(callee, Rec("call", callee=None, how="CALL", args=(arg,)), (arg,))

    # -- interpretations of safe globals (kind -> _k_<kind>) --------------------------------------------------

    def _k_dict(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        out: dict[Any, Any] = ODict() if g.name == "collections.OrderedDict" else {}
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
        attrs = self._attrs(g, rec, out)
        if attrs and isinstance(out, ODict):
            out.attrs = dict(attrs)  # a state_dict's _metadata
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
