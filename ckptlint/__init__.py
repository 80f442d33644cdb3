"""ckptlint: a checkpoint compatibility linter and diagnostics tool for ML weights.

Python API (the CLI calls the same functions)::

    import ckptlint
    report = ckptlint.check("clippo_b16.npz", arch="bv-vit")   # -> ckptlint.results.Report
    for f in report.files:
        for finding in f.findings:
            print(finding.code, finding.message, finding.fix)
    ckpt = ckptlint.dump("model.safetensors")                   # -> ckptlint.checkpoint.Checkpoint
    for file_report in ckptlint.scan(["s3://bucket/runs/"], engine="ray"):   # FileReports as files finish
        print(file_report.path, file_report.error)

The package import is kept light: the CLI's start-up path must not pull numpy, torch or jax.
Public API functions import what they need when called.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

from ckptlint._version import __version__

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint
    from ckptlint.results import FileReport, Report

__all__ = ["__version__", "check", "dump", "scan"]


def dump(path: str | PathLike[str]) -> Checkpoint:
    """Read the structure of the checkpoint at ``path`` (header-only, never executes it).

    Raises ``ckptlint.errors.UnreadableCheckpoint`` for a missing, truncated or corrupt input.
    """
    from ckptlint.readers import read_checkpoint

    return read_checkpoint(path)


def check(
    paths: str | PathLike[str] | Sequence[str | PathLike[str]],
    *,
    arch: str | None = None,
    model: str | None = None,
    spec: str | None = None,
    select: str | Sequence[str] | None = None,
    ignore: str | Sequence[str] | None = None,
    jobs: int = 1,
) -> Report:
    """Check one or more checkpoints (files, folders or globs) and return one ``Report``: the one public check.

    The same as ``ckptlint check PATH... --isolated`` with the same options: folders are walked, unreadable
    inputs become a file entry with ``error`` set, and nothing is printed. ``select``/``ignore`` take codes or
    prefixes (``"CK1"``, ``["CK103", "CK2"]`` or ``"CK103,CK2"``); unknown codes raise
    ``ckptlint.errors.UsageError``.
    """
    from ckptlint.config import Config, validate_arch, validate_codes
    from ckptlint.discover import expand_paths
    from ckptlint.runner import plan, run

    if sum(x is not None for x in (arch, model, spec)) > 1:
        from ckptlint.errors import UsageError

        raise UsageError("give at most one of arch, model, spec")
    items = [paths] if isinstance(paths, (str, PathLike)) else list(paths)
    if arch is not None:
        validate_arch(arch, "arch")
    tasks = plan(
        expand_paths([str(p) for p in items]),
        arch=arch,
        model=model,
        spec=spec,
        select=validate_codes(_codes(select), "select") if select is not None else None,
        ignore=validate_codes(_codes(ignore), "ignore") if ignore is not None else None,
        config=Config(),
    )
    return run(tasks, jobs=jobs, progress=False)


def _codes(value: str | Sequence[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [c.strip() for c in items if c.strip()]


def scan(
    paths: str | PathLike[str] | Iterable[str | PathLike[str]], *, engine: str = "local", **options: Any
) -> Iterator[FileReport]:
    """Check many checkpoints and yield one ``FileReport`` per input as each finishes (completion order).

    ``engine`` is ``"local"`` (threads), ``"ray"`` or ``"dask"``; the FileReports are the same whatever the
    engine. Options: ``engine_address``, ``jobs``, ``arch``/``model``/``spec``, ``select``/``ignore``, ``stats``
    (bytes and requests for remote inputs), ``batch_size`` — see ``ckptlint.scanning.scan``.
    """
    from ckptlint.scanning import scan as scan_files

    return scan_files(paths, engine=engine, **options)
