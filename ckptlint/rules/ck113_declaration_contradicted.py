"""CK113 — weights contradict the model their own config declares

What it does
    When the expectation is the model the declaration next to the weights describes — a transformers
    ``config.json`` (also through ``--arch ClassName``), ``open_clip_config.json``'s ``model_cfg``, timm's
    ``config.json`` (``architecture``, ``num_classes``, ``model_args``, ``pretrained_cfg``; also through ``--arch
    NAME`` without a variant) — it finds the config field each difference comes from and reports one finding per
    field: the field, what the config says, what the weights hold (the key that shows it) and both fixes. Field
    by field it tries what the weights show (a probe of the family file, the size of a mismatched dimension, the
    number of blocks present, the other value of a flag), rebuilds the declared model with that one change and
    keeps the change that explains the most differences without adding any: layer counts, vocabulary and
    embedding sizes, heads and kv heads, hidden and MLP widths, image size against the position-embedding grid,
    patch size, context length, class count against the head, experts. The missing, unexpected and resized keys
    a field explains are folded into its finding. The same pass reports a declaration the library refuses
    outright (a file that is no JSON object, open_clip without ``model_cfg``, transformers with
    ``num_hidden_layers`` ≠ ``len(layer_types)``, a head count it divides by that is zero, or that does not divide
    the width where it checks so, or a negative one its layers refuse; the function of transformers that fails is
    named) — one finding, with the weights' value as the fix when they show the refused field, else the value
    nearest the config class's default that the model builds with (said so) —
    a key conversion transformers would fail on (its ``conversion_errors``, which ``output_loading_info`` leaves
    out), and base-model weights under a task-model config whose head is neither in the file nor tied.

Why is this bad?
    The loader builds the model from the config, not from the weights: loading then fails with size mismatches,
    leaves layers randomly initialised (listed only in a log line), or — worse — open_clip's ``load_checkpoint``
    and timm's pretrained loader silently interpolate a position embedding to the declared context length or
    image size, and the model runs on weights it was never trained with.

Example
    $ ckptlint check llama_kv4    # a tiny LlamaForCausalLM folder, config.json edited to num_key_value_heads = 4
    CK113 error    config.json declares num_key_value_heads = 4, but the weights hold 2:
                   model.layers.0.self_attn.k_proj.weight [32, 64] where the declared model has [64, 64]
                   fix: set num_key_value_heads = 2 in config.json (what the weights hold), or use weights
                   trained for num_key_value_heads = 4

    $ ckptlint check oc_context_length    # open_clip folder (open_clip_config.json + open_clip_model.safetensors), context_length edited 16 -> 20
    CK113 error    open_clip_config.json declares context length 20 (model_cfg.text_cfg.context_length), but
                   the weights hold 16: positional_embedding [16, 32] where the declared model has [20, 32]
                   fix: set model_cfg.text_cfg.context_length = 16 in open_clip_config.json (what the weights
                   hold), or use weights trained for context length 20 (or resample it with …)

Fix
    Make the declaration describe the weights (the finding gives the field and the value: when the config was
    edited or copied from another variant), or publish the weights of the model the declaration describes. To
    keep a resized position embedding, resample it explicitly (``open_clip.model.resize_text_pos_embed``,
    ``timm.layers.resample_abs_pos_embed``) and say so.
"""

from __future__ import annotations

import json
import re
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ckptlint import suggest
from ckptlint.archs import detect
from ckptlint.checkpoint import Checkpoint
from ckptlint.declared import ADAPTERS, declared_info
from ckptlint.declared.lookup import adapter_of
from ckptlint.declared.requested import declared_hf_class
from ckptlint.keygroups import some
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule

if TYPE_CHECKING:
    from ckptlint.declared.contradict import BaseUnderTask, Contradiction, ConversionFailure

# how reports name a table parameter (ckptlint's own names; a transformers parameter is the config's field)
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


class Contradicted(Message):
    code = "CK113"
    message = "{file} declares {claim}, but the weights {hold}: {evidence}"
    cause = (
        "the config was edited, or saved for other weights: {loader} builds the model from {file}; {effect}"
    )
    fix = "{edit}, or use weights trained for {short}{resample}"


