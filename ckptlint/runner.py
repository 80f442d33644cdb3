"""Check many checkpoints in one run and merge them into one Report (the non-streaming formats).

The per-file work, the engines and the options each path gets live in ``ckptlint.scanning``; this module only
collects the FileReports and puts them back in argument order.
"""

from __future__ import annotations

import sys

from ckptlint.results import FileReport, Report
from ckptlint.scanning import ScanOptions, run_tasks
from ckptlint.scanning.plan import plan
from ckptlint.scanning.task import FileTask

__all__ = ["FileTask", "plan", "run"]

PROGRESS_MIN_FILES = 8  # a bar for fewer files only flickers


def run(
    tasks: list[FileTask],
    *,
    jobs: int | None = None,
    progress: bool | None = None,
    engine: str = "local",
    address: str | None = None,
    opts: ScanOptions | None = None,
) -> Report:
    """Check every task; one Report in argument order. A progress bar goes to stderr on a terminal, long runs."""
    if progress is None:
        progress = len(tasks) >= PROGRESS_MIN_FILES and sys.stderr.isatty()
    order = {t.path: i for i, t in enumerate(tasks)}
    found: list[tuple[int, FileReport]] = []
    bar = None
    if progress:
        from ckptlint.scanning.progress import Progress

        bar = Progress(len(tasks))
    try:
        for task, report in run_tasks(tasks, engine=engine, address=address, workers=jobs, opts=opts):
            found.append((order[task.path], report))
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    found.sort(key=lambda pair: pair[0])
    return Report.model_construct(files=[r for _, r in found]).summarize()  # no schema build: start-up time
