"""Where the weights contradict their own declaration (CK113), one root cause per declared parameter.

For each parameter of the declaration (in its table's order, then the derived ones) that the weights show with
another value, the tree built with that one parameter corrected is compared with the declared tree: the keys that
change — resized, missing or left over — are what this parameter explains, and the finding consumes them from the
diff. The finding names the field, the declared and the observed value, the key that shows it, and both fixes:
edit the field, or use weights for the declared model. Only declarations read by ``ckptlint.declared`` adapters
(open_clip, timm) are judged here; nothing here reads files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ckptlint.archs import detect
from ckptlint.archs.expr import SpecError, evaluate
from ckptlint.archs.spec import ArchSpec, build_tree, load_arch
from ckptlint.declared.declaration import Declaration
from ckptlint.declared.lookup import ADAPTERS, Unbuilt, declaration_of
from ckptlint.errors import UsageError

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint
    from ckptlint.expected import Expected
    from ckptlint.rules._context import Context

NO_TENSOR = "no such tensor"
# how reports name a parameter (else its name with spaces)
PHRASES = {
    "width": "width",
    "depth": "layer count",
    "heads": "head count",
    "mlp_dim": "MLP width",
    "patch": "patch size",
    "image_size": "image size",
    "embed_dim": "embedding dim",
    "text_width": "text width",
    "text_depth": "text layer count",
    "text_mlp_dim": "text MLP width",
    "context_length": "context length",
    "vocab_size": "vocabulary size",
    "num_classes": "class count",
    "ls": "layer scale",
    "text_ls": "text layer scale",
    "ln_pre": "pre-transformer LayerNorm",
}


@dataclass
class Contradiction:
    """One declared parameter the weights contradict, and the diff entries it explains."""

    param: str
    field: str  # the declaration's field(s) behind it: "model_cfg.text_cfg.context_length"
    declared: Any
    observed: Any
    evidence: str  # "positional_embedding [16, 32]"
    suggest: str | None  # the field's value the weights imply ("16"), when it can be said
    given: bool  # the file sets the field (else the library's default decided)
    field_value: Any  # the field's declared value, when the parameter is computed from it (mlp_ratio 4.0)
    missing: list[str]
    unexpected: list[str]  # view keys
    shape: list[str]


def judged(ctx: Context) -> Declaration | Unbuilt | None:
    """The declaration CK113 judges for this run: one an adapter reads, and (when built) the expectation's own."""
    decl = declaration_of(ctx.ckpt)
    if decl is None or decl.kind not in ADAPTERS:
        return None
    if isinstance(decl, Unbuilt):
        return decl if decl.refused else None
    return decl if ctx.expected is not None and built_from(ctx.expected, decl) else None


def built_from(expected: Expected, decl: Declaration) -> bool:
    """Whether ``expected`` is the model ``decl`` declares (declared, or --arch NAME read from it)."""
    if expected.arch != decl.arch:
        return False
    if expected.source == "declared":
        return True
    keys = load_arch(decl.arch).variant_keys
    return all(expected.params.get(k) == decl.params[k] for k in keys if k in decl.params)


def find(ctx: Context, decl: Declaration) -> list[Contradiction]:
    """Every declared parameter the weights contradict, in order, each with the diff entries it explains."""
    spec = load_arch(decl.arch)
    observed, evidence = _observed(spec, ctx.ckpt)
    if observed is None:
        return []
    try:
        declared_tree = build_tree(spec, decl.params).tensors
    except (UsageError, SpecError):
        return []
    root = _root(ctx)
    out = []
    for param in [*decl.fields, *decl.derived]:
        if param not in observed or _same(decl.params.get(param), observed[param]):
            continue
        corrected = _corrected(spec, decl, param, observed[param])
        if corrected is None:
            continue
        try:
            tree = build_tree(spec, corrected).tensors
        except (UsageError, SpecError):
            continue
        gone = [k for k in declared_tree if k not in tree]
        extra = [root + k for k in tree if k not in declared_tree]
        resized = [k for k in declared_tree if k in tree and tree[k][0] != declared_tree[k][0]]
        suggest = _suggest(spec, decl, param, observed)
        inputs = [suggest[0]] if suggest else [param, *decl.derived.get(param, ())]
        found = Contradiction(
            param=param,
            field=decl.fields[suggest[0]] if suggest else _field(decl, param),
            declared=decl.params.get(param),
            observed=observed[param],
            evidence=_evidence(ctx, param, observed[param], evidence),
            suggest=f"{decl.fields[suggest[0]]} = {_show(suggest[1])}" if suggest else None,
            given=any(p in decl.given for p in inputs),
            field_value=decl.params.get(suggest[0]) if suggest and suggest[0] != param else None,
            missing=ctx.consume_missing(gone),
            unexpected=ctx.consume_unexpected(extra),
            shape=ctx.consume_shape(resized),
        )
        if found.evidence == NO_TENSOR and found.missing:  # what the declaration adds and the weights lack
            found.evidence = f"no {found.missing[0]}" + (
                f" (nor {len(found.missing) - 1} more)" if found.missing[1:] else ""
            )
        if found.missing or found.unexpected or found.shape:
            out.append(found)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    return a == b


