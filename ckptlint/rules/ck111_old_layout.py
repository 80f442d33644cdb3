"""CK111 — old checkpoint layout that the loader fixes up

What it does
    Recognises layouts that older code wrote and that the framework's own loader still rewrites on the fly:
    big_vision ViTs with the position embedding at ``Transformer/posembed_input/pos_embedding`` (original ViT
    paper) or ``Transformer/pos_embedding`` (pre-2022), the class token folded into the position embedding
    (k²+1 rows), or the MAP head inlined at the ViT root (``probe`` next to ``Transformer/``) — all rewritten
    by ``vit.fix_old_checkpoints``; ``position_ids`` buffers saved by transformers < 4.31; the
    ``input_resolution``/``context_length``/``vocab_size`` entries of OpenAI CLIP releases. Works with
    and without an expectation. Moves and drops are carried as edits (``rename_keys``, ``drop_keys``) that
    ``ckptlint fix`` applies; the folded class token changes values and has none.

Why is this bad?
    It loads through the framework's own entry point (``vit.load``, ``from_pretrained``,
    ``load_openai_model``) and fails everywhere else: ``model.apply`` raises ``ScopeParamNotFoundError`` for
    ``/pos_embedding``, ``load_state_dict(strict=True)`` raises ``Unexpected key(s) in state_dict:
    "text_model.embeddings.position_ids"``. Converters and other tools that read the raw tree see a layout
    they do not know.

Example
    $ ckptlint check old_vit.npz --arch bv-vit    # tiny_vit.npz with params/Transformer/pos_embedding
    CK111 warning  old big_vision layout: old posemb location (pre-2022 big_vision): Transformer/pos_embedding
                   is pos_embedding in the current layout
                   cause: big_vision's vit.load → fix_old_checkpoints moves it to pos_embedding (log: "ViT:
                   Loading and fixing old posemb")
                   fix: load through big_vision's vit.load (it applies fix_old_checkpoints), or re-save the
                   params in the current layout before calling model.apply

Fix
    Load through the framework's loader (big_vision ``vit.load``, transformers ``from_pretrained``, open_clip
    ``load_openai_model``), or re-save the tree in the current layout so that every tool can read it.

Links
    big_vision models/vit.py: fix_old_checkpoints; transformers ≥ 4.31 non-persistent position_ids
"""

from __future__ import annotations

from typing import Any

from ckptlint.archs import detect, registry
from ckptlint.archs.pattern import matches
from ckptlint.edits import DropKeys, Edit, RenameKeys
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule
from ckptlint.suggest import joined, remedy


class OldLayout(Message):
    code = "CK111"
    message = "old {framework} layout: {title}: {what}"
    cause = "{loader}"
    fix = "{fix_text}"


# what a layout entry found: the text, the evidence keys, details, and the edits that fix it (none for split_cls:
# splitting the class token off the position embedding changes values)
Found = tuple[str, list[str], dict[str, Any], list[Edit]]


def _moved_text(root: str, keys: list[str], entry: dict[str, Any], sep: str) -> str:
    """``"LayerNorm_0/, MlpBlock_0/, …, probe (15 keys) sit at the ViT root instead of under MAPHead_0/"``."""
    names = sorted({k[len(root) :].split(sep)[0] + (sep if sep in k[len(root) :] else "") for k in keys})
    where = f"the ViT root ({root})" if root else "the ViT root"
    return f"{', '.join(names)} ({len(keys)} keys) sit at {where} instead of under {root}{entry['under']}"


def _renames(ctx: Context, pairs: list[tuple[str, str]]) -> RenameKeys:
    """The edit that moves each old view key to its current-layout name (in the file's own keys)."""
    return RenameKeys(renames={ctx.file_key(old): ctx.file_key(new) for old, new in pairs})


def _is_square(n: int) -> bool:
    g = detect.grid_of(n)
    return g is not None and g[1] == 0


