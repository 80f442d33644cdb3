"""The family cache: the loaded and validated family files, kept between processes in the user's cache folder.

Parsing every ``rules/archs/*.toml`` and validating it with pydantic costs more than reading a small checkpoint, and
gives the same result as long as the files do not change. So the registry, once loaded and validated, is written to
``families.pickle`` in ``$CKPTLINT_CACHE_DIR`` (else ``$XDG_CACHE_HOME/ckptlint``, else ``~/.cache/ckptlint``;
``CKPTLINT_CACHE_DIR=""`` turns the cache off) and read back by the next process whose key matches: every family
file's and every ``ckptlint/archs`` module's path, size and mtime, the rule data the tables use, and the versions
of ckptlint, Python and pydantic. A stale, unreadable, foreign or corrupt cache is ignored (and rewritten); writing
is atomic (a temporary file renamed over) and a failure to write is silent: the cache only ever saves time.

The cache is ckptlint's own file, yet it is read like any pickle ckptlint meets: an unpickler that resolves only
the classes of ``ckptlint.archs`` and ``pathlib`` paths, and refuses every other global, so a planted file can
never run code.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
from pathlib import Path
from typing import Any

ENV_DIR = "CKPTLINT_CACHE_DIR"
FILE_NAME = "families.pickle"
FORMAT = 1
MAX_BYTES = 64 << 20  # far above any real registry; a larger file is not ours
_ARCHS = Path(__file__).resolve().parent
_PATHS = {("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "Path")}


def cache_dir() -> Path | None:
    """Where the cache lives, or None when turned off (``CKPTLINT_CACHE_DIR=""``)."""
    env = os.environ.get(ENV_DIR)
    if env is not None:
        return Path(env) if env.strip() else None
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "ckptlint" / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return Path(xdg) / "ckptlint" if xdg else Path.home() / ".cache" / "ckptlint"


def cache_key(files: list[Path], data: list[Path], versions: tuple[str, ...]) -> tuple[Any, ...]:
    """What the cached registry was built from: changes to any of it make the cache stale."""
    stamps = []
    for p in [*files, *data, *sorted(_ARCHS.glob("*.py"))]:
        st = p.stat()
        stamps.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return (FORMAT, versions, tuple(stamps))


class _Unpickler(pickle.Unpickler):
    """Resolves only ``ckptlint.archs`` classes and pathlib paths; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PATHS or (module.startswith("ckptlint.archs.") and "." not in name):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in the family cache")


def load(key: tuple[Any, ...]) -> Any | None:
    """The cached object built from ``key``, or None (no cache, stale, unreadable or not ours)."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        with (folder / FILE_NAME).open("rb") as fh:
            blob = fh.read(MAX_BYTES + 1)
        if len(blob) > MAX_BYTES:
            return None
        stream = io.BytesIO(blob)
        if _Unpickler(stream).load() != key:
            return None
        return _Unpickler(stream).load()
    except Exception:  # a cache that cannot be read is no cache
        return None


def store(key: tuple[Any, ...], value: Any) -> None:
    """Write ``value`` for ``key`` atomically; silently does nothing when the folder is not writable."""
    folder = cache_dir()
    if folder is None:
        return
    import tempfile  # only when writing (start-up time of every run that reads)

    tmp = None
    try:
        blob = pickle.dumps(key, protocol=pickle.HIGHEST_PROTOCOL) + pickle.dumps(
            value, protocol=pickle.HIGHEST_PROTOCOL
        )
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".families-", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, folder / FILE_NAME)
        tmp = None
    except Exception:  # the cache only saves time: never fail a run over it
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
