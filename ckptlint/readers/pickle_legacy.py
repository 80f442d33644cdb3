"""Legacy ``torch.save`` files (torch before 1.6, or ``_use_new_zipfile_serialization=False``), and the streams
appended after any pickle.

Layout (``torch.serialization._legacy_load``): five pickles in a row — the magic number, the protocol version
(1001), a ``sys_info`` dict, the object itself (storages as persistent ids ``('storage', type, key, location,
numel, view)``) and the sorted list of storage keys — then, per key, an 8-byte element count and the raw bytes.
Each pickle is judged as ``torch.load`` parses it (:func:`ckptlint.readers.pickle_stream.parse_stream`); of the raw
data only the 8-byte counts are read, to place each storage and to detect truncation. Any pickle stream appended
after the data is judged too: a file is judged on all it holds.
"""

from __future__ import annotations

import copy
import struct
from typing import Any

from ckptlint.facts import SecurityFacts
from ckptlint.readers.pickle_interpret import Corrupt, Interpreter, Nested, short, storage_pid
from ckptlint.readers.pickle_scan import Budget, Scan, Source
from ckptlint.readers.pickle_stream import StreamError, parse_stream
from ckptlint.readers.pickle_values import GlobalValue, Opaque, StorageRef

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_TRAILING_STREAMS = 64
_PLAIN_BYTES = 512  # header streams (magic number, protocol, sys_info) remembered per file by their bytes
_PLAIN_KEPT = 8


def read_legacy(
    src: Source,
    start: int,
    *,
    member: str,
    facts: SecurityFacts,
    budget: Budget,
    nested: Nested | None,
    depth: int = 0,
    storage_name: str | None = None,
    first: tuple[Any, int] | None = None,
) -> tuple[Any, int]:
    """Judge a legacy torch file at ``start``; return ``(saved object, offset after its raw data)``.

    ``first`` is the already-parsed first stream ``(value, end)`` when the caller parsed it. Raises
    StreamError (not a legacy file, malformed, refused) or Corrupt (storages that do not fit).
    """

    def plain(at: int) -> tuple[Any, int]:
        for data, (known, ops) in budget.plain.items():
            if src.read(at, len(data)) == data:
                budget.ops += ops
                return copy.deepcopy(known), at + len(data)
        calls: list[str] = []
        scans: list[Scan] = []
        value, end = parse_stream(src, at, member=member, facts=facts, budget=budget,
                                  nested=nested, depth=depth, calls_out=calls, scans_out=scans)  # fmt: skip
        if not calls and not scans[0].big and end - at <= _PLAIN_BYTES and len(budget.plain) < _PLAIN_KEPT:
            budget.plain[src.read(at, end - at)] = (copy.deepcopy(value), scans[0].ops)
        return value, end

    magic, pos = first if first is not None else plain(start)
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise StreamError(member, start, "not a legacy torch file (magic number missing)", refused=False)
    version, pos = plain(pos)
    if version != LEGACY_PROTOCOL:
        raise StreamError(
            member, pos, f"legacy torch protocol version {short(version)}, not 1001", refused=False
        )
    sys_info, pos = plain(pos)
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    storages = LegacyStorages(member, storage_name, absolute=src.data is None)
    value, pos = parse_stream(src, pos, member=member, facts=facts, budget=budget,
                              pid=storages.load, nested=nested, depth=depth)  # fmt: skip
    keys, pos = plain(pos)
    if not isinstance(keys, list) or not all(isinstance(k, (str, bytes, int)) for k in keys):
        raise StreamError(member, pos, "legacy storage key list is not a list of keys", refused=False)
    end = storages.place(src, pos, [k.decode("latin-1") if isinstance(k, bytes) else str(k) for k in keys],
                         big_endian)  # fmt: skip
    return value, end


