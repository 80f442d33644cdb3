"""The options each path gets: command line > per-path config > config file."""

from __future__ import annotations

from ckptlint.config import Config
from ckptlint.scanning.task import FileTask


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
