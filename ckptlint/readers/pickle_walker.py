"""Walk a pickle stream opcode by opcode the way CPython's C unpickler reads it, building nothing.

The stub parser (:mod:`ckptlint.readers.pickle_stubs`) lets CPython's own unpickler parse a stream, so what it
sees is what ``pickle.load`` / ``torch.load`` see. But that unpickler trusts its input in ways a linter cannot:
a ``LONG_BINPUT`` of a huge index makes it allocate and clear a memo of twice that many slots, hashing a dict
key nested a million tuples deep (or a tuple DAG of 60 levels) overflows the C stack or never ends, and objects
pile up at 64 bytes per input byte. So every stream is first walked here, and the C unpickler only ever sees
streams this walk accepted. The walk models the unpickler's stack (one stack plus mark fences, as in C), its
memo and framing, and keeps only what the guard and the second opinion need: the strings that ``STACK_GLOBAL``
could take as names, the hash cost of tuples, and the globals the stream imports in order, with their offsets.

Where the loaders themselves disagree, the walk refuses (``refused=True``): an argument or line that crosses a
``FRAME`` boundary (C reads it from after the frame when reading a file, fails on bytes in memory; the pure-Python
unpickler fails; ``pickletools`` reads on), a ``FRAME`` inside a frame, an extension code (resolved through the
loading process's ``copyreg`` registry, not the file). A stream the loaders cannot parse raises with
``refused=False``. Bounds (opcodes, objects, memo index, stack, marks, line and argument sizes, hash cost) refuse
with a clear reason, so time and memory stay linear in the input with small constants.
"""

from __future__ import annotations

import codecs
import copyreg
import re
import struct

from ckptlint.readers.pickle_scan import (
    BLOB_BYTES,
    CHUNK,
    HIGHEST_PROTOCOL,
    MAX_BLOBS,
    MAX_FRAME,
    MAX_HASH_COST,
    MAX_LINE,
    MAX_MARKS,
    MAX_MEMO_ENTRIES,
    MAX_MEMO_INDEX,
    MAX_NAME,
    MAX_OBJECTS,
    MAX_OPS,
    MAX_STACK,
    SKIP_ARG,
    Budget,
    Scan,
    ScanError,
    ScanGlobal,
    Source,
)

_U2, _U4, _I4, _U8 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<i"), struct.Struct("<Q")
# text numbers as Python's picklers write them (``%d``, ``repr(long)``, ``repr(float)``): other forms (``0x1``,
# ``010``, ``1_0``, spaces) are read one way by C (strtol base 0), another by pure Python and pickletools
MAX_DIGITS = 4300  # CPython's int/str conversion limit
_CANONICAL = {
    0x49: re.compile(rb"\A(?:-?(?:0|[1-9][0-9]*)|00|01)\Z"),
    0x4C: re.compile(rb"\A-?(?:0|[1-9][0-9]*)L?\Z"),
    0x46: re.compile(rb"\A-?(?:[0-9]+(?:\.[0-9]*)?(?:e[-+]?[0-9]+)?|inf|nan)\Z", re.IGNORECASE),
}
_MEMO_INDEX = re.compile(rb"\A(?:0|[1-9][0-9]*)\Z")


class _Made:
    """What a call (or persistent_load) returned: only known when the file is loaded."""

    __slots__ = ()


MADE = _Made()


class _LongStr:
    """A text argument too long to decode during the walk (decoded only if STACK_GLOBAL takes it)."""

    __slots__ = ("kind", "n", "pos")

    def __init__(self, pos: int, n: int, kind: str) -> None:
        self.pos, self.n, self.kind = pos, n, kind


_NAMES = {
    0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT", 0x49: "INT",
    0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE", 0x50: "PERSID",
    0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING", 0x55: "SHORT_BINSTRING",
    0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD", 0x63: "GLOBAL", 0x64: "DICT",
    0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET", 0x69: "INST", 0x6A: "LONG_BINGET",
    0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT", 0x71: "BINPUT", 0x72: "LONG_BINPUT",
    0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE", 0x75: "SETITEMS", 0x47: "BINFLOAT", 0x80: "PROTO",
    0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3",
    0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8A: "LONG1", 0x8B: "LONG4", 0x42: "BINBYTES", 0x43: "SHORT_BINBYTES",
    0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS",
    0x91: "FROZENSET", 0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME",
    0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
}  # fmt: skip
# opcodes that push a new object and take no argument
_PUSH_NEW = frozenset(b"N)]}\x88\x89\x8f")
# fixed-size arguments of opcodes that push a new object
_FIXED = {0x4B: 1, 0x4D: 2, 0x4A: 4, 0x47: 8}
# counted arguments: opcode -> (width of the count, kind) ; kind: b=bytes (skipped), s=py2 string, l=long, u=utf-8
_COUNTED = {
    0x43: (1, "b"), 0x42: (4, "b"), 0x8E: (8, "b"), 0x96: (8, "b"), 0x55: (1, "s"), 0x54: (4, "s"),
    0x8A: (1, "l"), 0x8B: (4, "l"), 0x8D: (8, "u"),
}  # fmt: skip


