"""Scans of many checkpoints: the per-file function, where it runs (threads, Ray, Dask), streamed results.

``scan(paths, engine=...)`` is the Python API (``ckptlint.scan``): it yields one FileReport per input, in
completion order, whatever the engine. ``run_tasks`` is the shared loop under it, the CLI's JSONL stream and the
merged reports of ``runner``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from typing import TYPE_CHECKING

from ckptlint.scanning.task import FileTask, ScanOptions

if TYPE_CHECKING:
    from ckptlint.results import FileReport

__all__ = ["FileTask", "ScanOptions", "default_workers", "run_tasks", "scan"]


def default_workers(engine: str, tasks: Sequence[FileTask]) -> int | None:
    """Threads for the local engine: many when inputs are remote (reads wait on the network), else one."""
    if engine != "local":
        return None  # a local Ray/Dask cluster sizes itself to the machine
    from ckptlint.remote import is_remote
    from ckptlint.scanning.engines import LOCAL_THREADS

    return LOCAL_THREADS if any(is_remote(t.path) for t in tasks) else 1


def run_tasks(
    tasks: Sequence[FileTask],
    *,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    opts: ScanOptions | None = None,
    batch_size: int | None = None,
) -> Iterator[tuple[FileTask, FileReport]]:
    """Check ``tasks`` on ``engine``; yield ``(task, report)`` in completion order, each task exactly once.

    The tasks yielded may be copies of those given (with ``size`` filled in): match them by ``path``.
    """
    from ckptlint import netfaults
    from ckptlint.scanning.engines import open_engine, run
    from ckptlint.scanning.listing import with_sizes

    if not tasks:
        return
    opts = opts or ScanOptions()
    netfaults.configure(opts.retry)  # the listing below obeys the scan's timeout too
    tasks = with_sizes(tasks)  # one listing per remote folder instead of a HEAD per file
    eng = open_engine(engine, address=address, workers=workers or default_workers(engine, tasks))
    try:
        yield from run(eng, tasks, opts, batch_size=batch_size)
    finally:
        eng.close()


def scan(
    paths: str | PathLike[str] | Iterable[str | PathLike[str]],
    *,
    engine: str = "local",
    engine_address: str | None = None,
    jobs: int | None = None,
    arch: str | None = None,
    model: str | None = None,
    spec: str | None = None,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    stats: bool = False,
    batch_size: int | None = None,
) -> Iterator[FileReport]:
    """Check many checkpoints on ``engine`` (``local`` threads, ``ray`` or ``dask``); yield FileReports as they finish.

    ``paths`` are files, folders, globs or URLs, expanded as ``ckptlint check`` does (``--isolated``). Each input
    yields exactly one FileReport (an unreadable one has ``error`` set and a CK001 finding), in completion order.
    ``engine_address`` is a Ray/Dask cluster address (default ``RAY_ADDRESS``/``DASK_SCHEDULER_ADDRESS``, else a
    local cluster, or the Ray runtime this process already started); ``jobs`` the local threads or local cluster
    workers; ``stats`` adds bytes and requests to remote files' reports.
    """
    from ckptlint.config import Config, validate_arch, validate_codes
    from ckptlint.discover import expand_paths
    from ckptlint.errors import UsageError
    from ckptlint.scanning.plan import plan

    if sum(x is not None for x in (arch, model, spec)) > 1:
        raise UsageError("give at most one of arch, model, spec")
    if arch is not None:
        validate_arch(arch, "arch")
    items = [paths] if isinstance(paths, (str, PathLike)) else list(paths)
    tasks = plan(
        expand_paths([str(p) for p in items]),
        arch=arch,
        model=model,
        spec=spec,
        select=validate_codes(list(select), "select") if select is not None else None,
        ignore=validate_codes(list(ignore), "ignore") if ignore is not None else None,
        config=Config(),
    )
    if engine not in ("local", "ray", "dask"):
        raise UsageError(f"unknown engine {engine!r} (choose from local, ray, dask)")
    pairs = run_tasks(
        tasks,
        engine=engine,
        address=engine_address,
        workers=jobs,
        opts=ScanOptions(stats=stats),
        batch_size=batch_size,
    )
    return (report for _, report in pairs)
