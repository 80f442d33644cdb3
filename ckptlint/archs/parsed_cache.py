"""``rules/parsed.jsonl``: every rule-data TOML file already parsed, so a run need not parse TOML (start-up).

Family files (``archs/*.toml``) are stored as the registry reads a bundled file: the index parsed, each
architecture's table as JSON text it loads when the architecture is first needed (a line of its own: ``render``).
Every other file is stored parsed whole. Each entry records the length and CRC-32 of the bytes it was made from (``ruledata.fingerprint``);
``ckptlint.ruledata.parsed`` ignores an entry that does not match the file on disk.
"""

from __future__ import annotations

import json
import tomllib
import zlib
from pathlib import Path
from typing import Any

from ckptlint.archs.registry import parse_bundled
from ckptlint.ruledata import CACHE, fingerprint, rules_dir


def build_cache(root: Path | None = None) -> dict[str, Any]:
    """The cache of every ``*.toml`` under ``root`` (default: the rule data in use)."""
    root = root or rules_dir()
    files: dict[str, Any] = {}
    for path in sorted(root.rglob("*.toml")):
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        if rel.startswith("archs/"):
            index, chunks = parse_bundled(data.decode("utf-8"))
            archs = {name: json.dumps(tomllib.loads(text)["archs"][name]) for name, text in chunks.items()}
            files[rel] = {"source": fingerprint(data), "index": index, "archs": archs}
        else:
            files[rel] = {"source": fingerprint(data), "data": tomllib.loads(data.decode("utf-8"))}
    return {"generated_by": "scripts/gen_rules_cache.py", "files": files}


def render(cache: dict[str, Any]) -> str:
    """The file's text: the entries on the first line, each architecture's table on a line of its own (the entry
    gives the number of that line after the first and its CRC-32), so a run parses only the first line and the
    tables it needs, and never takes a line that moved for the table it names."""
    tables: list[str] = []
    files: dict[str, Any] = {}
    for rel, entry in cache["files"].items():
        if "archs" in entry:
            refs = {}
            for name, text in entry["archs"].items():
                refs[name] = [len(tables), zlib.crc32(text.encode("utf-8"))]
                tables.append(text)
            entry = {**entry, "archs": refs}
        files[rel] = entry
    head = json.dumps({**cache, "files": files}, ensure_ascii=False, separators=(",", ":"))
    return "\n".join([head, *tables]) + "\n"  # json.dumps writes no newline inside a JSON text


def cache_path(root: Path | None = None) -> Path:
    return (root or rules_dir()) / CACHE
