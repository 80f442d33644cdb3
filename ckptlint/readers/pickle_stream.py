"""Judge one pickle stream the way a loader reads it: walk it, parse it with CPython under stubs, compare, rebuild.

For the C unpickler (``pickle.load``, ``torch.load``, ``np.load``): the opcode walk
(:mod:`ckptlint.readers.pickle_walker`) delimits the stream, guards it and lists the globals it imports with
their offsets; only then does the C unpickler parse exactly those bytes under stubs
(:mod:`ckptlint.readers.pickle_stubs`). The two must agree on every global, in order, and on where the stream
ends; any disagreement is a refusal. The records are then judged and rebuilt
(:mod:`ckptlint.readers.pickle_interpret`). For ``joblib.load`` the pure-Python unpickler parses under stubs,
reading array data inline as joblib does.

Whatever was seen before a failure is recorded in ``facts`` first; then :class:`StreamError` says where and why
(``refused``: ckptlint will not judge it; else the loader fails there too).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

from ckptlint.facts import SecurityFacts
from ckptlint.readers.pickle_globals import SAFE_GLOBALS
from ckptlint.readers.pickle_interpret import Corrupt, Interpreter, Nested
from ckptlint.readers.pickle_scan import Budget, Scan, ScanError, ScanGlobal, Source
from ckptlint.readers.pickle_stubs import (
    PatchedReader,
    Session,
    StubFailure,
    parse_c,
    parse_python,
    resolve,
)
from ckptlint.readers.pickle_walker import Walker

# How the C parse decodes Python 2 strings: latin-1 decodes every byte, so the parse goes as far as the loader's
# with any encoding (pickle.load's ASCII, torch.load's UTF-8, np.load(encoding='latin1')); names that can be
# imported are ASCII, the same in all of them.
C_ENCODING = "latin1"


class StreamError(Exception):
    """A stream that cannot be judged (``refused``) or that the loader cannot read either."""

    def __init__(self, member: str, offset: int | None, reason: str, *, refused: bool) -> None:
        at = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{'cannot judge' if refused else 'malformed'} pickle in {member}{at}: {reason}")
        self.member = member
        self.offset = offset
        self.reason = reason
        self.refused = refused
        self.globals: list[ScanGlobal] = []  # what the opcode walk saw imported (before the failure)


def report_globals(facts: SecurityFacts, found: list[ScanGlobal], member: str, *, torch: bool) -> None:
    """Record the unsafe globals among those a walk saw (e.g. before a failure)."""
    for g in found:
        name = resolve(g.module, g.name, g.proto, torch=torch)
        if SAFE_GLOBALS.get(name) is None and not name.startswith("__torch__."):
            facts.add_global(name, member, g.offset, g.opcode)


def parse_stream(
    src: Source,
    start: int,
    *,
    member: str,
    facts: SecurityFacts,
    budget: Budget,
    torch: bool = False,
    encoding: str = C_ENCODING,
    pid: Callable[[Any, Interpreter], Any] | None = None,
    nested: Nested | None = None,
    depth: int = 0,
    torchscript: bool = False,
    classes: set[str] | None = None,
    calls_out: list[str] | None = None,
    scans_out: list[Scan] | None = None,
) -> tuple[Any, int]:
    """Judge the C-unpickler stream at ``start``; return ``(rebuilt top object, offset after it)``.

    ``pid`` interprets persistent ids (torch); without it the loader has no ``persistent_load``. ``classes``
    collects TorchScript ``__torch__`` classes (when ``torchscript``); ``calls_out`` every global imported;
    ``scans_out`` the opcode walk of the stream.
    """
    walker = Walker(src, member, encoding=encoding, persistent=pid is not None, budget=budget)
    try:
        scan = walker.walk(start)
    except ScanError as exc:
        found = exc.globals
        if exc.numbers:  # what pickle.load goes on to import is reported next to the refusal
            lenient = Walker(src, member, encoding=encoding, persistent=pid is not None, strict=False)
            try:
                found = lenient.walk(start).globals
            except ScanError as again:
                found = again.globals
        report_globals(facts, found, member, torch=torch)
        error = StreamError(member, exc.offset, exc.reason, refused=exc.refused)
        error.globals = found
        raise error from None
    if scans_out is not None:
        scans_out.append(scan)
    session = Session(member, torch=torch, expected=scan.globals)
    size = scan.end - start
    reader: Any
    if scan.big:  # large arguments: the unpickler reads markers in their place
        reader = PatchedReader(src, start, scan.end, scan.big)
        base = 0
    else:
        whole = src.data is not None and start == 0 and size == len(src.data)
        reader = io.BytesIO(src.data if whole else src.read(start, size))  # type: ignore[arg-type]
        base = start
    try:
        top, used = parse_c(reader, session, encoding=encoding, persistent=pid is not None)
    except StubFailure as exc:
        _report_session(facts, session, member, torchscript, classes)
        raise StreamError(member, _at(reader, base), str(exc), refused=True) from None
    except Exception as exc:  # the loader fails here too
        _report_session(facts, session, member, torchscript, classes)
        raise StreamError(member, _at(reader, base), f"{type(exc).__name__}: {exc}", refused=False) from None
    if isinstance(reader, PatchedReader):
        used = size if reader.tell() == reader.size else reader.original(reader.tell()) - start
    if used != size or len(session.calls) != len(scan.globals):
        _report_session(facts, session, member, torchscript, classes)
        raise StreamError(
            member,
            start + used,
            f"the unpickler stops at offset {start + used}, the opcode walk at {scan.end}",
            refused=True,
        )
    if calls_out is not None:
        calls_out.extend(name for name, _, _ in session.calls)
    interp = Interpreter(
        session,
        facts,
        member=member,
        pid=pid,
        nested=nested,
        nested_pickle=_nested_pickle,
        reader=reader,
        depth=depth,
        torchscript=torchscript,
        locate=_locator(reader.getbuffer(), base, scan.blobs) if isinstance(reader, io.BytesIO) else None,
    )
    try:
        value = interp.run(top)
    except Corrupt as exc:
        raise StreamError(member, None, str(exc), refused=False) from None
    if classes is not None:
        classes.update(interp.torchscript_classes)
    return value, scan.end


def _locator(stream: memoryview, base: int, blobs: list[tuple[int, int]]) -> Callable[[bytes], int | None]:
    """Where a byte argument of the stream (``stream``, at offset ``base``) is in the file (array data): one of
    the walk's large byte arguments of that length and content."""
    by_length: dict[int, list[int]] = {}
    for offset, length in blobs:
        by_length.setdefault(length, []).append(offset)

    def locate(data: bytes) -> int | None:
        for offset in by_length.get(len(data), ()):
            if stream[offset - base : offset - base + len(data)] == data:
                return offset
        return None

    return locate


