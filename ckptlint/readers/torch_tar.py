"""Legacy tar-format ``torch.save`` files (torch before 0.1.10), which ``torch.load`` still reads.

Why it matters although nobody writes them any more: ``torch.load(path, weights_only=False)`` tries this format
*before* the pickle one for every file that does not start with ``PK\\x03\\x04``, so any file whose first 512
bytes are a valid tar header (a safetensors, npy or msgpack file can be crafted to be one) is loaded as a tar:
the ``storages``, ``tensors`` and ``pickle`` members are unpickled with an unrestricted unpickler.

Layout (``torch.serialization._legacy_load.legacy_load``): ``storages`` holds a pickled count, then per storage a
pickled ``(key, location, storage_type)``, an 8-byte element count and the raw bytes, then a pickled list of
views ``(key, root_key, offset, numel)``; ``tensors`` holds a pickled count, then per tensor a pickled
``(key, storage_key, tensor_type)``, ``ndim`` (int32 + 4 padding bytes), sizes, strides and the storage offset
(int64 each); ``pickle`` is the saved object, tensors as persistent ids ``str(key)``. Every pickle is walked
(never loaded), the raw bytes are skipped. Members are found the way ``tarfile`` finds them for torch (exact name,
last one wins); anything ``tarfile`` would do differently from reading a plain regular member (links, sparse
files, extended headers larger than ckptlint reads) fails closed as CK301.
"""

from __future__ import annotations

import struct
from typing import IO, Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.facts import SecurityFacts
from ckptlint.readers.pickle_globals import STORAGE_DTYPES
from ckptlint.readers.pickle_interpret import Corrupt, Interpreter, short
from ckptlint.readers.pickle_scan import Budget, Source
from ckptlint.readers.pickle_stream import StreamError, parse_stream
from ckptlint.readers.pickle_tensors import MAX_DIM
from ckptlint.readers.pickle_tree import flatten
from ckptlint.readers.pickle_values import GlobalValue, Opaque, StorageRef, TensorRef
from ckptlint.readers.tar_probe import BoundedReader, TooLarge

MAX_MEMBERS = 10_000  # tar headers read before giving up (each costs a 512-byte read)
MAX_NDIM = 64
TORCH_MEMBERS = ("storages", "tensors", "pickle")


class NotTorchTar(Exception):
    """A tar archive without any of torch's members: torch.load fails on it before unpickling anything."""


def read_tar(fh: IO[bytes], *, path: str, size: int, stem: str, facts: SecurityFacts) -> Checkpoint | None:
    """Read a tar-format torch file; None when ``tarfile`` rejects it (torch then reads it as a pickle).

    A member torch would unpickle that does not parse is unverifiable (CK301). Raises NotTorchTar for a tar
    archive that holds none of torch's members.
    """
    import tarfile

    fh.seek(0)
    try:
        tar = tarfile.open(fileobj=BoundedReader(fh), mode="r:")  # noqa: SIM115 (closed below)
    except tarfile.TarError:
        return None
    except TooLarge as exc:
        facts.add_unverifiable(
            "a tar archive", "tar", 0, f"{exc}; torch.load reads tar files before pickles."
        )
        return _checkpoint(path, {}, {}, facts)
    members: dict[str, tarfile.TarInfo] = {}
    with tar:
        try:
            for count, info in enumerate(_iter_members(tar)):
                if count >= MAX_MEMBERS:
                    facts.add_unverifiable(
                        f"a tar archive of more than {MAX_MEMBERS} members", "tar", info.offset, "Not read."
                    )
                    break
                if info.name in TORCH_MEMBERS:
                    members[info.name] = info  # tarfile.getmember: the last one of that name
        except (tarfile.TarError, TooLarge, EOFError) as exc:
            facts.add_unverifiable("a tar archive", "tar", fh.tell(), f"Its headers cannot be read: {exc}.")
    if not members:
        raise NotTorchTar(
            "not a checkpoint: tar archive without torch's storages, tensors and pickle members"
        )
    reader = _TarReader(fh, size, facts)
    for name in TORCH_MEMBERS:
        info = members.get(name)
        if info is None:
            facts.add_unverifiable(
                f"a tar archive without a {name} member", "tar", 0, "torch.load reads it as a torch tar file."
            )
            continue
        if not info.isreg() or info.issparse() or info.offset_data + info.size > size:
            facts.add_unverifiable(
                f"tar member {name} that is not a plain regular file",
                name,
                info.offset,
                "tarfile would follow a link, rebuild a sparse file or read past the end instead of the bytes "
                "ckptlint can see.",
            )
            continue
        reader.walk_member(name, info.offset_data, info.offset_data + info.size)
    tree = flatten(reader.value, sep=".", root_key=stem) if reader.value is not None else None
    tensors = tree.tensors if tree else {}
    metadata = tree.metadata if tree else {}
    ckpt = _checkpoint(path, tensors, metadata, facts)
    ckpt.groups = tree.groups if tree else []
    return ckpt