@rule(
    "CK111",
    "warning",
    "old checkpoint layout that the loader fixes up (CLS in posemb, posemb location, MAP head)",
    stage=Stage.LAYOUT,
    order=1,
    rank=85,
)
class OldLayoutRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        out: list[Message] = []
        framework = ctx.exp_framework if ctx.expected is not None else ctx.file_framework
        for entry in registry.old_layouts():
            if entry["framework"] != framework:
                continue
            found = self._with_expected(ctx, entry) if ctx.expected is not None else self._alone(ctx, entry)
            if found is None:
                continue
            what, keys, details, edits = found
            out.append(
                OldLayout(
                    keys=keys,
                    details={"kind": entry["kind"], **details},
                    edits=edits,
                    framework=registry.title(framework).split(" (")[0],
                    title=entry["title"],
                    what=what,
                    loader=entry["loader"],
                    fix_text=joined(
                        entry["fix"], remedy(ctx.ckpt, ctx.expected, edits), "; rewrite the file: "
                    ),
                )
            )
        return out

    # ---- with an expectation: consume the diff entries the fix-up accounts for -----------------------------
    def _with_expected(self, ctx: Context, e: dict[str, Any]) -> Found | None:
        kind = e["kind"]
        if kind == "drop":
            keys = ctx.consume_unexpected([k for k in list(ctx.unexpected) if matches(k, e["keys"])])
            if ctx.expected is not None and ctx.expected.load:  # DECL-HF: keys the loader ignores silently
                keys += [k for k in ctx.view if k not in ctx.exp and k not in keys and matches(k, e["keys"])]
            if not keys:
                return None
            return (
                f"{', '.join(keys)} {'is' if len(keys) == 1 else 'are'} not part of the model",
                keys,
                {"keys": keys},
                [DropKeys(keys=[ctx.file_key(k) for k in keys])],
            )
        roots = detect.module_roots(ctx.exp, e["within"], e["family"]) if e["within"] else []
        if kind == "rename":
            done = []
            for r in roots:
                old, new = r + e["from"], r + e["to"]
                if old in ctx.unexpected and new in ctx.missing:
                    ctx.map_pair(new, old)
                    done.append((old, new))
            if not done:
                return None
            what = "; ".join(f"{o} is {n} in the current layout" for o, n in done)
            return (
                what,
                [ctx.file_key(o) for o, _ in done],
                {"renames": [{"from": o, "to": n} for o, n in done]},
                [_renames(ctx, done)],
            )
        if kind == "split_cls":
            hits = []
            for r in roots:
                key = r + e["key"]
                issue = ctx.shape.get(key)
                if issue is None or len(issue.expected) != 3 or len(issue.actual) != 3:
                    continue
                rows_e, rows_a = issue.expected[1], issue.actual[1]
                if rows_a == rows_e + 1 and _is_square(rows_e) and issue.expected[2] == issue.actual[2]:
                    ctx.consume_shape([key])
                    hits.append((key, issue))
            if not hits:
                return None
            what = "; ".join(
                f"{k} has {i.actual[1]} rows = {i.expected[1]} patches + 1 class-token row" for k, i in hits
            )
            return what, [ctx.file_key(i.actual_key) for _, i in hits], {"keys": [k for k, _ in hits]}, []
        if kind == "move_under":
            pairs: list[tuple[str, str]] = []
            root = ""
            for r in roots:
                if r + e["marker"] not in ctx.unexpected or r + e["under"] + e["marker"] not in ctx.missing:
                    continue
                for u in list(ctx.unexpected):
                    if u.startswith(r) and matches(u[len(r) :], e["group"]):
                        target = r + e["under"] + u[len(r) :]
                        if target in ctx.missing:
                            ctx.map_pair(target, u)
                            pairs.append((u, target))
                            root = r
            if not pairs:
                return None
            done = [u for u, _ in pairs]
            return (
                _moved_text(root, done, e, ctx.exp_sep),
                [ctx.file_key(u) for u in done],
                {"moved": done, "under": e["under"]},
                [_renames(ctx, pairs)],
            )
        return None

    # ---- without one: recognise the layout in the file alone -----------------------------------------------
    def _alone(self, ctx: Context, e: dict[str, Any]) -> Found | None:
        kind = e["kind"]
        view = ctx.view
        if kind == "drop":
            keys = [k for k in view if matches(k, e["keys"])]
            if not keys:
                return None
            return (
                f"{', '.join(keys)} {'is' if len(keys) == 1 else 'are'} not part of the current model",
                keys,
                {},
                [DropKeys(keys=[ctx.file_key(k) for k in keys])],
            )
        roots = detect.module_roots(view, e["within"], e["family"]) if e["within"] else []
        if kind == "rename":
            hits = [
                (r + e["from"], r + e["to"])
                for r in roots
                if r + e["from"] in view and r + e["to"] not in view
            ]
            if not hits:
                return None
            what = "; ".join(f"{o} is {n} in the current layout" for o, n in hits)
            return (
                what,
                [ctx.file_key(o) for o, _ in hits],
                {"renames": [{"from": o, "to": n} for o, n in hits]},
                [_renames(ctx, hits)],
            )
        if kind == "split_cls":
            hits = []
            for r in roots:
                for key in (
                    r + e["key"],
                    r + "Transformer/posembed_input/pos_embedding",
                    r + "Transformer/pos_embedding",
                ):
                    t = view.get(key)
                    if (
                        t is not None
                        and len(t.shape) == 3
                        and not _is_square(t.shape[1])
                        and _is_square(t.shape[1] - 1)
                    ):
                        hits.append((key, t.shape[1]))
            if not hits:
                return None
            what = "; ".join(f"{k} has {n} rows = {n - 1} patches + 1 class-token row" for k, n in hits)
            return what, [ctx.file_key(k) for k, _ in hits], {"keys": [k for k, _ in hits]}, []
        if kind == "move_under":
            pairs = []
            root = ""
            for r in roots:
                if r + e["marker"] in view:
                    pairs += [
                        (k, r + e["under"] + k[len(r) :])
                        for k in view
                        if k.startswith(r) and matches(k[len(r) :], e["group"])
                    ]
                    root = r
            if not pairs:
                return None
            moved = [k for k, _ in pairs]
            return (
                _moved_text(root, moved, e, ctx.file_sep),
                [ctx.file_key(k) for k in moved],
                {"moved": moved, "under": e["under"]},
                [_renames(ctx, pairs)],
            )
        return None
