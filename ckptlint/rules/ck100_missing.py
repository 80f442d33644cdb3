"""CK100 — missing keys not explained by any other rule

What it does
    Lists the expected parameters that the checkpoint does not provide and that no other rule accounts for
    (no prefix, no other framework's layout, no absent tower, no variant change…). The keys are collapsed
    (``encoderblock_{0..11}/…``); ``--verbose`` and the JSON ``diff`` keep every one.

Why is this bad?
    torch's ``load_state_dict(strict=True)`` raises ``Missing key(s) in state_dict``; with ``strict=False``
    (and transformers' ``from_pretrained``) the parameters silently keep their random initialisation. flax
    raises ``ScopeParamNotFoundError`` for the first one, big_vision's ``merge_params`` a ``ValueError``.

Example
    $ ckptlint check openclip_no_ln_final.pt --arch open_clip    # ln_final.* deleted
    CK100 error    missing keys: 2 expected keys are not in the checkpoint: ln_final.{weight,bias} (2 keys)
                   cause: load_state_dict(strict=True) raises Missing key(s); with strict=False they keep
                   their random init
                   fix: use a checkpoint saved from this architecture, or initialise these parameters on
                   purpose (strict=False)

Fix
    Use the checkpoint that belongs to this architecture. If the parameters are meant to be trained from
    scratch (a new head), load with ``strict=False`` and check that only those keys are missing.
"""

from __future__ import annotations

from ckptlint.keygroups import collapse
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule


class MissingKeys(Message):
    code = "CK100"
    message = "missing keys: {n} expected {noun} not in the checkpoint: {groups}"
    cause = "{cause}"
    fix = (
        "use a checkpoint saved from this architecture, or initialise these parameters on purpose "
        "(strict=False)"
    )


@rule(
    "CK100", "error", "missing keys not explained by any other rule", stage=Stage.LEFTOVERS, order=1, rank=110
)
class MissingRule(Rule):
    needs = "user"

    def check(self, ctx: Context) -> list[Message]:
        keys = list(ctx.missing)
        if not keys:
            return []
        if ctx.torch_semantics:
            cause = (
                "load_state_dict(strict=True) raises Missing key(s); with strict=False they keep "
                "their random init"
            )
        else:
            cause = (
                f"flax raises ScopeParamNotFoundError for /{keys[0]}; big_vision's merge_params "
                f"raises ValueError"
            )
        ctx.consume_missing(keys)
        return [
            MissingKeys(
                keys=keys,
                details={"count": len(keys), "key_groups": collapse(keys, ctx.exp_sep)},
                n=len(keys),
                noun="key is" if len(keys) == 1 else "keys are",
                groups="; ".join(collapse(keys, ctx.exp_sep, max_groups=4)),
                cause=cause,
            )
        ]
