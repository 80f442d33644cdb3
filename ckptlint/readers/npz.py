"""``.npz`` archives (big_vision checkpoints, ``np.savez``) and single ``.npy`` files: array headers only.

Each ``*.npy`` member is opened through ``zipfile`` and only its first bytes are read (for ZIP_DEFLATED members
``zipfile`` decompresses just enough to yield them); array data is never read or decompressed.

The npy header is parsed here instead of with ``numpy.lib.format.read_array_header_*``: importing numpy costs
~0.12 s of the CLI's ~0.15 s start-up budget, and the header is a Python literal dict that numpy itself parses with
``ast.literal_eval``. We follow numpy's rules (versions 1.0/2.0/3.0, the exact key set, the Python 2 ``L``
suffix fix-up); a ``descr`` other than a plain type string (structured, sub-array, comma-separated such as
``i4,O`` or ``(2,)O``) is handed to numpy's own ``descr_to_dtype``, which decides whether the array holds
objects. ``tests/test_reader_npz.py`` proves equality with numpy on real files. big_vision stores bfloat16 as raw
2-byte void (``<V2``/``|V2``); it is reported as ``bfloat16``.

Security is judged as ``np.load(allow_pickle=True)`` reads: numpy's 10,000-character header limit does not apply
then, so longer headers are read too (up to ckptlint's own bound); an array whose dtype holds objects is a
pickle, judged as the C unpickler parses it (:mod:`ckptlint.readers.pickle_stream`). ``np.load`` reads any
member that starts with the npy magic as an array, whatever its name, so members without the ``.npy`` suffix are
judged too (``npy_view_facts``, also used for torch zip archives).
"""

from __future__ import annotations

import ast
import io
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

from ckptlint.checkpoint import Checkpoint, TensorInfo, slash_groups, tensor_info
from ckptlint.dtypes import ITEM_BITS, NUMPY_KIND_NAMES, NUMPY_TYPESTR
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.facts import SecurityFacts
from ckptlint.readers.limits import LimitExceeded, zip_file
from ckptlint.readers.pickle_interpret import Corrupt
from ckptlint.readers.pickle_scan import Budget, Source
from ckptlint.readers.pickle_stream import StreamError, parse_stream

NPY_MAGIC = b"\x93NUMPY"
# numpy.lib.format._MAX_HEADER_SIZE: np.load refuses longer headers unless allow_pickle=True (then any length)
MAX_HEADER_CHARS = 10000
MAX_HEADER_BYTES = 1 << 20  # ckptlint's own bound on a header it reads (allow_pickle=True has none)
MAX_VIEW_MEMBERS = 1 << 16  # members whose first bytes are looked at for the npy magic
_HEADER_LEN = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}
_EXPECTED_KEYS = {"descr", "fortran_order", "shape"}
# numpy.lib.format's own rendering of a simple-dtype header, e.g. "{'descr': '<f4', 'fortran_order': False,
# 'shape': (3, 4), }"; anything else (structured dtypes, Python 2 headers, hand-written) goes through ast.
_CANONICAL_HEADER = re.compile(
    r"\{'descr': '([<>|=]?[A-Za-z][A-Za-z0-9]*(?:\[\w+\])?)', 'fortran_order': (True|False), "
    r"'shape': \(((?:\d+, )*\d+,?|)\), \}[ \n]*\Z"
)
_TYPESTR = re.compile(r"^([<>|=]?)([a-zA-Z])(\d*)(\[\w+\])?$")
_MAX_DESCR_DEPTH = 32
_STORED_HEAD_BYTES = 4096  # read at once from a stored member; numpy headers are usually 128 bytes
MAX_INLINE_PICKLE = 16 << 20  # object-array pickles up to this size are read into memory to be walked
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, struct.error)