class Refused(Message):
    code = "CK113"
    message = "{library} refuses {file}: {reason}"
    cause = "{loader} builds the model from {file} and fails before it reads a single weight"
    fix = "{repair}"


class ConversionFails(Message):
    code = "CK113"
    message = "transformers cannot convert the weights for {key}: {error}"
    cause = (
        "from_pretrained converts these checkpoint tensors into the model's layout on load ({ops}); the conversion "
        'fails, so it raises RuntimeError ("We encountered some issues during automatic conversion of the '
        'weights") after its load report — output_loading_info never comes back'
    )
    fix = "repair or re-export the tensors it reads ({sources}) so that they have matching shapes"


class BaseWeightsUnderTask(Message):
    code = "CK113"
    message = (
        "{file} declares architectures [{cls}], but the weights are its base model only: {head} {verb} missing "
        "and not tied"
    )
    cause = (
        "the file holds the base model's weights (under no {base}. prefix, which from_pretrained adds); the task "
        "head is not in it, so from_pretrained initialises it randomly{dropped}"
    )
    fix = (
        "declare the base model (architectures: [{base_class}], or load with AutoModel), or add the trained head's "
        "weights to the checkpoint"
    )


@rule(
    "CK113",
    "error",
    "weights contradict the model their own config declares (names the config field and the evidence)",
    stage=Stage.LAYOUT,
    order=0,
    rank=15,
)
class DeclarationContradictedRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        exp = ctx.expected
        if ctx.unchecked is not None:  # the declaration built nothing (whatever was inferred instead)
            return _refused_unbuilt(ctx)
        info = (
            declared_info(ctx.ckpt, exp) if exp is not None and exp.source in ("declared", "flag") else None
        )
        if info is None:
            return []
        adapter = adapter_of(info)
        file = info["file"]
        refusals = list(info.get("refused", []))
        built = bool(exp.tensors)  # else nothing could be built: all the rest follows from the refusals
        if not built and not any(r.get("fields") for r in refusals):
            return _unbuilt(ctx, [_refusal(adapter, file, r, info, ctx.ckpt, []) for r in refusals])
        # the contradiction finder is imported only when a declaration is there (start-up time)
        from ckptlint.declared.contradict import base_under_task, buildable, conversions, find

        later: list[Message] = [_conversion(c) for c in conversions(ctx, exp)] if built else []
        base = None if _requested_head(ctx, info) or not built else base_under_task(ctx, exp)
        if base is not None:
            later.append(_base(base, info))
        # a field the library refuses and the weights contradict is one cause: the refusal, with the weights' value
        behind: list[list[Contradiction]] = [[] for _ in refusals]
        for c in find(ctx, info):
            ctx.contradicted.add(c.param)
            owner = next((i for i, r in enumerate(refusals) if c.param in r.get("fields", [])), None)
            if owner is None:
                later.append(_contradicted(ctx, adapter, info, c))
            else:
                behind[owner].append(c)
        out = [
            _refusal(adapter, file, r, info, ctx.ckpt, cs, None if cs else buildable(ctx, info, r))
            for r, cs in zip(refusals, behind, strict=True)
        ]
        return (out if built else _unbuilt(ctx, out)) + later


def _unbuilt(ctx: Context, out: list[Message]) -> list[Message]:
    """The refusals of a declaration nothing could be built from: every key left is theirs."""
    out[-1].keys = [*out[-1].keys, *ctx.missing, *ctx.unexpected, *ctx.shape]
    ctx.consume_missing(list(ctx.missing))
    ctx.consume_unexpected(list(ctx.unexpected))
    ctx.consume_shape(list(ctx.shape))
    return out


def _requested_head(ctx: Context, info: dict[str, Any]) -> bool:
    """``--arch TaskClass`` on a folder whose config.json declares another class: a head missing from the weights
    is the request's doing (CK114 says so), not the config's."""
    exp = ctx.expected
    if exp is None or exp.source != "flag" or info.get("kind") != "hf-config":
        return False
    declared = declared_hf_class(ctx.ckpt, info.get("file"))
    return declared is not None and declared != info.get("class")


