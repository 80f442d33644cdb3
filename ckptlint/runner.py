"""Check many checkpoints in one run: per-path settings, optional parallel header reads, one merged Report.

The work for one checkpoint is ``ckptlint.api.check_files([path], ...)``; this module only decides the options each
path gets (command line > per-path config > config), fans the paths out over ``jobs`` worker processes and
merges the per-file reports in argument order.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

from ckptlint.config import Config
from ckptlint.results import Report

PROGRESS_MIN_FILES = 8  # a bar for fewer files only flickers


@dataclass(frozen=True)
class FileTask:
    """Everything needed to check one checkpoint (picklable for worker processes)."""

    path: str
    arch: str | None
    model: str | None
    spec: str | None
    select: tuple[str, ...] | None
    ignore: tuple[str, ...] | None


def plan(
    paths: list[str],
    *,
    arch: str | None,
    model: str | None,
    spec: str | None,
    select: list[str] | None,
    ignore: list[str] | None,
    config: Config,
) -> list[FileTask]:
    """One task per path: an expectation given on the command line wins over per-path and file settings."""
    tasks = []
    base_select = select if select is not None else config.select
    base_ignore = ignore if ignore is not None else config.ignore
    if select is not None and ignore is None and base_ignore:
        # a code selected on the command line wins over the file ignoring it
        base_ignore = [i for i in base_ignore if not any(s.startswith(i) or i.startswith(s) for s in select)]
    for path in paths:
        path_arch, extra_ignore = config.for_path(path)
        eff_arch = arch if arch or model or spec else path_arch or config.arch
        eff_ignore = [*(base_ignore or []), *extra_ignore]
        tasks.append(
            FileTask(
                path=path,
                arch=eff_arch,
                model=model,
                spec=spec,
                select=tuple(base_select) if base_select is not None else None,
                ignore=tuple(eff_ignore) if eff_ignore or base_ignore is not None else None,
            )
        )
    return tasks


def check_batch(tasks: list[FileTask]) -> Report:
    """Check tasks that share their options in one API call (a live model or spec is then built once)."""
    from ckptlint.api import check_files

    t = tasks[0]
    return check_files(
        [x.path for x in tasks],
        arch=t.arch,
        model=t.model,
        spec=t.spec,
        select=list(t.select) if t.select is not None else None,
        ignore=list(t.ignore) if t.ignore is not None else None,
    )


def batches(tasks: list[FileTask], size: int) -> list[list[FileTask]]:
    """Consecutive tasks with the same options, at most ``size`` per batch."""
    out: list[list[FileTask]] = []
    for task in tasks:
        last = out[-1] if out else None
        if last and len(last) < size and _options(last[0]) == _options(task):
            last.append(task)
        else:
            out.append([task])
    return out


def _options(t: FileTask) -> tuple[object, ...]:
    return (t.arch, t.model, t.spec, t.select, t.ignore)


def _results(tasks: list[FileTask], jobs: int, batch_size: int) -> Iterator[tuple[int, Report]]:
    work = batches(tasks, batch_size)
    if jobs <= 1 or len(work) <= 1:
        for batch in work:
            yield len(batch), check_batch(batch)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(jobs, len(work))) as pool:
        for batch, report in zip(work, pool.map(check_batch, work), strict=True):
            yield len(batch), report


def merge(reports: list[Report]) -> Report:
    """One report holding every file, in order, with the summary recomputed."""
    files = [f for r in reports for f in r.files]
    return Report(files=files).summarize()


def run(tasks: list[FileTask], *, jobs: int = 1, progress: bool | None = None) -> Report:
    """Check every task; a progress bar goes to stderr when it is a terminal and the run is long."""
    if progress is None:
        progress = len(tasks) >= PROGRESS_MIN_FILES and sys.stderr.isatty()
    # small batches keep the bar moving and the workers busy; one batch when nobody watches and no workers
    size = 4 if progress or jobs > 1 else 64
    if not progress:
        return merge([r for _, r in _results(tasks, jobs, size)])
    import click

    reports: list[Report] = []
    with click.progressbar(
        length=len(tasks), label="checking", file=sys.stderr, show_pos=True, show_eta=True
    ) as bar:
        for n, report in _results(tasks, jobs, size):
            reports.append(report)
            bar.update(n)
    return merge(reports)