class NpyHeader:
    """What an npy header says: shape, canonical dtype, item size and where the data starts."""

    __slots__ = ("data_offset", "dtype", "fortran_order", "itemsize", "shape")

    def __init__(
        self, shape: tuple[int, ...], dtype: str, itemsize: int, fortran_order: bool, data_offset: int
    ):
        self.shape = shape
        self.dtype = dtype
        self.itemsize = itemsize
        self.fortran_order = fortran_order
        self.data_offset = data_offset

    @property
    def nbytes(self) -> int:
        n = self.itemsize
        for d in self.shape:
            n *= d
        return n


def read(path: Path) -> Checkpoint:
    """Read every ``*.npy`` member header of the npz archive at ``path``."""
    p = str(path)
    tensors: dict[str, TensorInfo] = {}
    facts = SecurityFacts()
    other_members: list[str] = []
    others: list[zipfile.ZipInfo] = []
    try:
        with path.open("rb") as raw, zip_file(raw) as zf:
            for info in zf.infolist():
                name = info.filename
                if info.is_dir():
                    continue
                if not name.endswith(".npy"):
                    other_members.append(name)
                    others.append(info)
                    continue
                key = name[: -len(".npy")]
                header = _stored_member_header(raw, info, p)
                if header is not None and header.dtype != "object":
                    tensors[key] = _tensor(header, info.file_size, name, p)
                    continue
                with zf.open(info) as member:
                    header = read_npy_header(member, where=f"member {name}", path=p)
                    tensors[key] = _tensor(header, info.file_size, name, p)
                    if header.dtype == "object":
                        object_array_facts(
                            member,
                            start=header.data_offset,
                            end=info.file_size,
                            member=name,
                            path=p,
                            facts=facts,
                        )
            # np.load reads a member of any name that starts with the npy magic as an array (key: its name)
            facts.merge(npy_view_facts(zf, others))
    except UnreadableCheckpoint:
        raise
    except LimitExceeded as exc:
        raise UnreadableCheckpoint(p, f"npz archive refused: {exc}", facts, refused=True) from None
    except _ZIP_ERRORS as exc:
        raise UnreadableCheckpoint(p, f"corrupt npz archive: {exc}") from None
    except OSError as exc:
        raise UnreadableCheckpoint(p, f"cannot read npz archive: {exc.strerror or exc}") from None
    if not tensors:
        raise UnreadableCheckpoint(p, "not a checkpoint: the zip archive holds no .npy members")
    metadata: dict[str, Any] = {"other_members": other_members} if other_members else {}
    return Checkpoint.model_construct(
        path=p,
        format="npz",
        key_sep="/",
        tensors=tensors,
        groups=slash_groups(tensors),
        metadata=metadata,
        sidecars=[],
        files=[p],
        findings=[],
        security=facts,
    )


def _stored_member_header(raw: IO[bytes], info: zipfile.ZipInfo, path: str) -> NpyHeader | None:
    """The npy header of an uncompressed member read straight from the archive: one seek, three small reads.

    ``zipfile.open`` costs ~40 us per member (big_vision files have ~1000); this path repeats its checks (local
    header signature, same file name, no encryption) and returns None whenever anything differs, so that
    ``zipfile`` itself handles (and reports) every unusual case.
    """
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    raw.seek(info.header_offset)
    local = raw.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    if raw.read(name_len).decode(encoding, "replace") != info.orig_filename:
        return None
    raw.seek(extra_len, 1)
    # a remote file says how much to read for a header of unknown length (its bytes are fetched by range)
    head = raw.read(min(info.file_size, getattr(raw, "head_bytes", _STORED_HEAD_BYTES)))
    try:
        return read_npy_header(io.BytesIO(head), where=f"member {info.filename}", path=path)
    except UnreadableCheckpoint:
        if len(head) < info.file_size:  # a header longer than what we read: let zipfile stream it
            return None
        raise


