"""Turn command-line PATH arguments (files, directories, globs, URLs) into the checkpoints to check.

A directory that is itself a checkpoint (HF ``save_pretrained``, open_clip hub folder, sharded index folder) is
one checkpoint; any other directory is walked, and only files that are checkpoints are kept: a file with a
checkpoint extension is always kept (a broken one must be reported), any other file only when its first bytes
sniff as a checkpoint. Only the first 64 bytes of a candidate are read here.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ckptlint.errors import UnreadableCheckpoint, UsageError
from ckptlint.folders import TEXT_SUFFIXES, entries
from ckptlint.remote import RemotePath, is_remote

CHECKPOINT_SUFFIXES = (
    ".safetensors",
    ".pt",
    ".pth",
    ".bin",
    ".ckpt",
    ".npz",
    ".npy",
    ".msgpack",
    ".flax",
    ".pkl",
    ".pickle",
    ".safetensors.index.json",
    ".bin.index.json",
)
# a folder holding one of these is a checkpoint folder, checked as a whole
CHECKPOINT_DIR_MARKERS = (
    "config.json",
    "open_clip_config.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
# never sniffed: the files no loader unpickles (a JSON file could otherwise be parsed whole) and sentencepiece
# ``.model`` files; ``.gitignore``, ``.in`` and ``.license`` files are sniffed like any unknown file
NOT_CHECKPOINT_SUFFIXES = (TEXT_SUFFIXES - {".gitignore", ".in", ".license"}) | {".model"}
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules", ".ipynb_checkpoints"})
_GLOB_CHARS = frozenset("*?[")
_SKIPPED_KINDS = frozenset({"dump-json"})  # a dumped spec is an expectation, not a checkpoint to lint


def is_checkpoint_dir(path: Path | RemotePath) -> bool:
    """A folder that is one checkpoint: weights next to a config, or a shard index."""
    try:
        names = {e.name for e in entries(path)}
    except OSError:
        return False
    if not names & set(CHECKPOINT_DIR_MARKERS):
        return False
    return any(n.endswith(CHECKPOINT_SUFFIXES) for n in names)


def _looks_like_checkpoint(path: Path | RemotePath) -> bool:
    if path.name.lower().endswith(CHECKPOINT_SUFFIXES):
        return True
    if path.suffix.lower() in NOT_CHECKPOINT_SUFFIXES:
        return False
    from ckptlint.readers.sniff import sniff

    try:
        return sniff(path) not in _SKIPPED_KINDS | {"directory"}
    except UnreadableCheckpoint:
        return False


def _walk(root: Path | RemotePath) -> list[str]:
    """The checkpoints under ``root``, as ``os.walk`` (no symlinked folder followed) would find them."""
    found: list[str] = []
    todo = [root]
    while todo:
        here = todo.pop()
        try:
            items = entries(here)
        except OSError:
            continue
        subdirs = []
        for entry in items:
            if entry.is_dir:
                if entry.name in _SKIP_DIRS or entry.name.startswith("."):
                    continue
                if is_checkpoint_dir(entry.path):
                    found.append(str(entry.path))
                elif not entry.is_symlink:
                    subdirs.append(entry.path)
            elif not entry.name.startswith(".") and entry.is_file and _looks_like_checkpoint(entry.path):
                found.append(str(entry.path))
        todo.extend(reversed(subdirs))
    return sorted(found)


def _remote_folder(url: str) -> RemotePath | None:
    """The folder a URL names (``hf://org/repo``, ``s3://bucket/prefix/``; an http(s) URL ending in ``/``), or
    None for a file. A name with a checkpoint's or a text file's suffix is a file, without asking the server."""
    path = url.split("?", 1)[0]
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    if not path.endswith("/") and (
        name.endswith(CHECKPOINT_SUFFIXES) or os.path.splitext(name)[1] in NOT_CHECKPOINT_SUFFIXES
    ):
        return None
    try:
        folder = RemotePath(url)
        return folder if folder.is_dir() else None
    except UnreadableCheckpoint:
        return None  # the reader reports it


def expand_paths(args: list[str]) -> list[str]:
    """The checkpoints named by ``args``, in argument order, without duplicates.

    A file or URL is taken as given (a missing file is reported by the reader); a glob is expanded (no match is
    a usage error); a directory is one checkpoint or is walked.
    """
    out: list[str] = []
    for arg in args:
        if is_remote(arg):
            folder = _remote_folder(arg)
            if folder is None or not folder.listable or is_checkpoint_dir(folder):
                out.append(arg)  # a file, an http(s) folder (probed by the reader) or one checkpoint folder
            else:
                out.extend(_walk(folder) or [arg])
            continue
        p = Path(arg)
        if not p.exists() and _GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise UsageError(f"{arg}: no file matches this pattern")
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    out.extend([m] if is_checkpoint_dir(mp) else _walk(mp))
                elif _looks_like_checkpoint(mp):
                    out.append(m)
            continue
        if p.is_dir() and not is_checkpoint_dir(p):
            walked = _walk(p)
            # an unrecognised folder with no checkpoint inside goes to the directory reader, which explains
            out.extend(walked or [arg])
            continue
        out.append(arg)
    seen: set[str] = set()
    unique = []
    for item in out:
        key = item if is_remote(item) else os.path.normpath(item)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique
