"""CK103 — key prefix or wrapper nesting

What it does
    Finds expected keys that exist in the checkpoint under another prefix — the checkpoint has one more
    (``module.``, ``_orig_mod.``, ``state_dict.``, ``model.``, big_vision's ``params/img/``), one less (a
    plain ViT where CLIPPO expects ``img/``), or a different one — and reports the one rename that fixes them
    all (``details: {"from": "module.", "to": ""}``) instead of hundreds of missing and unexpected keys.

Why is this bad?
    Wrapped models prefix every key: DistributedDataParallel/DataParallel with ``module.``, ``torch.compile``
    with ``_orig_mod.``, trainer dicts with ``state_dict.``. ``load_state_dict`` then reports every key as
    missing AND unexpected (strict) or loads nothing at all (``strict=False``). In big_vision, CLIPPO's
    ``one_tower`` builds its ViT with ``name="img"``, so a CLIPPO checkpoint's ViT sits under ``params/img/``;
    applying a plain ``models.vit`` to it fails with ``ScopeParamNotFoundError: Could not find parameter named
    "kernel" in scope "/embedding"``, and ``vit.load`` with ``KeyError: 'Transformer'``.

Example
    $ ckptlint check tiny_clippo.npz --arch bv-vit
    CK103 error    wrapper nesting: every expected key exists under params/img/ — this is a big_vision CLIPPO
                   one_tower checkpoint; flax will raise ScopeParamNotFoundError for /embedding/kernel; take
                   params['img']
                   fix: load with models.proj.clippo.one_tower, or take params['img'] for the plain ViT
                   (vit.load(init, 'tiny_clippo.npz:img', model_cfg)); rewrite the file: `ckptlint fix
                   tiny_clippo.npz OUT --arch bv-vit` (or in Python: `sd = dict(np.load('tiny_clippo.npz'));
                   sd = {'params/' + k.removeprefix('params/img/'): v for k, v in sd.items() if
                   k.startswith('params/img/')}`)

    $ ckptlint check openclip_tiny_ddp_module_prefix.pt --arch open_clip
    CK103 error    key prefix: every expected key (62) exists under module. (DistributedDataParallel /
                   DataParallel)
                   fix: strip module.: `ckptlint fix openclip_tiny_ddp_module_prefix.pt OUT --arch open_clip`
                   (or in Python: `sd = torch.load('openclip_tiny_ddp_module_prefix.pt', weights_only=True);
                   sd = {k.removeprefix('module.'): v for k, v in sd.items()}`)

Fix
    Strip (or add) the prefix the finding names: ``ckptlint fix FILE OUT --arch …`` (the finding names the exact
    command, and the Python one-liner that does the same from the loaded file), or save the inner model
    (``model.module.state_dict()``, ``model._orig_mod.state_dict()``). For big_vision, load CLIPPO with
    ``models.proj.clippo.one_tower`` or take ``params['img']`` (``vit.load(init, "FILE.npz:img", model_cfg)``);
    a plain ViT loads into CLIPPO or SigLIP as their image tower (``one_tower.load`` / ``two_towers.load``
    with ``{"img": "FILE.npz"}``).

Links
    big_vision models/proj/clippo/one_tower.py, models/vit.py (load, fix_old_checkpoints);
    https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html
"""

from __future__ import annotations

from typing import Any

from ckptlint.archs import registry
from ckptlint.archs.pattern import matches
from ckptlint.edits import RenamePrefix, TakeSubtree
from ckptlint.record import record
from ckptlint.renames import find_prefix_renames
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule
from ckptlint.suggest import fill, joined, remedy

MAX_RENAMES = 3  # independent prefix changes reported for one checkpoint


class PrefixWrapped(Message):
    code = "CK103"
    message = "key prefix: {coverage} under {shown} ({names})"
    cause = "{cause}"
    fix = "{fix_text}"


class PrefixMissing(Message):
    code = "CK103"
    message = (
        "key prefix: the model names {coverage_plain} under {prefix} and the checkpoint has them "
        "without it ({names})"
    )
    cause = "{cause}"
    fix = "{fix_text}"


