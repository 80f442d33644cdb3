"""``write_checkpoint(src, plan, out, fmt)``: write OUT from IN through a plan, atomically, verified by re-reading.

IN is a file, a shard index or a checkpoint folder; OUT is a file, or a folder when IN is a folder or a shard index
and OUT does not end in a weights suffix. A folder OUT gets the weights in the format asked (file names as
transformers / open_clip name them), every shard rewritten with its index (empty shards dropped, ``total_size``
updated), and the input folder's configs, tokenizer files and other small files copied. Nothing is ever written
over IN or inside an input folder; torch is never imported.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.dtypes import nbytes_for
from ckptlint.errors import UnreadableCheckpoint, UsageError
from ckptlint.writers.arrays import write_array
from ckptlint.writers.folder import (
    atomic_file,
    atomic_folder,
    check_output,
    copy_sidecars,
    is_file_output,
    sidecar_files,
    weights_name,
    write_index,
)
from ckptlint.writers.plan import Entry, Index, WritePlan
from ckptlint.writers.sources import SHARDED_FORMATS, ShardedSource, Source, open_source
from ckptlint.writers.tensor_files import Item, nest, write_msgpack, write_npz, write_safetensors
from ckptlint.writers.torch_out import copied_tensor, nested_value, new_tensor, write_torch_zip

OUTPUT_FORMATS = ("same", "safetensors", "torch", "npz", "msgpack")
KIND_OF_FORMAT = {
    "safetensors": "safetensors",
    "safetensors-sharded": "safetensors",
    "torch-zip": "torch",
    "torch-legacy": "torch",
    "torch-tar": "torch",
    "torch-sharded": "torch",
    "npz": "npz",
    "npy": "npz",
    "flax-msgpack": "msgpack",
}
# metadata entries that are ckptlint's own (reader notes, a folder's file lists), not values of the checkpoint
_META_SKIP = frozenset(
    {
        "__truncated__",
        "__ckptlint_values_not_kept__",
        "__byteorder__",
        "weights_file",
        "weights_format",
        "other_weight_files",
        "training_state_files",
    }
)


@dataclass
class WriteResult:
    """What was written: the input as read, OUT as re-read, the weights files written and notes for the user."""

    src: Checkpoint
    out: Checkpoint
    dst: str
    format: str  # safetensors | torch | npz | msgpack
    files: list[str] = field(default_factory=list)  # weights files written (names inside a folder OUT)
    notes: list[str] = field(default_factory=list)


def write_checkpoint(
    src: str | Path,
    plan: WritePlan | list[Entry],
    out: str | Path,
    fmt: str = "same",
    *,
    ckpt: Checkpoint | None = None,
    folder: bool | None = None,
) -> WriteResult:
    """Write ``out`` from ``src`` through ``plan`` as ``fmt`` (``same``: the input's own kind; legacy and tar torch
    files become zip archives). ``ckpt``: ``src`` as ``read_checkpoint`` already read it. ``folder``: whether OUT
    is a folder (None: when IN is a folder or a shard index and OUT has no weights suffix). Raises UsageError for
    a plan that does not fit, an output that would overwrite the input, or a result that does not read back."""
    from ckptlint.readers import read_checkpoint

    src_path, dst = Path(src), Path(out)
    if fmt not in OUTPUT_FORMATS:
        raise UsageError(f"unknown output format {fmt!r} (choose from {', '.join(OUTPUT_FORMATS)})")
    if not src_path.exists():
        raise UnreadableCheckpoint(str(src_path), "no such file or directory")
    check_output(src_path, dst, [], folder=wants_folder(src_path, dst) if folder is None else folder)
    if ckpt is None:
        ckpt = read_checkpoint(src_path)
    if any(f.code == "CK301" for f in ckpt.findings):
        raise UsageError(f"{src}: refusing to rewrite a pickle that imports unsafe globals (see CK301)")
    plan = WritePlan.of(plan)
    specs = plan.check(ckpt)
    source = open_source(src_path, ckpt)
    kind = KIND_OF_FORMAT.get(source.kind)
    out_fmt = kind if fmt == "same" else fmt
    if out_fmt is None:
        raise UsageError(f"{src}: cannot write a {source.kind} input")
    if folder is None:
        folder = wants_folder(src_path, dst, sharded=source.kind in SHARDED_FORMATS)
    check_output(src_path, dst, [Path(f) for f in ckpt.files], folder=folder)
    try:
        if folder:
            return _write_folder(source, plan, specs, src_path, dst, out_fmt)
        with atomic_file(dst) as tmp:
            notes = write_file(source, plan, plan.entries, tmp, out_fmt, archive=dst.stem)
            written = verify(tmp, specs, dst)
    except OSError as exc:  # a full disk, a permission: the user's to fix, one line; nothing is left behind
        raise UsageError(f"{dst}: cannot write: {exc.strerror or exc}; nothing was written") from None
    written.path = str(dst)
    written.files = [str(dst)]
    return WriteResult(ckpt, written, str(dst), out_fmt, [dst.name], notes)


def wants_folder(src: Path, dst: Path, *, sharded: bool = False) -> bool:
    """A folder OUT: IN is a folder or a shard index, and OUT does not end in a weights suffix."""
    return (src.is_dir() or sharded or src.name.endswith(".index.json")) and not is_file_output(dst)


# --- one weights file -------------------------------------------------------------------------------------


def _items(source: Source, entries: list[Entry]) -> list[Item]:
    items = []
    for entry in entries:
        shape, dtype = entry.out_spec(source.ckpt)
        items.append(
            Item(entry.out, shape, dtype, nbytes_for(shape, dtype), _producer(source, entry, shape, dtype))
        )
    return items


def _producer(source: Source, entry: Entry, shape: tuple[int, ...], dtype: str) -> Any:
    if entry.is_copy:
        key = entry.sources[0]
        return lambda out: source.write(key, out)

    def produce(out: IO[bytes]) -> None:
        ops = entry.ops
        if ops and isinstance(ops[0], Index):  # one block of a stacked tensor: read only its slice
            arrays = [source.slab(k, ops[0].index) for k in entry.sources]
            ops = ops[1:]
        else:
            arrays = [source.array(k) for k in entry.sources]
        for op in ops:
            arrays = op.apply(arrays)
        arr = arrays[0]
        if tuple(arr.shape) != shape:
            raise UsageError(f"{entry.out}: computed shape {list(arr.shape)}, planned {list(shape)}")
        write_array(arr, out)

    return produce


def write_file(
    source: Source, plan: WritePlan, entries: list[Entry], tmp: Path, fmt: str, *, archive: str = "archive"
) -> list[str]:
    """Write ``entries`` of ``source`` into the file ``tmp`` as ``fmt``; returns notes for the user."""
    notes: list[str] = []
    items = _items(source, entries)
    values = _kept_values(source, plan)
    with open(tmp, "wb") as fh:
        if fmt == "safetensors":
            metadata = plan.metadata if plan.metadata is not None else default_metadata(source)
            write_safetensors(fh, items, metadata)
            if values:
                notes.append(_dropped_note(values, "safetensors cannot hold"))
        elif fmt == "npz":
            members = {}
            if source.kind == "npz":
                members = {e.out: (source.path, f"{e.sources[0]}.npy") for e in entries if e.is_copy}
            write_npz(fh, items, members)
            if values:
                notes.append(_dropped_note(values, "npz cannot hold"))
        elif fmt == "msgpack":
            leaves: list[tuple[str, Any]] = [(i.key, i) for i in items]
            if source.kind == "flax-msgpack":
                leaves += [(k, v) for k, v in values.items() if not isinstance(v, dict)]
            elif values:
                notes.append(_dropped_note(values, "were not written"))
            write_msgpack(fh, nest(leaves, "/"))
        elif fmt == "torch":
            value, more = _torch_value(source, plan, entries, items)
            notes += more
            write_torch_zip(fh, value, _archive_name(archive))
        else:
            raise UsageError(f"unknown output format {fmt!r}")
    return notes


def _torch_value(
    source: Source, plan: WritePlan, entries: list[Entry], items: list[Item]
) -> tuple[Any, list[str]]:
    from ckptlint.writers.pickle_emit import ODictOut

    tree = source.torch
    if tree is not None and plan.keep_value is not None and plan.pure_filter:
        nested = nested_value(tree, {e.out for e in entries}, plan.keep_value)
        if nested is not None:
            return nested
    flat = ODictOut()
    memo: dict[int, Any] = {}
    for entry, item in zip(entries, items, strict=True):
        ref = tree.tensors.get(entry.sources[0]) if tree is not None and entry.is_copy else None
        if ref is not None:
            flat[entry.out] = copied_tensor(tree, ref, memo)  # type: ignore[arg-type]
        else:
            flat[entry.out] = new_tensor(item.shape, item.dtype, item.nbytes, item.write)
    notes = []
    values = _kept_values(source, plan)
    if values:
        notes.append("wrote a flat state_dict; " + _dropped_note(values, "it cannot hold"))
    return flat, notes


def _kept_values(source: Source, plan: WritePlan) -> dict[str, Any]:
    """Non-tensor values of the input the plan keeps (only asked of inputs that hold them: torch, msgpack)."""
    if plan.keep_value is None or source.kind not in (
        "torch-zip",
        "torch-legacy",
        "torch-tar",
        "flax-msgpack",
    ):
        return {}
    return {k: v for k, v in source.ckpt.metadata.items() if k not in _META_SKIP and plan.keep_value(k)}


def _dropped_note(values: dict[str, Any], why: str) -> str:
    keys = list(values)
    return f"dropped {len(keys)} non-tensor value(s) {why}: {', '.join(keys[:5])}" + (
        " …" if len(keys) > 5 else ""
    )


def _archive_name(stem: str) -> str:
    """torch names the archive's folder after the file; a name that is not plain ASCII becomes ``archive``."""
    ok = stem and stem.isascii() and all(c.isalnum() or c in "._-" for c in stem)
    return stem if ok else "archive"


