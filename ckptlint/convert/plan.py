"""Plan a conversion from headers alone: which table, which tensors go where through which operations, and every
parameter the target's declaration needs with where its value came from.

What the weights cannot tell (``[declarations.ARCH].needs``: attention heads of a packed projection, the activation,
layer-norm eps, the tokenizer's eos id, preprocessing) is taken, in this order, from the weights written (the
target's own probes), ``--set``, the input's declaration files, the input's weights, what the input's library fixes
(``assume``) and the variant named with ``--to NAME:VARIANT``. What none of them gives stays in ``missing`` (asked
for) — except preprocessing, which the weights never show and no target needs to load: what the input does not
record is ``uncarried`` (left out of OUT, whose check then reports CK107 as the input's does), with the ``--set``
that would declare it. Nothing is guessed. Nothing here writes or checks: ``ckptlint.convert.run`` does, and CK104
uses this to name a command that works.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from ckptlint.archs import parse_arch_arg
from ckptlint.archs.detect import detect_layout, infer
from ckptlint.archs.expr import SpecError, compile_expr, evaluate, parse_literal
from ckptlint.archs.registry import declaration
from ckptlint.archs.schema import Declaration, DeclFile
from ckptlint.archs.spec import (
    ArchSpec,
    build_tree,
    load_arch,
    match_variant,
    unknown_variant,
    variant_params,
)
from ckptlint.checkpoint import Checkpoint, tensor_info
from ckptlint.convert.declare import files_to_write, read_declared, render
from ckptlint.convert.tables import Direction, KeyPlan, directions, plan_keys, shown
from ckptlint.errors import UsageError
from ckptlint.writers.plan import WritePlan

PREPROCESSING = ("mean", "std", "interpolation", "resize_mode", "crop_pct")
# special-token ids: written when known, else never transformers' defaults where they do not fit the vocabulary
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


@dataclass
class ConversionPlan:
    """Everything ``convert`` will do, decided from headers and declarations."""

    ckpt: Checkpoint
    src: str  # architecture names
    dst: str
    direction: Direction
    root: str
    keys: KeyPlan
    specs: dict[str, tuple[tuple[int, ...], str]]  # output key -> (shape, dtype)
    variant: str | None  # the target variant named with --to
    matched: str | None  # the named target variant the weights match (for messages only)
    params: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # need -> where its value came from
    missing: dict[str, str] = field(default_factory=dict)  # need -> what it is
    problems: list[str] = field(default_factory=list)  # `require`s that do not hold
    caveats: list[str] = field(default_factory=list)
    uncarried: list[str] = field(default_factory=list)  # preprocessing the input records nowhere: left out
    suggest: tuple[dict[str, Any], str] | None = None  # (values, what) --set could declare for them

    @property
    def decl(self) -> Declaration | None:
        return declaration(self.dst)

    def files(self) -> list[DeclFile]:
        return files_to_write(self.decl, self.params)

    def rendered(self) -> dict[str, bytes]:
        """The declaration files OUT gets (call only when nothing is missing)."""
        return {f.name: render(f, self.params) for f in self.files()}

    def suggested_sets(self) -> list[str]:
        """``--set KEY=VALUE`` arguments declaring the preprocessing left out, as the user types them."""
        if not self.suggest:
            return []
        values = self.suggest[0]
        return [f"--set {k}={format_set(values[k])}" for k in self.uncarried if k in values]

    def not_carried(self) -> str | None:
        """One line on the preprocessing left out of OUT, and the ``--set`` that would declare it."""
        if not self.uncarried:
            return None
        text = (
            f"preprocessing not carried: the input records no {', '.join(self.uncarried)}, so OUT declares none "
            "(its check reports CK107, as the input's does); nothing was guessed"
        )
        sets = self.suggested_sets()
        if sets and self.suggest:
            text += f". If it was preprocessed with {self.suggest[1]}, add: {' '.join(sets)}"
        else:
            text += f". To declare it, add {' '.join(f'--set {k}=VALUE' for k in self.uncarried)}"
        return text

    def ask(self) -> str:
        """What to add to the command for the missing needs, in one line."""
        hint = f"--to {self.dst}:{self.matched} or " if self.matched and not self.variant else ""
        sets = " ".join(f"--set {k}=…" for k in self.missing)
        what = "; ".join(f"{k}: {v}" for k, v in self.missing.items())
        return f"the weights cannot tell {what}; give {hint}{sets}"


def format_set(value: Any) -> str:
    """A value as ``--set`` reads it back (``[0.5, 0.5, 0.5]`` -> ``0.5,0.5,0.5``; floats at full precision)."""
    if isinstance(value, (list, tuple)):
        return ",".join(format_set(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["act=quick_gelu", "mean=0.5,0.5,0.5"]`` -> ``{"act": "quick_gelu", "mean": [0.5, 0.5, 0.5]}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        parts = [parse_literal(v) for v in value.split(",")] if "," in value else None
        out[key.strip()] = parts if parts is not None else parse_literal(value)
    return out


def plan_conversion(ckpt: Checkpoint, to: str, sets: dict[str, Any] | None = None) -> ConversionPlan:
    """Plan converting ``ckpt`` into architecture ``to`` (``NAME[:VARIANT]``); UsageError when no table fits."""
    name, variant, overrides = parse_arch_arg(to)
    sets = {**overrides, **(sets or {})}
    spec_dst = load_arch(name)
    guess = detect_layout(ckpt)
    src = guess.arch
    if not src:
        raise UsageError(
            f"{ckpt.path}: cannot tell which architecture this is (layout {guess.name}); see `ckptlint convert --list`"
        )
    if src == name:
        raise UsageError(
            f"{ckpt.path}: is already a {name} checkpoint; nothing to convert (`ckptlint fix` strips prefixes)"
        )
    found_dirs = directions(src, name)
    if not found_dirs:
        raise UsageError(
            f"no conversion from {src} to {name}; `ckptlint convert --list` shows the supported pairs"
        )
    usable = [d for d in found_dirs if d.problem is None]
    if not usable:
        raise UsageError(
            f"{found_dirs[0].label}: converts only {found_dirs[0].dst} → {found_dirs[0].src}: {found_dirs[0].problem}"
        )
    spec_src = load_arch(src)
    src_values, src_sources = _source_values(spec_src, ckpt, sets)
    env = {**spec_src.params, **src_values}
    plans = [(d, plan_keys(d, ckpt, guess.root, env)) for d in usable]
    d, keys = min(plans, key=lambda p: len(p[1].unmapped))
    if keys.unmapped:
        raise UsageError(
            f"{ckpt.path}: {d.label} ({d.conv.title}) does not map {len(keys.unmapped)} tensor(s): "
            f"{shown(keys.unmapped)}; nothing was written"
        )
    specs = WritePlan(keys.entries).check(ckpt)
    pseudo = Checkpoint.model_construct(
        path=ckpt.path, format="safetensors", key_sep=spec_dst.key_sep, groups=[], metadata={}, sidecars=[],
        files=[], findings=[], shards=None, tensors={k: tensor_info(s, t) for k, (s, t) in specs.items()},
    )  # fmt: skip
    found_t = infer(spec_dst, pseudo)
    matched = match_variant(spec_dst, found_t.observed).name
    plan = ConversionPlan(ckpt, src, name, d, guess.root, keys, specs, variant, matched)
    fixed = _variant(spec_dst, variant, found_t.observed)
    plan.params = {**spec_dst.params, **found_t.guessed, **found_t.observed}
    plan.sources = {}
    _resolve_needs(plan, spec_src, ckpt, sets, src_values, src_sources, found_t.observed, fixed)
    _token_ids(plan, ckpt, src_values, src_sources)
    _check_target(plan, spec_dst)
    return plan


def _source_values(
    spec: ArchSpec, ckpt: Checkpoint, sets: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The input architecture's parameters: its weights (and config, as ``check`` reads it), its declaration files,
    then what its library fixes; with where each came from."""
    found = infer(spec, ckpt)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for k, v in found.observed.items():
        by_config = found.config and found.evidence.get(k) == found.config
        values[k], sources[k] = v, (found.config if by_config else "the weights")
    for k, (v, where) in read_declared(declaration(spec.name), ckpt).items():
        if k not in values or sources[k] != "the weights":
            values[k], sources[k] = v, where
    decl = declaration(spec.name)
    for k, expr in (decl.assume if decl else {}).items():
        if k in values:
            continue
        try:
            values[k] = evaluate(expr, {**spec.params, **values, **sets})
        except SpecError:
            continue
        sources[k] = f"{spec.name}'s library default"
    return values, sources


