"""Sidecar configs: the small config files next to a checkpoint (HF, open_clip, timm, tokenizer), attached to it.

Used for a folder (by the directory reader) and for a single weights file (by ``read_checkpoint``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ckptlint.checkpoint import Checkpoint, Sidecar
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.folders import entries
from ckptlint.remote import RemotePath

SIDECAR_KINDS: dict[str, str] = {
    "config.json": "hf-config",  # or timm-config, decided from the content
    "preprocessor_config.json": "hf-preprocessor",
    "processor_config.json": "hf-preprocessor",
    "open_clip_config.json": "open_clip-config",
    "tokenizer.json": "tokenizer",
    "tokenizer_config.json": "tokenizer",
    "special_tokens_map.json": "tokenizer",
    "added_tokens.json": "tokenizer",
    "vocab.json": "tokenizer",
    "vocab.txt": "tokenizer",
    "merges.txt": "tokenizer",
    "spiece.model": "tokenizer",
    "tokenizer.model": "tokenizer",
    "sentencepiece.bpe.model": "tokenizer",
    "generation_config.json": "other",
    "trainer_state.json": "other",
}
MAX_SIDECAR_JSON = 1 << 20  # larger JSON sidecars (tokenizer.json) are listed without content
MAX_OTHER_JSON = 64 << 10  # unknown *.json files are looked at only when this small...
MAX_OTHER_JSON_FILES = 16  # ...and only this many of them
_CONFIG_KEYS = ("model_cfg", "vision_cfg", "model_type", "architecture", "architectures", "pretrained_cfg")


MAX_LISTINGS = 8  # folders whose listing is kept (a scan of N files in one folder lists it once, not N times)
_listings: dict[tuple[str, int, int], tuple[tuple[str, ...], tuple[str, ...]]] = {}


def list_files(directory: Path | RemotePath) -> list[str]:
    """The names of the files in ``directory`` (not its folders), sorted; ``UnreadableCheckpoint`` if unlistable.

    A local folder's listing is kept per process while the folder is unchanged (its mtime moves when an entry is
    added, removed or renamed): checking each of N files of one folder would otherwise cost N listings of N
    entries. A remote folder keeps its own listing (``RemotePath.children``)."""
    return list(_listing(directory)[0])


def _listing(directory: Path | RemotePath) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every file name, the names that may be sidecars), sorted, kept while the folder is unchanged."""
    try:
        if isinstance(directory, RemotePath):
            names = tuple(e.name for e in entries(directory) if e.is_file)
            return names, tuple(n for n in names if _may_be_sidecar(n))
        st = os.stat(directory)
        key = (str(directory), st.st_ino, st.st_mtime_ns)
        found = _listings.get(key)
        if found is None:
            names = tuple(e.name for e in entries(directory) if e.is_file)
            found = (names, tuple(n for n in names if _may_be_sidecar(n)))
            while len(_listings) >= MAX_LISTINGS:
                _listings.pop(next(iter(_listings)), None)
            _listings[key] = found
        return found
    except OSError as exc:
        raise UnreadableCheckpoint(str(directory), f"cannot list directory: {exc.strerror or exc}") from None


def _may_be_sidecar(name: str) -> bool:
    return name in SIDECAR_KINDS or (name.endswith(".json") and not name.endswith(".index.json"))


def attach_sidecars(
    ckpt: Checkpoint, directory: Path | RemotePath, *, names: list[str] | None = None
) -> Checkpoint:
    """Set ``ckpt.sidecars`` to the config files in ``directory`` (HF, open_clip, timm, tokenizer); returns ``ckpt``.

    Known names are always attached; other ``*.json`` files only when small and config-like. The checkpoint's own
    files, shard indexes and ckptlint dump files are never sidecars. Idempotent: calling it twice gives one list.
    """
    if names is None:
        try:
            names = list(_listing(directory)[1])  # only the names that may be sidecars (same order)
        except UnreadableCheckpoint:
            return ckpt
    own = {Path(f).name for f in ckpt.files} | {Path(ckpt.path).name}
    sidecars: list[Sidecar] = []
    others_examined = 0
    for name in names:
        if name in own or name.endswith(".index.json"):
            continue
        kind = SIDECAR_KINDS.get(name)
        error = None
        if kind is not None:
            if name.endswith(".json"):
                content, error = json_document(directory / name, MAX_SIDECAR_JSON)
            else:
                content = None
            if name == "config.json" and _looks_like_timm(content):
                kind = "timm-config"
        elif name.endswith(".json") and others_examined < MAX_OTHER_JSON_FILES:
            others_examined += 1
            content = json_content(directory / name, MAX_OTHER_JSON)
            kind = _kind_of_config(content)
            if kind is None:
                continue
        else:
            continue
        sidecars.append(Sidecar.model_construct(name=name, kind=kind, content=content, error=error))
    ckpt.sidecars = sidecars
    if any(s.kind == "tokenizer" for s in sidecars):  # DECL-HF: token ids, for CK115
        from ckptlint.readers.tokenizer import tokenizer_facts

        ckpt.tokenizer = tokenizer_facts(directory, [s.name for s in sidecars if s.kind == "tokenizer"])
    return ckpt


def json_content(path: Path | RemotePath, limit: int) -> dict[str, Any] | None:
    """Parsed JSON object of ``path`` when it is at most ``limit`` bytes and valid, else None."""
    return json_document(path, limit)[0]


def json_document(path: Path | RemotePath, limit: int) -> tuple[dict[str, Any] | None, str | None]:
    """(the parsed JSON object of ``path``, None) when it is at most ``limit`` bytes and valid; (None, why) when it
    was read and is no JSON object (``json``'s own message, with its line and column); (None, None) when it was
    not read (too large, unreadable)."""
    try:
        if path.stat().st_size > limit:
            return None, None
        raw = path.read_bytes()
    except OSError:
        return None, None
    try:
        doc = json.loads(raw)
    except RecursionError:
        return None, "it is nested too deeply to parse"
    except ValueError as exc:  # JSONDecodeError (line, column, char), or bytes that are no UTF-8/16/32 text
        return None, f"it is not valid JSON ({exc})"
    if not isinstance(doc, dict):
        return None, f"it is a JSON {_JSON_TYPES.get(type(doc), type(doc).__name__)}, not an object"
    return doc, None


_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _looks_like_timm(content: dict[str, Any] | None) -> bool:
    return (
        bool(content)
        and ("pretrained_cfg" in content or "architecture" in content)
        and "model_type" not in content
    )


def _kind_of_config(content: dict[str, Any] | None) -> str | None:
    """Kind of an unknown JSON file, or None when it is not a model config (or is a dump/index file)."""
    if not content or "weight_map" in content or ("schema_version" in content and "tensors" in content):
        return None
    if not any(k in content for k in _CONFIG_KEYS):
        return None
    if "model_cfg" in content:
        return "open_clip-config"
    if _looks_like_timm(content):
        return "timm-config"
    if "model_type" in content:
        return "hf-config"
    return "other"  # e.g. an open_clip model config (embed_dim, vision_cfg, text_cfg) such as ViT-B-16.json
