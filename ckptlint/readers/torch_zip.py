"""Reader for ``torch.save`` zip archives (torch >= 1.6; ``.pt/.pth/.bin/.ckpt``) and TorchScript archives.

Reads through ``zipfile`` only the pickles (``<archive>/data.pkl``, bounded in size) and never the ``data/*``
storage members: their sizes come from the central directory and are checked against what the tensors need.
Every ``.pkl`` member is walked for unsafe globals (torch.load reads only ``data.pkl``, but an extra pickle is
still something a user may load). TorchScript archives (``code/`` members, ``constants.pkl``) are reported as
code that runs when loaded; their tensors are still listed.

Decisions: a storage member that is missing or smaller than its tensors need makes the file unreadable (exit 2),
because ``torch.load`` fails on it too. Members whose names appear twice are judged all, reported as CK301
(a loader may read a different one than ckptlint lists), and the first one is listed. Names are compared
ignoring case, as torch's zip reader (miniz) finds members: ``archive/DATA.PKL`` is what torch.load unpickles
when there is no ``archive/data.pkl``. ``np.load(allow_pickle=True)`` reads any zip as an npz, so every member
that starts with the npy magic is judged as an array too (readers/npz.py ``npy_view_findings``).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.findings import Finding, Severity
from ckptlint.readers.npz import npy_view_findings
from ckptlint.readers.pickle_file import walk_trailing
from ckptlint.readers.pickle_globals import SecurityLog, one_line
from ckptlint.readers.pickle_tree import TreeTooLarge, flatten
from ckptlint.readers.pickle_walker import (
    MalformedPickle,
    Opaque,
    PickleWalker,
    StorageRef,
    parse_storage_pid,
    unreadable,
)
from ckptlint.remote import zip_source

MAX_PICKLE_MEMBER = 512 << 20  # a data.pkl is ~100 bytes per tensor; 512 MiB is millions of tensors
MAX_INLINE_PICKLE = 16 << 20  # pickle members up to this size are read into memory, larger ones streamed
MAX_RATIO = 1000  # decompressed/compressed size of a deflated pickle member beyond which it is a zip bomb
MAX_LISTED = 20
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


def read(path: Path) -> Checkpoint:
    """Read the structure of a torch zip archive without executing or loading any tensor data."""
    p = str(path)
    try:
        zf = zipfile.ZipFile(zip_source(path))
    except _ZIP_ERRORS as exc:
        raise UnreadableCheckpoint(p, one_line(f"corrupt zip archive: {exc}", 500)) from None
    with zf:
        return _read_archive(zf, p, path.stem, remote=not isinstance(path, Path))


def _read_archive(zf: zipfile.ZipFile, p: str, stem: str, *, remote: bool = False) -> Checkpoint:
    infos = zf.infolist()
    if not infos:
        raise UnreadableCheckpoint(p, "empty zip archive")
    prefix = infos[0].filename.split("/", 1)[0] + "/" if "/" in infos[0].filename else ""
    members: dict[str, zipfile.ZipInfo] = {}
    folded: set[str] = set()
    duplicates: list[str] = []
    for info in infos:
        # torch finds members through miniz, which compares names case-insensitively: ``a/DATA.PKL`` is loaded
        # as ``a/data.pkl``, so names that differ only in case are duplicates too
        low = info.filename.lower()
        if low in folded:
            duplicates.append(info.filename)
        folded.add(low)
        members.setdefault(info.filename, info)
    code = [n for n in members if n.startswith(f"{prefix}code/") or "/code/" in n]
    torchscript = bool(code) or any(n.lower() == f"{prefix}constants.pkl".lower() for n in members)
    log = SecurityLog(p, torchscript=torchscript)
    main = _main_pickle(members, prefix)
    if main is not None:
        prefix = main.filename[: -len("data.pkl")]
    storages = _ZipStorages(prefix)
    value: Any = None
    pickles = [i for i in infos if i.filename.lower().endswith(".pkl") and i is not main]
    for info in [*pickles, main] if main is not None else pickles:  # the others first: all are judged
        is_main = info is main
        with _pickle_source(zf, info, p, log) as source:
            walker = PickleWalker(source, log=log, member=info.filename, storage_name=info.filename)
            walker.persistent = storages.loader(walker) if is_main else _any_storage
            try:
                if is_main:
                    value = walker.walk()
                else:
                    walker.walk()
                walk_trailing(walker)
            except MalformedPickle as exc:
                if is_main:
                    raise unreadable(p, str(exc), log) from None
                log.cannot_verify(
                    f"a malformed pickle member {info.filename}", info.filename, exc.offset, exc.reason
                )
            except _ZIP_ERRORS as exc:
                raise unreadable(p, f"cannot read member {info.filename}: {exc}", log) from None
    if main is None:
        raise unreadable(p, "torch zip archive without a data.pkl member", log)
    storages.check(members, p, log)
    try:
        tree = flatten(value, sep=".", root_key=stem)
    except TreeTooLarge as exc:
        raise unreadable(p, str(exc), log) from None
    findings = log.findings()
    if torchscript:
        findings.append(_torchscript_finding(code, sorted(log.torchscript_classes), main.filename))
    if duplicates:
        findings.append(_duplicates_finding(sorted(set(duplicates))))
    # np.load(allow_pickle=True) reads the archive as an npz (remote: storages are not fetched for this)
    skip = set() if not remote else {ref.member for ref in storages.by_key.values()}
    findings.extend(npy_view_findings(zf, [i for i in infos if i.filename not in skip], p))
    metadata = tree.metadata
    byteorder = _small_member(zf, members.get(f"{prefix}byteorder"))
    if byteorder and byteorder != "little":
        metadata = {"__byteorder__": byteorder[:16], **metadata}
    return Checkpoint.model_construct(
        path=p,
        format="torch-zip",
        key_sep=".",
        tensors=tree.tensors,
        groups=tree.groups,
        metadata=metadata,
        sidecars=[],
        files=[p],
        findings=findings,
    )


def _main_pickle(members: dict[str, zipfile.ZipInfo], prefix: str) -> zipfile.ZipInfo | None:
    """The member torch.load unpickles: ``<first member's folder>/data.pkl``, matched as miniz does (ignoring
    case); without one, any ``*/data.pkl`` (so that its tensors are still listed)."""
    exact = members.get(f"{prefix}data.pkl")
    if exact is not None:
        return exact
    wanted = f"{prefix}data.pkl".lower()
    for name, info in members.items():
        if name.lower() == wanted:
            return info
    for name, info in members.items():
        low = name.lower()
        if low == "data.pkl" or low.endswith("/data.pkl"):
            return info
    return None


@contextmanager
def _pickle_source(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, p: str, log: SecurityLog
) -> Iterator[IO[bytes]]:
    """A seekable view of a pickle member: its bytes in memory when small, else the member streamed through
    ``zipfile`` (the walker skips large arguments by seeking, so memory stays bounded by what it builds)."""
    if info.file_size <= MAX_INLINE_PICKLE:
        yield io.BytesIO(_read_pickle_member(zf, info, p, log))
        return
    _check_member_size(info, p, log)
    try:
        member = zf.open(info)
    except _ZIP_ERRORS as exc:
        raise unreadable(p, f"cannot read member {info.filename}: {exc}", log) from None
    with member:
        yield member


def _any_storage(pid: Any, offset: int) -> Any:
    """Persistent ids of pickles torch.load does not read (constants.pkl, extra members): not resolved."""
    return Opaque("storage")


class _ZipStorages:
    """Storages named by ``data.pkl``: ``('storage', type, key, location, numel)`` -> ``<archive>/data/<key>``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.by_key: dict[str, StorageRef] = {}
        self.referenced_at: dict[str, int] = {}

    def loader(self, walker: PickleWalker) -> Any:
        def load(pid: Any, offset: int) -> Any:
            parsed = parse_storage_pid(walker, pid, offset, 5)
            if isinstance(parsed, Opaque):
                return parsed
            ref = self.by_key.get(parsed.key)
            if ref is not None and ref.dtype == parsed.dtype and ref.numel == parsed.numel:
                return ref
            member = f"{self.prefix}data/{parsed.key}"
            ref = StorageRef(
                parsed.key, parsed.dtype, parsed.numel, parsed.location, member, 0, parsed.untyped
            )
            if parsed.key in self.by_key:
                # the same bytes seen under another dtype: keep the larger claim for the size check
                old = self.by_key[parsed.key]
                if (old.nbytes or 0) >= (ref.nbytes or 0):
                    return ref
            self.by_key[parsed.key] = ref
            self.referenced_at.setdefault(parsed.key, offset)
            return ref

        return load

    def check(self, members: dict[str, zipfile.ZipInfo], p: str, log: SecurityLog) -> None:
        """Every storage member exists and holds at least the bytes its tensors need."""
        for key, ref in self.by_key.items():
            info = members.get(ref.member or "")
            if info is None:
                at = self.referenced_at[key]
                raise unreadable(
                    p, f"storage member {ref.member} (referenced at data.pkl offset {at}) is missing", log
                )
            needed = ref.nbytes
            if needed is not None and info.file_size < needed:
                raise unreadable(
                    p,
                    f"truncated storage member {ref.member}: holds {info.file_size} bytes, "
                    f"its {ref.numel} elements of {ref.dtype} need {needed}",
                    log,
                )