def opcode_name(op: int) -> str:
    return _NAMES.get(op, f"0x{op:02x}")


class Walker:
    """Walks the streams of one source; see the module docstring. One instance per file (the budget is shared)."""

    def __init__(
        self,
        src: Source,
        member: str,
        *,
        encoding: str = "ASCII",
        persistent: bool = False,
        budget: Budget | None = None,
        strict: bool = True,
    ) -> None:
        self.src = src
        self.member = member
        self.encoding = encoding
        self.persistent = persistent  # the loader has a persistent_load (torch), else PERSID fails
        self.budget = budget if budget is not None else Budget()
        # refuse text numbers no pickler writes; off, the walk reads past them as the C unpickler does (to
        # report the globals a refused stream would import)
        self.strict = strict

    def error(self, offset: int, reason: str, refused: bool = False) -> ScanError:
        return ScanError(self.member, offset, reason, refused=refused)

    def walk(self, start: int) -> Scan:
        """Walk the stream starting at ``start`` to its STOP."""
        src = self.src
        end_of_data = src.end
        if start >= end_of_data:
            raise self.error(start, "no data where a pickle stream should start")
        buf, base = src.window(start, 0)
        wend = base + len(buf)
        pos = start
        frame_end = -1
        lim = min(wend, end_of_data)
        stack: list[object] = []
        marks: list[int] = []
        memo: dict[int, object] = {}
        proto = 0
        scan = Scan(start, start)
        found = scan.globals
        budget = self.budget
        ops0, objs0 = budget.ops, budget.objects
        ops = 0
        objs = 0
        fence = 0
        err = self.error

        def need(n: int) -> None:
            """Make ``[pos, pos + n)`` readable in ``buf`` (refill, frame and end checks)."""
            nonlocal buf, base, wend, lim
            if frame_end >= 0 and pos + n > frame_end:
                raise err(pos, "an argument crosses the end of its FRAME (loaders read it differently)", True)
            if pos + n > end_of_data:
                raise err(pos, f"truncated: {n} bytes needed, {end_of_data - pos} left")
            if pos + n > wend:
                buf, base = src.window(pos, n)
                wend = base + len(buf)
            lim = min(wend, end_of_data if frame_end < 0 else frame_end)

        def line(maxlen: int) -> bytes:
            """The protocol-0 line at ``pos`` (without its newline); advances ``pos``."""
            nonlocal pos
            stop = min(end_of_data if frame_end < 0 else frame_end, pos + maxlen + 1)
            while True:
                i = buf.find(b"\n", pos - base, min(stop, wend) - base)
                if i >= 0:
                    data = buf[pos - base : i]
                    pos = base + i + 1
                    return data
                if wend >= stop:
                    break
                need(min(stop, wend + CHUNK) - pos)
            if frame_end >= 0 and stop == frame_end:
                raise err(pos, "a text line crosses the end of its FRAME (loaders read it differently)", True)
            if stop == end_of_data:
                raise err(pos, "truncated: a text argument has no newline")
            raise err(pos, f"a text argument longer than {maxlen} bytes", True)

        def text(n: int, kind: str) -> object:
            """A counted text argument of ``n`` bytes at ``pos`` (decoded when short); advances ``pos``."""
            nonlocal pos
            if pos + n > end_of_data:
                need(n)  # raises: truncated (or crossing its frame)
            if n <= 256:
                if pos + n > lim:
                    need(n)
                raw = buf[pos - base : pos + n - base]
                pos += n
                return self._decode(raw, kind, pos - n)
            if pos + n > end_of_data or (frame_end >= 0 and pos + n > frame_end):
                need(n)
            value = _LongStr(pos, n, kind)
            pos += n
            return value

        try:
            while True:
                if pos >= lim:
                    if frame_end >= 0 and pos == frame_end:
                        frame_end = -1
                    need(1)
                op = buf[pos - base]
                at = pos
                pos += 1
                ops += 1
                if op == 0x71:  # BINPUT
                    if pos >= lim:
                        need(1)
                    if len(stack) <= fence:
                        raise err(at, "stack underflow")
                    memo[buf[pos - base]] = stack[-1]
                    pos += 1
                elif op == 0x68:  # BINGET
                    if pos >= lim:
                        need(1)
                    key = buf[pos - base]
                    pos += 1
                    if key not in memo:
                        raise err(at, f"memo value not found at index {key}")
                    stack.append(memo[key])
                elif op == 0x72 or op == 0x6A:  # LONG_BINPUT, LONG_BINGET
                    if pos + 4 > lim:
                        need(4)
                    key = _U4.unpack_from(buf, pos - base)[0]
                    pos += 4
                    if op == 0x72:
                        if len(stack) <= fence:
                            raise err(at, "stack underflow")
                        if key > MAX_MEMO_INDEX:
                            raise err(
                                at, f"memo index {key} (the loader allocates twice that many slots)", True
                            )
                        memo[key] = stack[-1]
                    else:
                        if key not in memo:
                            raise err(at, f"memo value not found at index {key}")
                        stack.append(memo[key])
                elif op in _PUSH_NEW:
                    stack.append(1 if op == 0x29 else None)
                    objs += 8 if op == 0x7D or op == 0x8F else 1
                elif op in _FIXED:
                    n = _FIXED[op]
                    if pos + n > lim:
                        need(n)
                    pos += n
                    stack.append(None)
                    objs += 1
                elif op == 0x28:  # MARK
                    if len(marks) >= MAX_MARKS:
                        raise err(at, f"more than {MAX_MARKS} nested MARKs", True)
                    fence = len(stack)
                    marks.append(fence)
                elif op == 0x58 or op == 0x8C:  # BINUNICODE, SHORT_BINUNICODE
                    w = 4 if op == 0x58 else 1
                    if pos + w > lim:
                        need(w)
                    n = _U4.unpack_from(buf, pos - base)[0] if w == 4 else buf[pos - base]
                    if n >= SKIP_ARG and frame_end < 0 and pos + w + n <= end_of_data:
                        scan.big.append((at, w, n, "u"))
                    pos += w
                    stack.append(text(n, "u"))
                    objs += 1
                elif op == 0x85 or op == 0x86 or op == 0x87:  # TUPLE1/2/3
                    k = op - 0x84
                    if len(stack) - k < fence:
                        raise err(at, "stack underflow")
                    cost = 1
                    for v in stack[-k:]:
                        cost += v if type(v) is int else 1
                    del stack[-k:]
                    stack.append(min(cost, MAX_HASH_COST + 1))
                    objs += 1
                elif op == 0x74 or op == 0x6C:  # TUPLE, LIST
                    if not marks:
                        raise err(at, "could not find MARK")
                    i = marks.pop()
                    fence = marks[-1] if marks else 0
                    if op == 0x74:
                        cost = 1
                        for v in stack[i:]:
                            cost += v if type(v) is int else 1
                        del stack[i:]
                        stack.append(min(cost, MAX_HASH_COST + 1))
                    else:
                        del stack[i:]
                        stack.append(None)
                    objs += 1
                elif op == 0x52:  # REDUCE
                    if len(stack) - 2 < fence:
                        raise err(at, "stack underflow")
                    del stack[-2:]
                    stack.append(MADE)
                    objs += 1
                elif op == 0x75 or op == 0x73:  # SETITEMS, SETITEM
                    if op == 0x75:
                        if not marks:
                            raise err(at, "could not find MARK")
                        x = marks.pop()
                        fence = marks[-1] if marks else 0
                    else:
                        x = len(stack) - 2
                    if x > len(stack) or x <= fence:
                        raise err(at, "stack underflow")
                    if (len(stack) - x) % 2:
                        raise err(at, "odd number of items for SETITEMS")
                    for v in stack[x::2]:
                        if type(v) is int and v > MAX_HASH_COST:
                            raise err(at, "a dict key nested too deeply to hash (the loader may crash)", True)
                    del stack[x:]
                elif op == 0x61 or op == 0x65:  # APPEND, APPENDS
                    if op == 0x65:
                        if not marks:
                            raise err(at, "could not find MARK")
                        x = marks.pop()
                        fence = marks[-1] if marks else 0
                    else:
                        if len(stack) - 1 <= fence:
                            raise err(at, "stack underflow")
                        x = len(stack) - 1
                    if x > len(stack) or x <= fence:
                        raise err(at, "stack underflow")
                    del stack[x:]
                elif op == 0x51:  # BINPERSID
                    if not self.persistent:
                        raise err(at, "a persistent id, but the loader has no persistent_load")
                    if len(stack) <= fence:
                        raise err(at, "stack underflow")
                    stack[-1] = MADE
                    scan.persistent_ids += 1
                    objs += 1
                elif op == 0x63 or op == 0x69:  # GLOBAL, INST
                    if op == 0x69 and not marks:
                        raise err(at, "could not find MARK")
                    scan.loose = scan.loose or op == 0x69
                    module = self._name(line(MAX_LINE), at, op)
                    name = self._name(line(MAX_LINE), at, op)
                    found.append(ScanGlobal(module, name, opcode_name(op), at, proto))
                    if op == 0x69:
                        i = marks.pop()
                        fence = marks[-1] if marks else 0
                        del stack[i:]
                    stack.append(MADE if op == 0x69 else None)
                    objs += 1
                elif op == 0x93:  # STACK_GLOBAL
                    if len(stack) - 2 < fence:
                        raise err(at, "stack underflow")
                    module, name = stack[-2], stack[-1]
                    del stack[-2:]
                    if module is MADE or name is MADE:
                        raise err(at, "a global whose name is computed when the file is loaded", True)
                    module, name = self._str(module), self._str(name)
                    if module is None or name is None:
                        raise err(at, "STACK_GLOBAL requires str")
                    found.append(ScanGlobal(module, name, "STACK_GLOBAL", at, proto))
                    stack.append(None)
                    objs += 1
                elif op == 0x94:  # MEMOIZE
                    if len(stack) <= fence:
                        raise err(at, "stack underflow")
                    if len(memo) > MAX_MEMO_INDEX:
                        raise err(at, f"memo grows beyond {MAX_MEMO_INDEX} entries", True)
                    memo[len(memo)] = stack[-1]
                elif op == 0x81 or op == 0x92:  # NEWOBJ, NEWOBJ_EX
                    k = 2 if op == 0x81 else 3
                    if len(stack) - k < fence:
                        raise err(at, "stack underflow")
                    del stack[-k:]
                    stack.append(MADE)
                    objs += 1
                elif op == 0x62:  # BUILD
                    if len(stack) - 2 < fence:
                        raise err(at, "stack underflow")
                    stack.pop()
                elif op == 0x2E:  # STOP
                    if len(stack) <= fence:
                        raise err(at, "stack underflow")
                    scan.end = pos
                    scan.ops = ops
                    return scan
                elif op in _COUNTED:
                    w, kind = _COUNTED[op]
                    if pos + w > lim:
                        need(w)
                    n = (
                        buf[pos - base]
                        if w == 1
                        else _U4.unpack_from(buf, pos - base)[0]
                        if w == 4
                        else _U8.unpack_from(buf, pos - base)[0]
                    )
                    if op == 0x8B and n >= 1 << 31:
                        raise err(at, "LONG pickle has negative byte count")
                    if (
                        n >= SKIP_ARG
                        and frame_end < 0
                        and pos + w + n <= end_of_data
                        and (kind != "s" or w == 4)
                    ):
                        scan.big.append((at, w, n, kind))
                    pos += w
                    if kind in "su":
                        stack.append(text(n, kind))
                    else:
                        if pos + n > lim:
                            need(n) if n <= CHUNK else self._skip_check(pos, n, frame_end, end_of_data)
                        if n >= BLOB_BYTES and kind == "b" and len(scan.blobs) < MAX_BLOBS:
                            scan.blobs.append((pos, n))
                        pos += n
                        stack.append(None)
                    objs += 1
                elif op == 0x95:  # FRAME
                    if pos + 8 > lim:
                        need(8)
                    n = _U8.unpack_from(buf, pos - base)[0]
                    if frame_end >= 0 and at < frame_end:
                        raise err(at, "a FRAME inside a frame (loaders read it differently)", True)
                    pos += 8
                    if pos + n > end_of_data:
                        raise err(at, f"truncated: a FRAME of {n} bytes, {end_of_data - pos} left")
                    if n > MAX_FRAME:
                        raise err(at, f"a FRAME of {n} bytes (picklers write ~64 KiB frames)", True)
                    frame_end = pos + n
                    if frame_end > wend:
                        need(n)
                    lim = min(wend, frame_end)
                elif op == 0x80:  # PROTO
                    if pos >= lim:
                        need(1)
                    proto = buf[pos - base]
                    pos += 1
                    if proto > HIGHEST_PROTOCOL:
                        raise err(at, f"unsupported pickle protocol: {proto}")
                elif op == 0x30:  # POP
                    if marks and marks[-1] == len(stack):
                        marks.pop()
                        fence = marks[-1] if marks else 0
                    elif len(stack) <= fence:
                        raise err(at, "stack underflow")
                    else:
                        stack.pop()
                elif op == 0x31:  # POP_MARK
                    if not marks:
                        raise err(at, "could not find MARK")
                    del stack[marks.pop() :]
                    fence = marks[-1] if marks else 0
                elif op == 0x32:  # DUP
                    if len(stack) <= fence:
                        raise err(at, "stack underflow")
                    stack.append(stack[-1])
                elif op == 0x64 or op == 0x91 or op == 0x90 or op == 0x6F:  # DICT, FROZENSET, ADDITEMS, OBJ
                    if not marks:
                        raise err(at, "could not find MARK")
                    i = marks.pop()
                    fence = marks[-1] if marks else 0
                    items = stack[i:]
                    if op == 0x64 and len(items) % 2:
                        raise err(at, "odd number of items for DICT")
                    if op == 0x90 and (i > len(stack) or i <= fence):
                        raise err(at, "stack underflow")
                    if op == 0x6F and not items:
                        raise err(at, "stack underflow")
                    scan.loose = scan.loose or op == 0x6F
                    hashed = items[::2] if op == 0x64 else items if op != 0x6F else ()
                    for v in hashed:
                        if type(v) is int and v > MAX_HASH_COST:
                            raise err(at, "a dict key or set item nested too deeply to hash", True)
                    del stack[i:]
                    if op != 0x90:
                        stack.append(MADE if op == 0x6F else None)
                        objs += 8 if op != 0x6F else 1
                elif op in (0x49, 0x4C, 0x46):  # INT, LONG, FLOAT
                    raw = line(MAX_LINE)
                    if self.strict and (len(raw) > MAX_DIGITS or not _CANONICAL[op].match(raw)):
                        odd = err(at, f"{opcode_name(op)} {raw[:40]!r}: a number no pickler writes, which the "
                                      "C and pure-Python unpicklers and pickletools read differently", True)  # fmt: skip
                        odd.numbers = True
                        raise odd
                    stack.append(None)
                    objs += 1
                elif op == 0x70 or op == 0x67:  # PUT, GET
                    raw = line(MAX_LINE)
                    if self.strict and not _MEMO_INDEX.match(raw):
                        odd = err(
                            at, f"memo index {raw[:40]!r}: not a plain decimal (unpicklers differ)", True
                        )
                        odd.numbers = True
                        raise odd
                    try:
                        key = int(raw)  # (the C unpickler: base 10, spaces and underscores allowed)
                    except ValueError:
                        raise err(at, "invalid memo index") from None
                    if op == 0x70:
                        if len(stack) <= fence:
                            raise err(at, "stack underflow")
                        if key < 0:
                            raise err(at, "negative PUT argument")
                        if key > MAX_MEMO_INDEX:
                            raise err(
                                at, f"memo index {key} (the loader allocates twice that many slots)", True
                            )
                        memo[key] = stack[-1]
                    else:
                        if key not in memo:
                            raise err(at, f"memo value not found at index {key}")
                        stack.append(memo[key])
                elif op == 0x53 or op == 0x56:  # STRING, UNICODE
                    raw = line(MAX_LINE)
                    stack.append(self._line_text(raw, op, at))
                    objs += 1
                elif op == 0x50:  # PERSID
                    if not self.persistent:
                        raise err(at, "a persistent id, but the loader has no persistent_load")
                    scan.loose = True
                    line(MAX_LINE)
                    stack.append(MADE)
                    scan.persistent_ids += 1
                    objs += 1
                elif op in (0x82, 0x83, 0x84):
                    w = {0x82: 1, 0x83: 2, 0x84: 4}[op]
                    if pos + w > lim:
                        need(w)
                    code = int.from_bytes(buf[pos - base : pos - base + w], "little", signed=w == 4)
                    pos += w
                    if code <= 0 or code not in copyreg._inverted_registry:  # type: ignore[attr-defined]
                        raise err(at, f"unregistered extension code {code}")
                    raise err(
                        at,
                        f"extension code {code}: the global comes from the loading process's copyreg registry, "
                        "not from the file",
                        True,
                    )
                elif op == 0x98:  # READONLY_BUFFER
                    if len(stack) <= fence:
                        raise err(at, "stack underflow")
                elif op == 0x97:
                    raise err(at, "out-of-band buffer (NEXT_BUFFER) without buffers")
                else:
                    raise err(at, f"invalid load key 0x{op:02x}")
                if not ops & 0xFFF:
                    self._check(ops0 + ops, objs0 + objs, len(stack), at)
                    if len(memo) > MAX_MEMO_ENTRIES:
                        raise err(at, f"more than {MAX_MEMO_ENTRIES} memo entries", True)
        except ScanError as exc:
            exc.globals = found
            raise
        finally:
            budget.ops = ops0 + ops
            budget.objects = objs0 + objs

    # -- helpers ----------------------------------------------------------------------------------------------

    def _check(self, ops: int, objs: int, depth: int, at: int) -> None:
        if ops > MAX_OPS:
            raise self.error(at, f"more than {MAX_OPS} opcodes", True)
        if objs > MAX_OBJECTS:
            raise self.error(at, f"more than {MAX_OBJECTS} objects to build", True)
        if depth > MAX_STACK:
            raise self.error(at, f"a stack of more than {MAX_STACK} items", True)

    def _skip_check(self, pos: int, n: int, frame_end: int, end_of_data: int) -> None:
        if frame_end >= 0 and pos + n > frame_end:
            raise self.error(
                pos, "an argument crosses the end of its FRAME (loaders read it differently)", True
            )
        if pos + n > end_of_data:
            raise self.error(pos, f"truncated: an argument of {n} bytes, {end_of_data - pos} left")

    def _name(self, raw: bytes, at: int, op: int) -> str:
        if not raw:
            raise self.error(at, "empty global name")
        try:  # C decodes GLOBAL names as UTF-8 and INST names as ASCII, strictly
            return raw.decode("utf-8" if op == 0x63 else "ascii")
        except UnicodeDecodeError:
            raise self.error(at, "global name does not decode") from None

    def _decode(self, raw: bytes, kind: str, at: int) -> object:
        if kind == "u":
            try:
                return raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                raise self.error(at, "invalid UTF-8 in a text argument") from None
        if self.encoding == "bytes":
            return None  # Python 2 strings stay bytes: not a name
        try:
            return raw.decode(self.encoding)
        except (UnicodeDecodeError, LookupError):
            raise self.error(at, f"a Python 2 string that does not decode as {self.encoding}") from None

    def _line_text(self, raw: bytes, op: int, at: int) -> object:
        if op == 0x56:
            try:
                return str(raw, "raw-unicode-escape")
            except UnicodeDecodeError:
                raise self.error(at, "invalid UNICODE argument") from None
        if len(raw) < 2 or raw[0] != raw[-1] or raw[:1] not in (b"'", b'"'):
            raise self.error(at, "the STRING opcode argument must be quoted")
        try:
            data = codecs.escape_decode(raw[1:-1])[0]
        except ValueError:
            raise self.error(at, "invalid STRING escape") from None
        return self._decode(data, "s", at)

    def _str(self, value: object) -> str | None:
        """The text a STACK_GLOBAL operand holds, or None when it is not a str."""
        if type(value) is str:
            return value
        if isinstance(value, _LongStr):
            if value.n > MAX_NAME:  # importing it fails in the loader too
                return None
            raw = self.src.read(value.pos, value.n)
            decoded = self._decode(raw, value.kind, value.pos)
            return decoded if type(decoded) is str else None
        return None


def walk_stream(
    src: Source,
    start: int,
    member: str,
    *,
    encoding: str = "ASCII",
    persistent: bool = False,
    budget: Budget | None = None,
) -> Scan:
    """Walk the one stream that starts at ``start`` (see :class:`Walker`)."""
    return Walker(src, member, encoding=encoding, persistent=persistent, budget=budget).walk(start)
