"""The rule engine: (Checkpoint, Expected, config) -> FileReport.

1. key view (``ckptlint.views``) — what the expected model's loader looks at: for big_vision/flax expectations
   the ``params`` group, for torch expectations the file's own keys.
2. raw diff — missing / unexpected / shape / dtype mismatches in the expected model's key names, exactly
   what the framework reports: torch ``load_state_dict(strict=False)`` and its size-mismatch errors (a
   1-element tensor loads into a 0-dim parameter), flax's key sets (``merge_params`` / scope errors).
3. explainers, stage by stage (``ckptlint.rules.base.Stage``; each rule declares its stage), each consuming the
   diff entries it accounts for and saying why (a rule that says nothing gives back what it consumed, and so
   does a rule whose code ``--ignore``/``--select`` leaves out: ignoring a code hides that explanation, never
   the problem it explained).
4. what nobody explained stays as CK100 / CK101 / CK102, one finding per kind with the keys collapsed, whatever
   the expectation's source (given, declared or inferred): no diff entry leaves a report silently.

Findings are shown by severity, then by the display rank their rule (or message) declares, then as found.

The engine never prints and never reads files; it only looks at the ``Checkpoint`` it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from ckptlint.checkpoint import Checkpoint, TensorInfo
from ckptlint.expected import Expected, ExpectedTensor, Unchecked
from ckptlint.findings import Finding
from ckptlint.record import record
from ckptlint.results import ArchInfo, Diff, DtypeMismatch, FileReport, ShapeMismatch
from ckptlint.rules import Message, Rule, Stage, run_order
from ckptlint.rules._context import Context, RawDiff, torch_shape_equal
from ckptlint.rules._training import split as training_split
from ckptlint.views import expected_view, is_flax, weight_view


@record(frozen=True)
class CheckConfig:
    """Which codes to report: ``select``/``ignore`` are code prefixes (``CK1`` = CK100…CK199, ``ALL``)."""

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, select: Iterable[str] | str | None = None, ignore: Iterable[str] | str | None = None
    ) -> CheckConfig:
        def codes(v: Iterable[str] | str | None) -> tuple[str, ...]:
            if v is None:
                return ()
            items = v.split(",") if isinstance(v, str) else list(v)
            return tuple(s.strip().upper() for s in items if s and s.strip())

        return cls(select=codes(select) or None, ignore=codes(ignore))

    def enabled(self, code: str) -> bool:
        def hit(prefixes: tuple[str, ...]) -> bool:
            return any(p == "ALL" or code.startswith(p) for p in prefixes)

        if self.select is not None and not hit(self.select):
            return False
        return not hit(self.ignore)


# ---- step 2: raw diff --------------------------------------------------------------------------------------
def raw_diff(
    view: Mapping[str, TensorInfo], exp: Mapping[str, ExpectedTensor], *, torch_semantics: bool
) -> RawDiff:
    """Missing, unexpected, shape and dtype mismatches between a key view and an expected tree."""
    # torch's _load_from_state_dict walks each key through the modules: a component that is not a child module,
    # or a last component that is not a parameter/persistent buffer, makes the key unexpected. That is exactly
    # "not an expected key" (a key naming a module, or continuing past a parameter, is unexpected too).
    missing = [k for k in exp if k not in view]
    unexpected = [k for k in view if k not in exp]
    shape, dtype = [], []
    for k, e in exp.items():
        t = view.get(k)
        if t is None:
            continue
        same = torch_shape_equal(e.shape, t.shape) if torch_semantics else e.shape == t.shape
        if not same:
            shape.append((k, tuple(e.shape), tuple(t.shape)))
        if e.dtype != t.dtype:
            dtype.append((k, e.dtype, t.dtype))
    return RawDiff(missing=missing, unexpected=unexpected, shape_mismatch=shape, dtype_mismatch=dtype)


def to_diff(raw: RawDiff) -> Diff:
    return Diff(
        missing=list(raw.missing),
        unexpected=list(raw.unexpected),
        shape_mismatch=[
            ShapeMismatch(key=k, expected=list(e), actual=list(a)) for k, e, a in raw.shape_mismatch
        ],
        dtype_mismatch=[DtypeMismatch(key=k, expected=e, actual=a) for k, e, a in raw.dtype_mismatch],
    )


# ---- steps 3 and 4 -----------------------------------------------------------------------------------------
def build_context(
    ckpt: Checkpoint,
    expected: Expected | None,
    *,
    layout: Any = None,
    inferred: Callable[[], Expected | None] | None = None,
    unchecked: Unchecked | None = None,
) -> Context:
    """Key views and raw diff for one checkpoint, ready for the rules."""
    flax = is_flax(expected, ckpt)
    view, root = weight_view(ckpt, flax)
    if expected is None:
        return Context(
            ckpt, None, user_expected=False, view=view, view_root=root, exp={}, raw=None,
            torch_semantics=not flax, layout=layout, inferred=inferred, unchecked=unchecked,
        )  # fmt: skip
    exp = expected_view(expected)
    torch_semantics = not flax
    origin = None
    if expected.load:  # the declared library's own loader decides (transformers' from_pretrained)
        from ckptlint.declared import loaded_diff

        view, raw, origin = loaded_diff(ckpt, expected)  # the loader reads the file's own keys
        root = ""
    else:
        raw = raw_diff(view, exp, torch_semantics=torch_semantics)
    return Context(
        ckpt, expected, user_expected=expected.source != "inferred", view=view, view_root=root, exp=exp,
        raw=raw, torch_semantics=torch_semantics, layout=layout, inferred=inferred, unchecked=unchecked,
        origin=origin,
    )  # fmt: skip


def _runs(rule: type[Rule], ctx: Context) -> bool:
    if rule.needs == "user":
        return ctx.user_expected
    if rule.needs == "any":
        return ctx.expected is not None
    return True


def explain_all(
    ctx: Context, stages: Collection[Stage] | None = None, enabled: Callable[[str], bool] | None = None
) -> list[Finding]:
    """Run the rules over ``ctx`` in ``run_order()`` (only those of ``stages`` when given).

    A rule whose code ``enabled`` rejects still runs (later rules may read what it found) but reports nothing and
    gives back the diff entries it consumed: they reach the catch-alls (CK100/CK101/CK102, or CK004 for an
    inferred model) as ``load_state_dict`` would report them. Findings come sorted by severity, then rank (the
    rule's, or its message's own when it sets one), then as found.
    """
    ranked: list[tuple[int, int, int, Finding]] = []
    seq = 0
    rules = run_order()
    for rule in rules:
        if (stages is not None and rule.stage not in stages) or not _runs(rule, ctx):
            continue
        ctx.mark()
        items = list(rule().check(ctx))
        if items and enabled is not None and not enabled(rule.code):
            items = []  # an ignored code: its explanation is not shown, so what it explained is not hidden
        if not items:
            ctx.give_back()  # consumed without a word: the catch-alls still report it
        for item in items:
            if isinstance(item, Message):
                finding = item.finding(rule.severity)
                rank = rule.rank if item.rank is None else item.rank
            else:
                finding, rank = item, rule.rank
            ranked.append((-finding.severity.rank, rank, seq, finding))
            seq += 1
    known = {r.code for r in rules}
    # reader findings that no rule claims (codes added later) pass through as they are
    for finding in ctx.ckpt.findings:
        if finding.code not in known:
            ranked.append((-finding.severity.rank, 0, seq, finding))
            seq += 1
    ranked.sort(key=lambda r: r[:3])
    return [r[3] for r in ranked]


def fold(findings: list[Finding]) -> list[Finding]:
    """Fold the consequences of a root cause into it: a finding whose ``details["folds"]`` lists codes takes every
    other finding of those codes out of the report and keeps them in ``details["folded"]`` (CK114: the requested
    architecture contradicts the declared one, and every mismatch with the requested model follows from that)."""
    roots = [f for f in findings if f.details.get("folds")]
    if not roots:
        return findings
    root = roots[0]
    codes = set(root.details["folds"])
    folded = [f for f in findings if f is not root and f.code in codes]
    if not folded:
        return findings
    root.details["folded"] = [
        {"code": f.code, "severity": f.severity.value, "message": f.message} for f in folded
    ]
    names = ", ".join(dict.fromkeys(f.code for f in folded))
    root.message += f" (folds {len(folded)} follow-on finding{'s' if len(folded) != 1 else ''}: {names})"
    return [f for f in findings if f not in folded]


def fact_findings(ckpt: Checkpoint) -> list[Finding]:
    """What the rules make of the facts a reader recorded (no expectation): the findings ``ckptlint dump`` shows."""
    if not ckpt.has_facts:  # nothing to judge: do not load the rules (``dump`` starts fast)
        return []
    return explain_all(build_context(ckpt, None), stages={Stage.FACTS})


def variant_evidence(ctx: Context) -> str | None:
    """The checkpoint key whose shape names the variant: ``params/img/embedding/kernel [16,16,3,768]``."""
    structure = ctx.file_structure
    for tower in ("vision", "text"):
        key = structure.keys.get(tower, {}).get("patch") or structure.keys.get(tower, {}).get("width")
        if key is None:
            continue
        view_key = ctx.pairs.get(key, key)
        t = ctx.view.get(view_key)
        if t is not None:
            return f"{ctx.file_key(view_key)} [{','.join(str(d) for d in t.shape)}]"
    return None


def arch_info(expected: Expected | None, evidence: str | None = None) -> ArchInfo | None:
    """The report's ``arch`` entry; ``inferred_from`` is ``Expected.params["inferred_from"]`` or ``evidence``,
    and None when nothing was inferred (a variant given with --arch, a live model, a reference spec)."""
    if expected is None:
        return None
    if expected.params.get("variant_given") or expected.source in ("model", "spec"):
        evidence = None
    else:
        evidence = expected.params.get("inferred_from") or evidence
    if expected.source == "declared":
        evidence = None  # nothing was read from the weights: the declaration decided
    return ArchInfo(
        name=expected.declared_name or expected.arch,
        variant=expected.variant,
        source=expected.source,
        description=expected.description or None,
        inferred_from=str(evidence) if evidence else None,
        declared_by=expected.declared_by,
    )


def run(
    ckpt: Checkpoint,
    expected: Expected | None,
    config: CheckConfig | None = None,
    *,
    layout: Any = None,
    inferred: Callable[[], Expected | None] | None = None,
    variant_inferred: bool = False,
    unchecked: Unchecked | None = None,
) -> FileReport:
    """Check one checkpoint against an expectation (or none) and return its report.

    ``layout`` is a ``ckptlint.archs.detect.LayoutGuess`` (only its ``name`` is reported); ``inferred`` lazily gives
    the architecture inferred from the file (used to name the file's own variant); ``variant_inferred`` says
    the expectation's variant was read from the file's shapes (``--arch NAME`` without ``:VARIANT``), so the
    report names the key it was read from; ``unchecked`` says why there is no expectation (CK004). None of them
    is required.
    """
    config = config or CheckConfig()
    ctx = build_context(ckpt, expected, layout=layout, inferred=inferred, unchecked=unchecked)
    findings = fold([f for f in explain_all(ctx, enabled=config.enabled) if config.enabled(f.code)])
    weights = ctx.view if ctx.view_root else training_split(ckpt).weights
    dtypes: dict[str, int] = {}
    for t in weights.values():
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + t.numel
    return FileReport.model_construct(  # fields exactly typed: no validation, no schema build (start-up time)
        path=ckpt.path,
        format=ckpt.format,
        layout=getattr(layout, "name", None) or "unknown",
        arch=arch_info(
            expected,
            variant_evidence(ctx)
            if expected is not None and (variant_inferred or expected.source == "inferred")
            else None,
        ),
        num_tensors=len(ckpt.tensors),
        num_params=sum(t.numel for t in weights.values()),
        num_bytes=ckpt.total_bytes,
        groups=list(ckpt.groups),
        dtypes=dtypes,
        findings=findings,
        diff=to_diff(ctx.raw) if ctx.raw is not None else None,
    )
