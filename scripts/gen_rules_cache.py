"""Write ``rules/parsed.jsonl``, every rule-data TOML file parsed (``ckptlint.archs.parsed_cache``).

    python scripts/gen_rules_cache.py           # rewrite it
    python scripts/gen_rules_cache.py --check   # exit 1 when it differs from what it would be

Run it after editing any ``rules/**/*.toml``: until then ckptlint parses the edited file's TOML at every start
(correct, only slower) and ``tests/test_family_files.py`` fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ckptlint.archs.parsed_cache import build_cache, cache_path, render  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare")
    args = parser.parse_args()
    text = render(build_cache(ROOT / "rules"))
    path = cache_path(ROOT / "rules")
    if args.check:
        fresh = path.exists() and path.read_text(encoding="utf-8") == text
        print(f"{path}: {'up to date' if fresh else 'stale: run python scripts/gen_rules_cache.py'}")
        return 0 if fresh else 1
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
