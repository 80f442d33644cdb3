"""CK109 — transposed kernel

What it does
    Reports parameters whose shape in the checkpoint is the reverse of the model's — ``[512, 768]`` where the
    model has ``[768, 512]`` — i.e. the same matrix stored in the other convention. It also names the square
    projections of the model, which a transposition leaves shape-compatible and therefore silent. The finding
    carries a ``transpose`` edit, which ``ckptlint fix`` applies (it rewrites those tensors, copies the rest).

Why is this bad?
    Frameworks disagree on how a projection is stored: torch ``nn.Linear.weight`` is ``(out, in)``
    (transformers ``visual_projection.weight``, timm ``head.weight``), open_clip keeps ``visual.proj`` and
    ``text_projection`` as raw ``(in, out)`` parameters used as ``x @ proj``, flax kernels are ``(in, out)``.
    A conversion that renames without transposing gives ``size mismatch for visual.proj: copying a param with
    shape torch.Size([512, 768]) …, the shape in current model is torch.Size([768, 512])`` — and when the
    matrix is square (open_clip ViT-B-16's ``text_projection`` is 512×512) it loads without any error and the
    embeddings are silently wrong.

Example
    $ ckptlint check openclip_transposed.pt --arch open_clip:custom,embed_dim=32    # visual.proj saved as .T
    CK109 error    transposed kernel: visual.proj is [32,64] in the checkpoint and [64,32] in the model (the
                   same matrix transposed); text_projection ([32,32], square) would load silently transposed
                   fix: transpose it: `ckptlint fix openclip_transposed.pt OUT --arch
                   open_clip:custom,embed_dim=32` (or in Python: `sd = torch.load('openclip_transposed.pt',
                   weights_only=True); sd['visual.proj'] = sd['visual.proj'].T.contiguous()`) — and check
                   text_projection, which no shape check catches

Fix
    ``ckptlint fix FILE OUT --arch …`` (the finding names the exact command) rewrites the named tensors
    transposed and copies the rest; in Python ``sd[k] = sd[k].T.contiguous()`` (torch; ``.T`` for numpy) —
    and apply the same to the square projections the finding lists, which no shape check can catch.
"""

from __future__ import annotations

from ckptlint.edits import Transpose
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule
from ckptlint.suggest import joined, remedy


def _shape(s: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in s) + "]"


# parameters kept as raw (in, out) matrices and used as x @ W (open_clip), unlike nn.Linear weights (out, in)
RAW_PROJECTIONS = {"proj", "text_projection"}


class Transposed(Message):
    code = "CK109"
    message = "transposed kernel: {listing} (the same matrix transposed){silent}"
    cause = (
        "the file was written in the other storage convention: torch nn.Linear weights are (out, in) "
        "(transformers, timm), open_clip's visual.proj/text_projection and flax kernels are (in, out); a "
        "conversion renamed the keys without transposing"
    )
    fix = "{fix_text}{silent_fix}"


@rule(
    "CK109",
    "error",
    "transposed kernel (shape is the reverse of the expected one)",
    stage=Stage.MODEL,
    order=3,
    rank=60,
)
class TransposedRule(Rule):
    needs = "any"

    def check(self, ctx: Context) -> list[Message]:
        exp_v, file_v = ctx.exp_structure.towers, ctx.file_structure.towers
        for tower in set(exp_v) & set(file_v):
            for name in ("patch", "width", "depth"):
                a, b = exp_v[tower].get(name), file_v[tower].get(name)
                if a is not None and b is not None and a != b:
                    return []  # a different variant: reversed shapes would be a coincidence (CK112)
        hits = [
            (k, i)
            for k, i in ctx.shape.items()
            if len(i.expected) >= 2 and tuple(reversed(i.expected)) == i.actual
        ]
        if not hits:
            return []
        ctx.consume_shape([k for k, _ in hits])
        listing = "; ".join(
            f"{k} is {_shape(i.actual)} in the checkpoint and {_shape(i.expected)} in the model"
            for k, i in hits
        )
        # raw (in, out) projections, and the keys of the same name: a square one loads transposed without
        # error
        leaves = {k.rsplit(ctx.exp_sep, 1)[-1] for k, _ in hits} | RAW_PROJECTIONS
        square = [
            k
            for k, t in ctx.exp.items()
            if len(t.shape) == 2
            and t.shape[0] == t.shape[1]
            and k.rsplit(ctx.exp_sep, 1)[-1] in leaves
            and k not in ctx.shape
        ]
        ctx.transposed.update(k for k, _ in hits)
        silent = ""
        silent_fix = ""
        if square:
            names = ", ".join(f"{k} ({_shape(ctx.exp[k].shape)}, square)" for k in square[:4])
            silent = f"; {names} would load silently transposed"
            silent_fix = f" — and check {', '.join(square[:4])}, which no shape check catches"
        edits = [Transpose(keys=[ctx.file_key(i.actual_key) for _, i in hits])]
        fix_text = joined(
            f"transpose {'it' if len(hits) == 1 else 'them'}", remedy(ctx.ckpt, ctx.expected, edits)
        )
        return [
            Transposed(
                keys=[ctx.file_key(i.actual_key) for _, i in hits],
                edits=edits,
                details={
                    "keys": [k for k, _ in hits],
                    "silent_square": square,
                    "shapes": {k: {"expected": list(i.expected), "actual": list(i.actual)} for k, i in hits},
                },
                listing=listing,
                silent=silent,
                fix_text=fix_text,
                silent_fix=silent_fix,
            )
        ]
