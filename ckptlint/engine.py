"""The rule engine: (Checkpoint, Expected, config) -> FileReport.

1. key view — what the expected model's loader looks at: for big_vision/flax expectations the ``params`` group
   (``params/`` -> root; bare files as they are; very old ``opt/target/``), like big_vision's ``load_params``;
   for torch expectations the file's own keys (nested dicts joined with ``.``).
2. raw diff — missing / unexpected / shape / dtype mismatches in the expected model's key names, exactly
   what the framework reports: torch ``load_state_dict(strict=False)`` and its size-mismatch errors (a
   1-element tensor loads into a 0-dim parameter), flax's key sets (``merge_params`` / scope errors).
3. explainers, in a fixed order, each consuming the diff entries it accounts for and saying why.
4. what nobody explained stays as CK100 / CK101 / CK102, one finding per kind with the keys collapsed.

The engine never prints and never reads files; it only looks at the ``Checkpoint`` it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ckptlint.checkpoint import Checkpoint, TensorInfo
from ckptlint.expected import Expected, ExpectedTensor
from ckptlint.findings import Finding
from ckptlint.report.model import ArchInfo, Diff, DtypeMismatch, FileReport, ShapeMismatch
from ckptlint.rules import Message, get_rule
from ckptlint.rules._context import Context, RawDiff, torch_shape_equal
from ckptlint.rules._training import split as training_split

# Explainers in the order they run: each consumes the diff entries it accounts for, so the more specific
# explanations (old layouts, training state, wrappers) come before the broad ones (framework, variant) and the
# catch-alls CK100/CK101/CK102 come last.
ORDER: tuple[str, ...] = (
    "CK301",
    "CK302",
    "CK002",
    "CK003",
    "CK111",
    "CK201",
    "CK103",
    "CK105",
    "CK104",
    "CK109",
    "CK112",
    "CK110",
    "CK106",
    "CK107",
    "CK108",
    "CK100",
    "CK101",
    "CK102",
)

# How findings are shown: by severity, then by this rank (a message may set its own ``order``: CK104 puts
# itself
# before CK105 (33 < 35) when the layout blocks loading, after it (55) when the expected framework hosts that
# layout natively), then in the order they were found.
DISPLAY_RANK: dict[str, int] = {
    "CK301": 0,
    "CK002": 1,
    "CK003": 2,
    "CK104": 33,
    "CK105": 35,
    "CK103": 40,
    "CK109": 60,
    "CK112": 70,
    "CK110": 80,
    "CK111": 85,
    "CK106": 88,
    "CK201": 90,
    "CK302": 95,
    "CK107": 100,
    "CK108": 105,
    "CK100": 110,
    "CK101": 120,
    "CK102": 130,
}

_FLAX_FRAMEWORKS = {"big_vision", "flax", "jax"}
T = TypeVar("T")


@dataclass(frozen=True)
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


# ---- step 1: key views -------------------------------------------------------------------------------------
def params_view(tensors: Mapping[str, T]) -> tuple[dict[str, T], str]:
    """big_vision's ``load_params``: ``params/`` if present, else very old
    ``opt/target/``, else the whole tree."""
    for root in ("params/", "opt/target/"):
        if any(k.startswith(root) for k in tensors):
            return {k[len(root) :]: v for k, v in tensors.items() if k.startswith(root)}, root
    return dict(tensors), ""


def is_flax(expected: Expected | None, ckpt: Checkpoint) -> bool:
    """Whether keys are flax paths (``/``-joined, big_vision ``params`` collection)."""
    if expected is not None:
        return expected.key_sep == "/" or expected.framework in _FLAX_FRAMEWORKS
    return ckpt.key_sep == "/"


def weight_view(ckpt: Checkpoint, flax: bool) -> tuple[dict[str, TensorInfo], str]:
    """The checkpoint's keys as the expected model's loader sees them, and the prefix that was taken off."""
    if flax and ckpt.key_sep == "/":
        return params_view(ckpt.tensors)
    return dict(ckpt.tensors), ""


def expected_view(expected: Expected) -> dict[str, ExpectedTensor]:
    """Expected keys relative to the params collection (a spec taken from a full big_vision
    file has ``params/``)."""
    if expected.key_sep == "/":
        return params_view(expected.tensors)[0]
    return dict(expected.tensors)


# ---- step 2: raw diff --------------------------------------------------------------------------------------
def raw_diff(
    view: Mapping[str, TensorInfo], exp: Mapping[str, ExpectedTensor], *, torch_semantics: bool
) -> RawDiff:
    """Missing, unexpected, shape and dtype mismatches between a key view and an expected tree."""
    # torch's _load_from_state_dict walks each key through the modules: a component that is not a child
    # module,
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
) -> Context:
    """Key views and raw diff for one checkpoint, ready for the rules."""
    flax = is_flax(expected, ckpt)
    view, root = weight_view(ckpt, flax)
    if expected is None:
        return Context(
            ckpt, None, user_expected=False, view=view, view_root=root, exp={}, raw=None,
            torch_semantics=not flax, layout=layout, inferred=inferred,
        )  # fmt: skip
    exp = expected_view(expected)
    torch_semantics = not flax
    raw = raw_diff(view, exp, torch_semantics=torch_semantics)
    return Context(
        ckpt, expected, user_expected=expected.source != "inferred", view=view, view_root=root, exp=exp,
        raw=raw, torch_semantics=torch_semantics, layout=layout, inferred=inferred,
    )  # fmt: skip


def _runs(code: str, ctx: Context) -> bool:
    needs = getattr(get_rule(code).cls, "needs", "none")
    if needs == "user":
        return ctx.user_expected
    if needs == "any":
        return ctx.expected is not None
    return True


def explain_all(ctx: Context) -> list[Finding]:
    """Run every rule in ``ORDER`` over ``ctx``; findings sorted by severity, then by explainer order."""
    ranked: list[tuple[int, int, int, Finding]] = []
    seq = 0
    for code in ORDER:
        if not _runs(code, ctx):
            continue
        for item in get_rule(code).cls().check(ctx):
            finding = item.finding() if isinstance(item, Message) else item
            order = getattr(item, "order", None)
            rank = DISPLAY_RANK[code] if order is None else order
            ranked.append((-finding.severity.rank, rank, seq, finding))
            seq += 1
    known = set(ORDER)
    # reader findings that no rule claims (codes added later) pass through as they are
    for finding in ctx.ckpt.findings:
        if finding.code not in known:
            ranked.append((-finding.severity.rank, 0, seq, finding))
            seq += 1
    ranked.sort(key=lambda r: r[:3])
    return [r[3] for r in ranked]


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
    return ArchInfo(
        name=expected.arch,
        variant=expected.variant,
        source=expected.source,
        description=expected.description or None,
        inferred_from=str(evidence) if evidence else None,
    )


def run(
    ckpt: Checkpoint,
    expected: Expected | None,
    config: CheckConfig | None = None,
    *,
    layout: Any = None,
    inferred: Callable[[], Expected | None] | None = None,
    variant_inferred: bool = False,
) -> FileReport:
    """Check one checkpoint against an expectation (or none) and return its report.

    ``layout`` is a ``ckptlint.layout.LayoutGuess`` (only its ``name`` is reported); ``inferred`` lazily gives
    the architecture inferred from the file (used to name the file's own variant); ``variant_inferred`` says
    the expectation's variant was read from the file's shapes (``--arch NAME`` without ``:VARIANT``), so the
    report names the key it was read from. None of them is required.
    """
    config = config or CheckConfig()
    ctx = build_context(ckpt, expected, layout=layout, inferred=inferred)
    findings = [f for f in explain_all(ctx) if config.enabled(f.code)]
    weights = ctx.view if ctx.view_root else training_split(ckpt).weights
    dtypes: dict[str, int] = {}
    for t in weights.values():
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + t.numel
    return FileReport(
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