def _at(reader: Any, base: int) -> int | None:
    try:
        if isinstance(reader, PatchedReader):
            return reader.original(reader.tell())
        return base + reader.tell()
    except (OSError, ValueError):
        return None


def _report_session(
    facts: SecurityFacts, session: Session, member: str, torchscript: bool, classes: set[str] | None
) -> None:
    for name, offset, opcode in session.calls:
        if SAFE_GLOBALS.get(name) is None:
            if torchscript and name.startswith("__torch__."):
                if classes is not None:
                    classes.add(name)
            else:
                facts.add_global(name, member, offset, opcode)


def _nested_pickle(data: Any, label: str, depth: int) -> SecurityFacts:
    """The globals of a payload handed to ``pickle.loads`` (the call itself is reported already)."""
    found = SecurityFacts()
    if not isinstance(data, bytes):
        return found
    with contextlib.suppress(StreamError):  # what it saw before breaking is recorded
        parse_stream(Source(data), 0, member=label, facts=found, budget=Budget(), depth=depth)
    return found


def parse_joblib(
    file: Any,
    *,
    member: str,
    facts: SecurityFacts,
    nested: Nested | None = None,
    calls_out: list[str] | None = None,
    arrays_out: list[int] | None = None,
) -> tuple[Any, int]:
    """Judge the stream ``joblib.load`` reads from ``file`` (at its position) with the pure-Python unpickler;
    return ``(rebuilt top object, offset after it)``. ``arrays_out`` gets the offsets of the arrays' data."""
    session = Session(member, torch=False, expected=None)
    try:
        top, arrays = parse_python(file, session, joblib=True)
    except StubFailure as exc:
        _report_session(facts, session, member, False, None)
        raise StreamError(member, _at(file, 0), str(exc), refused=True) from None
    except Exception as exc:  # joblib fails here too
        _report_session(facts, session, member, False, None)
        raise StreamError(member, _at(file, 0), f"{type(exc).__name__}: {exc}", refused=False) from None
    end = file.tell()
    if calls_out is not None:
        calls_out.extend(name for name, _, _ in session.calls)
    if arrays_out is not None:
        arrays_out.extend(rec.kwargs["start"] for rec in arrays if rec.kwargs)
    interp = Interpreter(
        session, facts, member=member, nested=nested, nested_pickle=_nested_pickle, reader=file
    )
    try:
        value = interp.run(top)
    except Corrupt as exc:
        raise StreamError(member, None, str(exc), refused=False) from None
    return value, end
