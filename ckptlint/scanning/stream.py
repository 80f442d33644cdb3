"""``check --format jsonl``: stream FileReports to stdout or ``--output`` as files finish, resumably.

stdout carries only JSON lines; the progress bar (on a terminal) and the summary table go to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ckptlint.errors import UsageError
from ckptlint.scanning import ScanOptions, run_tasks
from ckptlint.scanning.jsonl import JsonlWriter, path_key
from ckptlint.scanning.tally import Tally
from ckptlint.scanning.task import FileTask


def check_jsonl(
    tasks: Sequence[FileTask],
    *,
    output: str | None,
    resume: bool,
    engine: str,
    address: str | None,
    workers: int | None,
    opts: ScanOptions,
    progress: bool | None,
) -> Tally:
    """Check ``tasks`` (skipping those ``output`` already holds, with ``resume``); return the counts of the output.

    The summary line is written only when every task is done: an interrupted scan ends without one, and
    ``--resume`` carries on from its last whole line.
    """
    if output is not None and path_key(output) in {path_key(t.path) for t in tasks}:
        raise UsageError(f"{output}: is also an input; the report is never written over an input")
    writer = JsonlWriter(output, resume=resume, stream=None if output else sys.stdout)
    todo = [t for t in tasks if path_key(t.path) not in writer.done]
    interactive = sys.stderr.isatty() if progress is None else progress
    bar = None
    if interactive and todo:
        from ckptlint.scanning.progress import Progress

        bar = Progress(len(todo))
    finished = False
    try:
        # the error line on stderr names the first input (in argument order) that could not be read
        order = {t.path: i for i, t in enumerate(todo)}
        for task, report in run_tasks(todo, engine=engine, address=address, workers=workers, opts=opts):
            writer.write(report, order[task.path])
            if bar is not None:
                bar.update()
        finished = True
    finally:
        if bar is not None:
            bar.close()
        if finished:
            writer.close()
    if interactive:
        sys.stderr.write(writer.tally.table())
    return writer.tally