def _check_member_size(info: zipfile.ZipInfo, p: str, log: SecurityLog) -> None:
    if info.file_size > MAX_PICKLE_MEMBER:
        raise unreadable(
            p, f"pickle member {info.filename} of {info.file_size} bytes is larger than ckptlint reads", log
        )
    ratio_limit = MAX_RATIO * max(info.compress_size, 1) + (1 << 20)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > ratio_limit:
        raise unreadable(
            p,
            f"pickle member {info.filename} expands {info.compress_size} bytes to {info.file_size} (zip bomb?)",
            log,
        )


def _read_pickle_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, p: str, log: SecurityLog) -> bytes:
    _check_member_size(info, p, log)
    try:
        with zf.open(info) as fh:
            data = fh.read(info.file_size + 1)
    except _ZIP_ERRORS as exc:
        _judge_unchecked(zf, info, log)
        raise unreadable(p, f"cannot read member {info.filename}: {exc}", log) from None
    if len(data) != info.file_size:
        raise unreadable(
            p, f"member {info.filename} holds {len(data)} bytes, the zip directory says {info.file_size}", log
        )
    return data


def _judge_unchecked(zf: zipfile.ZipFile, info: zipfile.ZipInfo, log: SecurityLog) -> None:
    """Walk a pickle member whose CRC-32 does not match, for its globals only (the file is unreadable anyway).

    torch's zip reader does not check CRCs, so torch.load unpickles such a member; the error ckptlint reports
    should still name what it would import. Any other failure to read the bytes leaves nothing to judge.
    """
    try:
        with zf.open(info) as fh:
            if not hasattr(fh, "_expected_crc"):
                return
            fh._expected_crc = None  # zipfile's own switch: no CRC check for this read
            data = fh.read(min(info.file_size, MAX_INLINE_PICKLE) + 1)
    except _ZIP_ERRORS:
        return
    walker = PickleWalker(io.BytesIO(data), log=log, member=info.filename, storage_name=info.filename)
    walker.persistent = _any_storage
    try:
        walker.walk()
        walk_trailing(walker)
    except MalformedPickle:
        pass


