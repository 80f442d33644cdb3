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

import io
import struct
from typing import IO, Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.readers.pickle_globals import STORAGE_DTYPES, SecurityLog
from ckptlint.readers.pickle_tree import flatten
from ckptlint.readers.pickle_walker import (
    MAX_DIM,
    GlobalRef,
    MalformedPickle,
    Opaque,
    PickleWalker,
    StorageRef,
    TensorRef,
    short,
)

MAX_MEMBERS = 10_000  # tar headers read before giving up (each costs a 512-byte read)
MAX_TAR_READ = 1 << 20  # one read by tarfile (GNU long names, pax headers); larger ones are refused
MAX_NDIM = 64
TORCH_MEMBERS = ("storages", "tensors", "pickle")


class NotTorchTar(Exception):
    """A tar archive without any of torch's members: torch.load fails on it before unpickling anything."""


class _TooLarge(Exception):
    """tarfile asked for more bytes in one read than ckptlint allows (an absurd extended header)."""


class _BoundedReader(io.RawIOBase):
    """The file as tarfile sees it, refusing single reads larger than MAX_TAR_READ."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if n is None or n < 0 or n > MAX_TAR_READ:
            raise _TooLarge(f"a tar header asks to read {n} bytes at once")
        return self._fh.read(n)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(pos, whence)

    def tell(self) -> int:
        return self._fh.tell()


def read_tar(fh: IO[bytes], *, path: str, size: int, stem: str, log: SecurityLog) -> Checkpoint | None:
    """Read a tar-format torch file; None when ``tarfile`` rejects it (torch then reads it as a pickle).

    A member torch would unpickle that does not parse is reported as CK301 (cannot verify). Raises NotTorchTar
    for a tar archive that holds none of torch's members.
    """
    import tarfile

    fh.seek(0)
    try:
        tar = tarfile.open(fileobj=_BoundedReader(fh), mode="r:")  # noqa: SIM115 (closed below)
    except tarfile.TarError:
        return None
    except _TooLarge as exc:
        log.cannot_verify("a tar archive", "tar", 0, f"{exc}; torch.load reads tar files before pickles.")
        return _checkpoint(path, {}, {}, log)
    members: dict[str, tarfile.TarInfo] = {}
    with tar:
        try:
            for count, info in enumerate(_iter_members(tar)):
                if count >= MAX_MEMBERS:
                    log.cannot_verify(
                        f"a tar archive of more than {MAX_MEMBERS} members", "tar", info.offset, "Not read."
                    )
                    break
                if info.name in TORCH_MEMBERS:
                    members[info.name] = info  # tarfile.getmember: the last one of that name
        except (tarfile.TarError, _TooLarge, EOFError) as exc:
            log.cannot_verify("a tar archive", "tar", fh.tell(), f"Its headers cannot be read: {exc}.")
    if not members:
        raise NotTorchTar(
            "not a checkpoint: tar archive without torch's storages, tensors and pickle members"
        )
    reader = _TarReader(fh, size, log)
    for name in TORCH_MEMBERS:
        info = members.get(name)
        if info is None:
            log.cannot_verify(
                f"a tar archive without a {name} member", "tar", 0, "torch.load reads it as a torch tar file."
            )
            continue
        if not info.isreg() or info.issparse() or info.offset_data + info.size > size:
            log.cannot_verify(
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
    ckpt = _checkpoint(path, tensors, metadata, log)
    ckpt.groups = tree.groups if tree else []
    return ckpt


def tar_value(fh: IO[bytes], *, path: str, size: int) -> Any:
    """The object the ``pickle`` member rebuilds (``TensorRef`` leaves over ``StorageRef``s placed in the file), for
    writers that emit it again; None when ``fh`` is not a torch tar file. Call it on a file ``read_tar`` accepted."""
    import tarfile

    fh.seek(0)
    try:
        tar = tarfile.open(fileobj=_BoundedReader(fh), mode="r:")  # noqa: SIM115 (closed below)
    except (tarfile.TarError, _TooLarge):
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
    reader = _TarReader(fh, size, SecurityLog(path))
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


def _checkpoint(path: str, tensors: dict[str, Any], metadata: dict[str, Any], log: SecurityLog) -> Checkpoint:
    return Checkpoint.model_construct(
        path=path,
        format="torch-tar",
        key_sep=".",
        tensors=tensors,
        groups=[],
        metadata=metadata,
        sidecars=[],
        files=[path],
        findings=log.findings(),
    )


class _TarReader:
    """Walks the three members in torch's order and rebuilds storages, tensors and the saved object."""

    def __init__(self, fh: IO[bytes], size: int, log: SecurityLog) -> None:
        self.fh = fh
        self.size = size
        self.log = log
        self.storages: dict[Any, StorageRef] = {}
        self.tensors: dict[Any, TensorRef] = {}
        self.value: Any = None

    def walk_member(self, name: str, start: int, end: int) -> None:
        walker = PickleWalker(self.fh, log=self.log, member=name, start=start, end=end)
        try:
            if name == "storages":
                self._storages(walker)
            elif name == "tensors":
                self._tensors(walker)
            else:
                walker.persistent = self._persistent(walker)
                self.value = walker.walk()
        except MalformedPickle as exc:
            self.log.cannot_verify(
                f"a malformed tar member {name}", name, exc.offset, f"It does not parse ({exc.reason})."
            )

    def _count(self, walker: PickleWalker, per_item: int) -> int:
        n = walker.walk()
        if type(n) is not int or not 0 <= n <= (walker.end - walker.pos) // per_item:
            raise walker.malformed(f"item count {short(n)} does not fit the member", walker.pos)
        return n

    def _raw(self, walker: PickleWalker, n: int) -> bytes:
        if walker.pos + n > walker.end:
            raise walker.malformed(f"{n} raw bytes run past the end of the member", walker.pos)
        self.fh.seek(walker.pos)
        data = self.fh.read(n)
        walker.pos += n
        return data

    def _storages(self, walker: PickleWalker) -> None:
        for _ in range(self._count(walker, 10)):
            args = walker.walk()
            if not isinstance(args, tuple) or len(args) != 3:
                raise walker.malformed("storage entry is not (key, location, storage_type)", walker.pos)
            key, location, stype = args
            if isinstance(stype, GlobalRef) and stype.kind is None:
                raise walker.malformed(f"storage type {stype.fullname} is not a torch storage", walker.pos)
            cls = stype.fullname.rsplit(".", 1)[1] if isinstance(stype, GlobalRef) else None
            if cls not in STORAGE_DTYPES:
                raise walker.malformed("storage type is not a torch storage class", walker.pos)
            (numel,) = struct.unpack("<q", self._raw(walker, 8))
            ref = StorageRef(
                str(key), STORAGE_DTYPES[cls], max(numel, 0), str(location)[:64], None, walker.pos
            )
            if numel < 0 or ref.nbytes is None:
                raise walker.malformed(f"storage {short(key)} of {numel} elements", walker.pos)
            walker.pos += ref.nbytes
            if walker.pos > walker.end:
                raise walker.malformed(f"storage {short(key)} runs past the end of the member", walker.pos)
            self._put(self.storages, key, ref, walker)
        views = walker.walk()
        if not isinstance(views, list):
            raise walker.malformed("storage views are not a list", walker.pos)
        for view in views:
            if not isinstance(view, tuple) or len(view) != 4:
                raise walker.malformed("storage view is not (key, root, offset, numel)", walker.pos)
            key, root_key, offset, numel = view
            root = self._get(self.storages, root_key, walker)
            if (
                type(offset) is not int
                or type(numel) is not int
                or not 0 <= offset <= offset + numel <= root.numel
            ):
                raise walker.malformed(f"storage view {short(key)} lies outside its storage", walker.pos)
            itemsize = root.itemsize or 1
            ref = StorageRef(
                str(key), root.dtype, numel, root.location, None, (root.data_offset or 0) + offset * itemsize
            )
            self._put(self.storages, key, ref, walker)

    def _tensors(self, walker: PickleWalker) -> None:
        for _ in range(self._count(walker, 16)):
            args = walker.walk()
            if not isinstance(args, tuple) or len(args) != 3:
                raise walker.malformed("tensor entry is not (key, storage_key, tensor_type)", walker.pos)
            key, storage_key = args[0], args[1]
            storage = self._get(self.storages, storage_key, walker)
            (ndim,) = struct.unpack("<i", self._raw(walker, 4)[:4])
            if not 0 <= ndim <= MAX_NDIM:
                raise walker.malformed(f"tensor of {ndim} dimensions", walker.pos)
            self._raw(walker, 4)
            dims = struct.unpack(f"<{2 * ndim + 1}q", self._raw(walker, 16 * ndim + 8))
            shape, offset = dims[:ndim], dims[-1]
            if any(not 0 <= d < MAX_DIM for d in dims):
                raise walker.malformed(
                    f"tensor {short(key)} has a negative size, stride or offset", walker.pos
                )
            ref = TensorRef(tuple(shape), storage.dtype, storage, offset, stride=dims[ndim : 2 * ndim])
            self._put(self.tensors, key, ref, walker)

    def _persistent(self, walker: PickleWalker) -> Any:
        def load(pid: Any, offset: int) -> Any:
            if isinstance(pid, tuple):
                return pid[0] if pid else Opaque("module")  # a module class, judged where it was imported
            if isinstance(pid, Opaque):
                return pid
            if isinstance(pid, bytes):
                pid = pid.decode("latin-1")
            try:
                key = int(pid)
            except (TypeError, ValueError):
                raise walker.malformed(f"persistent id {short(pid)} is not a tensor key", offset) from None
            return self._get(self.tensors, key, walker)

        return load

    @staticmethod
    def _put(table: dict[Any, Any], key: Any, value: Any, walker: PickleWalker) -> None:
        if type(key) not in (int, str):
            raise walker.malformed(f"key {short(key)} is not an int or a string", walker.pos)
        table[key] = value

    @staticmethod
    def _get(table: dict[Any, Any], key: Any, walker: PickleWalker) -> Any:
        if type(key) not in (int, str) or key not in table:
            raise walker.malformed(f"unknown storage or tensor key {short(key)}", walker.pos)
        return table[key]
