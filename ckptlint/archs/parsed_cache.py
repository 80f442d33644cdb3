"""``rules/parsed.json``: every rule-data TOML file already parsed, so a run need not parse TOML (start-up).

Family files (``archs/*.toml``) are stored as the registry reads a bundled file: the index parsed, each
architecture's table as JSON text it loads when the architecture is first needed. Every other file is stored
parsed whole. Each entry records the length and CRC-32 of the bytes it was made from (``ruledata.fingerprint``);
``ckptlint.ruledata.parsed`` ignores an entry that does not match the file on disk.
"""

from __future__ import annotations

import json
import tomllib
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
    return json.dumps(cache, ensure_ascii=False, separators=(",", ":")) + "\n"


def cache_path(root: Path | None = None) -> Path:
    return (root or rules_dir()) / CACHE
