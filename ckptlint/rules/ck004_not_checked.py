"""CK004 — architecture not checked

What it does
    Says so when no model was compared with the weights: no ``--arch``/``--model``/``--spec``, no declaration
    next to the weights that ckptlint can build (``config.json``, ``open_clip_config.json``), and no layout it
    recognises in the keys. The finding names why (which of these is missing, or which declaration it cannot
    build) and which rules did run: those that need no model — format (the file reads, shards agree), security
    (no pickle global that would run code) and metadata (dtypes, preprocessing, training state).

Why is this bad?
    A report with nothing in it reads as "this checkpoint loads". Without a model to compare with, nothing was
    said about missing, unexpected or resized weights: a CI gate that only looks at the exit code would pass
    any file. ``--fail-on info`` turns this finding into a failure, for gates that must compare every file.

Example
    $ ckptlint check mlp.safetensors    # safetensors.torch.save_file of a torch MLP's state_dict()
    CK004 info     architecture not checked: no config next to the weights declares a model, and the keys
                   (0.bias, 0.weight, 2.bias, 2.weight) are in no layout ckptlint knows
                   cause: ckptlint compares weights with a model only when it knows which one: a declaration
                   next to the weights, a layout it recognises, or --arch/--model/--spec; only the format,
                   security and metadata rules ran
                   fix: name the model: --arch NAME (ckptlint archs lists them), --model MODULE:FACTORY (built
                   on torch's meta device), or --spec REF.json (the dump JSON of a checkpoint that loads:
                   ckptlint dump REF --format json)

Fix
    Give the model: ``--arch NAME[:VARIANT]``, ``--model MODULE:FACTORY`` or ``--spec REF.json`` (also as
    ``arch`` in ``[tool.ckptlint]`` or per path), or publish the declaration the library loads the weights with
    (``config.json``, ``open_clip_config.json``). ``--fail-on info`` fails the run on this finding;
    ``--ignore CK004`` silences it.
"""

from __future__ import annotations

from ckptlint.declared import ADAPTERS
from ckptlint.rules import run_order
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule

MAX_SHOWN = 4
FIX = (
    "name the model: --arch NAME (ckptlint archs lists them), --model MODULE:FACTORY (built on torch's meta "
    "device), or --spec REF.json (the dump JSON of a checkpoint that loads: ckptlint dump REF --format json)"
)


class NotChecked(Message):
    code = "CK004"
    message = "architecture not checked: {reason}"
    cause = (
        "ckptlint compares weights with a model only when it knows which one: a declaration next to the weights, "
        "a layout it recognises, or --arch/--model/--spec; only the {ran} rules ran"
    )
    fix = "{fix_text}"


def topic(code: str) -> str:
    """What a rule that needs no model is about, by its code's hundred: format, security or metadata."""
    if code.startswith("CK0"):
        return "format"
    if code.startswith("CK3"):
        return "security"
    return "metadata"


def rules_that_ran() -> dict[str, list[str]]:
    """The rules that run without a model, by topic (``{"format": ["CK001", …], "security": […], …}``)."""
    out: dict[str, list[str]] = {"format": ["CK001"], "security": [], "metadata": []}
    for r in run_order():
        if r.needs == "none" and r.code != "CK004":
            out.setdefault(topic(r.code), []).append(r.code)
    return {k: v for k, v in out.items() if v}


def _inferred_misfit(ctx: Context) -> list[Message]:
    """An expectation inferred from the keys that the file does not fit, beyond what the explainers account for:
    the file may be another model whose keys look alike (a swin or distilled DeiT read as a ViT, a ResNet-tower
    CLIP as a ViT one) or a damaged one. Without a declaration or --arch nothing tells which, so the verdict is
    "not checked" (info) with the keys that do not fit, never an error against a model nobody named."""
    missing, unexpected, shape = list(ctx.missing), list(ctx.unexpected), list(ctx.shape)
    if not (missing or unexpected or shape):
        return []
    ctx.consume_missing(missing)
    ctx.consume_unexpected(unexpected)
    ctx.consume_shape(shape)
    exp = ctx.expected
    assert exp is not None
    name = f"{exp.arch}:{exp.variant}" if exp.variant else str(exp.arch)
    parts = [
        f"{len(keys)} {what}"
        for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (shape, "of another shape"))
        if keys
    ]
    keys = [*(ctx.file_key(k) for k in unexpected), *shape, *missing]
    shown = ", ".join(keys[:MAX_SHOWN]) + (f", … ({len(keys)} keys)" if len(keys) > MAX_SHOWN else "")
    reason = (
        f"the keys resemble {name} (inferred, nothing declares the model), but {', '.join(parts)} against it "
        f"({shown}): another model with similar names, or a damaged file; these keys were not checked"
    )
    details: dict[str, object] = {
        "reason": reason,
        "ran": rules_that_ran(),
        "inferred": name,
        "missing": missing,
        "unexpected": [ctx.file_key(k) for k in unexpected],
        "shape_mismatch": shape,
    }
    return [NotChecked(keys=keys, details=details, reason=reason, ran=_ran_text(["layout"]), fix_text=FIX)]


def _ran_text(more: list[str] | None = None) -> str:
    """``format, security and metadata`` (and ``more``): the topics of the rules that ran."""
    names = [*rules_that_ran(), *(more or [])]
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def default_reason(ctx: Context) -> str:
    """Why there is no expectation, when nobody said: no tensors, no layout, or a layout without architecture."""
    keys = list(ctx.ckpt.tensors)
    if not keys:
        return "the checkpoint holds no tensors"
    layout = getattr(ctx.layout, "name", None) or "unknown"
    if layout != "unknown":
        return f"the keys are in the {layout} layout, but none of its architectures fits them"
    declared = [s.name for s in ctx.ckpt.sidecars if s.kind in ADAPTERS]
    shown = ", ".join(keys[:MAX_SHOWN]) + (f", … ({len(keys)} keys)" if len(keys) > MAX_SHOWN else "")
    if declared:
        return f"{declared[0]} declares no model ckptlint can build, and the keys ({shown}) are in no layout it knows"
    return f"no config next to the weights declares a model, and the keys ({shown}) are in no layout ckptlint knows"


@rule(
    "CK004",
    "info",
    "architecture not checked: no expectation could be built (says why and what did run)",
    stage=Stage.LEFTOVERS,  # after the explainers: an inferred model's leftovers are its to say (not errors)
    order=0,
    rank=100,
)
class NotCheckedRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        if ctx.expected is not None:
            return _inferred_misfit(ctx) if ctx.expected.source == "inferred" else []
        note = ctx.unchecked
        if note is not None and note.refused is not None:
            return []  # the library refuses the declaration: CK113 says so (an error), the one root cause
        ran = rules_that_ran()
        details: dict[str, object] = {"reason": note.reason if note else default_reason(ctx), "ran": ran}
        if note is not None and note.declared_by:
            details["declared_by"] = note.declared_by
        ran_text = _ran_text()
        return [
            NotChecked(
                details=details,
                reason=details["reason"],
                ran=ran_text,
                fix_text=(note.fix if note and note.fix else FIX),
            )
        ]
