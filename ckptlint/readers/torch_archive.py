"""``torch.save`` zip archives (torch >= 1.6) and TorchScript archives, read as ``torch.load`` reads them.

``torch.load`` takes a file whose first four bytes are ``PK\\x03\\x04`` as a zip and reads it with its own zip
reader (miniz, in ``torch._C.PyTorchFileReader``): the archive's folder is the first central-directory entry's,
members are found ignoring case, CRCs are not checked. ``np.load(allow_pickle=True)`` reads the same file with
``zipfile``. Where the two could read different bytes, the archive is refused (:class:`ArchiveRefused`):
member names that repeat (ignoring case), data prepended to the archive (``zipfile`` shifts every offset,
miniz does not), local headers that disagree with the central directory, members that overlap, a CRC that does
not match (torch reads the member anyway, ``zipfile`` refuses it). Within an archive that passes, ``data.pkl``
is judged as ``torch.load`` parses it, every other ``*.pkl`` member as an unpickler would, every member that
starts with the npy magic as ``np.load`` would (:func:`ckptlint.readers.npz.npy_view_facts`); ``data/*``
storage members are never read, only their sizes checked.
"""

from __future__ import annotations

import io
import itertools
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import IO, Any

from ckptlint.facts import SecurityFacts, TorchScript, one_line
from ckptlint.readers.limits import LimitExceeded, zip_file
from ckptlint.readers.npz import npy_view_facts
from ckptlint.readers.pickle_interpret import Corrupt, Interpreter, Nested, storage_pid
from ckptlint.readers.pickle_legacy import judge_trailing
from ckptlint.readers.pickle_scan import Budget, Source
from ckptlint.readers.pickle_stream import StreamError, parse_stream
from ckptlint.readers.pickle_values import Opaque, StorageRef

MAX_MEMBERS = 1 << 18  # members listed in one archive
MAX_PICKLE_MEMBERS = 64  # *.pkl members judged in one archive
MAX_PICKLE_MEMBER = 512 << 20  # a data.pkl is ~100 bytes per tensor; 512 MiB is millions of tensors
MAX_INLINE_MEMBER = 16 << 20  # pickle members up to this size are read into memory, larger ones streamed
MAX_RATIO = 1000  # decompressed/compressed size of a deflated pickle member beyond which it is a zip bomb
MAX_LISTED = 20
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


