"""CK113 — weights contradict the model their own config declares

What it does
    Compares the weights with the declaration next to them — ``open_clip_config.json``'s ``model_cfg``, timm's
    ``config.json`` (``architecture``, ``num_classes``, ``model_args``, ``pretrained_cfg``) — the way the library
    builds the model from it, and names each declared parameter the weights contradict: context length, patch
    size, image size against the position-embedding grid, width, layers, MLP width, vocabulary size, embedding
    dim, number of classes against the head. One finding per parameter, naming the config field, the value the
    weights hold and the key that shows it; the missing, unexpected and resized keys it causes are folded into
    it. A declaration the library itself refuses is reported too.

Why is this bad?
    The loader builds the model from the config, not from the weights: ``load_state_dict`` then fails with size
    mismatches, leaves blocks randomly initialised, or — worse — open_clip's ``load_checkpoint`` and timm's
    pretrained loader silently interpolate a position embedding to the declared context length or image size,
    and the model runs on weights it was never trained with.

Example
    $ ckptlint check oc_context_length    # open_clip folder (open_clip_config.json + open_clip_model.safetensors), context_length edited 16 -> 20
    CK113 error    open_clip_config.json declares context length 20 (model_cfg.text_cfg.context_length), but
                   the weights hold 16: positional_embedding [16, 32]
                   fix: set model_cfg.text_cfg.context_length = 16 in open_clip_config.json (what the weights
                   hold), or use weights trained for context length 20 (or resample: …)

Fix
    Make the declaration describe the weights (the finding gives the field and the value), or publish the weights
    of the model the declaration describes. To keep a resized position embedding, resample it explicitly
    (``open_clip.model.resize_text_pos_embed``, ``timm.layers.resample_abs_pos_embed``) and say so.
"""

from __future__ import annotations

import json

from ckptlint.archs import detect
from ckptlint.declared import ADAPTERS, Declaration, Unbuilt
from ckptlint.declared.contradict import Contradiction, find, judged, phrase
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule


class Contradicted(Message):
    code = "CK113"
    message = "{file} declares {what} {declared} ({field}), but the weights hold {observed}: {evidence}"
    cause = (
        "the config was edited, or saved for other weights: {loader} builds the model from {file}; {effect}"
    )
    fix = "{edit}, or use weights trained for {what} {declared}{resample}"


class Refused(Message):
    code = "CK113"
    message = "{file} is a declaration the library refuses: {reason}"
    cause = "{loader} reads {file} to build the model and fails before any weight is loaded"
    fix = "repair {file} (open_clip's and timm's save_for_hf write a complete one), or remove it"


def _effect(c: Contradiction, framework: str | None, note: str | None) -> str:
    if note:
        return note
    parts = []
    if c.shape:
        auto = next((f"{k}: {p['auto']}" for k in c.shape if (p := detect.posemb_probe(k, framework))), None)
        parts.append(auto or f"load_state_dict raises size mismatch for {_few(c.shape)}")
    if c.missing:
        parts.append(
            f"{len(c.missing)} declared parameters are not in the weights and stay random ({_few(c.missing)})"
        )
    if c.unexpected:
        parts.append(f"{len(c.unexpected)} weights are left over (unexpected keys: {_few(c.unexpected)})")
    return "; ".join(parts)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:2]) + (f" … (+{len(keys) - 2})" if len(keys) > 2 else "")


def _resample(c: Contradiction, framework: str | None) -> str:
    for key in c.shape:
        probe = detect.posemb_probe(key, framework)
        if probe and probe.get("resample"):
            return f" (or resample: {probe['resample']})"
    return ""


@rule(
    "CK113",
    "error",
    "weights contradict the model their own config declares (names the config field and the evidence)",
    stage=Stage.MODEL,
    order=3,
    rank=30,
)
class DeclarationContradictedRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        decl = judged(ctx)
        if decl is None:
            return []
        loader = ADAPTERS[decl.kind].LOADER
        if isinstance(decl, Unbuilt):
            return [Refused(details={"file": decl.file}, file=decl.file, reason=decl.reason, loader=loader)]
        return [self._message(ctx, decl, c, loader) for c in find(ctx, decl)]

    @staticmethod
    def _message(ctx: Context, decl: Declaration, c: Contradiction, loader: str) -> Message:
        ctx.contradicted.add(c.param)
        framework = ctx.exp_framework
        what = phrase(c.param)
        if c.suggest:
            edit = f"set {c.suggest} in {decl.file} (what the weights hold)"
        else:
            edit = f"edit {c.field} in {decl.file} so that the {what} is {_value(c.observed)}"
        shown = c.field if c.field_value is None else f"{c.field} = {json.dumps(c.field_value)}"
        default = "" if c.field_value is None else f" {json.dumps(c.field_value)}"
        field = shown if c.given else f"{c.field} absent: {ADAPTERS[decl.kind].DEFAULTS}{default}"
        details = {
            "file": decl.file,
            "field": c.field,
            "param": c.param,
            "declared": c.declared,
            "observed": c.observed,
            "evidence": c.evidence,
            "shape_mismatch": c.shape,
            "missing": c.missing,
            "unexpected": c.unexpected,
        }
        return Contradicted(
            keys=[*c.shape, *c.missing, *(ctx.file_key(k) for k in c.unexpected)],
            details=details,
            file=decl.file,
            what=what,
            declared=_value(c.declared),
            observed=_value(c.observed),
            field=field,
            evidence=c.evidence,
            loader=loader,
            effect=_effect(c, framework, decl.notes.get(c.param)),
            edit=edit,
            resample=_resample(c, framework),
        )
