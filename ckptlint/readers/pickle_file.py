"""Reader for files that are pickles: legacy ``torch.save`` (before 1.6, or ``_use_new_zipfile_serialization=False``)
and plain pickles holding tensors or numpy arrays.

Legacy torch layout: five pickles in a row — the magic number, the protocol version (1001), a ``sys_info`` dict,
the object itself (storages as persistent ids ``('storage', type, key, location, numel, view)``) and the sorted
list of storage keys — then, per key, an 8-byte element count and the raw bytes. Only the pickles are walked;
of the raw data only the 8-byte counts are read, to place each storage and to detect truncation. Any pickle
stream appended after the data (or after a plain pickle's STOP) is walked too: a file is judged on all it holds.

Files that start with a valid tar header go to :mod:`ckptlint.readers.torch_tar` first, as in ``torch.load``.
:func:`unsafe_pickle_view` judges files read as another format for what an unpickler would see in them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.findings import Finding
from ckptlint.readers.pickle_globals import SecurityLog, danger_of
from ckptlint.readers.pickle_tree import Tree, TreeTooLarge, flatten
from ckptlint.readers.pickle_walker import (
    MalformedPickle,
    Opaque,
    PickleWalker,
    StoragePid,
    StorageRef,
    parse_storage_pid,
    short,
    unreadable,
)
from ckptlint.readers.sniff import TAR_BLOCK, is_tar_header
from ckptlint.readers.torch_tar import NotTorchTar, read_tar

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


def read(path: Path) -> Checkpoint:
    """Read a legacy torch file, a tar-format torch file or a plain pickle without executing it."""
    p = str(path)
    log = SecurityLog(p)
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            if is_tar_header(fh.read(TAR_BLOCK)):  # torch.load tries the tar format before the pickle one
                try:
                    tar = read_tar(fh, path=p, size=size, stem=path.stem, log=log)
                except NotTorchTar as exc:
                    unsafe_pickle_view(fh, path.name, log)
                    raise unreadable(p, str(exc), log) from None
                if tar is not None:
                    # pickle.load and np.load(allow_pickle=True) would still read the file as a pickle
                    unsafe_pickle_view(fh, path.name, log)
                    tar.findings = log.findings()
                    return tar
            walker = PickleWalker(fh, log=log, member=path.name)
            first = walker.walk()
            legacy = type(first) is int and first == LEGACY_MAGIC
            value = walk_legacy(walker, first) if legacy else first
            walk_trailing(walker)
        tree = flatten(value, sep=".", root_key=path.stem)
    except MalformedPickle as exc:
        raise unreadable(p, str(exc), log) from None
    except TreeTooLarge as exc:
        raise unreadable(p, str(exc), log) from None
    except OSError as exc:
        raise UnreadableCheckpoint(p, f"cannot read: {exc.strerror or exc}") from None
    return Checkpoint.model_construct(
        path=p,
        format="torch-legacy" if legacy else "pickle",
        key_sep=".",
        tensors=tree.tensors,
        groups=tree.groups,
        metadata=tree.metadata,
        sidecars=[],
        files=[p],
        findings=log.findings(),
    )


MAX_VIEW_STREAMS = 5  # a legacy torch file is 5 streams; pickle.load and np.load read one


def unsafe_pickle_view(
    fh: IO[bytes], name: str, log: SecurityLog | None = None, *, evidence: bool = False
) -> list[str]:
    """Importable globals outside the safe set that unpickling ``fh`` from its first byte would import.

    For files read as another format: ``torch.load(weights_only=False)``, ``np.load(allow_pickle=True)`` and
    ``pickle.load`` unpickle any file that is not a zip (nor an npy file, for numpy), so a safetensors or msgpack
    file crafted to be a pickle too (a polyglot) runs code there. Streams are walked until one does not parse;
    that is the normal case for a genuine file, and costs a few bytes. Names that are not dotted identifiers are
    ignored: nothing can import them, and random bytes produce them. ``log`` (if given) records what is found.
    ``evidence`` (for files of no known format, text files included): report only when a stream parses to its
    STOP or a global is a known-dangerous one, so that a text file whose first lines read as a GLOBAL
    (``c`` + two lines) stays "not a checkpoint".
    """
    probe = SecurityLog(name)
    streams = 0
    try:
        walker = PickleWalker(fh, log=probe, member=name, start=0)
        for _ in range(MAX_VIEW_STREAMS):
            walker.walk()
            streams += 1
            if walker.at_end():
                break
    except Exception:  # a probe of a non-pickle: whatever stops it, what it saw so far counts
        pass
    found = [n for n in probe.uses if all(part.isidentifier() for part in n.split("."))]
    if evidence and not streams and not any(danger_of(n) for n in found):
        return []
    if log is not None:
        for fullname in found:
            use = probe.uses[fullname]
            note = "The file is also a pickle: torch.load(weights_only=False) or pickle.load would import it."
            for offset in use.offsets:
                log.unsafe_global(fullname, use.member, offset, use.opcode, note=note)
    return found


@dataclass
class EmbeddedPickle:
    """A pickle found inside another format (an ``.npy`` object array): its tree and its CK301 findings."""

    tree: Tree
    findings: list[Finding]


def read_embedded(
    fh: IO[bytes], *, path: str, member: str, start: int, end: int, root_key: str, sep: str = "."
) -> EmbeddedPickle:
    """Walk the pickle stream(s) of ``fh`` between ``start`` and ``end`` (e.g. an object array's data).

    ``fh`` must be seekable (a file, or a zip member opened with ``ZipFile.open``). Raises UnreadableCheckpoint
    (carrying ``.findings``) when the data is not a pickle.
    """
    log = SecurityLog(path)
    walker = PickleWalker(fh, log=log, member=member, start=start, end=end, storage_name=member)
    try:
        value = walker.walk()
        walk_trailing(walker)
        tree = flatten(value, sep=sep, root_key=root_key)
    except (MalformedPickle, TreeTooLarge) as exc:
        raise unreadable(path, str(exc), log) from None
    return EmbeddedPickle(tree, log.findings())


def walk_trailing(walker: PickleWalker) -> int:
    """Walk every pickle stream left after the current position; return how many there were.

    Data that does not parse as a pickle is reported as unverifiable (CK301): an unpickler called again on the
    file would run whatever it finds there, and ckptlint cannot tell what that is.
    """
    count = 0
    while not walker.at_end():
        start = walker.pos
        try:
            walker.walk()
        except MalformedPickle as exc:
            walker.log.cannot_verify(
                f"{walker.end - start} bytes after the last pickle stream",
                walker.member,
                start,
                f"They do not parse as a pickle ({exc.reason}).",
            )
            return count
        count += 1
    return count


def walk_legacy(walker: PickleWalker, first: Any = None) -> Any:
    """Walk a legacy ``torch.save`` from the walker's position; return the saved object.

    ``first`` is the already-walked magic number, if any. Storages get the absolute offset of their bytes;
    the walker is left after the raw data, where any appended stream would start.
    """
    if first is None:
        first = walker.walk()
    if type(first) is not int or first != LEGACY_MAGIC:
        raise MalformedPickle(walker.member, 0, "not a legacy torch file (magic number missing)")
    version = walker.walk()
    if version != LEGACY_PROTOCOL:
        raise MalformedPickle(
            walker.member, walker.pos, f"legacy torch protocol version {short(version)}, not 1001"
        )
    sys_info = walker.walk()
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    storages = _LegacyStorages(walker)
    walker.persistent = storages.load
    try:
        value = walker.walk()
    finally:
        walker.persistent = None
    keys = walker.walk()
    if not isinstance(keys, list) or not all(isinstance(k, (str, bytes, int)) for k in keys):
        raise MalformedPickle(walker.member, walker.pos, "legacy storage key list is not a list of keys")
    storages.place([k.decode("latin-1") if isinstance(k, bytes) else str(k) for k in keys], big_endian)
    return value


class _LegacyStorages:
    """Storages named by a legacy pickle, then placed in the raw data that follows it."""

    def __init__(self, walker: PickleWalker) -> None:
        self.walker = walker
        self.roots: dict[str, StorageRef] = {}
        self.views: list[tuple[StorageRef, StorageRef, int]] = []  # (view, root, offset in elements)

    def load(self, pid: Any, offset: int) -> Any:
        """Persistent load: ``('storage', ...)`` becomes a StorageRef, ``('module', cls, ...)`` the class."""
        if isinstance(pid, tuple) and pid and pid[0] in ("module", b"module"):
            return pid[1] if len(pid) > 1 else Opaque("module")  # the class global is already judged
        parsed = parse_storage_pid(self.walker, pid, offset, 6)
        if isinstance(parsed, Opaque):
            return parsed
        root = self._root(parsed)
        if parsed.view is None:
            return root
        view_key, view_offset, view_numel = parsed.view
        if view_offset + view_numel > root.numel:
            raise MalformedPickle(
                self.walker.member, offset, f"storage view {view_key} lies outside its storage"
            )
        view = StorageRef(view_key, root.dtype, view_numel, root.location, root.member, None, root.untyped)
        self.views.append((view, root, view_offset))
        return view

    def _root(self, pid: StoragePid) -> StorageRef:
        root = self.roots.get(pid.key)
        if root is None:
            root = StorageRef(
                pid.key, pid.dtype, pid.numel, pid.location, self.walker.storage_name, None, pid.untyped
            )
            self.roots[pid.key] = root
        elif root.dtype != pid.dtype or root.numel != pid.numel:
            raise MalformedPickle(
                self.walker.member, self.walker.pos, f"storage {pid.key} is declared twice differently"
            )
        return root

    def place(self, keys: list[str], big_endian: bool) -> None:
        """Find each storage's bytes after the key list: an 8-byte element count, then the data."""
        walker = self.walker
        if set(keys) != set(self.roots):
            missing = sorted(set(self.roots) - set(keys))[:3] or sorted(set(keys) - set(self.roots))[:3]
            raise MalformedPickle(
                walker.member, walker.pos, f"legacy storage key list does not match the storages: {missing}"
            )
        pos = walker.pos
        fh = walker.fh
        for key in keys:
            root = self.roots[key]
            itemsize = root.itemsize or 1
            if pos + 8 > walker.end:
                raise MalformedPickle(
                    walker.member, pos, f"truncated: storage {key} starts past the end of the data"
                )
            fh.seek(pos)
            (numel,) = struct.unpack(">q" if big_endian else "<q", fh.read(8))
            if numel != root.numel:
                raise MalformedPickle(
                    walker.member, pos, f"storage {key} holds {numel} elements, its tensors say {root.numel}"
                )
            start = pos + 8
            root.data_offset = start if walker.absolute else None
            pos = start + numel * itemsize
            if pos > walker.end:
                raise MalformedPickle(
                    walker.member,
                    start,
                    f"truncated: storage {key} needs {numel * itemsize} bytes, {walker.end - start} remain",
                )
        for view, root, offset in self.views:
            view.data_offset = (
                root.data_offset + offset * (root.itemsize or 1) if root.data_offset is not None else None
            )
        walker.pos = pos
