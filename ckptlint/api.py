"""Checking one checkpoint, and a list of files as given: the work behind ``ckptlint.check``.

``ckptlint.check`` is the one public check (it also expands globs, walks folders and runs in parallel); the
runner's workers call ``check_files`` on the paths it planned, ``fix`` calls ``check_checkpoint``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ckptlint.checkpoint import Checkpoint
from ckptlint.engine import CheckConfig, run
from ckptlint.errors import UnreadableCheckpoint, UsageError
from ckptlint.expected import Expected, Unchecked
from ckptlint.findings import Finding
from ckptlint.readers import read_checkpoint
from ckptlint.results import FileReport, Report
from ckptlint.rules.ck001_unreadable import unreadable
from ckptlint.suggest import REQUESTED


def _as_list(paths: str | Path | Iterable[str | Path]) -> list[str]:
    if isinstance(paths, (str, Path)):
        return [str(paths)]
    return [str(p) for p in paths]


def _fixed_expectation(model: str | None, spec: str | None) -> Callable[[], Expected] | None:
    """An expectation that does not depend on the checkpoint (built once, on first use)."""
    if model is not None:
        from ckptlint.archs.live import expected_from_factory

        make: Callable[[], Expected] = lambda: expected_from_factory(model)  # noqa: E731
        asked = ["--model", model]
    elif spec is not None:
        from ckptlint.archs.spec_file import expected_from_spec

        make = lambda: expected_from_spec(spec)  # noqa: E731
        asked = ["--spec", spec]
    else:
        return None
    cache: list[Expected] = []

    def get() -> Expected:
        if not cache:
            cache.append(make())
            cache[0].params[REQUESTED] = asked  # what a suggested `ckptlint fix` repeats
        return cache[0]

    return get


def check_checkpoint(
    ckpt: Checkpoint,
    *,
    arch: str | None = None,
    expected: Expected | None = None,
    config: CheckConfig | None = None,
) -> FileReport:
    """Check an already-read checkpoint against ``expected``, ``arch``, or what it looks like."""
    if arch is None and expected is None and _facts_only(config):
        return _facts_report(ckpt, config)  # type: ignore[arg-type]
    from ckptlint.archs import infer_expected, resolve_expected
    from ckptlint.archs.detect import detect_layout
    from ckptlint.declared import expected_for_class

    layout = detect_layout(ckpt)
    cache: list[Expected | None] = []

    def inferred() -> Expected | None:
        if not cache:
            cache.append(infer_expected(ckpt))
        return cache[0]

    if expected is None and arch is not None:  # --arch NAME[:VARIANT], or a transformers class name
        expected = expected_for_class(arch, ckpt) or resolve_expected(arch, ckpt)
    unchecked = None
    if expected is None:  # issue 11: the checkpoint's own declaration is the expectation (ckptlint.declared)
        expected, unchecked = _declared(ckpt)
    if expected is not None and arch is not None:
        expected.params.setdefault(REQUESTED, ["--arch", arch])  # what a suggested `ckptlint fix` repeats
    if expected is None:
        expected = inferred()
    # a variant read from the weights' shapes (not from a config, not for a transformers class)
    variant_inferred = arch is not None and ":" not in arch and not (expected is not None and expected.load)
    return run(
        ckpt, expected, config, layout=layout, inferred=inferred, variant_inferred=variant_inferred,
        unchecked=unchecked,
    )  # fmt: skip


def _declared(ckpt: Checkpoint) -> tuple[Expected | None, Unchecked | None]:
    """(the expectation the checkpoint's declaration gives, or why there is none)."""
    from ckptlint.declared import declared_expected

    found = declared_expected(ckpt)
    if isinstance(found, Unchecked):
        return None, found
    return found, None


def _facts_only(config: CheckConfig | None) -> bool:
    """Whether every rule the selection enables reads only what the readers recorded (``--select CK301``)."""
    if config is None or config.select is None:
        return False
    from ckptlint.rules import all_rules
    from ckptlint.rules.base import Stage

    return all(r.stage is Stage.FACTS for r in all_rules() if config.enabled(r.code))


def _facts_report(ckpt: Checkpoint, config: CheckConfig) -> FileReport:
    """The report of a facts-only selection: no layout or architecture is inferred (a security scan of a
    folder of torch files spends its time reading them, not matching architectures)."""
    from ckptlint.engine import fact_findings
    from ckptlint.rules._training import split

    weights = split(ckpt).weights
    dtypes: dict[str, int] = {}
    for t in weights.values():
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + t.numel
    return FileReport(
        path=ckpt.path, format=ckpt.format, num_tensors=len(ckpt.tensors),
        num_params=sum(t.numel for t in weights.values()), num_bytes=ckpt.total_bytes, groups=list(ckpt.groups),
        dtypes=dtypes, findings=[f for f in fact_findings(ckpt) if config.enabled(f.code)],
    )  # fmt: skip


def check_files(
    paths: str | Path | Iterable[str | Path],
    arch: str | None = None,
    model: str | None = None,
    spec: str | None = None,
    select: Iterable[str] | str | None = None,
    ignore: Iterable[str] | str | None = None,
) -> Report:
    """Check each checkpoint in ``paths`` (as given: no globs, no folder walks) and return one ``Report``.

    ``arch`` is an architecture name (``NAME[:VARIANT]``, e.g. ``clippo``, ``open_clip:ViT-B-16``); ``model``
    a live model factory ``module:function``; ``spec`` a dump JSON of a reference checkpoint. At most one of
    them. Without any, each file's layout and architecture are inferred and the rules that need no expectation
    run. ``select``/``ignore`` are rule-code prefixes. An unreadable path gives a FileReport with ``error``
    set and a CK001 finding (the CLI exits 2 for it); usage errors (unknown arch, bad factory) raise
    ``UsageError``.
    """
    if sum(x is not None for x in (arch, model, spec)) > 1:
        raise UsageError("give at most one of --arch, --model, --spec")
    config = CheckConfig.of(select, ignore)
    fixed = _fixed_expectation(model, spec)
    files: list[FileReport] = []
    for path in _as_list(paths):
        try:
            ckpt = read_checkpoint(path)
        except UnreadableCheckpoint as exc:
            found = [unreadable(exc.path, exc.reason), *failure_findings(exc)]
            files.append(
                FileReport(path=path, error=exc.reason, findings=[f for f in found if config.enabled(f.code)])
            )
            continue
        files.append(check_checkpoint(ckpt, arch=arch, expected=fixed() if fixed else None, config=config))
    return Report(files=files).summarize()


def failure_findings(exc: UnreadableCheckpoint) -> list[Finding]:
    """What the rules make of the facts a reader recorded before it failed (a CK301 next to the CK001)."""
    from ckptlint.engine import fact_findings

    if not exc.facts:
        return []
    return fact_findings(Checkpoint.model_construct(path=exc.path, format="pickle", security=exc.facts))


def expectation_for(
    ckpt: Checkpoint,
    *,
    arch: str | None = None,
    model: str | None = None,
    spec: str | None = None,
) -> Expected | None:
    """The expectation ``check`` would use for ``ckpt``: from ``model``, ``spec``, ``arch``, its declaration, else
    inferred."""
    fixed = _fixed_expectation(model, spec)
    if fixed is not None:
        return fixed()
    from ckptlint.archs import infer_expected, resolve_expected
    from ckptlint.declared import expected_for_class

    if arch is not None:
        return expected_for_class(arch, ckpt) or resolve_expected(arch, ckpt)
    return _declared(ckpt)[0] or infer_expected(ckpt)