def _variant(spec: ArchSpec, variant: str | None, observed: dict[str, Any]) -> dict[str, Any]:
    if not variant:
        return {}
    fixed = variant_params(spec, variant)
    if fixed is None:
        raise unknown_variant(spec, variant)
    effective = {**spec.params, **fixed}
    clash = [k for k in spec.variant_keys if k in observed and k in effective and effective[k] != observed[k]]
    if clash:
        diffs = ", ".join(f"{k} {effective[k]} (the weights: {observed[k]})" for k in clash[:4])
        raise UsageError(f"--to {spec.name}:{variant}: the variant does not fit the weights: {diffs}")
    return fixed


def _resolve_needs(
    plan: ConversionPlan,
    spec_src: ArchSpec,
    ckpt: Checkpoint,
    sets: dict[str, Any],
    src_values: dict[str, Any],
    src_sources: dict[str, str],
    observed: dict[str, Any],
    fixed: dict[str, Any],
) -> None:
    decl = plan.decl
    needs = dict(decl.needs) if decl else {}
    known = (
        set(needs) | set(load_arch(plan.dst).namespace) | set(decl.assume if decl else {}) | set(TOKEN_IDS)
    )
    unknown = sorted(set(sets) - known)
    if unknown:
        raise UsageError(
            f"--set {unknown[0]}: {plan.dst} has no such parameter; it needs {', '.join(needs) or 'nothing'}"
        )
    for k, v in sets.items():
        said = observed.get(k, src_values.get(k) if src_sources.get(k) == "the weights" else None)
        if said is not None and said != v:
            raise UsageError(f"--set {k}={v}: the weights say {k} = {said}")
        plan.params[k], plan.sources[k] = v, "--set"
    variant_pp = _variant_preprocessing(plan.dst, plan.variant)
    recorded = _recorded_preprocessing(ckpt)
    for k in needs:
        if k in sets:
            continue
        if k in observed:
            plan.sources[k] = "the weights"
        elif k in src_values and (k not in PREPROCESSING or k in recorded):
            plan.params[k], plan.sources[k] = src_values[k], src_sources[k]
        elif k in fixed:
            plan.params[k], plan.sources[k] = fixed[k], f"variant {plan.variant}"
        elif k in variant_pp:
            plan.params[k], plan.sources[k] = variant_pp[k], f"variant {plan.variant}"
    plan.uncarried = [k for k in needs if k in PREPROCESSING and k not in plan.sources]
    if plan.uncarried:
        plan.suggest = _suggestion(spec_src.name, plan.dst, ckpt, plan.uncarried)
    for name, lookup in (decl.lookup if decl else {}).items():
        if name not in plan.sources:
            value = _lookup(lookup.arch, lookup.keys, plan.params)
            if value is not None:
                plan.params[name], plan.sources[name] = (
                    value,
                    f"the {lookup.arch} variant with these parameters",
                )
    plan.missing = {
        k: v
        for k, v in needs.items()
        if k not in plan.sources
        and k not in plan.uncarried
        and (k not in decl.only or _holds(decl.only[k], plan.params))  # type: ignore[union-attr]
    }
    src_decl = declaration(spec_src.name)
    for k, expr in (
        src_decl.assume if src_decl else {}
    ).items():  # follows once what it derives from is given
        names = set(compile_expr(expr).co_names) if isinstance(expr, str) else set()
        if k in plan.missing and names & set(plan.missing) and names <= set(plan.missing) | set(plan.params):
            del plan.missing[k]
    for k in needs:  # a need the target does not have here: None for the expressions that name it
        plan.params.setdefault(k, None)