def tar_value(fh: IO[bytes], *, path: str, size: int) -> Any:
    """The object the ``pickle`` member rebuilds (``TensorRef`` leaves over ``StorageRef``s placed in the file), for
    writers that emit it again; None when ``fh`` is not a torch tar file. Call it on a file ``read_tar`` accepted."""
    import tarfile

    fh.seek(0)
    try:
        tar = tarfile.open(fileobj=BoundedReader(fh), mode="r:")  # noqa: SIM115 (closed below)
    except (tarfile.TarError, TooLarge):
        return None
    members: dict[str, tarfile.TarInfo] = {}
    with tar:
        for count, info in enumerate(_iter_members(tar)):
            if count >= MAX_MEMBERS:
                break
            if info.name in TORCH_MEMBERS:
                members[info.name] = info
    if set(members) != set(TORCH_MEMBERS):
        return None
    reader = _TarReader(fh, size, SecurityFacts())
    for name in TORCH_MEMBERS:
        info = members[name]
        reader.walk_member(name, info.offset_data, info.offset_data + info.size)
    return reader.value


def _iter_members(tar: Any) -> Any:
    """``tar``'s members one header at a time (``getmembers`` would read all of them before any check)."""
    info = tar.firstmember
    tar.firstmember = None
    while info is not None:
        yield info
        info = tar.next()


def _checkpoint(
    path: str, tensors: dict[str, Any], metadata: dict[str, Any], facts: SecurityFacts
) -> Checkpoint:
    return Checkpoint.model_construct(
        path=path,
        format="torch-tar",
        key_sep=".",
        tensors=tensors,
        groups=[],
        metadata=metadata,
        sidecars=[],
        files=[path],
        findings=[],
        security=facts,
    )