def read_npy(path: Path) -> Checkpoint:
    """Read the header of a single ``.npy`` file; its one tensor is keyed by the file's stem."""
    p = str(path)
    try:
        size = path.stat().st_size
        facts = SecurityFacts()
        with path.open("rb") as fh:
            header = read_npy_header(fh, where="npy file", path=p)
            tensors = {path.stem: _tensor(header, size, None, p)}
            if header.dtype == "object":
                object_array_facts(
                    fh, start=header.data_offset, end=size, member=path.name, path=p, facts=facts
                )
    except OSError as exc:
        raise UnreadableCheckpoint(p, f"cannot read: {exc.strerror or exc}") from None
    return Checkpoint.model_construct(
        path=p,
        format="npy",
        key_sep="/",
        tensors=tensors,
        groups=[],
        metadata={},
        sidecars=[],
        files=[p],
        findings=[],
        security=facts,
    )


def _tensor(header: NpyHeader, stored_size: int, storage: str | None, path: str) -> TensorInfo:
    available = stored_size - header.data_offset
    if header.dtype == "object":
        # the data is a pickle of unknown element count: report the pickle's size
        return tensor_info(
            header.shape, "object", nbytes=max(available, 0), storage=storage, offset=header.data_offset
        )
    needed = header.nbytes
    if needed > available:
        where = f"member {storage}" if storage else "npy file"
        raise UnreadableCheckpoint(
            path,
            f"truncated {where}: header says shape {list(header.shape)} {header.dtype} ({needed} bytes) "
            f"but only {max(available, 0)} bytes follow the header",
        )
    return tensor_info(header.shape, header.dtype, nbytes=needed, storage=storage, offset=header.data_offset)


def _read_exact(fh: IO[bytes], n: int, what: str, where: str, path: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise UnreadableCheckpoint(path, f"truncated {where}: {what} needs {n} bytes, got {len(data)}")
    return data


def read_npy_header(fh: IO[bytes], *, where: str, path: str) -> NpyHeader:
    """Parse the npy header at the current position of ``fh`` with bounded reads (never the array data)."""
    start = _read_exact(fh, 8, "the npy magic and version", where, path)
    if not start.startswith(NPY_MAGIC):
        raise UnreadableCheckpoint(path, f"corrupt {where}: not an npy array (magic {start[:6]!r})")
    version = (start[6], start[7])
    if version not in _HEADER_LEN:
        raise UnreadableCheckpoint(
            path, f"corrupt {where}: unsupported npy format version {version[0]}.{version[1]}"
        )
    fmt, encoding = _HEADER_LEN[version]
    (hlen,) = struct.unpack(fmt, _read_exact(fh, struct.calcsize(fmt), "the header length", where, path))
    if hlen > MAX_HEADER_BYTES:  # np.load(allow_pickle=True) would read it: ckptlint refuses to judge it
        raise UnreadableCheckpoint(
            path,
            f"{where}: npy header of {hlen} bytes (larger than ckptlint reads; numpy's limit without "
            f"allow_pickle is {MAX_HEADER_CHARS} characters)",
            refused=True,
        )
    try:
        text = _read_exact(fh, hlen, "the header", where, path).decode(encoding)
    except UnicodeDecodeError:
        raise UnreadableCheckpoint(path, f"corrupt {where}: npy header is not valid {encoding}") from None
    d = _literal(text, version, where, path)
    if not isinstance(d, dict) or d.keys() != _EXPECTED_KEYS:
        raise UnreadableCheckpoint(
            path, f"corrupt {where}: npy header is not a dict with keys {sorted(_EXPECTED_KEYS)}"
        )
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(x, int) and x >= 0 for x in shape):
        raise UnreadableCheckpoint(
            path, f"corrupt {where}: npy shape {shape!r} is not a tuple of non-negative ints"
        )
    if not isinstance(d["fortran_order"], bool):
        raise UnreadableCheckpoint(
            path, f"corrupt {where}: npy fortran_order {d['fortran_order']!r} is not a bool"
        )
    described = _describe(d["descr"], 0) if isinstance(d["descr"], str) else None
    if described is None:
        described = _numpy_describe(d["descr"])
    if described is None:
        raise UnreadableCheckpoint(
            path, f"corrupt {where}: npy descr {str(d['descr'])[:80]!r} is not a valid dtype"
        )
    dtype, itemsize, sub_shape = described
    data_offset = 8 + struct.calcsize(fmt) + hlen
    return NpyHeader(
        tuple(int(x) for x in shape) + sub_shape, dtype, itemsize, d["fortran_order"], data_offset
    )