def _token_ids(
    plan: ConversionPlan, ckpt: Checkpoint, src_values: dict[str, Any], src_sources: dict[str, str]
) -> None:
    """The special-token ids no need resolved: from the input's tokenizer files (``Checkpoint.tokenizer``, as the
    reader resolved them), else its config files; else None (the target's fields then leave transformers'
    defaults only where they are right for the vocabulary)."""
    facts = ckpt.tokenizer
    found = {f"{k}_id": v for k, v in (facts.special if facts else {}).items() if v is not None}
    files = facts.special_from if facts else []
    for k in TOKEN_IDS:
        if k in plan.sources:
            continue
        if k in found:
            plan.params[k], plan.sources[k] = found[k], " and ".join(files) or "the tokenizer files"
        elif k in src_values and src_sources[k].endswith(".json"):
            plan.params[k], plan.sources[k] = src_values[k], src_sources[k]
        else:
            plan.params[k] = None


def _variant_preprocessing(arch: str, variant: str | None) -> dict[str, Any]:
    from ckptlint.archs.spec import variant_preprocessing

    if not variant:
        return {}
    return {k: v for k, v in variant_preprocessing(load_arch(arch), variant).items() if k in PREPROCESSING}


def _recorded_preprocessing(ckpt: Checkpoint) -> set[str]:
    """The preprocessing fields the input records (as CK107 reads them: what it records is carried, what it does
    not stays unrecorded in OUT). ``resize_mode`` is read by the declarations alone (their files record it as
    crop settings), so it is carried whenever they read it."""
    from ckptlint.rules._preprocessing import gather

    return {*gather(ckpt).fields, "resize_mode"}