def default_metadata(source: Source) -> dict[str, str] | None:
    """safetensors ``__metadata__`` for OUT: the input's own (safetensors), ``{"format": "pt"}`` for torch inputs
    (transformers checks it), else none."""
    kind = source.kind
    if kind in ("torch-zip", "torch-legacy", "torch-tar", "torch-sharded"):
        return {"format": "pt"}
    path = source.path
    if kind == "safetensors-sharded" and isinstance(source, ShardedSource) and source.weight_map:
        path = source.path.parent / next(iter(sorted(set(source.weight_map.values()))))
    if kind in ("safetensors", "safetensors-sharded"):
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            meta = json.loads(fh.read(n)).get("__metadata__")  # the reader has validated this header
        return meta if isinstance(meta, dict) else None
    return None


def verify(path: Path, specs: dict[str, tuple[tuple[int, ...], str]], dst: Path) -> Checkpoint:
    """Re-read what was written: the same keys, shapes and dtypes as planned, else nothing is written."""
    from ckptlint.readers import read_checkpoint

    try:
        out = read_checkpoint(path)
    except UnreadableCheckpoint as exc:
        raise UsageError(
            f"{dst}: the written file does not read back ({exc.reason}); nothing was written"
        ) from None
    problems = []
    if set(out.tensors) != set(specs):
        extra, missing = sorted(set(out.tensors) - set(specs)), sorted(set(specs) - set(out.tensors))
        problems.append(f"keys differ (extra {extra[:3]}, missing {missing[:3]})")
    for key, (shape, dtype) in specs.items():
        got = out.tensors.get(key)
        if got is not None and (tuple(got.shape) != tuple(shape) or got.dtype != dtype):
            problems.append(f"{key}: {got.dtype}{list(got.shape)} != {dtype}{list(shape)}")
    if problems:
        raise UsageError(f"{dst}: verification failed, nothing was written: {'; '.join(problems[:3])}")
    return out


