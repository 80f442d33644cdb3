"""Write a ``torch.save`` zip archive without torch: a new ``data.pkl`` and the storages' bytes.

The archive holds what ``torch.save`` writes, in its order: ``data.pkl``, ``.format_version``,
``.storage_alignment``, ``byteorder``, ``data/<key>`` per storage, ``version``, ``.data/serialization_id``; every
record uncompressed, its data aligned to 64 bytes (torch's ``PyTorchFileWriter`` pads the local header's extra
field the same way), so ``torch.load(mmap=True)`` maps storages in place. Storages of a torch input are copied byte
for byte, streamed; legacy and tar inputs become zip archives.

Two shapes of output:

* nested (``strip`` on a trainer checkpoint): the input's own object — its dicts, ``OrderedDict`` state_dicts with
  their ``_metadata``, lists and plain values — with the dropped tensors and values left out;
* flat: an ``OrderedDict`` of output key -> tensor, what ``load_state_dict`` takes.
"""

from __future__ import annotations

import secrets
import struct
import zipfile
from collections.abc import Callable
from typing import IO, Any

from ckptlint.errors import UsageError
from ckptlint.readers.pickle_globals import torch_itemsize
from ckptlint.readers.pickle_values import Attrs, Blob, GlobalValue, ODict, StorageRef, TensorRef
from ckptlint.writers.arrays import c_strides
from ckptlint.writers.pickle_emit import EmitError, Emitter, ODictOut, OutStorage, OutTensor, TorchDtype
from ckptlint.writers.torch_source import TorchTree, key_text

ALIGN = 64
_DROP = object()


class _NotNested(Exception):
    """The kept tensors cannot be written in the input's nesting (part of a list kept): write them flat."""


def storage_of(tree: TorchTree, ref: TensorRef, memo: dict[int, OutStorage]) -> OutStorage:
    """The output storage for an input storage: one per input storage, its bytes copied as they are."""
    assert ref.storage is not None
    st = ref.storage
    found = memo.get(id(st))
    if found is not None:
        if found.dtype != ref.dtype:
            raise UsageError(f"{tree.path}: storage {st.key} is viewed as both {found.dtype} and {ref.dtype}")
        return found
    span = tree.storage_span(st)
    itemsize = torch_itemsize(ref.dtype) or 1

    def write(out: IO[bytes], span: Any = span) -> None:
        from ckptlint.writers.arrays import copy_span

        copy_span(span, out)

    found = memo[id(st)] = OutStorage(ref.dtype, span.nbytes, write, itemsize)
    return found


def copied_tensor(tree: TorchTree, ref: TensorRef, memo: dict[int, OutStorage]) -> OutTensor:
    """An input tensor as an output tensor over the copied storage, same offset and strides."""
    strides = ref.stride if ref.stride is not None else c_strides(ref.shape)
    return OutTensor(storage_of(tree, ref, memo), tuple(ref.shape), tuple(strides), ref.offset, ref.dtype)


def new_tensor(
    shape: tuple[int, ...], dtype: str, nbytes: int, write: Callable[[IO[bytes]], None]
) -> OutTensor:
    """A tensor with a storage of its own, C-contiguous, whose bytes ``write`` produces."""
    itemsize = torch_itemsize(dtype)
    if itemsize is None:
        raise UsageError(f"dtype {dtype} cannot be written to a torch file")
    return OutTensor(OutStorage(dtype, nbytes, write, itemsize), shape, c_strides(shape), 0, dtype)


