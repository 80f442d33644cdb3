"""Checkpoint folders (HF ``save_pretrained``, open_clip hub folders, sharded folders): the weights a loader picks.

A folder is read as the weights file its loader would pick, plus the small configs next to it. The other weight
files are listed in ``metadata["other_weight_files"]`` so that rules can tell "you loaded the HF file, the open_clip
one is ``open_clip_pytorch_model.bin``". The configs are attached by ``ckptlint.readers.sidecars``.

Security: a folder is judged on every file in it, at any depth, that a loader of the folder may unpickle (the
other weight files, ``training_args.bin``, ``optimizer.pt``, ``rng_state.pth``, ``checkpoint-500/OPTIMIZER.PT``,
``model_best.pth.tar``, joblib files, pickles; suffixes compared ignoring case, other files by their first
bytes): their security facts are recorded, each naming its file (``scan_folder``). Model code the folder ships
(a config's ``auto_map``, ``*.py`` files) is recorded for CK302; it is listed, never imported.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.facts import RemoteCode, SecurityFacts, one_line
from ckptlint.folders import TEXT_SUFFIXES, entries, key, unlisted
from ckptlint.readers.sidecars import MAX_SIDECAR_JSON, attach_sidecars, json_content, list_files
from ckptlint.remote import RemotePath

# open_clip.factory._find_checkpoint_in_dir's preference (open_clip_torch 3.3.0)
OPEN_CLIP_ORDER = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
# transformers' from_pretrained: safetensors before torch pickles, a single file before a sharded index
HF_ORDER = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "flax_model.msgpack",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy", ".msgpack", ".index.json")
# files a trainer writes next to the weights; they are training state, never the model's weights
_TRAINING_STATE = re.compile(
    r"^(optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|training_args\.bin|rng_state(_\d+)?\.pth)$"
)
_SHARD_NAME = re.compile(r"^.+-\d+-of-\d+\.[A-Za-z0-9]+$")


def read(path: Path | RemotePath) -> Checkpoint:
    """Read the folder at ``path``: the preferred weights file, the other weight files' names, the sidecars."""
    from ckptlint.readers import read_checkpoint

    p = str(path)
    names = list_files(path)
    has_open_clip_config = "open_clip_config.json" in names
    chosen, others = pick_weights(names, open_clip=has_open_clip_config)
    if chosen is None:
        raise UnreadableCheckpoint(
            p,
            "no weights file in directory (looked for model.safetensors, pytorch_model.bin, open_clip_model.safetensors, "
            "*.index.json, *.safetensors, *.bin, *.pt, *.pth, *.ckpt, *.npz, *.msgpack)",
        )
    inner = read_checkpoint(path / chosen)
    if chosen.startswith("open_clip_") or (has_open_clip_config and "config.json" not in names):
        fmt = "open_clip-dir"
    elif "config.json" in names:
        fmt = "hf-dir"
    else:
        fmt = inner.format
    metadata: dict[str, Any] = dict(inner.metadata)
    metadata["weights_file"] = chosen
    metadata["weights_format"] = inner.format
    if others:
        metadata["other_weight_files"] = others
    training_state = sorted(n for n in names if _TRAINING_STATE.match(n))
    if training_state:
        metadata["training_state_files"] = training_state
    probed = unlisted(path)
    if probed is not None:  # an http(s) folder: only these names were asked for (CK005)
        metadata["unlisted_folder"] = {"probed": list(probed), "found": names}
    ckpt = (
        inner.model_copy(  # the inner reader's facts (tensors, shards…) stay; the folder's own are set here
            update={
                "path": p,
                "format": fmt,
                "metadata": metadata,
                "sidecars": [],
                "files": list(inner.files),
                "findings": list(inner.findings),
                "security": scan_folder(path, judged=inner.files),
            }
        )
    )
    return attach_sidecars(ckpt, path, names=names)


# files a loader of the folder may unpickle, whatever their case (``OPTIMIZER.PT``, ``model_best.pth.tar``)
UNPICKLED_SUFFIXES = (
    ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".jbl", ".tar", ".npy", ".npz", ".safetensors",
    ".msgpack", ".h5", ".z", ".gz", ".bz2", ".xz", ".lzma", ".dat", ".model", ".data",
)  # fmt: skip
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".ipynb_checkpoints"})
_CODE_FORMATS = frozenset({"pickle", "torch-zip", "npz", "npy"})
MAX_FOLDER_ENTRIES = 10_000  # files and folders visited in one checkpoint folder
MAX_FOLDER_DEPTH = 16
MAX_CODE_LISTED = 200


