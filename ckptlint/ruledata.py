"""Where the declarative rule knowledge (``rules/*.toml``) lives, installed or from a source tree, and its parse.

Parsing the TOML files is the largest part of a one-file check's start-up (~25 ms, pure-Python ``tomllib``), so
``rules/parsed.jsonl`` holds every file already parsed (JSON loads ~30x faster), written by
``scripts/gen_rules_cache.py`` and kept fresh by ``tests/test_family_files.py``. An entry is used only when it was
made from the very bytes on disk (length and CRC-32 match); an edited file is parsed from its TOML.
"""

from __future__ import annotations

import json
import zlib
from functools import cache
from pathlib import Path
from typing import Any

_PKG = Path(__file__).resolve().parent
CACHE = "parsed.jsonl"


@cache
def rules_dir() -> Path:
    """``ckptlint/_rules_data`` in a wheel; the repository's top-level ``rules/`` in a source checkout."""
    for candidate in (_PKG / "_rules_data", _PKG.parent / "rules"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("ckptlint rule data not found (neither ckptlint/_rules_data nor rules/)")


def load_toml(relpath: str) -> dict[str, Any]:
    """Parse ``rules/<relpath>`` (cached; callers must not mutate the result)."""
    return read_rules(relpath)[0]


@cache
def read_rules(relpath: str) -> tuple[dict[str, Any], bool]:
    """``rules/<relpath>`` parsed, and whether it came from the cache (the very bytes the tests validated)."""
    data = (rules_dir() / relpath).read_bytes()
    entry = parsed(relpath, data)
    if entry is not None:
        return entry["data"], True
    return parse_toml(data.decode()), False


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``, imported only for a file the cache does not hold (start-up time)."""
    import tomllib

    return tomllib.loads(text)


def fingerprint(data: bytes) -> str:
    """What ties a cache entry to the bytes it was parsed from."""
    return f"{len(data)}:{zlib.crc32(data):08x}"


@cache
def _entries() -> dict[str, Any]:
    """The cache's entries; an architecture's table is its line of the file (JSON text, loaded when needed), so
    a run parses only the small first line (the indexes): ~0.5 ms instead of ~2.5 ms for the whole."""
    try:
        head, *lines = (rules_dir() / CACHE).read_bytes().split(b"\n")
        entries = json.loads(head)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(entries, dict):
        return {}
    for entry in entries.values():
        archs = entry.get("archs") if isinstance(entry, dict) else None
        if isinstance(archs, dict):
            entry["archs"] = {name: _line(lines, ref) for name, ref in archs.items()}
    return entries


def _line(lines: list[bytes], ref: Any) -> str | None:
    """The table ``ref`` (``[line number after the first, CRC-32 of that line]``) points to, as text; None when
    there is no such line or it is not the line the cache was written with (a line lost or moved by an edit or a
    merge): the entry is then ignored, never built from another table."""
    if not (isinstance(ref, list) and len(ref) == 2 and all(type(v) is int for v in ref)):
        return None
    at, crc = ref
    if not 0 <= at < len(lines) or zlib.crc32(lines[at]) != crc:
        return None
    try:
        return lines[at].decode("utf-8")
    except UnicodeDecodeError:
        return None


def parsed(relpath: str, data: bytes) -> dict[str, Any] | None:
    """The cache entry of ``rules/<relpath>`` if it was made from exactly ``data``, else None."""
    entry = _entries().get(relpath)
    if isinstance(entry, dict) and entry.get("source") == fingerprint(data) and _well_formed(entry):
        return entry
    return None


def _well_formed(entry: dict[str, Any]) -> bool:
    """An entry as ``parsed_cache`` writes it (a damaged cache is ignored, not trusted)."""
    if "data" in entry:
        return isinstance(entry["data"], dict)
    archs = entry.get("archs")
    return (
        isinstance(entry.get("index"), dict)
        and isinstance(archs, dict)
        and all(isinstance(v, str) for v in archs.values())
    )