class LegacyStorages:
    """Storages named by a legacy pickle, then placed in the raw data that follows it."""

    def __init__(self, member: str, storage_name: str | None, *, absolute: bool) -> None:
        self.member = member
        self.storage_name = storage_name
        self.absolute = absolute  # offsets in the source are offsets in the file (not a copy in memory)
        self.roots: dict[str, StorageRef] = {}
        self.views: list[tuple[StorageRef, StorageRef, int]] = []  # (view, root, offset in elements)

    def load(self, pid: Any, interp: Interpreter) -> Any:
        """Persistent load: ``('storage', ...)`` becomes a StorageRef, ``('module', cls, ...)`` the class."""
        if isinstance(pid, tuple) and pid and pid[0] in ("module", b"module"):
            cls = pid[1] if len(pid) > 1 else None
            return cls if isinstance(cls, GlobalValue) else Opaque("module")  # judged where it is imported
        parsed = storage_pid(pid, 6)
        if isinstance(parsed, str):
            raise Corrupt(parsed)
        root = self.roots.get(parsed.key)
        if root is None:
            root = StorageRef(parsed.key, parsed.dtype, parsed.numel, parsed.location, self.storage_name, None,
                              parsed.untyped)  # fmt: skip
            self.roots[parsed.key] = root
        elif root.dtype != parsed.dtype or root.numel != parsed.numel:
            raise Corrupt(f"storage {parsed.key} is declared twice differently")
        if parsed.view is None:
            return root
        view_key, view_offset, view_numel = parsed.view
        if view_offset + view_numel > root.numel:
            raise Corrupt(f"storage view {view_key} lies outside its storage")
        view = StorageRef(view_key, root.dtype, view_numel, root.location, root.member, None, root.untyped)
        self.views.append((view, root, view_offset))
        return view

    def place(self, src: Source, pos: int, keys: list[str], big_endian: bool) -> int:
        """Find each storage's bytes after the key list: an 8-byte element count, then the data."""
        if set(keys) != set(self.roots):
            missing = sorted(set(self.roots) - set(keys))[:3] or sorted(set(keys) - set(self.roots))[:3]
            raise Corrupt(f"legacy storage key list does not match the storages: {missing}")
        for key in keys:
            root = self.roots[key]
            itemsize = root.itemsize or 1
            head = src.read(pos, 8)
            if len(head) != 8:
                raise Corrupt(f"truncated: storage {key} starts past the end of the data")
            (numel,) = struct.unpack(">q" if big_endian else "<q", head)
            if numel != root.numel:
                raise Corrupt(f"storage {key} holds {numel} elements, its tensors say {root.numel}")
            start = pos + 8
            root.data_offset = start if self.absolute else None
            pos = start + numel * itemsize
            if pos > src.end:
                raise Corrupt(
                    f"truncated: storage {key} needs {numel * itemsize} bytes, {src.end - start} remain"
                )
        for view, root, offset in self.views:
            view.data_offset = (
                root.data_offset + offset * (root.itemsize or 1) if root.data_offset is not None else None
            )
        return pos


def judge_trailing(src: Source, pos: int, *, member: str, facts: SecurityFacts, budget: Budget) -> int:
    """Judge every pickle stream left after ``pos`` (``pickle.load`` called again reads them); return how many.

    Bytes that do not parse as a pickle are unverifiable: an unpickler called again on the file would run
    whatever it finds there, and ckptlint cannot tell what that is (only the globals before the break are known).
    """
    count = 0
    while pos < src.end:
        if count >= MAX_TRAILING_STREAMS:
            facts.add_unverifiable(
                f"more than {MAX_TRAILING_STREAMS} pickle streams", member, pos, "Not read."
            )
            return count
        try:
            _, pos = parse_stream(src, pos, member=member, facts=facts, budget=budget)
        except StreamError as exc:
            facts.add_unverifiable(
                f"{src.end - pos} bytes after the last pickle stream", member, pos,
                f"They do not parse as a pickle ({exc.reason}).",
            )  # fmt: skip
            return count
        except Corrupt:
            return count + 1  # a stream that parses: its globals are recorded
        count += 1
    return count
