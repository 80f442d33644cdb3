"""Sharded checkpoints: ``*.safetensors.index.json`` / ``pytorch_model.bin.index.json`` and their shard files.

The index's ``weight_map`` names, for every tensor, the shard that holds it. We read every shard's header (never its
data) and take the union. A damaged set of shards is described, not fatal: ``Checkpoint.shards`` records which
shards are missing, which indexed tensors are in no shard, which tensors sit elsewhere than the index says (or in
no ``weight_map`` entry at all) and which shard-named files next to the index it does not reference. The rules
CK002 (incomplete) and CK003 (inconsistent) judge those facts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ckptlint.checkpoint import (
    Checkpoint,
    MisplacedTensor,
    ShardFacts,
    TensorInfo,
    guess_key_sep,
    slash_groups,
)
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.findings import Finding
from ckptlint.folders import entries
from ckptlint.readers.jsonfile import load_json
from ckptlint.remote import RemotePath

# HF shard names: model-00001-of-00003.safetensors, pytorch_model-00001-of-00002.bin
_SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<i>\d+)-of-(?P<n>\d+)(?P<ext>\.[A-Za-z0-9]+)$")


def read(path: Path | RemotePath) -> Checkpoint:
    """Read the shard index at ``path`` and the headers of the shards it references."""
    p = str(path)
    weight_map, index_meta = _read_index(path)
    directory = path.parent
    shard_names = sorted(set(weight_map.values()))

    tensors: dict[str, TensorInfo] = {}
    where: dict[str, list[str]] = {}  # tensor -> shards that hold it
    shard_formats: set[str] = set()
    shard_metadata: dict[str, dict[str, Any]] = {}
    findings: list[Finding] = []
    files = [p]
    missing_shards: list[str] = []
    for shard in shard_names:
        shard_path = directory / shard
        if not shard_path.is_file():
            missing_shards.append(shard)
            continue
        ckpt = _read_shard(shard_path, p, shard)
        files.append(str(shard_path))
        shard_formats.add(ckpt.format)
        if ckpt.metadata:
            shard_metadata[shard] = ckpt.metadata
        findings.extend(ckpt.findings)
        for key, info in ckpt.tensors.items():
            where.setdefault(key, []).append(shard)
            if key not in tensors or weight_map.get(key) == shard:
                storage = shard if info.storage is None else f"{shard}:{info.storage}"
                tensors[key] = info.model_copy(update={"storage": storage})

    facts = ShardFacts(
        missing_shards=missing_shards,
        lost_tensors=sorted(k for k, s in weight_map.items() if s in missing_shards and k not in where),
        tensors_in_no_shard=sorted(
            k for k, s in weight_map.items() if s not in missing_shards and k not in where
        ),
        misplaced={
            k: MisplacedTensor(index=weight_map.get(k), found_in=shards)
            for k, shards in sorted(where.items())
            if weight_map.get(k) not in shards or len(shards) > 1
        },
        unreferenced_shards=_unreferenced_shards(shard_names, directory, path.name),
    )

    metadata: dict[str, Any] = dict(index_meta)
    if shard_metadata:
        distinct = {json.dumps(m, sort_keys=True) for m in shard_metadata.values()}
        if len(distinct) == 1 and len(shard_metadata) == len(shard_names) - len(missing_shards):
            metadata.update(next(iter(shard_metadata.values())))
        else:
            metadata["shard_metadata"] = shard_metadata
    fmt = "torch-sharded" if shard_formats and "safetensors" not in shard_formats else "safetensors-sharded"
    return Checkpoint.model_construct(
        path=p,
        format=fmt,
        key_sep=(sep := guess_key_sep(tensors)),
        tensors=tensors,
        groups=slash_groups(tensors) if sep == "/" else [],
        metadata=metadata,
        sidecars=[],
        files=files,
        findings=findings,  # CK301 of pickled shards
        shards=facts,
    )


def _read_index(path: Path | RemotePath) -> tuple[dict[str, str], dict[str, Any]]:
    p = str(path)
    doc = load_json(path, "shard index")
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict):
        raise UnreadableCheckpoint(p, "corrupt shard index: no weight_map object")
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or Path(shard).name != shard or shard in (".", ".."):
            raise UnreadableCheckpoint(
                p, f"corrupt shard index: tensor {key!r} maps to {shard!r}, not a file name"
            )
    meta = doc.get("metadata")
    return weight_map, (meta if isinstance(meta, dict) else {})


def _read_shard(shard_path: Path | RemotePath, index_path: str, shard: str) -> Checkpoint:
    from ckptlint.readers import read_checkpoint

    try:
        return read_checkpoint(shard_path)
    except UnreadableCheckpoint as exc:
        raise UnreadableCheckpoint(index_path, f"shard {shard}: {exc.reason}") from None


def _unreferenced_shards(shard_names: list[str], directory: Path | RemotePath, index_name: str) -> list[str]:
    """Files matching the referenced shards' ``<stem>-NNNNN-of-NNNNN<ext>`` naming that the index does not name."""
    patterns = set()
    for name in shard_names:
        m = _SHARD_NAME.match(name)
        if m:
            patterns.add((m["stem"], m["ext"]))
    if not patterns:
        # no shard follows the HF naming: derive it from the index name (model.safetensors.index.json)
        base = index_name.removesuffix(".index.json")
        stem, dot, ext = base.rpartition(".")
        if dot:
            patterns.add((stem, "." + ext))
    referenced = set(shard_names)
    extra = []
    try:
        names = [e.name for e in entries(directory)]
    except OSError:
        return []
    for name in names:
        m = _SHARD_NAME.match(name)
        if m and (m["stem"], m["ext"]) in patterns and name not in referenced:
            extra.append(name)
    return extra