class Nester:
    """Rebuilds the input's object with only the kept tensors and values (``strip`` keeps a trainer's nesting)."""

    def __init__(self, tree: TorchTree, kept: set[str], keep_value: Callable[[str], bool]) -> None:
        self.tree = tree
        self.kept = kept
        self.keep_value = keep_value
        self.storages: dict[int, OutStorage] = {}
        self.done: dict[int, Any] = {}
        self.dropped_values: list[str] = []
        self.as_dict: list[str] = []

    def build(self) -> Any:
        out = self._convert(self.tree.value, None, 0)
        if out is _DROP:
            raise _NotNested
        return out

    def _key(self, key: str | None, sub: str) -> str:
        return sub if key is None else f"{key}.{sub}"

    def _convert(self, v: Any, key: str | None, depth: int) -> Any:
        flat_key = key if key is not None else self.tree.path.stem
        if isinstance(v, TensorRef):
            if flat_key not in self.kept:
                return _DROP
            if id(v) not in self.done:
                self.done[id(v)] = copied_tensor(self.tree, v, self.storages)
            return self.done[id(v)]
        if isinstance(v, dict):
            return self._dict(v, key, depth)
        if isinstance(v, (list, tuple)) and self._has_tensor(v, 0):
            items = [self._convert(c, self._key(key, str(i)), depth + 1) for i, c in enumerate(v)]
            kept = [c for c in items if c is not _DROP]
            if not kept:
                return _DROP
            if len(kept) != len(items):
                raise _NotNested
            return tuple(kept) if isinstance(v, tuple) else kept
        if not self.keep_value(flat_key):
            return _DROP
        value = self._plain(v, depth)
        if value is _DROP:
            self.dropped_values.append(flat_key)
        return value

    def _dict(self, v: dict[Any, Any], key: str | None, depth: int) -> Any:
        if not v:
            empty: dict[Any, Any] = ODictOut() if isinstance(v, ODict) else {}
            return empty if self.keep_value(key or self.tree.path.stem) else _DROP
        out: dict[Any, Any] = ODictOut() if isinstance(v, ODict) else {}
        for k, child in v.items():
            text = key_text(k)
            if text is None:
                continue
            conv = self._convert(child, self._key(key, text), depth + 1)
            if conv is not _DROP:
                out[k] = conv
        if isinstance(v, ODict) and v.attrs:
            attrs = self._plain(v.attrs, depth + 1)
            if isinstance(attrs, dict):
                out.attrs = attrs  # type: ignore[attr-defined]
        if not out:
            return _DROP
        if isinstance(v, Attrs):
            self.as_dict.append(key or self.tree.path.stem)
        return out

    def _has_tensor(self, v: Any, depth: int) -> bool:
        if isinstance(v, TensorRef):
            return True
        if depth > 64:
            return False
        if isinstance(v, dict):
            return any(self._has_tensor(c, depth + 1) for c in v.values())
        if isinstance(v, (list, tuple)):
            return any(self._has_tensor(c, depth + 1) for c in v)
        return False

    def _plain(self, v: Any, depth: int) -> Any:
        """A non-tensor value as weights_only can load it, or _DROP."""
        if depth > 64:
            return _DROP
        if v is None or isinstance(v, (bool, int, float, str, bytes)):
            return v
        if isinstance(v, GlobalValue) and v.kind == "torch_dtype":
            from ckptlint.readers.pickle_globals import torch_dtype_name

            return TorchDtype(torch_dtype_name(v.name.rsplit(".", 1)[1]))
        if isinstance(v, (list, tuple)):
            items = [self._plain(c, depth + 1) for c in v]
            if any(c is _DROP for c in items):
                return _DROP
            return tuple(items) if isinstance(v, tuple) else items
        if isinstance(v, dict):
            out: dict[Any, Any] = ODictOut() if isinstance(v, ODict) else {}
            for k, c in v.items():
                kk, cc = self._plain(k, depth + 1), self._plain(c, depth + 1)
                if kk is _DROP or cc is _DROP or isinstance(kk, (list, dict)):
                    return _DROP
                out[kk] = cc
            return out
        if isinstance(v, (Blob, StorageRef)):
            return _DROP
        return _DROP


def nested_value(
    tree: TorchTree, kept: set[str], keep_value: Callable[[str], bool]
) -> tuple[Any, list[str]] | None:
    """The input's object with only ``kept`` tensors (and the values ``keep_value`` keeps), and notes; None when
    the kept tensors cannot keep the input's nesting."""
    nester = Nester(tree, kept, keep_value)
    try:
        value = nester.build()
    except _NotNested:
        return None
    notes = []
    if nester.dropped_values:
        shown = ", ".join(nester.dropped_values[:5]) + (" …" if len(nester.dropped_values) > 5 else "")
        notes.append(
            f"dropped {len(nester.dropped_values)} value(s) torch.load(weights_only=True) cannot load: {shown}"
        )
    if nester.as_dict:
        notes.append(f"wrote {', '.join(nester.as_dict[:5])} (an argparse.Namespace) as a plain dict")
    return value, notes


def write_torch_zip(fh: IO[bytes], value: Any, archive: str) -> None:
    """Write ``value`` (OutTensor leaves) as a torch.save zip archive into the seekable ``fh``."""
    emitter = Emitter()
    try:
        pkl = emitter.dump(value)
    except EmitError as exc:
        raise UsageError(f"cannot write a torch file: {exc}") from None
    records: list[tuple[str, int, Callable[[IO[bytes]], None]]] = [_bytes_record("data.pkl", pkl)]
    records += [
        _bytes_record(".format_version", b"1"),
        _bytes_record(".storage_alignment", str(ALIGN).encode()),
        _bytes_record("byteorder", b"little"),
    ]
    records += [(f"data/{i}", st.nbytes, st.write) for i, st in enumerate(emitter.storages)]
    serial = str(secrets.randbelow(10**40)).zfill(40).encode()
    records += [_bytes_record("version", b"3\n"), _bytes_record(".data/serialization_id", serial)]
    with zipfile.ZipFile(fh, "w", allowZip64=True) as zf:
        for name, size, write in records:
            _aligned_record(zf, fh, f"{archive}/{name}", size, write)


def _bytes_record(name: str, data: bytes) -> tuple[str, int, Callable[[IO[bytes]], None]]:
    return name, len(data), lambda out: out.write(data)


class _Counting:
    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.count = 0

    def write(self, data: Any) -> int:
        n = self.fh.write(data)
        self.count += memoryview(data).nbytes
        return n


def _aligned_record(
    zf: zipfile.ZipFile, fh: IO[bytes], name: str, size: int, write: Callable[[IO[bytes]], None]
) -> None:
    """One uncompressed member whose data starts on an ``ALIGN``-byte boundary of the file."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own test when the size is known up front
    start = fh.tell() + 30 + len(name.encode("utf-8")) + 4 + (20 if zip64 else 0)
    pad = -start % ALIGN
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # "FB" field, as torch's writer pads
    with zf.open(info, "w", force_zip64=zip64) as member:
        counter = _Counting(member)  # type: ignore[arg-type]
        write(counter)  # type: ignore[arg-type]
    if counter.count != size:
        raise UsageError(f"{name}: wrote {counter.count} bytes, expected {size}")
