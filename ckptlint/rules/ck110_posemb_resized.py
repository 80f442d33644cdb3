"""CK110 — position embedding or context length resized

What it does
    Reports a position embedding whose number of positions differs from the model's while everything else
    matches: a vision grid for another image size (``visual.positional_embedding`` [17, 64] = 4×4 patches +
    class token for 32 px, where the model built for 64 px wants [65, 64]) or a text context of another length
    (``positional_embedding`` [16, 32] vs [8, 32]). It names the resampling function of the expected framework
    and whether its own loader applies it.

Why is this bad?
    ``load_state_dict`` raises ``size mismatch for visual.positional_embedding: copying a param with shape
    torch.Size([197, 768]) from checkpoint, the shape in current model is torch.Size([577, 768])``.
    transformers' ``ignore_mismatched_sizes=True`` "fixes" it by re-initialising the embedding randomly.
    Loaders that resample (open_clip's ``load_checkpoint``, big_vision's ``vit.load``, timm's pretrained path)
    succeed, but the model then runs at a resolution or context it was not trained for.

Example
    $ ckptlint check openclip_64px.pt --arch open_clip:custom,image_size=32    # trained at 64 px
    CK110 error    position embedding resized: visual.positional_embedding has 65 rows (8×8 patches + 1 class
                   token → 64 px at patch 8) and the model has 17 (4×4 patches + 1 class token → 32 px at
                   patch 8)
                   cause: the checkpoint was trained (or exported) at another image size than the model is
                   built for; open_clip's load_checkpoint resizes it automatically; model.load_state_dict
                   raises size mismatch
                   fix: resample it with open_clip.model.resize_pos_embed(state_dict, model) (bicubic, keeps
                   the class token), or build the model at image size 64

Fix
    Resample with the framework's function — open_clip ``resize_pos_embed`` / ``resize_text_pos_embed``,
    big_vision ``models.vit.resample_posemb``, timm ``resample_abs_pos_embed``, transformers
    ``interpolate_pos_encoding=True`` — or build the model at the checkpoint's resolution / context length
    (and keep the tokenizer's context length in step).
"""

from __future__ import annotations

from ckptlint.archs.detect import grid_of, posemb_probe
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule
from ckptlint.suggest import fill


class GridResized(Message):
    code = "CK110"
    message = (
        "position embedding resized: {key} has {a_rows} rows ({a_desc}) and the model has {e_rows} ({e_desc})"
    )
    cause = (
        "the checkpoint was trained (or exported) at another image size than the model is built for; {auto}"
    )
    fix = "{resample}, or build the model at image size {a_image}"


class ContextResized(Message):
    code = "CK110"
    message = "context length changed: {key} has {a_len} positions and the model has {e_len}"
    cause = (
        "the text tower was trained (or exported) with another context length than the model is "
        "built for; {auto}"
    )
    fix = "{resample}, or build the model with context_length={a_len} (and the tokenizer with it)"


def _grid_text(rows: int, patch: int | None) -> tuple[str, int | None]:
    g = grid_of(rows)
    if g is None:
        return f"{rows} positions", None
    grid, prefix = g
    text = f"{grid}×{grid} patches" + (" + 1 class token" if prefix else "")
    if patch:
        return f"{text} → {grid * patch} px at patch {patch}", grid * patch
    return text, None


@rule(
    "CK110",
    "error",
    "position embedding or context length resized (grid or length differs)",
    stage=Stage.MODEL,
    order=5,
    rank=80,
)
class PosembResizedRule(Rule):
    needs = "user"

    def check(self, ctx: Context) -> list[Message]:
        out: list[Message] = []
        for key, issue in list(ctx.shape.items()):
            probe = posemb_probe(key, ctx.exp_framework)
            if probe is None:
                continue
            dims = probe["dims"]
            field = "pos_rows" if "pos_rows" in dims else "context_length"
            idx = dims.index(field)
            e, a = issue.expected, issue.actual
            if len(e) != len(dims) or len(a) != len(dims):
                continue
            if any(e[i] != a[i] for i in range(len(dims)) if i != idx):
                continue
            tower = "text" if field == "context_length" or probe["tower"] == "text" else "vision"
            if probe["tower"] == "unprefixed" and "vision" not in ctx.exp_towers_present:
                tower = "text"
            ctx.consume_shape([key])
            auto = probe.get("auto", "a plain load_state_dict raises size mismatch")
            resample = fill(probe["resample"], ctx.ckpt)
            details = {"key": key, "expected": list(e), "actual": list(a), "resample": resample}
            if tower == "text":
                out.append(
                    ContextResized(
                        keys=[ctx.file_key(issue.actual_key)],
                        details=details,
                        key=key,
                        a_len=a[idx],
                        e_len=e[idx],
                        auto=auto,
                        resample=resample,
                    )
                )
                continue
            ga, ge = grid_of(a[idx]), grid_of(e[idx])
            if ga is not None and ge is not None and ga[0] == ge[0]:
                ctx.shape[key] = issue  # the same grid, a class-token row more or less: not a resize
                continue
            patch = ctx.exp_structure.get("vision", "patch")
            a_desc, a_image = _grid_text(a[idx], patch)
            e_desc, e_image = _grid_text(e[idx], patch)
            details.update(image_size={"checkpoint": a_image, "model": e_image})
            out.append(
                GridResized(
                    keys=[ctx.file_key(issue.actual_key)],
                    details=details,
                    key=key,
                    a_rows=a[idx],
                    e_rows=e[idx],
                    a_desc=a_desc,
                    e_desc=e_desc,
                    auto=auto,
                    resample=resample,
                    a_image=a_image if a_image is not None else "?",
                )
            )
        return out
