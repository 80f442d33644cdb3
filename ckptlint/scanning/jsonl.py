"""``--format jsonl``: one FileReport per line as each file finishes, then one ``{"summary": ...}`` line.

Each line is written whole and flushed at once, so a scan killed at any point leaves every finished file in the
output and at most one torn last line. ``--resume`` reads the output back: files whose line has no ``error`` are
done (skipped), the torn last line, earlier summary lines and the lines of files that failed are dropped (those
files are checked again), and the file ends with one summary covering every line in it. Dropping lines is an
in-place truncation when they are all at the end, else an atomic rewrite, so a kill while resuming loses nothing.
A file with a whole line that is neither a FileReport nor a summary is not such an output: resuming is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ckptlint.errors import UsageError
from ckptlint.remote import is_remote
from ckptlint.scanning.tally import Tally

if TYPE_CHECKING:
    from ckptlint.results import FileReport


def path_key(path: str) -> str:
    """How paths are compared between a run and the output it resumes (local paths normalised)."""
    return path if is_remote(path) else os.path.normpath(path)


class JsonlWriter:
    """Write FileReport lines to ``target`` (a file path) or to ``stream``; ``close`` adds the summary line."""

    def __init__(self, target: str | None, *, resume: bool = False, stream: IO[str] | None = None) -> None:
        self.done: set[str] = set()  # path keys already reported without error (resume)
        self.tally = Tally()
        self._owned = target is not None
        if target is None:
            if stream is None:
                raise ValueError("give a target path or a stream")
            self._fh: IO[str] = stream
            return
        if resume and Path(target).exists():
            self.done, self.tally = _compact(Path(target))
            mode = "a"
        else:
            mode = "w"
        try:
            self._fh = open(target, mode, encoding="utf-8")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise UsageError(f"{target}: cannot write the report: {exc.strerror or exc}") from None

    def write(self, report: FileReport, order: int | None = None) -> None:
        """Append one line (flushed at once); ``order`` is the input's position (see ``Tally.add``)."""
        self._fh.write(report.model_dump_json() + "\n")
        self._fh.flush()
        self.tally.add(report, order)

    def close(self) -> None:
        """Write the summary line (covering every FileReport line in the output) and sync it to disk."""
        self._fh.write(json.dumps({"summary": self.tally.summary().model_dump(mode="json")}) + "\n")
        self._fh.flush()
        if self._owned:
            os.fsync(self._fh.fileno())
            self._fh.close()


def _lines(fh: IO[bytes], name: str) -> Iterator[tuple[int, bytes, dict[str, Any] | None]]:
    """``(offset, raw line, FileReport object or None)`` for each line; None for summaries and a torn last line.

    Every whole line this writer wrote is a FileReport or a summary; any other line means ``name`` is not such
    a report, and resuming into it (dropping lines) is refused.
    """
    offset = 0
    for number, raw in enumerate(fh, 1):
        doc: Any = None
        if raw.endswith(b"\n"):  # a last line without its newline was torn by a kill
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = None
            if not (isinstance(doc, dict) and (isinstance(doc.get("path"), str) or set(doc) == {"summary"})):
                raise UsageError(
                    f"{name}: line {number} is not a ckptlint JSONL line; not resuming into this file"
                )
        report = doc if isinstance(doc, dict) and "path" in doc else None
        yield offset, raw, report
        offset += len(raw)


def _keep(doc: dict[str, Any] | None, done: set[str]) -> bool:
    return doc is not None and not doc.get("error") and path_key(doc["path"]) not in done


def _compact(path: Path) -> tuple[set[str], Tally]:
    """Drop what resuming must not keep; return the done paths and the counts of the kept lines."""
    done: set[str] = set()
    tally = Tally()
    first_drop: int | None = None
    kept_after_drop = False
    try:
        with path.open("rb") as fh:
            for offset, _, doc in _lines(fh, str(path)):
                if _keep(doc, done):
                    assert doc is not None
                    done.add(path_key(doc["path"]))
                    tally.add_json(doc)
                    kept_after_drop = kept_after_drop or first_drop is not None
                elif first_drop is None:
                    first_drop = offset
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the report to resume: {exc.strerror or exc}") from None
    if first_drop is None:
        return done, tally
    if not kept_after_drop:
        with path.open("r+b") as fh:
            fh.truncate(first_drop)
        return done, tally
    _rewrite(path)
    return done, tally


def _rewrite(path: Path) -> None:
    """Rewrite ``path`` with only the lines ``_compact`` keeps (temp file, fsync, atomic rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        seen: set[str] = set()
        with os.fdopen(fd, "wb") as out, path.open("rb") as fh:
            for _, raw, doc in _lines(fh, str(path)):
                if _keep(doc, seen):
                    assert doc is not None
                    seen.add(path_key(doc["path"]))
                    out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
