"""Folders, on disk or remote, listed the one way the readers and ``discover`` walk them.

A local folder is listed with ``os.scandir``; a remote one (``hf://org/repo``, ``s3://bucket/prefix/``,
``gs://...``) with one listing of the store (``RemotePath.children``). An ``http(s)://`` folder (a URL ending in
``/``) cannot be listed: the names its loaders read (``PROBED_NAMES``) are probed one by one, and the folder
remembers which were (``unlisted``), so that a report can say what was not seen.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from ckptlint.record import record
from ckptlint.remote import RemotePath

# The files loaders of a folder open by name: transformers (weights, shard indexes, configs, preprocessing and
# tokenizer files), open_clip hub folders, and the trainer's pickled arguments. tests/test_remote_folders.py
# checks that it covers the names the folder reader, the sidecar reader and discover look for.
PROBED_NAMES: tuple[str, ...] = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "flax_model.msgpack",
    "open_clip_config.json",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "pytorch_model.pth",
    "model.pth",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "generation_config.json",
    "trainer_state.json",
    "training_args.bin",
)


# files no loader unpickles: text, code, configs, notebooks, images, logs (``*.py`` is model code: CK302)
TEXT_SUFFIXES = frozenset(
    [
        ".json",
        ".jsonl",
        ".txt",
        ".md",
        ".rst",
        ".py",
        ".ipynb",
        ".yaml",
        ".yml",
        ".toml",
        ".cfg",
        ".ini",
        ".csv",
        ".tsv",
        ".log",
        ".html",
        ".css",
        ".js",
        ".sh",
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".svg",
        ".webp",
        ".pdf",
        ".vocab",
        ".tiktoken",
        ".lock",
        ".gitattributes",
        ".gitignore",
        ".license",
        ".in",
    ]
)


@record(frozen=True)
class Entry:
    """One item of a folder: ``is_dir``/``is_file`` follow symlinks (as ``os.DirEntry``'s do)."""

    name: str
    path: Path | RemotePath
    is_dir: bool
    is_file: bool
    is_symlink: bool = False


def entries(folder: Path | RemotePath) -> list[Entry]:
    """The items of ``folder``, sorted by name. ``OSError`` when a local folder cannot be listed; a remote
    listing that fails for good is ``UnreadableCheckpoint`` (``netfaults``)."""
    if isinstance(folder, RemotePath):
        return [
            Entry(c.name, c, c.is_dir(), c.is_file()) for c in folder.children(PROBED_NAMES) if c.exists()
        ]
    out = []
    with os.scandir(folder) as it:
        for e in it:
            try:
                out.append(Entry(e.name, Path(e.path), e.is_dir(), e.is_file(), e.is_symlink()))
            except OSError:
                continue
    return sorted(out, key=lambda e: e.name)


def unlisted(folder: Path | RemotePath) -> tuple[str, ...] | None:
    """The names probed in a folder that could not be listed (after ``entries``), else None."""
    return folder.probed if isinstance(folder, RemotePath) else None


def key(path: str | Path | RemotePath) -> str:
    """A name that is the same for two spellings of one file (absolute path, or URL)."""
    text = str(path)
    return text if isinstance(path, RemotePath) or "://" in text else os.path.abspath(text)


def relative(path: str, base: str) -> str:
    """``path`` relative to the folder ``base`` (both local paths, or both URLs)."""
    if "://" not in base:
        return os.path.relpath(path, base)
    root = base.split("?", 1)[0].rstrip("/") + "/"
    return path[len(root) :] if path.startswith(root) else posixpath.basename(path.rstrip("/"))


def parent(path: str) -> str:
    """The folder holding ``path`` (a local path or a URL)."""
    if "://" not in path:
        return os.path.dirname(path)
    return path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[0]
