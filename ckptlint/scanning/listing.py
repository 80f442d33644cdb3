"""Sizes of many remote files from one listing of their folder instead of a HEAD request per file.

A bucket scan names thousands of objects under a few prefixes: one ``ls`` per prefix (a request per thousand
keys on S3) tells every size, and each file then costs only its header range request. Only stores that list
(s3, gs, hf, ...; not plain http) and only folders holding at least ``LIST_MIN`` of the inputs are listed; any
failure just leaves the sizes unknown (each file then asks for its own).
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Sequence

from ckptlint.record import replace
from ckptlint.scanning.task import FileTask

LIST_MIN = 8
_UNLISTABLE = frozenset({"http", "https", "file", "local"})


def with_sizes(tasks: Sequence[FileTask]) -> list[FileTask]:
    """``tasks`` with ``size`` filled in for remote files whose folder was listed."""
    from ckptlint.remote import is_remote

    groups: dict[str, list[int]] = defaultdict(list)
    for i, task in enumerate(tasks):
        if task.size is None and is_remote(task.path) and "?" not in task.path:
            groups[task.path.rsplit("/", 1)[0]].append(i)
    out = list(tasks)
    for parent, members in groups.items():
        if len(members) < LIST_MIN:
            continue
        sizes = _list(parent)
        for i in members:
            size = sizes.get(posixpath.basename(out[i].path))
            if size is not None:
                out[i] = replace(out[i], size=size)
    return out


def _list(parent: str) -> dict[str, int]:
    """File name -> size in the folder ``parent`` (a URL), or nothing when it cannot be listed."""
    from ckptlint import netfaults
    from ckptlint.errors import UnreadableCheckpoint
    from ckptlint.remote import filesystem

    try:
        fs, path = filesystem(parent)
    except UnreadableCheckpoint:
        return {}
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & _UNLISTABLE:
        return {}
    try:
        entries = netfaults.call(parent, "list", lambda: fs.ls(path, detail=True))
    except (UnreadableCheckpoint, FileNotFoundError):
        return {}
    sizes: dict[str, int] = {}
    for entry in entries:
        if entry.get("type") == "file" and isinstance(entry.get("size"), int):
            sizes[posixpath.basename(str(entry["name"]).rstrip("/"))] = entry["size"]
    return sizes