def scan_folder(directory: Path | RemotePath, judged: list[str]) -> SecurityFacts:
    """The security facts of every file in ``directory`` (any depth) that a loader may unpickle, and of the
    model code it ships. Files read through ``read_checkpoint`` have their facts attached by it (naming each
    file); a file ckptlint will not judge is unverifiable; one no loader can read is left alone."""
    from ckptlint.readers import read_checkpoint
    from ckptlint.readers.sniff import sniff

    facts = SecurityFacts()
    seen = {key(f) for f in judged}
    files, truncated = _walk(directory)
    if truncated:
        facts.add_unverifiable(f"a folder of more than {MAX_FOLDER_ENTRIES} entries", str(directory), None,
                               "Not every file was looked at.")  # fmt: skip
    for rel, file in files:
        if key(file) in seen:
            continue
        low = rel.lower()
        suffix = os.path.splitext(low)[1]
        if suffix in TEXT_SUFFIXES:
            continue
        try:
            kind = sniff(file)
            if kind in _CODE_FORMATS:
                read_checkpoint(file)
        except UnreadableCheckpoint as exc:
            if exc.refused or (exc.facts and low.endswith(UNPICKLED_SUFFIXES)):
                facts.add_unverifiable(
                    f"the file {one_line(rel, 200)}", rel, None, f"{exc.reason}.", file=rel
                )
    facts.remote_code.extend(_remote_code(directory, files))
    return facts


def _walk(directory: Path | RemotePath) -> tuple[list[tuple[str, Path | RemotePath]], bool]:
    """(relative path, path) of the folder's files, sorted, any depth (bounded); and whether it was cut."""
    out: list[tuple[str, Path | RemotePath]] = []
    visited = 0
    todo: list[tuple[Path | RemotePath, int, str]] = [(directory, 0, "")]
    while todo:
        folder, depth, rel = todo.pop()
        try:
            found = entries(folder)
        except OSError:
            continue
        for entry in found:
            visited += 1
            if visited > MAX_FOLDER_ENTRIES:
                return sorted(out, key=lambda f: f[0]), True
            if entry.is_dir and not entry.is_symlink:
                if entry.name not in _SKIP_DIRS and depth + 1 < MAX_FOLDER_DEPTH:
                    todo.append((entry.path, depth + 1, os.path.join(rel, entry.name)))
            elif entry.is_file:
                out.append((os.path.join(rel, entry.name), entry.path))
    return sorted(out, key=lambda f: f[0]), False


def _remote_code(
    directory: Path | RemotePath, files: list[tuple[str, Path | RemotePath]]
) -> list[RemoteCode]:
    """Configs whose ``auto_map`` names code (transformers' trust_remote_code) and the folder's ``*.py`` files."""
    code = [rel for rel, _ in files if rel.lower().endswith(".py")]
    out: list[RemoteCode] = []
    mapped: set[str] = set()
    for rel, file in files:
        if not rel.lower().endswith(".json") or "config" not in os.path.basename(rel).lower():
            continue
        doc = json_content(file, MAX_SIDECAR_JSON)
        auto_map = doc.get("auto_map") if doc else None
        if not isinstance(auto_map, dict) or not auto_map:
            continue
        entries: dict[str, str] = {}
        for cls, target in list(auto_map.items())[:50]:
            targets = target if isinstance(target, list) else [target]
            entries[one_line(str(cls), 100)] = one_line(", ".join(str(t) for t in targets if t), 200)
        folder = os.path.dirname(rel)
        modules = sorted(
            {t.split("--")[-1].rsplit(".", 1)[0] for v in entries.values() for t in v.split(", ") if t}
        )
        here = [os.path.join(folder, m.replace(".", "/") + ".py") for m in modules]
        local = [c for c in code if c in here or os.path.dirname(c) == folder]
        missing = [t for v in entries.values() for t in v.split(", ") if "--" in t]
        missing += [
            m
            for m, h in zip(modules, here, strict=True)
            if h not in code and not any("--" in t and t.split("--")[-1].startswith(m) for t in missing)
        ]
        mapped.update(local)
        out.append(RemoteCode(rel, entries, local[:MAX_CODE_LISTED], sorted(set(missing))[:50]))
    rest = [c for c in code if c not in mapped]
    if rest:
        out.append(RemoteCode(None, {}, rest[:MAX_CODE_LISTED], []))
    return out


def _is_weights(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) and not _TRAINING_STATE.match(name)


def pick_weights(names: list[str], *, open_clip: bool) -> tuple[str | None, list[str]]:
    """The weights file a loader would pick among ``names`` and the other weight files (shards excluded).

    With ``open_clip_config.json`` present, open_clip's ``_find_checkpoint_in_dir`` decides (exactly: preferred
    names first, else ``*.safetensors`` then ``*.bin``/``*.pth`` in sorted order). Otherwise transformers' order,
    then open_clip's names, then any weights file (safetensors first, sorted).
    """
    has_index = any(n.endswith(".index.json") for n in names)
    candidates = [n for n in names if _is_weights(n) and not (has_index and _SHARD_NAME.match(n))]
    chosen: str | None = None
    if open_clip:
        chosen = _open_clip_choice(names)
    if chosen is None:
        chosen = next((n for n in (*HF_ORDER, *OPEN_CLIP_ORDER) if n in candidates), None)
    if chosen is None and candidates:
        chosen = sorted(candidates, key=lambda n: (not n.endswith(".safetensors"), n))[0]
    return chosen, [n for n in candidates if n != chosen]


def _open_clip_choice(names: list[str]) -> str | None:
    found = sorted(n for n in names if n.endswith((".safetensors", ".bin", ".pth")))
    if not found:
        return None
    preferred = [n for n in found if n in OPEN_CLIP_ORDER]
    if preferred:
        return min(preferred, key=OPEN_CLIP_ORDER.index)
    found.sort(key=lambda n: n.endswith(".safetensors"), reverse=True)
    return found[0]
