"""Write a new checkpoint from an existing one with keys dropped or renamed; the input is never modified.

Used by ``ckptlint strip`` (drop top-level groups) and ``ckptlint fix`` (rename by prefix, take a subtree, drop
keys). A ``KeyMap`` says, for each of the input's keys (as ``read_checkpoint`` names them), the output key or None
to drop it. Per format:

* npz: members are copied through ``zipfile`` stream to stream, renamed, never decoded as arrays.
* safetensors: a new JSON header, then each kept tensor's byte range copied as is.
* torch zip / legacy: loaded with ``torch.load(weights_only=True)`` (the restricted unpickler; never a full
  unpickle) and saved again with ``torch.save``; torch is imported only here, inside the function.
* flax msgpack: unpacked with ``msgpack`` keeping array ExtTypes as opaque bytes, filtered, packed again.
* ``to_format="safetensors"``: from npz (one array in memory at a time), torch (``safetensors.torch``), or
  safetensors.

The output goes to a temporary file next to OUT, is re-read with ``read_checkpoint`` and compared with what was
meant to be written (keys, shapes, dtypes), and only then renamed over OUT.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.dtypes import SAFETENSORS
from ckptlint.errors import UnreadableCheckpoint, UsageError

KeyMap = Callable[[str], "str | None"]
_ST_CODE = {canonical: code for code, canonical in SAFETENSORS.items()}
_COPY_CHUNK = 1 << 20
SAME = "same"


@dataclass
class RewriteResult:
    """What was written: the input and output checkpoints as re-read, and the key changes."""

    src: Checkpoint
    out: Checkpoint
    dst: str
    renamed: dict[str, str] = field(default_factory=dict)  # old key -> new key (only keys whose name changed)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_paths(src: str, dst: str) -> None:
    """Refuse to write over the input (or into a folder input), and an output whose folder is missing."""
    s, d = Path(src), Path(dst)
    if not s.exists():
        raise UnreadableCheckpoint(src, "no such file or directory")
    if s.is_dir():
        raise UsageError(f"{src}: is a folder; give the weights file inside it")
    if d.exists() and (d.is_dir() or os.path.samefile(s, d)):
        raise UsageError(
            f"{dst}: refusing to overwrite the input" if not d.is_dir() else f"{dst}: is a folder"
        )
    if os.path.abspath(s) == os.path.abspath(d):
        raise UsageError(f"{dst}: refusing to overwrite the input")
    if not d.parent.resolve().is_dir():
        raise UsageError(f"{dst}: folder {d.parent} does not exist")


@contextlib.contextmanager
def atomic_output(dst: str) -> Iterator[Path]:
    """A temporary path next to ``dst``; renamed over ``dst`` only if the block succeeds."""
    target = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the output is an ordinary file
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rewrite(src: str, dst: str, keymap: KeyMap, *, to_format: str = SAME) -> RewriteResult:
    """Write ``dst`` holding ``src``'s tensors mapped through ``keymap``, verified by re-reading it."""
    from ckptlint.readers import read_checkpoint

    check_paths(src, dst)
    ckpt = read_checkpoint(src)
    if ckpt.security.unsafe or any(f.code == "CK301" for f in ckpt.findings):
        raise UsageError(f"{src}: refusing to rewrite a pickle that imports unsafe globals (see CK301)")
    plan: dict[str, str] = {}
    dropped: list[str] = []
    for key in ckpt.tensors:
        new = keymap(key)
        if new is None:
            dropped.append(key)
        else:
            plan[key] = new
    if not plan:
        raise UsageError(f"{src}: nothing would be left to write")
    if len(set(plan.values())) != len(plan):
        raise UsageError(f"{src}: the renaming would give two tensors the same name")
    fmt = ckpt.format if to_format == SAME else to_format
    notes: list[str] = []
    with atomic_output(dst) as tmp:
        if fmt == "safetensors" and ckpt.format == "safetensors":
            _safetensors_to_safetensors(Path(src), tmp, plan)
        elif fmt == "npz" and ckpt.format == "npz":
            _npz_to_npz(Path(src), tmp, plan)
        elif fmt == "safetensors" and ckpt.format == "npz":
            _npz_to_safetensors(Path(src), tmp, plan, ckpt)
        elif ckpt.format in ("torch-zip", "torch-legacy", "pickle") and fmt in (ckpt.format, "safetensors"):
            notes += _torch_rewrite(Path(src), tmp, keymap, ckpt, safetensors=fmt == "safetensors")
        elif fmt == "flax-msgpack" and ckpt.format == "flax-msgpack":
            notes += _msgpack_rewrite(Path(src), tmp, keymap)
        else:
            raise UsageError(
                f"{src}: cannot write {ckpt.format} as {fmt} (supported: same format, or safetensors)"
            )
        out = _verify(tmp, ckpt, plan, expect_format=fmt, dst=dst)
    out.path = dst
    renamed = {k: v for k, v in plan.items() if k != v}
    return RewriteResult(src=ckpt, out=out, dst=dst, renamed=renamed, dropped=dropped, notes=notes)


