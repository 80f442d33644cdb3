"""CK106 — dtype differs from what the architecture expects

What it does
    With an expectation: reports parameters stored in another dtype than the model's (typically float16 or
    bfloat16 where the model is float32), one finding per dtype change. Without one: reports floating-point
    tensors whose dtype differs from the checkpoint's dominant floating dtype (a few float32 tensors in a
    float16 file, bfloat16 in a float32 tree).

Why is this bad?
    torch's ``load_state_dict`` casts silently into the parameter's dtype: no error, but the precision lost
    when the file was written (float16 keeps 10 mantissa bits and overflows above 65504, bfloat16 keeps 7)
    does not come back, and a model fine-tuned from it starts from rounded weights. flax uses the arrays as
    stored, so the model then computes in the checkpoint's dtype. Mixed dtypes in one file usually mean a
    partial cast (open_clip's ``convert_weights_to_lp`` casts only linear/conv/attention weights).

Example
    $ ckptlint check openclip_tiny_fp16.safetensors --arch open_clip
    CK106 warning  dtype drift: all 62 tensors are float16 and the model expects float32
                   cause: load_state_dict casts float16 into float32 silently: no error, but the precision
                   lost when the file was written does not come back
                   fix: use the float32 weights if they exist; otherwise load into a float16 model on purpose
                   (model.half() / torch_dtype=…) — ckptlint cannot restore the lost precision

Fix
    Use the full-precision release if there is one. Otherwise be aware that the weights are rounded; load
    them into a model of the checkpoint's dtype (``model.half()``, ``torch_dtype=torch.float16``) or cast on
    purpose. For big_vision, ``|V2`` arrays are bfloat16 (``utils.recover_dtype``).
"""

from __future__ import annotations

from collections import Counter

from ckptlint.keygroups import collapse
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule

FLOATS = ("float64", "float32", "float16", "bfloat16")


def _is_float(dtype: str) -> bool:
    return dtype in FLOATS or dtype.startswith("float8") or dtype.startswith("float4")


class DtypeDrift(Message):
    code = "CK106"
    message = "dtype drift: {amount} {actual} and the model expects {expected}"
    cause = "{cause}"
    fix = "{fix_text}"


class MixedDtypes(Message):
    code = "CK106"
    message = (
        "mixed dtypes: {n} of {total} floating-point tensors are {minority} while the rest are "
        "{dominant} ({groups})"
    )
    cause = (
        "a partial cast (e.g. open_clip's convert_weights_to_lp casts only linear/conv/attention "
        "weights to half) or tensors added after conversion"
    )
    fix = "cast the whole tree to one dtype before saving, or check that the mixture is intended"


@rule(
    "CK106",
    "warning",
    "dtype differs from what the architecture expects (fp16/bf16 vs fp32…)",
    stage=Stage.METADATA,
    order=1,
    rank=88,
)
class DtypeRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        if ctx.user_expected:
            return self._against_expected(ctx)
        return self._against_dominant(ctx)

    def _against_expected(self, ctx: Context) -> list[Message]:
        changes: dict[tuple[str, str], list[str]] = {}
        for e, a in ctx.pairs.items():
            if e not in ctx.exp or a not in ctx.view:
                continue
            want, have = ctx.exp[e].dtype, ctx.view[a].dtype
            if want != have:
                changes.setdefault((have, want), []).append(e)
        out: list[Message] = []
        total = len(ctx.pairs)
        for (have, want), keys in sorted(changes.items(), key=lambda kv: -len(kv[1])):
            amount = (
                f"all {len(keys)} tensors are"
                if len(keys) == total
                else f"{len(keys)} of {total} tensors are"
            )
            if ctx.torch_semantics:
                cause = (
                    f"load_state_dict casts {have} into {want} silently: no error, but the precision "
                    "lost when the file was written does not come back"
                )
            else:
                cause = (
                    f"flax uses the arrays as stored: the model computes in {have} where it expects {want}"
                )
            if _is_float(have) and _is_float(want):
                fix_text = (
                    f"use the {want} weights if they exist; otherwise load into a {have} model on purpose "
                    "(model.half() / torch_dtype=…) — ckptlint cannot restore the lost precision"
                )
            else:
                fix_text = f"store these tensors as {want}"
            out.append(
                DtypeDrift(
                    keys=keys,
                    details={"from": have, "to": want, "count": len(keys)},
                    amount=amount,
                    actual=have,
                    expected=want,
                    cause=cause,
                    fix_text=fix_text,
                )
            )
        return out

    def _against_dominant(self, ctx: Context) -> list[Message]:
        weights = ctx.view if ctx.view_root else ctx.training.weights
        floats = {k: t.dtype for k, t in weights.items() if _is_float(t.dtype)}
        if not floats:
            return []
        counts = Counter(floats.values())
        if len(counts) < 2:
            return []
        dominant = max(counts, key=lambda d: (counts[d], d == "float32"))
        odd = [k for k, d in floats.items() if d != dominant]
        minority = ", ".join(sorted({floats[k] for k in odd}))
        return [
            MixedDtypes(
                keys=[ctx.file_key(k) for k in odd],
                details={"dominant": dominant, "counts": dict(counts)},
                n=len(odd),
                total=len(floats),
                minority=minority,
                dominant=dominant,
                groups="; ".join(collapse(odd, ctx.file_sep, max_groups=3)),
            )
        ]