def _observed(spec: ArchSpec, ckpt: Checkpoint) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The parameters the weights show under the spec's own names (None when a tower is in another layout)."""
    bare = ckpt.model_copy(update={"sidecars": []})  # the shapes alone, not the declaration
    found = detect.infer(spec, bare)
    if not found.found or any(not f.native for f in found.found):
        return None, {}
    return dict(found.observed), dict(found.evidence)


def _root(ctx: Context) -> str:
    """The prefix the view's keys carry before the expected names (``module.``), read from the pairs."""
    for exp_key, view_key in ctx.pairs.items():
        if view_key != exp_key and view_key.endswith(exp_key):
            return view_key[: len(view_key) - len(exp_key)]
    return ""


def _corrected(spec: ArchSpec, decl: Declaration, param: str, value: Any) -> dict[str, Any] | None:
    """The declaration's parameters with ``param`` as the weights have it (derived ones computed again)."""
    params = {**decl.params, param: value}
    conf = spec.config
    if conf is None:
        return None
    for name, src in conf.derive.items():
        if name != param and name in decl.derived:
            try:
                params[name] = evaluate(src, params)
            except SpecError:
                return None
    return params


def _field(decl: Declaration, param: str) -> str:
    if param in decl.fields:
        return decl.fields[param]
    inputs = [decl.fields[p] for p in decl.derived.get(param, ()) if p in decl.fields]
    return " and ".join(dict.fromkeys(inputs)) or param


def _suggest(
    spec: ArchSpec, decl: Declaration, param: str, observed: dict[str, Any]
) -> tuple[str, Any] | None:
    """(field, value) that would make the declaration agree with the weights, when one field can (never one the
    weights show as declared)."""
    value = observed[param]
    if param in decl.opaque:
        return None
    if param in decl.fields:
        return param, value
    conf = spec.config
    src = conf.derive.get(param) if conf else None
    if src is None:
        return None
    for name in decl.derived.get(param, ()):
        if name not in decl.fields or name in observed:
            continue
        current, declared = decl.params.get(name), decl.params.get(param)
        candidates: list[Any] = []
        if isinstance(current, bool):
            candidates = [not current]
        elif isinstance(current, (int, float)) and isinstance(value, (int, float)) and declared:
            candidates = [round(current * value / declared, 6)]
        if not isinstance(current, bool):
            candidates.append(None)  # an optional field left out (ls_init_value: null, no layer scale)
        for cand in candidates:
            try:
                if _same(evaluate(src, {**decl.params, name: cand}), value):
                    return name, cand
            except SpecError:
                continue
    return None


def _show(value: Any) -> str:
    """A field's value as the JSON file spells it."""
    return json.dumps(value)


def _evidence(ctx: Context, param: str, value: Any, evidence: dict[str, str]) -> str:
    key = evidence.get(param)
    if key is None:
        return NO_TENSOR if value in (0, False) else "its shapes"
    info = ctx.ckpt.tensors.get(key)
    if info is not None:
        return f"{key} {list(info.shape)}"
    if isinstance(value, int) and value > 0 and "*" in key:  # a count: blocks 0..n-1
        return key.replace("*", "{0.." + str(value - 1) + "}", 1)
    return key


def phrase(param: str) -> str:
    return PHRASES.get(param, param.replace("_", " "))
