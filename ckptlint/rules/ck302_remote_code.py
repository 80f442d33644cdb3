"""CK302 — the folder ships model code that loaders run with trust_remote_code=True

What it does
    Reports a checkpoint folder whose ``config.json`` (or another config) has an ``auto_map``, or which holds
    ``*.py`` files: transformers' ``from_pretrained(..., trust_remote_code=True)`` imports the modules that
    ``auto_map`` names and runs them. The finding names the config, the classes it maps and the code files
    (ckptlint lists them; it never imports them).

Why is this bad?
    That code is not weights: it runs with your user's rights as soon as the model is loaded with
    ``trust_remote_code=True`` (which many model cards ask for). A module that ``auto_map`` names but the folder
    does not hold (``org/repo--modeling.Class``) is fetched from another repository at load time.

Example
    $ ckptlint check remote_code    # a save_pretrained folder whose config.json maps AutoModel to modeling_tiny.py
    CK302 warning  folder ships model code run by from_pretrained(..., trust_remote_code=True): config.json
                   auto_map names modeling_tiny.TinyModel (modeling_tiny.py)
                   cause: transformers imports the modules auto_map names and runs them when the model is
                   loaded with trust_remote_code=True; ckptlint lists them without importing them.
                   fix: Read the code files before loading with trust_remote_code=True, or load the weights
                   into a model class you already have (without trust_remote_code).

Fix
    Read the listed code before loading with ``trust_remote_code=True``; pin the revision you reviewed
    (``revision=`` in ``from_pretrained``). If the architecture exists in transformers, load the weights into it
    without ``trust_remote_code`` instead, and publish weights without code.

Links
    https://huggingface.co/docs/transformers/custom_models#using-a-model-with-custom-code
"""

from __future__ import annotations

from ckptlint.facts import RemoteCode
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule

MAX_SHOWN = 5


def _shown(items: list[str]) -> str:
    return ", ".join(items[:MAX_SHOWN]) + (
        f" and {len(items) - MAX_SHOWN} more" if len(items) > MAX_SHOWN else ""
    )


class ShipsCode(Message):
    code = "CK302"
    message = "folder ships model code run by from_pretrained(..., trust_remote_code=True): {what}"
    cause = (
        "transformers imports the modules auto_map names and runs them when the model is loaded with "
        "trust_remote_code=True; ckptlint lists them without importing them.{elsewhere}"
    )
    fix = (
        "Read the code files before loading with trust_remote_code=True, or load the weights into a model class "
        "you already have (without trust_remote_code)."
    )


def _message(rc: RemoteCode) -> ShipsCode:
    if rc.config is not None:
        targets = sorted(set(rc.auto_map.values()))
        what = f"{rc.config} auto_map names {_shown(targets)}"
        if rc.code_files:
            what += f" ({_shown(rc.code_files)})"
    else:
        what = f"{len(rc.code_files)} Python file{'s' if len(rc.code_files) != 1 else ''} ({_shown(rc.code_files)})"
    elsewhere = (
        f" {_shown(rc.missing)} {'is' if len(rc.missing) == 1 else 'are'} not in the folder: fetched from "
        "another repository at load time."
        if rc.missing
        else ""
    )
    details = {
        "config": rc.config,
        "auto_map": dict(list(rc.auto_map.items())[:50]),
        "code_files": rc.code_files[:200],
        "missing": rc.missing[:50],
    }
    return ShipsCode(keys=[], details=details, what=what, elsewhere=elsewhere)


@rule(
    "CK302",
    "warning",
    "the folder ships model code that loaders run with trust_remote_code=True",
    stage=Stage.FACTS,
    order=4,
    rank=3,
)
class RemoteCodeRule(Rule):
    """From the folder's security facts (config ``auto_map`` entries and ``*.py`` files)."""

    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        return [_message(rc) for rc in ctx.ckpt.security.remote_code]