def _refused_unbuilt(ctx: Context) -> list[Message]:
    """A declaration the library refuses before building anything."""
    note = ctx.unchecked
    if note is None or note.refused is None or note.declared_by is None:
        return []
    side = next((s for s in ctx.ckpt.sidecars if s.name == note.declared_by and s.kind in ADAPTERS), None)
    if side is None:
        return []
    adapter = ADAPTERS[side.kind]
    return [
        Refused(
            details={"file": note.declared_by},
            file=note.declared_by,
            library=adapter.LIBRARY,
            reason=note.refused,
            loader=suggest.loader_call(adapter.LOADER, ctx.ckpt),
            repair=note.fix or adapter.REPAIR.format(file=note.declared_by, fields="it"),
        )
    ]


def _refusal(
    adapter: ModuleType,
    file: str,
    refusal: dict[str, Any],
    info: dict[str, Any],
    ckpt: Checkpoint,
    behind: list[Contradiction],
    buildable: tuple[str, int, int, bool] | None = None,
) -> Message:
    """The library refuses the config (``refusal``: its check's message and fields); ``behind``: the refused fields
    the weights contradict, whose values in the weights are the repair; else ``buildable``: (a refused field, the
    value nearest its default the library builds with, that default, whether the model's shapes depend on it)."""
    fields = ", ".join(info["fields"].get(f) or f for f in refusal.get("fields", [])) or "the fields named"
    reason = refusal["message"]
    repair = adapter.REPAIR.format(file=file, fields=fields)
    if buildable is not None:
        param, value, default, shapes = buildable
        field = info["fields"][param]
        near = "its default" if value == default else f"the value nearest its default {default}"
        built = "the model builds with and matches the weights" if shapes else "the model builds with"
        shown = "" if shapes else f"the weights do not show {field}; "
        repair = (
            f"set {field} = {json.dumps(value)} in {file} ({shown}{value} is {near} that {built}: if the weights "
            "were trained with another value, set that one)"
        )
    details: dict[str, Any] = {"file": file, "refused": refusal}
    keys: list[str] = []
    if behind:
        reason += "; the weights hold " + "; ".join(
            f"{c.field} = {_value(c.observed, None, c.counted)} ({c.evidence})" for c in behind
        )
        repair = " and ".join(_edit(adapter, info, c, None) for c in behind)
        details["contradicted"] = [_details(file, c) for c in behind]
        keys = [k for c in behind for k in (*c.shape, *c.missing, *c.unexpected)]
    return Refused(
        keys=keys,
        details=details,
        file=file,
        library=adapter.LIBRARY,
        reason=reason,
        loader=suggest.loader_call(adapter.LOADER, ckpt),
        repair=repair,
    )


def _conversion(c: ConversionFailure) -> Message:
    return ConversionFails(
        keys=[c.key],
        details={"error": c.error},
        key=c.key,
        error=c.error.splitlines()[0],
        ops=c.ops,
        sources=c.sources,
    )


def _base(b: BaseUnderTask, info: dict[str, Any]) -> Message:
    cls = info.get("class") or ""
    shown = ", ".join(b.head[:3]) + (f" (+{len(b.head) - 3})" if len(b.head) > 3 else "")
    return BaseWeightsUnderTask(
        keys=b.head + b.unused,
        details={"base_prefix": b.base, "head": b.head, "unused": b.unused},
        file=info["file"],
        cls=cls,
        head=shown,
        verb="is" if len(b.head) == 1 else "are",
        base=b.base,
        base_class=re.sub(r"(For[A-Z]\w*|LMHeadModel)$", "Model", cls),
        dropped=f", and drops what the task model has no place for ({some(b.unused)})" if b.unused else "",
    )