class PrefixRenamed(Message):
    code = "CK103"
    message = "key prefix: {coverage} under {shown} instead of {target}"
    cause = "the checkpoint was saved from a model that names this part {source}, the model calls it {target}"
    fix = "{fix_text}"


class FlaxNested(Message):
    code = "CK103"
    message = (
        "wrapper nesting: {coverage} under {shown} — this is a {name} checkpoint; "
        "flax will raise ScopeParamNotFoundError for {scope}; take params['{sub}']"
    )
    cause = "{cause}"
    fix = "{fix_text}"


class FlaxNotNested(Message):
    code = "CK103"
    message = (
        "wrapper nesting: the image tower is under the wrong scope — the model ({name}) expects its ViT under "
        "{prefix}, the checkpoint is a plain ViT ({shown}); flax will raise ScopeParamNotFoundError for {scope}"
    )
    cause = "{cause}"
    fix = "{fix_text}"


@record(frozen=True)
class Rename:
    source: str  # prefix on the checkpoint side ("" = none)
    target: str  # prefix on the expected side ("" = none)


def find_rename(ctx: Context) -> tuple[Rename, int] | None:
    """The prefix change (strip, add or replace) that turns most unexpected keys into missing ones, and how many.

    It is ``ckptlint.renames``' best rewrite of the unexpected keys onto the missing ones — the same finder
    ``ckptlint diff`` uses — with shapes as the signature that breaks ties.
    """
    sep = ctx.exp_sep
    found = find_prefix_renames(
        {tuple(u.split(sep)): ctx.view[u].shape for u in ctx.unexpected},
        {tuple(m.split(sep)): ctx.exp[m].shape for m in ctx.missing},
        limit=1,
    )
    if not found:
        return None
    pa, pb, pairs = found[0]
    return Rename(sep.join(pa) + sep if pa else "", sep.join(pb) + sep if pb else ""), len(pairs)


def _apply(ctx: Context, rename: Rename) -> list[tuple[str, str]]:
    pairs = []
    for u in list(ctx.unexpected):
        if u.startswith(rename.source):
            m = rename.target + u[len(rename.source) :]
            if m in ctx.missing:
                pairs.append((m, u))
    for m, u in pairs:
        ctx.map_pair(m, u)
    return pairs


def _decompose(prefix: str, side: str, framework: str | None) -> list[dict[str, Any]] | None:
    """Split ``prefix`` into known wrappers (longest first), or None when a part is unknown."""
    entries = [w for w in registry.wrappers() if w["side"] == side and w["framework"] in ("any", framework)]
    out: list[dict[str, Any]] = []
    rest = prefix
    while rest:
        hit = max(
            (w for w in entries if rest.startswith(w["prefix"])), key=lambda w: len(w["prefix"]), default=None
        )
        if hit is None:
            return None
        out.append(hit)
        rest = rest[len(hit["prefix"]) :]
    return out


def _pick(candidates: list[dict[str, Any]], ctx: Context, side: str) -> dict[str, Any]:
    pool = list(ctx.unexpected) if side == "file" else list(ctx.missing)
    for w in candidates:
        req = w.get("requires")
        if req is None or any(matches(k, [req]) for k in pool):
            return w
    return candidates[-1]


def _how(ctx: Context, edits: list[Any]) -> str:
    """The command (and Python) that applies ``edits`` to this very file."""
    return remedy(ctx.ckpt, ctx.expected, edits)


def _coverage(n: int, total: int) -> str:
    return f"every expected key ({n}) exists" if n == total else f"{n} of {total} expected keys exist"


def _scope(keys: list[str]) -> str:
    preferred = sorted((k for k in keys if k.endswith("embedding/kernel")), key=len)
    return "/" + (preferred[0] if preferred else keys[0])