def _verify(tmp: Path, src: Checkpoint, plan: dict[str, str], *, expect_format: str, dst: str) -> Checkpoint:
    from ckptlint.readers import read_checkpoint

    try:
        out = read_checkpoint(tmp)
    except UnreadableCheckpoint as exc:
        raise UsageError(
            f"{dst}: the written file does not read back ({exc.reason}); nothing was written"
        ) from None
    want = {new: src.tensors[old] for old, new in plan.items()}
    problems = []
    if set(out.tensors) != set(want):
        extra, missing = sorted(set(out.tensors) - set(want)), sorted(set(want) - set(out.tensors))
        problems.append(f"keys differ (extra {extra[:3]}, missing {missing[:3]})")
    for key, info in want.items():
        got = out.tensors.get(key)
        if got is not None and (tuple(got.shape) != tuple(info.shape) or got.dtype != info.dtype):
            problems.append(f"{key}: {got.dtype}{list(got.shape)} != {info.dtype}{list(info.shape)}")
    if problems:
        raise UsageError(f"{dst}: verification failed, nothing was written: {'; '.join(problems[:3])}")
    return out


# --- safetensors ------------------------------------------------------------------------------------------


def _read_st_header(fh: IO[bytes]) -> tuple[dict[str, Any], int]:
    (n,) = struct.unpack("<Q", fh.read(8))
    header = json.loads(fh.read(n))  # the reader has already validated this header and its size
    return header, 8 + n


