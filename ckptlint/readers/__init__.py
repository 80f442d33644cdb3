"""Readers: one module per format, picked by sniffing bytes. Each returns a ``Checkpoint``.

Readers know nothing of architectures, rules or output; they import only the ``Checkpoint`` model,
the stdlib and format libraries.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.facts import SecurityFacts, one_line
from ckptlint.folders import parent, relative
from ckptlint.readers.sidecars import attach_sidecars
from ckptlint.readers.sniff import sniff
from ckptlint.remote import RemotePath, is_remote

# reader name (as returned by sniff) -> module under ckptlint.readers exposing ``read(path) -> Checkpoint``
READER_MODULES: dict[str, str] = {
    "safetensors": "safetensors_reader",
    "sharded": "sharded",
    "torch-zip": "torch_zip",
    "pickle": "pickle_file",
    "npz": "npz",
    "npy": "npz",
    "flax-msgpack": "flax_msgpack",
    "directory": "directory",
    "dump-json": "dump_json",
}

# The security facts of the files read while reading another (the shards of an index, the files of a folder):
# a reader that reads other checkpoints through ``read_checkpoint`` need not carry their facts itself; the
# outermost call attaches them, each naming its file.
_INNER: ContextVar[dict[str, SecurityFacts] | None] = ContextVar("ckptlint_inner_facts", default=None)


def read_checkpoint(path: str | Path | RemotePath) -> Checkpoint:
    """Read the structure of ``path`` (file or directory). Raises ``UnreadableCheckpoint`` for bad input."""
    inner = _INNER.get()
    token = _INNER.set({}) if inner is None else None
    try:
        if is_remote(path) and not isinstance(path, RemotePath):
            path = RemotePath(str(path))  # URLs: header byte ranges via fsspec
        with _gc_paused() if inner is None else contextlib.nullcontext():
            ckpt = _read(path)
    except UnreadableCheckpoint as exc:
        if inner is not None:
            inner[str(path)] = exc.facts
        else:
            _attach(exc.facts, str(path), is_dir=_was_dir(path))
        raise
    finally:
        if token is not None:
            collected = _INNER.get()
            _INNER.reset(token)
    if inner is not None:
        inner[str(path)] = ckpt.security
    else:
        _attach(ckpt.security, str(path), is_dir=_was_dir(path), collected=collected)
    return ckpt


def _was_dir(path: str | Path | RemotePath) -> bool:
    """Whether ``path`` was read as a folder (a remote one is not asked again)."""
    if isinstance(path, RemotePath):
        return path.known_type() == "directory"
    return not is_remote(path) and Path(path).is_dir()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic GC off while a reader builds its objects: hundreds of thousands of live headers made the
    collector's passes cost more than the reading (2x on a 360k-tensor safetensors header). Readers make few
    cycles; the collector runs again as soon as the read ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _attach(
    facts: SecurityFacts, path: str, *, is_dir: bool, collected: dict[str, SecurityFacts] | None = None
) -> None:
    if collected is None:
        collected = _INNER.get() or {}
    base = path if is_dir else parent(path)
    for inner_path, found in collected.items():
        if inner_path != path and found:
            facts.merge(found, file=relative(inner_path, base) if base else inner_path)


def _read(path: str | Path | RemotePath) -> Checkpoint:
    p = path if isinstance(path, RemotePath) else Path(path)
    kind = sniff(p)
    module = importlib.import_module(f"ckptlint.readers.{READER_MODULES[kind]}")
    try:
        ckpt = module.read(p) if kind != "npy" else module.read_npy(p)
        # the configs next to a file; remote, only where the folder lists (probing an http folder per file
        # would cost dozens of requests: such a file is checked without its configs)
        if kind not in ("directory", "dump-json") and (isinstance(p, Path) or p.parent.listable):
            attach_sidecars(ckpt, p.parent)
        return ckpt
    except UnreadableCheckpoint:
        raise
    except RecursionError as exc:
        raise UnreadableCheckpoint(
            str(p), f"cannot read {kind} file: nested too deeply", refused=True
        ) from exc
    except Exception as exc:
        # Last line of defence: a reader bug or an input it did not anticipate is still exit 2, one line, and
        # never "clean": ckptlint could not judge the file.
        raise UnreadableCheckpoint(
            str(p), one_line(f"cannot read {kind} file: {type(exc).__name__}: {exc}", 500), refused=True
        ) from exc