def _literal(text: str, version: tuple[int, int], where: str, path: str) -> Any:
    fast = _CANONICAL_HEADER.match(text)
    if fast is not None:  # the exact text numpy's writer produces: skip ast (~50 us per member)
        descr, fortran, dims = fast.groups()
        return {
            "descr": descr,
            "fortran_order": fortran == "True",
            "shape": tuple(int(d) for d in dims.split(",") if d.strip()),
        }
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        pass
    if version <= (2, 0):
        # files written by Python 2 spell ints as ``3L`` (numpy's _filter_header)
        try:
            return ast.literal_eval(re.sub(r"(?<=\d)L\b", "", text))
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            pass
    raise UnreadableCheckpoint(path, f"corrupt {where}: npy header is not a Python literal: {text[:80]!r}")


def _describe(descr: Any, depth: int) -> tuple[str, int, tuple[int, ...]] | None:
    """``(canonical dtype name, item size in bytes, sub-array shape)`` of an npy ``descr``, or None if invalid."""
    if depth > _MAX_DESCR_DEPTH:
        return None
    if isinstance(descr, str):
        return _describe_typestr(descr)
    if isinstance(descr, tuple) and len(descr) == 2:  # sub-array dtype: its shape extends the array's
        base = _describe(descr[0], depth + 1)
        sub = descr[1] if isinstance(descr[1], tuple) else (descr[1],)
        if base is None or not all(isinstance(x, int) and x >= 0 for x in sub):
            return None
        return base[0], base[1], base[2] + tuple(sub)
    if isinstance(descr, list):  # structured dtype: numpy names it void<bits>
        itemsize = 0
        has_object = False
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                return None
            inner = _describe(field[1] if len(field) == 2 else (field[1], field[2]), depth + 1)
            if inner is None:
                return None
            n = inner[1]
            for x in inner[2]:
                n *= x
            itemsize += n
            has_object = has_object or inner[0] == "object"
        return ("object" if has_object else f"void{itemsize * 8}"), itemsize, ()
    return None