# --- folders ----------------------------------------------------------------------------------------------


def _write_folder(
    source: Source,
    plan: WritePlan,
    specs: dict[str, tuple[tuple[int, ...], str]],
    src: Path,
    dst: Path,
    fmt: str,
) -> WriteResult:
    in_folder = src if src.is_dir() else src.parent
    notes: list[str] = []
    with atomic_folder(dst) as tmp:
        if plan.weights_name is not None:
            name = plan.weights_name
            notes += write_file(source, plan, plan.entries, tmp / name, fmt, archive=Path(name).stem)
            files = [name]
        elif isinstance(source, ShardedSource):
            files = _write_shards(source, plan, tmp, fmt, notes)
        else:
            name = weights_name(source.path.name, fmt)
            notes += write_file(source, plan, plan.entries, tmp / name, fmt, archive=Path(name).stem)
            files = [name]
        if plan.copy_sidecars:
            copied = copy_sidecars(sidecar_files(in_folder), tmp, skip=set(plan.extra_files) | set(files))
            if copied:
                notes.append(f"copied {', '.join(copied)}")
        for name, data in plan.extra_files.items():
            (tmp / name).write_bytes(data)
        left = [
            *source.ckpt.metadata.get("other_weight_files", []),
            *source.ckpt.metadata.get("training_state_files", []),
        ]
        if left:
            notes.append(f"not copied: {', '.join(map(str, left))}")
        written = verify(tmp, specs, dst)
        picked = written.metadata.get("weights_file")
        if picked is not None and picked not in files:
            raise UsageError(
                f"{dst}: a loader would read {picked}, not the weights written; nothing was written"
            )
    written.path = str(dst)
    written.files = [str(dst / f) for f in files]
    return WriteResult(source.ckpt, written, str(dst), fmt, files, notes)


def _write_shards(source: ShardedSource, plan: WritePlan, tmp: Path, fmt: str, notes: list[str]) -> list[str]:
    """Every shard rewritten under its own (converted) name; shards left empty are dropped; a new index."""
    if fmt not in ("safetensors", "torch"):
        raise UsageError(f"{source.path}: a sharded {fmt} folder is not supported; give OUT ending in .{fmt}")
    groups: dict[str, list[Entry]] = {}
    for entry in plan.entries:
        groups.setdefault(source.shard_of(entry.sources[0]), []).append(entry)
    weight_map: dict[str, str] = {}
    files: list[str] = []
    total = 0
    for shard in sorted(groups):
        entries = groups[shard]
        sub = source.shard(shard)
        own = all(k in sub.ckpt.tensors for e in entries for k in e.sources)
        name = weights_name(shard, fmt)
        notes += write_file(sub if own else source, plan, entries, tmp / name, fmt, archive=Path(name).stem)
        for entry in entries:
            shape, dtype = entry.out_spec(source.ckpt)
            total += nbytes_for(shape, dtype)
            weight_map[entry.out] = name
        files.append(name)
    dropped = sorted(set(source.weight_map.values()) - set(groups))
    if dropped:
        notes.append(f"dropped {len(dropped)} shard(s) left empty: {', '.join(dropped)}")
    meta = source.index_metadata
    index = weights_name(source.path.name, fmt)
    write_index(tmp / index, weight_map, total, {k: v for k, v in meta.items() if k != "total_size"})
    return [index, *files]