def _write_st(
    out: IO[bytes],
    entries: list[tuple[str, str, list[int], int]],
    metadata: dict[str, str] | None,
    copy: Callable[[IO[bytes], int], None],
) -> None:
    """Header for ``(name, dtype code, shape, nbytes)`` entries, then ``copy(out, i)`` writes entry i's bytes."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, code, shape, nbytes in entries:
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    out.write(struct.pack("<Q", len(raw)))
    out.write(raw)
    for i in range(len(entries)):
        copy(out, i)


def _copy_range(src: IO[bytes], dst: IO[bytes], start: int, length: int) -> None:
    src.seek(start)
    left = length
    while left:
        chunk = src.read(min(_COPY_CHUNK, left))
        if not chunk:
            raise UsageError("input ended early while copying tensor bytes")
        dst.write(chunk)
        left -= len(chunk)


def _safetensors_to_safetensors(src: Path, tmp: Path, plan: dict[str, str]) -> None:
    with src.open("rb") as fin, tmp.open("wb") as fout:
        header, base = _read_st_header(fin)
        metadata = header.pop("__metadata__", None)
        kept = [(old, new, header[old]) for old, new in plan.items()]
        entries = [
            (new, h["dtype"], h["shape"], h["data_offsets"][1] - h["data_offsets"][0]) for _, new, h in kept
        ]

        def copy(out: IO[bytes], i: int) -> None:
            start, end = kept[i][2]["data_offsets"]
            _copy_range(fin, out, base + start, end - start)

        _write_st(fout, entries, metadata, copy)


# --- npz ------------------------------------------------------------------------------------------------


def _npz_to_npz(src: Path, tmp: Path, plan: dict[str, str]) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", allowZip64=True) as zout:
        for info in zin.infolist():
            key = info.filename[: -len(".npy")] if info.filename.endswith(".npy") else None
            if key is None or key not in plan:
                continue
            new_info = zipfile.ZipInfo(plan[key] + ".npy", date_time=info.date_time)
            new_info.compress_type = info.compress_type
            new_info.external_attr = info.external_attr
            new_info.file_size = info.file_size  # lets zipfile choose zip64 up front for large members
            with (
                zin.open(info) as fsrc,
                zout.open(new_info, "w", force_zip64=info.file_size > 0x7FFFFFFF) as fdst,
            ):
                shutil.copyfileobj(fsrc, fdst, _COPY_CHUNK)


def _npz_to_safetensors(src: Path, tmp: Path, plan: dict[str, str], ckpt: Checkpoint) -> None:
    import numpy as np
    from numpy.lib import format as npformat

    entries = []
    for old, new in plan.items():
        info = ckpt.tensors[old]
        if info.dtype not in _ST_CODE:
            raise UsageError(f"{ckpt.path}: {old} has dtype {info.dtype}, which safetensors cannot hold")
        entries.append((new, _ST_CODE[info.dtype], list(info.shape), info.nbytes))
    olds = list(plan)
    with zipfile.ZipFile(src) as zin, tmp.open("wb") as fout:

        def copy(out: IO[bytes], i: int) -> None:
            with zin.open(olds[i] + ".npy") as member:
                arr = npformat.read_array(member, allow_pickle=False)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            data = np.ascontiguousarray(arr).tobytes(order="C")
            if len(data) != entries[i][3]:
                raise UsageError(
                    f"{ckpt.path}: {olds[i]} holds {len(data)} bytes, header says {entries[i][3]}"
                )
            out.write(data)

        _write_st(fout, entries, None, copy)


# --- torch ----------------------------------------------------------------------------------------------


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = obj


def _torch_rewrite(src: Path, tmp: Path, keymap: KeyMap, ckpt: Checkpoint, *, safetensors: bool) -> list[str]:
    """Load with the restricted unpickler, keep/rename tensors, save. Returns notes on what could not be kept."""
    try:
        import torch  # only here: a rewrite of a torch file needs torch itself
    except ImportError:
        raise UsageError(
            f"{src}: rewriting a torch file needs torch (pip install 'ckptlint[torch]')"
        ) from None
    import warnings

    try:  # the restricted unpickler: tensors, containers and primitives only; never arbitrary code
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(src, map_location="cpu", weights_only=True, mmap=ckpt.format == "torch-zip")
    except Exception as exc:
        detail = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        why = detail[0] if len(detail) and "WeightsUnpickler" in str(exc) else type(exc).__name__
        raise UsageError(
            f"{src}: cannot rewrite: torch.load(weights_only=True) refuses it ({why}); only files holding "
            "tensors and plain containers can be rewritten"
        ) from None
    flat: dict[str, Any] = {}
    _flatten(obj, "", flat)
    notes = []
    tensors: dict[str, Any] = {}
    for key, value in flat.items():
        if not isinstance(value, torch.Tensor):
            continue
        new = keymap(key)
        if new is not None:
            tensors[new] = value
    others = [k for k, v in flat.items() if not isinstance(v, torch.Tensor)]
    if safetensors:
        from safetensors.torch import save_file

        seen: dict[tuple[int, int], str] = {}
        contiguous = {}
        for k, t in tensors.items():
            t = t.contiguous()
            ident = (t.untyped_storage().data_ptr(), t.storage_offset())
            contiguous[k] = t.clone() if ident in seen else t  # safetensors refuses shared storage
            seen[ident] = k
        save_file(contiguous, str(tmp))
        if others:
            notes.append(
                f"dropped {len(others)} non-tensor value(s) safetensors cannot hold: {', '.join(others[:5])}"
            )
    elif _is_pure_filter(keymap, flat, tensors):
        kept_top = (
            {k: v for k, v in obj.items() if _top_kept(k, keymap, flat)} if isinstance(obj, dict) else obj
        )
        torch.save(kept_top, tmp)
    else:
        torch.save(tensors, tmp)  # renamed: a plain flat state_dict, what load_state_dict wants
        if others:
            notes.append(f"wrote a flat state_dict; dropped non-tensor value(s): {', '.join(others[:5])}")
    return notes


def _is_pure_filter(keymap: KeyMap, flat: dict[str, Any], tensors: dict[str, Any]) -> bool:
    """True when the map only drops whole top-level entries (strip), so the nesting can be kept."""
    tops: dict[str, set[bool]] = {}
    for key in flat:
        new = keymap(key)
        if new is not None and new != key:
            return False
        tops.setdefault(key.split(".", 1)[0], set()).add(new is not None)
    return all(len(v) == 1 for v in tops.values())


def _top_kept(top: Any, keymap: KeyMap, flat: dict[str, Any]) -> bool:
    prefix = str(top)
    keys = [k for k in flat if k == prefix or k.startswith(prefix + ".")]
    return any(keymap(k) is not None for k in keys)


# --- flax msgpack ---------------------------------------------------------------------------------------


def _msgpack_rewrite(src: Path, tmp: Path, keymap: KeyMap) -> list[str]:
    import msgpack

    state = msgpack.unpackb(src.read_bytes(), raw=False, strict_map_key=False)  # ExtTypes stay opaque bytes

    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and "__msgpack_chunked_array__" not in node:
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        else:
            flat[prefix] = node

    walk(state, "")
    out: dict[str, Any] = {}
    for key, value in flat.items():
        new = keymap(key)
        if new is None:
            continue
        node = out
        parts = new.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    tmp.write_bytes(msgpack.packb(out, use_bin_type=True))
    return []
