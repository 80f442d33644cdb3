"""CK102 — shape mismatch not explained by any other rule

What it does
    Lists parameters whose shape in the checkpoint differs from the model's and that no other rule explains
    (not a transposed kernel, not a resized position embedding, not a different variant).

Why is this bad?
    torch's ``load_state_dict`` raises ``size mismatch for K: copying a param with shape … from checkpoint,
    the shape in current model is …`` even with ``strict=False``; transformers' ``ignore_mismatched_sizes``
    re-initialises them randomly; flax/big_vision load them and fail (or silently broadcast) at apply time.

Example
    $ ckptlint check openclip_edited.pt --arch open_clip    # ln_final.weight replaced by 48 values
    CK102 error    shape mismatch: ln_final.weight is [48] in the checkpoint, [32] in the model
                   cause: load_state_dict raises size mismatch even with strict=False
                   fix: use a checkpoint of this architecture, or adapt the model's configuration to the
                   checkpoint's shapes

Fix
    Use the checkpoint that matches the model's configuration, or change the configuration to the
    checkpoint's shapes.
"""

from __future__ import annotations

from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule


def _shape(s: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in s) + "]"


class ShapeMismatch(Message):
    code = "CK102"
    message = "shape mismatch: {listing}"
    cause = "{cause}"
    fix = (
        "use a checkpoint of this architecture, or adapt the model's configuration to the checkpoint's shapes"
    )


@rule(
    "CK102",
    "error",
    "shape mismatch not explained by any other rule",
    stage=Stage.LEFTOVERS,
    order=3,
    rank=130,
)
class ShapeMismatchRule(Rule):
    needs = "user"

    def check(self, ctx: Context) -> list[Message]:
        items = list(ctx.shape.items())
        if not items:
            return []
        ctx.consume_shape([k for k, _ in items])
        parts = [
            f"{k} is {_shape(i.actual)} in the checkpoint, {_shape(i.expected)} in the model"
            for k, i in items
        ]
        listing = "; ".join(parts[:3]) + (f"; … {len(parts) - 3} more" if len(parts) > 3 else "")
        cause = (
            "load_state_dict raises size mismatch even with strict=False"
            if ctx.torch_semantics
            else "flax loads the arrays and fails (or broadcasts) when the model is applied"
        )
        return [
            ShapeMismatch(
                keys=[k for k, _ in items],
                details={
                    "count": len(items),
                    "mismatches": [
                        {
                            "key": k,
                            "expected": list(i.expected),
                            "actual": list(i.actual),
                            "actual_key": i.actual_key,
                        }
                        for k, i in items[:50]
                    ],
                },
                listing=listing,
                cause=cause,
            )
        ]