@rule(
    "CK103",
    "error",
    "key prefix or wrapper nesting: expected keys exist under another prefix",
    stage=Stage.LAYOUT,
    order=3,
    rank=40,
)
class PrefixRule(Rule):
    needs = "any"

    def check(self, ctx: Context) -> list[Message]:
        out: list[Message] = []
        for _ in range(MAX_RENAMES):
            if not ctx.missing or not ctx.unexpected:
                break
            found = find_rename(ctx)
            if found is None:
                break
            rename, count = found
            smaller = min(len(ctx.missing), len(ctx.unexpected))
            if count < 0.3 * smaller:
                break
            if not ctx.user_expected and 2 * count < len(ctx.exp):
                break  # a model inferred from look-alike keys: a few blocks under a prefix do not make a wrapper
            known = _decompose(
                rename.source or rename.target, "file" if rename.source else "model", ctx.exp_framework
            )
            if count < 2 and (known is None or (rename.source and rename.target)):
                break  # one key under another name is a rename, not a wrapper
            if rename.source and rename.target and 2 * count < max(len(ctx.missing), len(ctx.unexpected)):
                break  # two modules of another architecture that happen to share shapes (a LayerNorm...)
            message = self._message(ctx, rename)
            if message is None:
                break
            out.append(message)
        return out

    def _message(self, ctx: Context, rename: Rename) -> Message | None:
        framework = ctx.exp_framework
        total = len(ctx.exp)
        if rename.source and not rename.target:
            parts = _decompose(rename.source, "file", framework)
            if parts is not None and parts[-1]["framework"] == "big_vision":  # one_tower or two_towers?
                same = [
                    w
                    for w in registry.wrappers()
                    if w["side"] == "file"
                    and w["prefix"] == parts[-1]["prefix"]
                    and w["framework"] == "big_vision"
                ]
                parts[-1] = _pick(same, ctx, "file")
            pairs = _apply(ctx, rename)
            if not pairs:
                return None
            return self._stripped(ctx, rename, parts, pairs, total)
        if rename.target and not rename.source:
            parts = _decompose(rename.target, "model", framework)
            if parts is not None and parts[-1].get("kind"):  # the image tower of one_tower or of two_towers?
                same = [
                    w
                    for w in registry.wrappers()
                    if w["side"] == "model"
                    and w["prefix"] == parts[-1]["prefix"]
                    and w["framework"] == parts[-1]["framework"]
                ]
                parts[-1] = _pick(same, ctx, "model")
            pairs = _apply(ctx, rename)
            if not pairs:
                return None
            return self._added(ctx, rename, parts, pairs, total)
        pairs = _apply(ctx, rename)
        if not pairs:
            return None
        root = ctx.view_root
        edits = [RenamePrefix(old=root + rename.source, new=root + rename.target)]
        return PrefixRenamed(
            keys=[ctx.file_key(u) for _, u in pairs],
            edits=edits,
            details={"from": rename.source, "to": rename.target, "count": len(pairs)},
            coverage=_coverage(len(pairs), total),
            shown=ctx.view_root + rename.source,
            source=rename.source,
            target=rename.target,
            fix_text=joined(f"rename {rename.source} to {rename.target}", _how(ctx, edits)),
        )

    def _stripped(
        self,
        ctx: Context,
        rename: Rename,
        parts: list[dict[str, Any]] | None,
        pairs: list[tuple[str, str]],
        total: int,
    ) -> Message:
        details: dict[str, Any] = {"from": rename.source, "to": "", "count": len(pairs)}
        evidence = [ctx.file_key(u) for _, u in pairs]
        if parts and parts[-1].get("kind"):  # big_vision nesting (flax scopes)
            w = parts[-1]
            root = rename.source[: len(rename.source) - len(w["prefix"])]
            companions = [
                k
                for k in list(ctx.unexpected)
                if k.startswith(root) and matches(k[len(root) :], w["companions"])
            ]
            ctx.consume_unexpected(companions)
            scope = _scope([m for m, _ in pairs])
            details.update(wrapper=w["name"], kind=w["kind"], companions=companions, flax_error=scope)
            first = ctx.file_key(rename.source + scope[1:])
            evidence = [first] + [k for k in evidence if k != first]  # the key flax asks for first
            edits = [TakeSubtree(prefix=ctx.view_root + rename.source, into=ctx.view_root)]
            return FlaxNested(
                keys=evidence + [ctx.file_key(k) for k in companions],
                edits=edits,
                details=details,
                coverage=_coverage(len(pairs), total).replace(f" ({len(pairs)})", ""),
                shown=ctx.view_root + rename.source,
                name=w["name"],
                scope=scope,
                sub=rename.source.rstrip("/").replace("/", "']['"),
                cause=fill(f"{w['cause']}; {w['loader']}", ctx.ckpt),
                fix_text=joined(fill(w["fix"], ctx.ckpt), _how(ctx, edits), "; rewrite the file: "),
            )
        if parts:
            names = (
                " + ".join(f"{w['name']} ({w['prefix']})" for w in parts)
                if len(parts) > 1
                else parts[0]["name"]
            )
            cause = "; ".join(w["cause"] for w in parts) + " — " + "; ".join(w["loader"] for w in parts)
            steps = ", then ".join(w["step"] for w in parts)
            details["wrappers"] = [w["name"] for w in parts]
        else:
            names = "the checkpoint was saved from a model that wraps this one"
            cause = (
                f"the model the checkpoint was saved from holds this architecture as "
                f"{rename.source.rstrip('.')!r}"
            )
            steps = f"strip {rename.source}"
        edits = [RenamePrefix(old=ctx.view_root + rename.source, new=ctx.view_root)]
        return PrefixWrapped(
            keys=evidence,
            edits=edits,
            details=details,
            coverage=_coverage(len(pairs), total),
            shown=ctx.view_root + rename.source,
            names=names,
            cause=cause,
            fix_text=joined(steps, _how(ctx, edits)),
        )

    def _added(
        self,
        ctx: Context,
        rename: Rename,
        parts: list[dict[str, Any]] | None,
        pairs: list[tuple[str, str]],
        total: int,
    ) -> Message:
        details: dict[str, Any] = {"from": "", "to": rename.target, "count": len(pairs)}
        evidence = [ctx.file_key(u) for _, u in pairs]
        if parts and parts[-1].get("kind"):
            w = parts[-1]
            root = rename.target[: len(rename.target) - len(w["prefix"])]
            companions = [
                k
                for k in list(ctx.missing)
                if k.startswith(root) and matches(k[len(root) :], w["companions"])
            ]
            ctx.consume_missing(companions)
            scope = _scope([m for m, _ in pairs])
            details.update(wrapper=w["name"], kind=w["kind"], companions=companions, flax_error=scope)
            first = ctx.file_key(scope[len(rename.target) + 1 :])
            evidence = [first] + [k for k in evidence if k != first]  # the key flax asks for first
            # no edit: nesting the file under img/ would still leave t (and a text tower) missing -- the loader's
            # own init fills them (one_tower.load / two_towers.load with {'img': FILE})
            return FlaxNotNested(
                keys=evidence,
                details=details,
                name=w["name"],
                prefix=rename.target,
                shown=f"{ctx.view_root}embedding/, {ctx.view_root}Transformer/ … at the root",
                scope=scope,
                cause=fill(f"{w['cause']}; {w['loader']}", ctx.ckpt),
                fix_text=fill(w["fix"], ctx.ckpt),
            )
        if parts:
            names = parts[0]["name"] if len(parts) == 1 else " + ".join(w["name"] for w in parts)
            cause = "; ".join(w["cause"] for w in parts) + " — " + "; ".join(w["loader"] for w in parts)
            steps = ", then ".join(w["step"] for w in parts)
            details["wrappers"] = [w["name"] for w in parts]
        else:
            names = "the model wraps the architecture the checkpoint was saved from"
            cause = f"the model being loaded holds this architecture as {rename.target.rstrip('.')!r}"
            steps = f"load into the inner module (model.{rename.target.rstrip('.')}.load_state_dict(sd))"
        n = len(pairs)
        edits = [RenamePrefix(old=ctx.view_root, new=ctx.view_root + rename.target)]
        return PrefixMissing(
            keys=evidence,
            edits=edits,
            details=details,
            coverage_plain=f"every expected key ({n})" if n == total else f"{n} of its {total} keys",
            prefix=rename.target,
            names=names,
            cause=cause,
            fix_text=joined(steps, _how(ctx, edits), " — or add the prefix: "),
        )
