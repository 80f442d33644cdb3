"""Bounded reading of the JSON inputs (shard indexes, dump files): one size limit, one set of errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ckptlint.errors import UnreadableCheckpoint

MAX_JSON_BYTES = 64 << 20  # a shard index of a 10k-tensor model is ~1 MB; a dump of one, a few MB


def load_json(path: Path, what: str, *, invalid: str | None = None) -> Any:
    """Parse the JSON file at ``path``; ``UnreadableCheckpoint`` naming ``what`` when too large, unreadable or
    invalid (``invalid`` replaces the default ``corrupt WHAT`` prefix of that last message)."""
    p = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise UnreadableCheckpoint(p, f"{what} of {size} bytes is larger than {MAX_JSON_BYTES >> 20} MiB")
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise UnreadableCheckpoint(p, f"cannot read: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise UnreadableCheckpoint(p, f"{invalid or 'corrupt ' + what}: invalid JSON ({exc})") from None