# ---- one contradicted field ------------------------------------------------------------------------------------
def _contradicted(ctx: Context, adapter: ModuleType, info: dict[str, Any], c: Contradiction) -> Message:
    file = info["file"]
    what = PHRASES.get(c.param, c.param.replace("_", " ")) if info.get("tier") == "table" else None
    declared, observed = _value(c.declared, what, c.counted), _value(c.observed, what, c.counted)
    if what is not None:  # a parameter of ckptlint's tables: its phrase, and the file's field in parentheses
        shown = c.field if c.field_value is None else f"{c.field} = {json.dumps(c.field_value)}"
        default = "" if c.field_value is None else f" {json.dumps(c.field_value)}"
        claim = (
            f"{what} {declared} ({shown if c.given else f'{c.field} absent: {adapter.DEFAULTS}{default}'})"
        )
        short, hold = f"{what} {declared}", f"hold {observed}"
    else:  # the parameter is the config's own field
        claim = f"{c.field} = {declared}" + ("" if c.given else f" ({adapter.DEFAULTS})")
        short = f"{c.field} = {declared}"
        hold = f"fit {c.field} = {observed}" if isinstance(c.observed, bool) else f"hold {observed}"
    edit = _edit(adapter, info, c, what)
    evidence = c.evidence
    if isinstance(c.observed, bool) and c.observed and c.missing and c.field.endswith("tie_word_embeddings"):
        evidence = (
            f"the file has no {some(c.missing)}: it was saved tied ({adapter.LIBRARY} writes a tied weight once), "
            f"and {info.get('class')} with {c.field} = false needs its own"
        )
    effect = info.get("notes", {}).get(c.param) or _effect(adapter, c, ctx.exp_framework)
    return Contradicted(
        keys=[*c.shape, *c.missing, *(ctx.file_key(k) for k in c.unexpected)],
        details=_details(file, c),
        file=file,
        claim=claim,
        hold=hold,
        evidence=evidence,
        loader=suggest.loader_call(adapter.LOADER, ctx.ckpt),
        effect=effect,
        edit=edit,
        short=short,
        resample=_resample(c, ctx.exp_framework),
    )


def _edit(adapter: ModuleType, info: dict[str, Any], c: Contradiction, what: str | None) -> str:
    """The one edit of the declaration that makes it agree with the weights."""
    file, observed = info["file"], _value(c.observed, what, c.counted)
    if c.suggest is None:
        return f"edit {c.field} in {file} so that the {what or c.param} is {observed}"
    if c.counted:
        return f"give {c.suggest[0]} {observed} in {file} (what the weights hold)"
    return f"set {c.suggest[0]} = {json.dumps(c.suggest[1])} in {file} (what the weights hold)"


def _details(file: str, c: Contradiction) -> dict[str, Any]:
    return {
        "file": file,
        "field": c.field,
        "param": c.param,
        "declared": c.declared,
        "observed": c.observed,
        "evidence": c.evidence,
        "shape_mismatch": c.shape,
        "missing": c.missing,
        "unexpected": c.unexpected,
    }


def _value(value: object, phrased: str | None, counted: bool) -> str:
    if counted and isinstance(value, int):
        return f"{value} entr{'y' if value == 1 else 'ies'}"
    if isinstance(value, bool):
        return ("on" if value else "off") if phrased else json.dumps(value)
    return str(value)


def _effect(adapter: ModuleType, c: Contradiction, framework: str | None) -> str:
    parts = []
    if c.shape:
        probes = ((k, detect.posemb_probe(k, framework)) for k in c.shape)
        auto = next((f"{k}: {p['auto']}" for k, p in probes if p and p.get("auto")), None)
        parts.append(auto or adapter.MISMATCH.format(keys=_few(c.shape), n=len(c.shape)))
    if c.missing:
        parts.append(adapter.MISSING.format(keys=_few(c.missing), n=len(c.missing)))
    if c.unexpected:
        parts.append(adapter.UNEXPECTED.format(keys=_few(c.unexpected), n=len(c.unexpected)))
    return "; ".join(parts)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:2]) + (f" … (+{len(keys) - 2})" if len(keys) > 2 else "")


def _resample(c: Contradiction, framework: str | None) -> str:
    for key in c.shape:
        probe = detect.posemb_probe(key, framework)
        if probe and probe.get("resample"):
            return f" (or {probe['resample']})"
    return ""