def _suggestion(src: str, dst: str, ckpt: Checkpoint, keys: list[str]) -> tuple[dict[str, Any], str] | None:
    """The most specific known preprocessing giving every one of ``keys`` that the target accepts: offered as
    ``--set`` arguments in the output, never written unasked."""
    decl = declaration(dst)
    for values, where in _preprocessing_defaults(src, dst, ckpt):
        if not all(k in values for k in keys):
            continue
        trial = {**load_arch(dst).params, **dict.fromkeys(PREPROCESSING), **values}
        if all(
            _holds(expr, trial) or not (set(compile_expr(expr).co_names) & set(keys))
            for expr in (decl.require if decl else {})
        ):
            return values, where
    return None


def _preprocessing_defaults(src: str, dst: str, ckpt: Checkpoint) -> list[tuple[dict[str, Any], str]]:
    """Known preprocessing that may fit weights which record none, most specific first: the profile their keys
    show (SigLIP's, which every SigLIP release uses), the target architecture's profile (a SiglipVisionModel is
    preprocessed as SigLIP), the input architecture's own (its library's default). Only ever suggested."""
    from ckptlint.archs.detect import profile_of
    from ckptlint.archs.registry import profiles
    from ckptlint.archs.resolve import resolve

    def pick(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k in PREPROCESSING}

    out = []
    shown = profile_of(src, list(ckpt.tensors))
    if shown in profiles():
        out.append(
            (
                pick(profiles()[shown]),
                f"the {(t := profiles()[shown]['title'])} settings (its keys suggest {t})",
            )
        )
    own = load_arch(dst).profile
    if own in profiles() and own != shown:
        out.append((pick(profiles()[own]), f"the {profiles()[own]['title']} settings ({dst}'s profile)"))
    with contextlib.suppress(UsageError, SpecError):
        default = resolve(src, None, {}, ckpt, "inferred").preprocessing
        out.append((pick(default), f"{src}'s default settings"))
    return out


def _check_target(plan: ConversionPlan, spec: ArchSpec) -> None:
    """The target's requirements and caveats, and the weights against the target's tree for these parameters."""
    decl = plan.decl
    if not plan.missing:  # what the requirements name is known
        for expr, message in (decl.require if decl else {}).items():
            if not _holds(expr, plan.params):
                plan.problems.append(message)
        for expr, message in (decl.caveat if decl else {}).items():
            if not _holds(expr, plan.params):
                plan.caveats.append(message)
    try:
        tree = build_tree(spec, plan.params).tensors
    except (SpecError, UsageError) as exc:
        plan.problems.append(f"cannot build {spec.name} for these parameters: {exc}")
        return
    extra = [k for k in plan.specs if k not in tree]
    lacking = [k for k in tree if k not in plan.specs]
    wrong = [k for k, (s, _) in plan.specs.items() if k in tree and tuple(tree[k][0]) != tuple(s)]
    if extra or lacking or wrong:
        parts = []
        if lacking:
            parts.append(f"lacks {shown(lacking, 4)}")
        if extra:
            parts.append(f"has {shown(extra, 4)} it does not expect")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} is {list(plan.specs[k][0])}, expected {list(tree[k][0])}")
        plan.problems.append(f"the result would not be a {spec.name} checkpoint: it {'; '.join(parts)}")


def _holds(expr: Any, params: dict[str, Any]) -> bool:
    try:
        return bool(evaluate(expr, params))
    except SpecError:
        return False


def _lookup(arch: str, keys: list[str], params: dict[str, Any]) -> str | None:
    """The first named variant of ``arch`` whose parameters equal ``params`` on ``keys``."""
    from ckptlint.archs.spec import variant_names

    spec = load_arch(arch)
    for name in variant_names(spec):
        fixed = {**spec.params, **(variant_params(spec, name) or {})}
        if all(k in params and fixed.get(k) == params[k] for k in keys):
            return name
    return None
