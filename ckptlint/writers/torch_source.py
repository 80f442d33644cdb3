"""A torch file's saved object and where each storage's bytes are, for writers (torch zip, legacy, tar).

The object is what the readers' pickle walker rebuilds — dicts, lists, primitives and ``TensorRef`` leaves over
``StorageRef`` storages — never a real tensor: nothing from the file is imported or run, and torch is not needed.
A storage of a zip archive is its ``data/<key>`` member; of a legacy or tar file, a byte range of the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UsageError
from ckptlint.readers.pickle_globals import torch_itemsize
from ckptlint.readers.pickle_values import StorageRef, TensorRef
from ckptlint.writers.arrays import Span, Stored, ZipMembers, c_strides, same_layout

TORCH_FORMATS = frozenset({"torch-zip", "torch-legacy", "torch-tar"})


@dataclass
class TorchTree:
    """The saved object, its tensors under the reader's flat keys, and how to find storage bytes."""

    path: Path
    format: str
    value: Any
    tensors: dict[str, TensorRef]
    _zip: ZipMembers | None = None

    def storage_span(self, storage: StorageRef) -> Span:
        """Where the storage's bytes are (the whole storage, as torch.load reads it)."""
        nbytes = storage.nbytes
        if nbytes is None:
            raise UsageError(
                f"{self.path}: storage {storage.key} has an unknown element size ({storage.dtype})"
            )
        if self.format == "torch-zip":
            member = storage.member or ""
            if self._zip is None:
                self._zip = ZipMembers(self.path)
            if member not in self._zip.infos:
                raise UsageError(f"{self.path}: storage member {member} is missing")
            start = self._zip.data_offset(member)
            if start is not None:
                return Span(self.path, start + (storage.data_offset or 0), nbytes)
            return Span(self.path, storage.data_offset or 0, nbytes, member=member)
        if storage.data_offset is None:
            raise UsageError(f"{self.path}: storage {storage.key} has no known place in the file")
        return Span(self.path, storage.data_offset, nbytes)

    def stored(self, key: str) -> Stored:
        """The tensor under ``key`` as stored: a span of its storage plus its strides."""
        ref = self.tensors.get(key)
        if ref is None or ref.storage is None:
            raise UsageError(
                f"{self.path}: {key} is not a tensor ckptlint can copy (not a plain torch tensor)"
            )
        return tensor_stored(self, ref)


def tensor_stored(tree: TorchTree, ref: TensorRef) -> Stored:
    assert ref.storage is not None
    itemsize = torch_itemsize(ref.dtype)
    if itemsize is None:
        raise UsageError(f"{tree.path}: tensor of dtype {ref.dtype} cannot be copied")
    base = tree.storage_span(ref.storage)
    strides = ref.stride if ref.stride is not None else c_strides(ref.shape)
    if any(d == 0 for d in ref.shape):
        extent = 0
    else:
        extent = 1 + sum((d - 1) * s for d, s in zip(ref.shape, strides, strict=True))
    contiguous = same_layout(ref.shape, strides)
    nbytes = (extent if not contiguous else _numel(ref.shape)) * itemsize
    start = ref.offset * itemsize
    if start + nbytes > base.nbytes:
        raise UsageError(f"{tree.path}: a tensor reaches past the end of its storage {ref.storage.key}")
    span = Span(base.path, base.offset + start, nbytes, base.member)
    return Stored((span,), tuple(ref.shape), ref.dtype, None if contiguous else tuple(strides))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def load_torch_tree(ckpt: Checkpoint, path: Path) -> TorchTree:
    """Walk the torch file at ``path`` (already read as ``ckpt``) again for its object and storages."""
    if ckpt.metadata.get("__byteorder__") not in (None, "little"):
        raise UsageError(f"{path}: a big-endian torch file cannot be rewritten by ckptlint")
    if ckpt.format == "torch-zip":
        from ckptlint.readers.torch_zip import walk_data_pkl

        value, _prefix = walk_data_pkl(path)
    elif ckpt.format == "torch-legacy":
        value = _legacy_value(path)
    elif ckpt.format == "torch-tar":
        from ckptlint.readers.torch_tar import tar_value

        with open(path, "rb") as fh:
            value = tar_value(fh, path=str(path), size=fh.seek(0, 2))
        if value is None:
            raise UsageError(f"{path}: cannot read the torch tar members again")
    else:
        raise UsageError(f"{path}: {ckpt.format} is not a torch file")
    tensors = flat_tensors(value, path.stem)
    return TorchTree(path, ckpt.format, value, tensors)


def _legacy_value(path: Path) -> Any:
    from ckptlint.errors import UnreadableCheckpoint
    from ckptlint.readers.pickle_file import legacy_value

    try:
        return legacy_value(path)
    except UnreadableCheckpoint as exc:
        raise UsageError(f"{path}: {exc.reason}") from None


def key_text(key: Any) -> str | None:
    """A dict key as the readers spell it in flat keys; None for keys a flat key cannot name."""
    if isinstance(key, str):
        return key
    if isinstance(key, (bool, int)) or key is None:
        return str(key)
    if isinstance(key, bytes):
        return key.decode("latin-1")
    return None


def flat_tensors(value: Any, root_key: str) -> dict[str, TensorRef]:
    """The tensors of the saved object under the readers' flat keys (``state_dict.visual.conv1.weight``)."""
    out: dict[str, TensorRef] = {}

    def visit(v: Any, key: str | None, depth: int) -> None:
        if depth > 64:
            return
        if isinstance(v, TensorRef):
            if not v.pending and v.storage is not None:
                out[key if key is not None else root_key] = v
            return
        if isinstance(v, dict):
            for k, child in v.items():
                text = key_text(k)
                if text is not None:
                    visit(child, text if key is None else f"{key}.{text}", depth + 1)
        elif isinstance(v, (list, tuple)):
            for i, child in enumerate(v):
                visit(child, str(i) if key is None else f"{key}.{i}", depth + 1)

    visit(value, None, 0)
    return out