class _TarReader:
    """Judges the three members in torch's order and rebuilds storages, tensors and the saved object."""

    def __init__(self, fh: IO[bytes], size: int, facts: SecurityFacts) -> None:
        self.fh = fh
        self.size = size
        self.facts = facts
        self.budget = Budget()
        self.storages: dict[Any, StorageRef] = {}
        self.tensors: dict[Any, TensorRef] = {}
        self.value: Any = None

    def walk_member(self, name: str, start: int, end: int) -> None:
        src = Source.of_file(self.fh, start, end)
        self.src, self.name, self.pos = src, name, start
        try:
            if name == "storages":
                self._storages()
            elif name == "tensors":
                self._tensors()
            else:
                self.value, _ = parse_stream(src, start, member=name, facts=self.facts, budget=self.budget,
                                             pid=self._persistent)  # fmt: skip
        except (StreamError, Corrupt) as exc:
            reason = exc.reason if isinstance(exc, StreamError) else str(exc)
            self.facts.add_unverifiable(
                f"a malformed tar member {name}",
                name,
                getattr(exc, "offset", self.pos),
                f"It does not parse ({reason}).",
            )

    def _load(self) -> Any:
        value, self.pos = parse_stream(
            self.src, self.pos, member=self.name, facts=self.facts, budget=self.budget
        )
        return value

    def _count(self, per_item: int) -> int:
        n = self._load()
        if type(n) is not int or not 0 <= n <= (self.src.end - self.pos) // per_item:
            raise Corrupt(f"item count {short(n)} does not fit the member")
        return n

    def _raw(self, n: int) -> bytes:
        data = self.src.read(self.pos, n)
        if len(data) != n:
            raise Corrupt(f"{n} raw bytes run past the end of the member")
        self.pos += n
        return data

    def _storages(self) -> None:
        for _ in range(self._count(10)):
            args = self._load()
            if not isinstance(args, tuple) or len(args) != 3:
                raise Corrupt("storage entry is not (key, location, storage_type)")
            key, location, stype = args
            cls = stype.name.rsplit(".", 1)[1] if isinstance(stype, GlobalValue) else None
            if cls not in STORAGE_DTYPES:
                raise Corrupt("storage type is not a torch storage class")
            (numel,) = struct.unpack("<q", self._raw(8))
            if numel < 0:
                raise Corrupt(f"storage {short(key)} of {numel} elements")
            ref = StorageRef(str(key), STORAGE_DTYPES[cls], numel, str(location)[:64], None, self.pos)
            self.pos += ref.nbytes or 0
            if self.pos > self.src.end:
                raise Corrupt(f"storage {short(key)} runs past the end of the member")
            self._put(self.storages, key, ref)
        views = self._load()
        if not isinstance(views, list):
            raise Corrupt("storage views are not a list")
        for view in views:
            if not isinstance(view, tuple) or len(view) != 4:
                raise Corrupt("storage view is not (key, root, offset, numel)")
            key, root_key, offset, numel = view
            root = self._get(self.storages, root_key)
            if (
                type(offset) is not int
                or type(numel) is not int
                or not 0 <= offset <= offset + numel <= root.numel
            ):
                raise Corrupt(f"storage view {short(key)} lies outside its storage")
            itemsize = root.itemsize or 1
            ref = StorageRef(str(key), root.dtype, numel, root.location, None,
                             (root.data_offset or 0) + offset * itemsize)  # fmt: skip
            self._put(self.storages, key, ref)

    def _tensors(self) -> None:
        for _ in range(self._count(16)):
            args = self._load()
            if not isinstance(args, tuple) or len(args) != 3:
                raise Corrupt("tensor entry is not (key, storage_key, tensor_type)")
            key, storage_key = args[0], args[1]
            storage = self._get(self.storages, storage_key)
            (ndim,) = struct.unpack("<i", self._raw(4))
            if not 0 <= ndim <= MAX_NDIM:
                raise Corrupt(f"tensor of {ndim} dimensions")
            self._raw(4)
            dims = struct.unpack(f"<{2 * ndim + 1}q", self._raw(16 * ndim + 8))
            shape, offset = dims[:ndim], dims[-1]
            if any(not 0 <= d < MAX_DIM for d in dims):
                raise Corrupt(f"tensor {short(key)} has a negative size, stride or offset")
            ref = TensorRef(tuple(shape), storage.dtype, storage, offset, stride=dims[ndim : 2 * ndim])
            self._put(self.tensors, key, ref)

    def _persistent(self, pid: Any, interp: Interpreter) -> Any:
        if isinstance(pid, tuple):
            return pid[0] if pid else Opaque("module")  # a module class, judged where it was imported
        if isinstance(pid, bytes):
            pid = pid.decode("latin-1")
        try:
            key = int(pid)
        except (TypeError, ValueError):
            raise Corrupt(f"persistent id {short(pid)} is not a tensor key") from None
        return self._get(self.tensors, key)

    @staticmethod
    def _put(table: dict[Any, Any], key: Any, value: Any) -> None:
        if type(key) not in (int, str):
            raise Corrupt(f"key {short(key)} is not an int or a string")
        table[key] = value

    @staticmethod
    def _get(table: dict[Any, Any], key: Any) -> Any:
        if type(key) not in (int, str) or key not in table:
            raise Corrupt(f"unknown storage or tensor key {short(key)}")
        return table[key]
