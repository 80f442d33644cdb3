"""safetensors: the 8-byte little-endian header length, the JSON header, nothing more.

The header is parsed by hand rather than through ``safetensors.safe_open`` because ``safe_open`` does not expose
``data_offsets`` (we report each tensor's byte offset and check overlaps and coverage ourselves so that the error
names the tensor and the numbers), needs a framework argument whose tensor getters import numpy or torch, and its
per-tensor ``get_slice`` calls cost more than one ``json.loads``. The validation mirrors the library's own
(``safetensors/src/tensor.rs``: ``Metadata::validate``): a header length over 100 MB is refused, every tensor's
offsets must follow the previous one without gap or overlap, match shape x dtype, and end exactly at the end of the
file. ``tests/test_reader_safetensors.py`` proves the result equals what ``safe_open`` reports.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from ckptlint.checkpoint import Checkpoint, TensorInfo, guess_key_sep, slash_groups, tensor_info
from ckptlint.dtypes import ITEM_BITS, SAFETENSORS
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers.limits import MAX_TENSORS

# safetensors' own limit (``MAX_HEADER_SIZE`` in the Rust crate): longer headers are refused before allocating.
MAX_HEADER_BYTES = 100_000_000
FORMAT = "safetensors"


def read(path: Path) -> Checkpoint:
    """Read the header of the safetensors file at ``path``."""
    header, data_start, size = read_header(path)
    tensors, metadata = parse_header(header, data_size=size - data_start, data_start=data_start, path=path)
    return Checkpoint.model_construct(
        path=str(path),
        format=FORMAT,
        key_sep=(sep := guess_key_sep(tensors)),
        tensors=tensors,
        groups=slash_groups(tensors) if sep == "/" else [],
        metadata=metadata,
        sidecars=[],
        files=[str(path)],
        findings=[],
    )


def read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """Return ``(header JSON, byte offset where the data region starts, file size)``; reads only the header."""
    p = str(path)
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            if size < 8:
                raise UnreadableCheckpoint(
                    p, f"truncated safetensors file: {size} bytes, shorter than the 8-byte header length"
                )
            fh.seek(0)
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > MAX_HEADER_BYTES:
                raise UnreadableCheckpoint(
                    p,
                    f"safetensors header length {n} exceeds the 100 MB limit (the safetensors library refuses it too)",
                )
            if n > size - 8:
                raise UnreadableCheckpoint(
                    p,
                    f"truncated or corrupt safetensors file: header length {n} exceeds the {size - 8} bytes after it",
                )
            raw = fh.read(n)
    except OSError as exc:
        raise UnreadableCheckpoint(p, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) != n:
        raise UnreadableCheckpoint(p, f"truncated safetensors header: expected {n} bytes, got {len(raw)}")
    if not raw.startswith(b"{"):
        raise UnreadableCheckpoint(p, "corrupt safetensors header: it does not start with '{'")
    if raw.count(b"{") - 1 > MAX_TENSORS:  # each tensor is one JSON object: refused before parsing
        raise UnreadableCheckpoint(
            p, f"safetensors header refused: it may hold more than {MAX_TENSORS} tensors"
        )
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UnreadableCheckpoint(
            p, f"corrupt safetensors header: not valid UTF-8 at byte {exc.start}"
        ) from None
    except ValueError as exc:
        raise UnreadableCheckpoint(p, f"corrupt safetensors header: invalid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise UnreadableCheckpoint(p, "corrupt safetensors header: the JSON is not an object")
    return header, 8 + n, size


def _dtype(name: Any) -> tuple[str, int] | None:
    if not isinstance(name, str):
        return None
    canonical = SAFETENSORS.get(name)
    if canonical is not None:
        return canonical, ITEM_BITS[canonical]
    return None


def parse_header(
    header: dict[str, Any], *, data_size: int, data_start: int, path: Path, storage: str | None = None
) -> tuple[dict[str, TensorInfo], dict[str, Any]]:
    """Validate a parsed header (consumed: its tensor entries are removed) against a data region of ``data_size``
    bytes; return ``(tensors, __metadata__)``.

    ``TensorInfo.offset`` is the absolute file offset of each tensor's first byte.
    """
    p = str(path)

    def bad(reason: str) -> UnreadableCheckpoint:
        return UnreadableCheckpoint(p, f"corrupt safetensors header: {reason}")

    metadata: dict[str, Any] = {}
    raw_meta = header.get("__metadata__")
    if raw_meta is not None:
        if not isinstance(raw_meta, dict) or not all(isinstance(v, str) for v in raw_meta.values()):
            raise bad("__metadata__ must map strings to strings")
        metadata = dict(raw_meta)

    spans: list[tuple[int, int, str]] = []
    tensors: dict[str, TensorInfo] = {}
    for name in list(header):
        if name == "__metadata__":
            continue
        info = header.pop(name)  # each entry is freed once read: peak memory is one copy of the header
        if not isinstance(info, dict):
            raise bad(f"tensor {name!r}: entry is not an object")
        dt = _dtype(info.get("dtype"))
        if dt is None:
            raise bad(f"tensor {name!r}: unknown dtype {info.get('dtype')!r}")
        shape = info.get("shape")
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
        offsets = info.get("data_offsets")
        if type(offsets) is not list or len(offsets) != 2:
            raise bad(f"tensor {name!r}: data_offsets {offsets!r} is not a pair of non-negative integers")
        begin, end = offsets
        if type(begin) is not int or type(end) is not int or begin < 0 or end < 0:
            raise bad(f"tensor {name!r}: data_offsets {offsets!r} is not a pair of non-negative integers")
        if end < begin:
            raise bad(f"tensor {name!r}: data_offsets [{begin}, {end}] end before they begin")
        canonical, bits = dt
        numel = 1
        for d in shape:
            numel *= d
        if (numel * bits) % 8:
            raise bad(f"tensor {name!r}: {numel} elements of {canonical} do not end on a byte boundary")
        nbytes = numel * bits // 8
        if end - begin != nbytes:
            raise bad(
                f"tensor {name!r}: data_offsets [{begin}, {end}] hold {end - begin} bytes "
                f"but shape {shape} x {canonical} needs {nbytes}"
            )
        if end > data_size:
            raise UnreadableCheckpoint(
                p,
                f"truncated safetensors file: tensor {name!r} data_offsets [{begin}, {end}] reach past "
                f"the end of the {data_size}-byte data region",
            )
        spans.append((begin, end, name))
        tensors[name] = tensor_info(
            shape, canonical, nbytes=nbytes, storage=storage, offset=data_start + begin
        )

    spans.sort()
    covered = 0
    previous = ""
    for begin, end, name in spans:
        if begin < covered:
            raise bad(
                f"tensor {name!r} data_offsets [{begin}, {end}] overlap tensor {previous!r} (ends at {covered})"
            )
        if begin > covered:
            where = f"after tensor {previous!r}" if previous else "at the start of the data region"
            raise bad(f"{begin - covered} bytes {where} belong to no tensor (before {name!r})")
        covered, previous = end, name
    if covered != data_size:
        raise bad(f"{data_size - covered} bytes at the end of the data region belong to no tensor")
    return tensors, metadata