class ArchiveError(Exception):
    """The archive cannot be read (``refused=False``: torch fails too) or ckptlint will not judge it."""

    def __init__(self, reason: str, *, refused: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused


@dataclass
class Archive:
    """What a torch zip archive holds, as judged."""

    value: Any = None  # the object data.pkl rebuilds
    facts: SecurityFacts = field(default_factory=SecurityFacts)
    byteorder: str | None = None
    prefix: str = ""  # the folder of data.pkl (``archive/``)


def check_zip(zf: zipfile.ZipFile, fp: IO[bytes], size: int) -> None:
    """Refuse an archive that miniz (torch) and ``zipfile`` (numpy) could read differently."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"zip archive of more than {MAX_MEMBERS} members", refused=True)
    seen: set[str] = set()
    for info in infos:
        low = info.filename.lower()
        if low in seen:
            raise ArchiveError(
                f"member name {one_line(info.filename, 200)} appears more than once (ignoring case): torch and "
                "zipfile may read different copies; every copy was judged",
                refused=True,
            )
        seen.add(low)
    endrec = zipfile._EndRecData(fp)  # type: ignore[attr-defined]  (the record zipfile itself used)
    if endrec is None:
        raise ArchiveError("no end of central directory record", refused=False)
    concat = endrec[9] - endrec[5] - endrec[6]  # location - size - offset of the central directory
    if endrec[0] == b"PK\x06\x06":
        concat -= 76  # the zip64 end record and its locator
    if concat:
        raise ArchiveError(
            f"{concat} bytes prepended to the archive: zipfile shifts every member by them, torch does not",
            refused=True,
        )
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        fp.seek(info.header_offset)
        local = fp.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ArchiveError(f"member {one_line(info.filename, 200)} has no local header", refused=False)
        flags, method = struct.unpack("<HH", local[6:10])
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        name = fp.read(name_len)
        encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
        if (
            name != info.orig_filename.encode(encoding, "surrogateescape")
            or method != info.compress_type
            or (flags & 0x1) != (info.flag_bits & 0x1)
        ):
            raise ArchiveError(
                f"the local header of {one_line(info.filename, 200)} disagrees with the central directory",
                refused=True,
            )
        start = info.header_offset + 30 + name_len + extra_len
        spans.append((start, start + info.compress_size, info.filename))
    spans.sort()
    for (_, a1, a), (b0, _, b) in itertools.pairwise(spans):
        if b0 < a1:
            raise ArchiveError(f"members {one_line(a, 100)} and {one_line(b, 100)} overlap", refused=True)
    if spans and spans[-1][1] > size:
        raise ArchiveError(
            f"member {one_line(spans[-1][2], 200)} runs past the end of the file", refused=False
        )


def main_pickle(members: dict[str, zipfile.ZipInfo], prefix: str) -> zipfile.ZipInfo | None:
    """The member torch.load unpickles: ``<first member's folder>/data.pkl``, found ignoring case as miniz
    does; without one, any ``*/data.pkl`` (so that its tensors are still listed)."""
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


def _check_member(info: zipfile.ZipInfo) -> None:
    if info.file_size > MAX_PICKLE_MEMBER:
        raise ArchiveError(
            f"pickle member {info.filename} of {info.file_size} bytes is larger than ckptlint reads",
            refused=True,
        )
    ratio_limit = MAX_RATIO * max(info.compress_size, 1) + (1 << 20)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > ratio_limit:
        raise ArchiveError(
            f"pickle member {info.filename} expands {info.compress_size} bytes to {info.file_size} (zip bomb?)",
            refused=True,
        )


def _open_unchecked(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes]:
    """The member as torch reads it: without checking its CRC (checked separately)."""
    fh = zf.open(info)
    if hasattr(fh, "_expected_crc"):
        fh._expected_crc = None  # zipfile's own switch
    return fh


def member_source(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[Source, bool, IO[bytes] | None]:
    """A pickle member as a Source (its bytes in memory when small, else the member streamed), whether its CRC
    matched, and the open member to close."""
    _check_member(info)
    try:
        if info.file_size <= MAX_INLINE_MEMBER:
            with _open_unchecked(zf, info) as fh:
                data = fh.read(info.file_size + 1)
            if len(data) != info.file_size:
                raise ArchiveError(
                    f"member {info.filename} holds {len(data)} bytes, the zip directory says {info.file_size}",
                    refused=False,
                )
            return Source(data), zlib.crc32(data) == info.CRC, None
        crc, n = 0, 0
        with _open_unchecked(zf, info) as fh:
            while chunk := fh.read(1 << 20):
                crc, n = zlib.crc32(chunk, crc), n + len(chunk)
        if n != info.file_size:
            raise ArchiveError(
                f"member {info.filename} holds {n} bytes, the zip directory says {info.file_size}",
                refused=False,
            )
        fh = _open_unchecked(zf, info)
        return Source(fh=fh, start=0, end=info.file_size), crc == info.CRC, fh
    except ZIP_ERRORS as exc:
        raise ArchiveError(f"cannot read member {info.filename}: {exc}", refused=False) from None


def read_archive(
    zf: zipfile.ZipFile,
    fp: IO[bytes],
    size: int,
    *,
    nested: Nested | None,
    depth: int = 0,
    label: str = "",
    remote: bool = False,
    into: Archive | None = None,
    budget: Budget | None = None,
) -> Archive:
    """Judge a torch zip archive (see the module docstring). Raises ArchiveError, StreamError or Corrupt; what
    was seen before is in ``into.facts`` when the caller passes ``into``."""
    out = into if into is not None else Archive()
    facts = out.facts
    infos = zf.infolist()
    if not infos:
        raise ArchiveError("empty zip archive", refused=False)
    refusal: ArchiveError | None = None
    if not remote:
        try:
            check_zip(zf, fp, size)
        except ArchiveError as exc:  # judged all the same (every copy, as zipfile reads them), then refused
            if not exc.refused:
                raise
            refusal = exc
    prefix = infos[0].filename.split("/", 1)[0] + "/" if "/" in infos[0].filename else ""
    members = {info.filename: info for info in infos}
    code = [n for n in members if n.startswith(f"{prefix}code/") or "/code/" in n]
    torchscript = any(n.lower() == f"{prefix}constants.pkl".lower() for n in members) or bool(code)
    main = main_pickle(members, prefix)
    if main is not None:
        prefix = main.filename[: -len("data.pkl")]
    out.prefix = prefix
    storages = _ZipStorages(prefix)
    budget = budget if budget is not None else Budget()
    classes: set[str] = set()
    pickles = [i for i in infos if i.filename.lower().endswith(".pkl") and i is not main]
    if len(pickles) > MAX_PICKLE_MEMBERS:
        raise ArchiveError(f"more than {MAX_PICKLE_MEMBERS} pickle members", refused=True)
    bad_crc: str | None = None
    for info in [*pickles, *([main] if main is not None else [])]:  # the others first: all are judged
        try:
            src, crc_ok, opened = member_source(zf, info)
        except ArchiveError:
            if refusal is None:
                raise
            continue
        if not crc_ok:
            bad_crc = bad_crc or info.filename
        member = f"{label}{info.filename}"
        is_main = info is main
        try:
            value, end = parse_stream(
                src, 0, member=member, facts=facts, budget=budget, torch=True,
                pid=storages.load if is_main else _any_storage, nested=nested, depth=depth,
                torchscript=torchscript, classes=classes,
            )  # fmt: skip
            if is_main:
                out.value = value
            judge_trailing(src, end, member=member, facts=facts, budget=budget)
        except (StreamError, Corrupt) as exc:
            if is_main and refusal is None:
                raise
            reason = exc.reason if isinstance(exc, StreamError) else str(exc)
            offset = getattr(exc, "offset", None)
            facts.add_unverifiable(f"a malformed pickle member {info.filename}", member, offset, reason)
        finally:
            if opened is not None:
                opened.close()
    if refusal is not None:
        raise refusal
    if bad_crc is not None:
        raise ArchiveError(
            f"CRC-32 mismatch in member {bad_crc}: torch reads it anyway, zipfile refuses it", refused=True
        )
    if main is None:
        raise ArchiveError("torch zip archive without a data.pkl member", refused=False)
    storages.check(members)
    if torchscript:
        facts.torchscript.append(
            TorchScript(
                main.filename,
                [one_line(n, 200) for n in code[:MAX_LISTED]],
                [one_line(n, 200) for n in sorted(classes)[:MAX_LISTED]],
            )
        )
    # np.load(allow_pickle=True) reads the archive as an npz (remote: storages are not fetched for this)
    skip = set() if not remote else {ref.member for ref in storages.by_key.values()}
    facts.merge(npy_view_facts(zf, [i for i in infos if i.filename not in skip]))
    byteorder = _small_member(zf, members.get(f"{prefix}byteorder"))
    out.byteorder = byteorder if byteorder and byteorder != "little" else None
    return out


def _any_storage(pid: Any, interp: Interpreter) -> Any:
    """Persistent ids of pickles torch.load does not read (constants.pkl, extra members): not resolved."""
    return Opaque("storage")


class _ZipStorages:
    """Storages named by ``data.pkl``: ``('storage', type, key, location, numel)`` -> ``<archive>/data/<key>``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.by_key: dict[str, StorageRef] = {}

    def load(self, pid: Any, interp: Interpreter) -> Any:
        parsed = storage_pid(pid, 5)
        if isinstance(parsed, str):
            raise Corrupt(parsed)
        ref = self.by_key.get(parsed.key)
        if ref is not None and ref.dtype == parsed.dtype and ref.numel == parsed.numel:
            return ref
        member = f"{self.prefix}data/{parsed.key}"
        new = StorageRef(parsed.key, parsed.dtype, parsed.numel, parsed.location, member, 0, parsed.untyped)
        if ref is None or (new.nbytes or 0) > (ref.nbytes or 0):  # keep the larger claim for the size check
            self.by_key[parsed.key] = new
        return new

    def check(self, members: dict[str, zipfile.ZipInfo]) -> None:
        """Every storage member exists and holds at least the bytes its tensors need."""
        for ref in self.by_key.values():
            info = members.get(ref.member or "")
            if info is None:
                raise Corrupt(f"storage member {ref.member} is missing")
            if ref.nbytes is not None and info.file_size < ref.nbytes:
                raise Corrupt(
                    f"truncated storage member {ref.member}: holds {info.file_size} bytes, its {ref.numel} "
                    f"elements of {ref.dtype} need {ref.nbytes}"
                )


def _small_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo | None) -> str | None:
    """A tiny text member (byteorder, version) or None when absent, large or unreadable."""
    if info is None or info.file_size > 64:
        return None
    try:
        return zf.read(info).decode("ascii", "replace").strip()
    except ZIP_ERRORS:
        return None


def open_zip(data: bytes | IO[bytes]) -> tuple[zipfile.ZipFile, IO[bytes], int]:
    """A ZipFile over bytes or a seekable file object, with its raw file object and size."""
    fp: IO[bytes] = io.BytesIO(data) if isinstance(data, bytes) else data
    size = fp.seek(0, 2)
    fp.seek(0)
    try:
        return zip_file(fp), fp, size
    except LimitExceeded as exc:
        raise ArchiveError(f"zip archive refused: {exc}", refused=True) from None
    except ZIP_ERRORS as exc:
        raise ArchiveError(one_line(f"corrupt zip archive: {exc}", 500), refused=False) from None