def _describe_typestr(typestr: str) -> tuple[str, int, tuple[int, ...]] | None:
    if typestr in ITEM_BITS:  # numpy accepts plain names too ("float32")
        return typestr, max(ITEM_BITS[typestr] // 8, 1), ()
    m = _TYPESTR.match(typestr)
    if m is None:
        return None
    _, kind, size_text, unit = m.groups()
    size = int(size_text) if size_text else 0
    known = NUMPY_TYPESTR.get(f"{kind}{size_text}")
    if known is not None and unit is None:
        return known, size, ()
    if kind == "O":
        return "object", 8, ()
    if kind in "Mm" and size == 8:
        return ("datetime64" if kind == "M" else "timedelta64") + (unit or ""), 8, ()
    if unit is not None or not size_text:
        return None
    if kind in NUMPY_KIND_NAMES:
        return f"{NUMPY_KIND_NAMES[kind]}{size * 8}", size, ()
    if kind == "U":
        return f"str{size * 32}", size * 4, ()
    return None


def _numpy_describe(descr: Any) -> tuple[str, int, tuple[int, ...]] | None:
    """numpy's own reading of a ``descr`` that is not a plain type string (``numpy.lib.format.descr_to_dtype``,
    as ``np.load`` calls it): ``("object", ...)`` whenever the dtype holds objects, else its void size."""
    import numpy as np  # only for headers numpy's writer does not produce for plain arrays

    try:
        dtype = np.lib.format.descr_to_dtype(descr)
    except (TypeError, ValueError, KeyError, IndexError, RecursionError, OverflowError, MemoryError):
        return None
    sub: tuple[int, ...] = ()
    base = dtype
    if dtype.subdtype is not None:
        base, sub = dtype.subdtype
    if dtype.hasobject:
        return "object", max(dtype.itemsize, 1), ()
    simple = _describe(base.str, 0) if dtype.names is None else None
    if simple is not None:
        return simple[0], simple[1], tuple(sub) + simple[2]
    return f"void{dtype.itemsize * 8}", dtype.itemsize, ()


def object_array_facts(
    fh: IO[bytes], *, start: int, end: int, member: str, path: str, facts: SecurityFacts
) -> None:
    """Judge an object array, whose data (``fh`` from ``start`` to ``end``) is a pickle, as
    ``np.load(allow_pickle=True)`` unpickles it (one stream, the C unpickler). Raises UnreadableCheckpoint (with
    the facts seen before the break) when it does not parse."""
    size = max(end - start, 0)
    if size <= MAX_INLINE_PICKLE:  # small: one bounded read, then parse in memory
        fh.seek(start)
        src = Source(_read_exact(fh, size, "the pickled object array", member, path))
        at = 0
    else:
        src = Source(fh=fh, start=start, end=end)
        at = start
    try:
        parse_stream(src, at, member=member, facts=facts, budget=Budget())
    except (StreamError, Corrupt) as exc:
        seen = facts.names()
        reason = f"corrupt {member}: {exc}" + (
            f"; before that it imports unsafe globals: {seen}" if seen else ""
        )
        raise UnreadableCheckpoint(
            path, reason, facts, refused=bool(getattr(exc, "refused", False))
        ) from None


def npy_view_facts(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> SecurityFacts:
    """What ``np.load(allow_pickle=True)`` would run from the members of ``zf``.

    ``np.load`` opens any zip as an npz, and an npz member of any name that starts with the npy magic is read as
    an array: an object array's data is a pickle. A torch archive's member (even a storage, whose bytes torch
    reads as raw data) can be crafted to be one, so every member's first bytes are looked at. A header numpy
    refuses loads nothing; a pickle that breaks part-way has run what came before (recorded); one ckptlint
    will not judge is unverifiable.
    """
    facts = SecurityFacts()
    for info in infos[:MAX_VIEW_MEMBERS]:
        if info.is_dir() or info.file_size < len(NPY_MAGIC) or _member_head(zf, info) != NPY_MAGIC:
            continue
        name = info.filename
        try:
            with zf.open(info) as member:
                header = read_npy_header(member, where=f"member {name}", path=name)
                if header.dtype == "object":
                    object_array_facts(
                        member,
                        start=header.data_offset,
                        end=info.file_size,
                        member=name,
                        path=name,
                        facts=facts,
                    )
        except UnreadableCheckpoint as exc:
            if exc.refused:
                facts.add_unverifiable(f"an array in {name}", name, None, exc.reason)
        except (*_ZIP_ERRORS, OSError):
            continue  # numpy cannot read it either
    if len(infos) > MAX_VIEW_MEMBERS:
        facts.add_unverifiable(f"more than {MAX_VIEW_MEMBERS} members", "zip", None, "Not looked at.")
    return facts


def _member_head(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The first 6 bytes of a member: read straight from the archive for stored members (as
    ``_stored_member_header`` does: one seek, two small reads), through ``zipfile`` otherwise; b"" when
    unreadable."""
    fp = zf.fp
    if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1 and fp is not None:
        try:
            fp.seek(info.header_offset)
            local = fp.read(30)
            if len(local) == 30 and local[:4] == b"PK\x03\x04":
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                fp.seek(info.header_offset + 30 + name_len + extra_len)
                return fp.read(6)
        except (OSError, ValueError):
            return b""
    try:
        with zf.open(info) as member:
            return member.read(6)
    except (*_ZIP_ERRORS, OSError):
        return b""
