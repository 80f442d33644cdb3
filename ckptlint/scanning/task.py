"""The pure per-file function: one ``FileTask`` in, one ``FileReport`` out, wherever it runs.

The same code runs in the CLI's threads and in Ray or Dask workers: read the checkpoint's headers
(``readers.read_checkpoint``), check it (``api.check_checkpoint``), or turn the failure into a CK001 report. Nothing here
prints, writes or keeps state between files beyond caches of pure values (a ``--model``/``--spec`` expectation is
built once per process).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ckptlint import netfaults
from ckptlint.errors import UnreadableCheckpoint, UsageError
from ckptlint.record import field, record

if TYPE_CHECKING:
    from ckptlint.expected import Expected
    from ckptlint.results import FileReport


@record(frozen=True)
class FileTask:
    """Everything needed to check one checkpoint (picklable, for worker processes)."""

    path: str
    arch: str | None = None
    model: str | None = None
    spec: str | None = None
    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    size: int | None = None  # a remote file's size, when a listing told it (saves a HEAD request)


@record(frozen=True)
class ScanOptions:
    """Settings of a scan that travel with every batch (to Ray/Dask workers too)."""

    stats: bool = False  # add ``stats`` (bytes, requests) to remote files' reports
    threads: int = 32  # files of one batch read concurrently (header reads wait on the network)
    retry: netfaults.RetryPolicy = field(default_factory=netfaults.RetryPolicy)
    debug: bool = False  # let an internal error raise (a traceback) instead of refusing the file


def check_batch(tasks: list[FileTask], opts: ScanOptions) -> list[FileReport]:
    """Check each task; the reports come back in the tasks' order (a worker's unit of work)."""
    netfaults.configure(opts.retry)
    if opts.threads <= 1 or len(tasks) <= 1:
        return [check_task(t, opts) for t in tasks]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(opts.threads, len(tasks)), thread_name_prefix="ckptlint") as pool:
        return list(pool.map(lambda t: check_task(t, opts), tasks))


def check_task(task: FileTask, opts: ScanOptions) -> FileReport:
    """Read ``task.path`` (headers only) and check it; an unreadable input is a report with ``error`` and CK001."""
    from ckptlint.api import check_checkpoint, failure_findings
    from ckptlint.engine import CheckConfig
    from ckptlint.readers import read_checkpoint
    from ckptlint.remote import is_remote
    from ckptlint.results import FileReport, FileStats
    from ckptlint.rules.ck001_unreadable import unreadable

    config = CheckConfig.of(task.select, task.ignore)
    if task.size is not None and is_remote(task.path):
        from ckptlint.remote import remember

        remember(task.path, {"type": "file", "size": task.size})
    with netfaults.collecting() as fetched:
        try:
            ckpt = read_checkpoint(task.path)
            report = check_checkpoint(ckpt, arch=task.arch, expected=_fixed(task), config=config)
        except UnreadableCheckpoint as exc:
            # a network failure a reader re-worded is still reported as what it was
            reason = fetched.failure if fetched.failure and fetched.failure not in exc.reason else exc.reason
            found = [unreadable(exc.path, reason), *failure_findings(exc)]
            report = FileReport(
                path=task.path, error=reason, findings=[f for f in found if config.enabled(f.code)]
            )
        except UsageError:
            raise
        except Exception as exc:
            if opts.debug:
                raise  # a bug of ours on this input: refused (CK001), and the scan goes on
            reason = (
                f"internal error: {type(exc).__name__}: {exc} (rerun this file with --debug and report it)"
            )
            found = [unreadable(task.path, reason)]
            report = FileReport(
                path=task.path, error=reason, findings=[f for f in found if config.enabled(f.code)]
            )
    if opts.stats and is_remote(task.path):
        report.stats = FileStats(bytes=fetched.bytes, requests=fetched.requests)
    return report


def failed(task: FileTask, reason: str) -> FileReport:
    """The report of a file that could not be checked at all (its worker died each time it tried)."""
    from ckptlint.engine import CheckConfig
    from ckptlint.results import FileReport
    from ckptlint.rules.ck001_unreadable import unreadable

    config = CheckConfig.of(task.select, task.ignore)
    found = [unreadable(task.path, reason)]
    return FileReport(path=task.path, error=reason, findings=[f for f in found if config.enabled(f.code)])


_fixed_lock = threading.Lock()
_fixed_cache: dict[tuple[str | None, str | None], Expected] = {}


def _fixed(task: FileTask) -> Expected | None:
    """The expectation of ``--model``/``--spec`` (independent of the file), built once per process."""
    if task.model is None and task.spec is None:
        return None
    key = (task.model, task.spec)
    with _fixed_lock:
        if key not in _fixed_cache:
            from ckptlint.api import expectation_for

            _fixed_cache[key] = expectation_for(None, model=task.model, spec=task.spec)  # type: ignore[arg-type]
        return _fixed_cache[key]