def _small_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo | None) -> str | None:
    """A tiny text member (byteorder, version) or None when absent, large or unreadable."""
    if info is None or info.file_size > 64:
        return None
    try:
        return zf.read(info).decode("ascii", "replace").strip()
    except _ZIP_ERRORS:
        return None


def _torchscript_finding(code: list[str], classes: list[str], member: str) -> Finding:
    count = len(code)
    code = [one_line(n, 200) for n in code[:MAX_LISTED]]
    classes = [one_line(n, 200) for n in classes[:MAX_LISTED]]
    sources = [n for n in code if n.endswith(".py")] or code
    shown = ", ".join(sources[:3]) + (" …" if len(sources) > 3 else "")
    return Finding(
        code="CK301",
        severity=Severity.ERROR,
        message=f"TorchScript archive: {count} code member{'s' if count != 1 else ''} ({shown}) run "
        "when the file is loaded",
        cause="torch.jit.load compiles and runs the archive's code/ members, and torch.load hands TorchScript "
        "archives to torch.jit.load; ckptlint lists the tensors of data.pkl without running anything.",
        fix="Load it only if you trust its source. To share weights, save model.state_dict() with safetensors "
        "instead of a TorchScript archive.",
        details={"code_members": code, "classes": classes, "member": one_line(member, 200)},
    )


def _duplicates_finding(names: list[str]) -> Finding:
    names = [one_line(n, 200) for n in names[:MAX_LISTED]]
    return Finding(
        code="CK301",
        severity=Severity.ERROR,
        message=f"zip archive holds {len(names)} member name(s) more than once: {', '.join(names[:5])}",
        cause="Loaders may read a different copy than the one inspected; ckptlint judged every copy but lists "
        "the tensors of the first.",
        fix="Do not load this archive; a torch.save archive never repeats a member name.",
        details={"members": names},
    )


def walk_data_pkl(path: Path) -> tuple[Any, str]:
    """The object ``data.pkl`` rebuilds (``TensorRef`` leaves over ``StorageRef``s naming their ``data/`` member)
    and the archive's record prefix, for writers that emit it again; raises UnreadableCheckpoint as ``read`` does.
    Call it on a file ``read`` accepted: unsafe globals stay inert placeholders, as in ``read``."""
    p = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise UnreadableCheckpoint(p, one_line(f"corrupt zip archive: {exc}", 500)) from None
    with zf:
        infos = zf.infolist()
        prefix = infos[0].filename.split("/", 1)[0] + "/" if infos and "/" in infos[0].filename else ""
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            members.setdefault(info.filename, info)
        log = SecurityLog(p)
        main = _main_pickle(members, prefix)
        if main is None:
            raise unreadable(p, "torch zip archive without a data.pkl member", log)
        prefix = main.filename[: -len("data.pkl")]
        storages = _ZipStorages(prefix)
        with _pickle_source(zf, main, p, log) as source:
            walker = PickleWalker(source, log=log, member=main.filename, storage_name=main.filename)
            walker.persistent = storages.loader(walker)
            try:
                value = walker.walk()
            except MalformedPickle as exc:
                raise unreadable(p, str(exc), log) from None
        storages.check(members, p, log)
    return value, prefix
