"""CK101 — unexpected keys not explained by any other rule

What it does
    Lists the checkpoint's tensors that the expected model has no place for and that no other rule accounts
    for. When they form a whole tower the model does not have (a full CLIP's text tower next to a vision-only
    model), it says so.

Why is this bad?
    torch's ``load_state_dict(strict=True)`` raises ``Unexpected key(s) in state_dict``; with ``strict=False``
    and in transformers' ``from_pretrained`` they are dropped silently — harmless when you meant to take part
    of a model, a sign of the wrong checkpoint or architecture when you did not.

Example
    $ ckptlint check hf_clip_tiny --arch hf-clip-vision
    CK101 warning  unexpected keys: the checkpoint also holds a text tower the model does not have (39 keys:
                   logit_scale; text_model.… (36 keys); text_projection.weight; visual_projection.weight)
                   fix: nothing to do if you meant to take the vision tower only (from_pretrained and
                   load_state_dict(strict=False) skip them); do not drop them: config.json declares the whole
                   model, which a copy without them would contradict; check it as the model it is: `ckptlint
                   check hf_clip_tiny --arch hf-clip`

Fix
    If you meant to load only part of the checkpoint, drop the extra keys (or load with ``strict=False`` and
    check that only these are reported) — unless the config next to the weights declares the larger model: a
    copy without them would contradict it, so no edit is offered then. Otherwise check the architecture
    (``--arch``) or the file.
"""

from __future__ import annotations

from ckptlint.edits import DropKeys
from ckptlint.expected import Expected
from ckptlint.keygroups import collapse
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule
from ckptlint.suggest import as_itself, remedy


class UnexpectedKeys(Message):
    code = "CK101"
    message = "unexpected keys: {n} checkpoint {noun} no place in the model: {groups}"
    cause = "{cause}"
    fix = (
        "drop them if you meant to load part of the checkpoint; otherwise check the architecture "
        "(--arch) or the file"
    )


class ExtraTower(Message):
    code = "CK101"
    message = (
        "unexpected keys: the checkpoint also holds a {tower} tower the model does not have ({n} "
        "keys: {groups})"
    )
    cause = (
        "the checkpoint is a larger model (e.g. a full two-tower CLIP) than the one it is loaded "
        "into; {cause}"
    )
    fix = "{fix_text}"


@rule(
    "CK101",
    "warning",
    "unexpected keys not explained by any other rule",
    stage=Stage.LEFTOVERS,
    order=2,
    rank=120,
)
class UnexpectedRule(Rule):
    needs = "user"

    def check(self, ctx: Context) -> list[Message]:
        keys = list(ctx.unexpected)
        if not keys:
            return []
        ctx.consume_unexpected(keys)
        cause = (
            "load_state_dict(strict=True) raises Unexpected key(s); strict=False and from_pretrained "
            "drop them silently"
            if ctx.torch_semantics
            else "big_vision's merge_params raises ValueError (Params in checkpoint but not in model); "
            "model.apply ignores them"
        )
        groups = collapse(keys, ctx.file_sep)
        details = {"count": len(keys), "key_groups": groups}
        exp_towers = {ctx.exp_tower(k) for k in ctx.exp} - {None, "joint"}
        towers = [ctx.file_tower(k) for k in keys]
        new = {t for t in towers if t not in (None, "joint")} - exp_towers
        tower = next(iter(new)) if len(new) == 1 else None
        if tower is not None and exp_towers and 2 * towers.count(tower) >= len(keys):
            other = " and ".join(sorted(exp_towers))
            file_keys = [ctx.file_key(k) for k in keys]
            declared_by = _declared_whole(ctx, file_keys)
            # a copy without them would contradict the config that declares them: no edit, no command
            edits = [] if declared_by else [DropKeys(keys=file_keys)]
            how = remedy(ctx.ckpt, ctx.expected, edits)
            whole = as_itself(ctx)
            whole = (
                f"check it as the model it is: {whole}"
                if whole
                else "otherwise check the architecture (--arch)"
            )
            if declared_by:
                fix_text = (
                    f"nothing to do if you meant to take the {other} tower only (from_pretrained and "
                    f"load_state_dict(strict=False) skip them); do not drop them: {declared_by} declares the "
                    f"whole model, which a copy without them would contradict; {whole}"
                )
            elif how:
                fix_text = (
                    f"to keep the {other} tower only, drop them: {how} (from_pretrained and "
                    f"load_state_dict(strict=False) skip them anyway); if you meant the whole model, {whole}"
                )
            else:
                fix_text = f"nothing to do if you meant to take the {other} tower only; {whole}"
            return [
                ExtraTower(
                    keys=file_keys,
                    details={**details, "tower": tower},
                    edits=edits,
                    tower=tower,
                    n=len(keys),
                    groups="; ".join(collapse(keys, ctx.file_sep, max_groups=4)),
                    cause=cause,
                    fix_text=fix_text,
                )
            ]
        return [
            UnexpectedKeys(
                keys=[ctx.file_key(k) for k in keys],
                details=details,
                n=len(keys),
                noun="key has" if len(keys) == 1 else "keys have",
                groups="; ".join(collapse(keys, ctx.file_sep, max_groups=4)),
                cause=cause,
            )
        ]


def _declared_whole(ctx: Context, file_keys: list[str]) -> str | None:
    """The config file next to the weights when the model it declares holds most of ``file_keys`` (a CLIPModel
    folder checked as its vision tower): the keys belong there, and a copy without them is worse. None otherwise."""
    if ctx.expected is not None and ctx.expected.source == "declared":
        return None  # the declaration is the expectation: it has no place for them
    from ckptlint.declared import declared_expected

    declared = declared_expected(ctx.ckpt)
    if not isinstance(declared, Expected) or declared.declared_by is None:
        return None
    held = sum(k in declared.tensors for k in file_keys)
    return declared.declared_by if 2 * held >= len(file_keys) else None
