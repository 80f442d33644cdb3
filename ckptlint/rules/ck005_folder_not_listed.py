"""CK005 — folder not listed: only the files loaders open by name were looked at

What it does
    Says so when a folder was read from a server that cannot list it (an ``https://`` URL ending in ``/``):
    ckptlint asked for each name that transformers and open_clip load a folder by — configs, weights, shard
    indexes, preprocessing and tokenizer files, ``training_args.bin`` — and read the ones that exist. The
    finding names what was found and says that files under any other name were not seen.

Why is this bad?
    A verdict is only as good as what was looked at. Without a listing, pickles under other names
    (``optimizer.pt``, ``checkpoint-500/``) and model code (``*.py`` run by ``trust_remote_code=True``) are
    invisible: the security rules judged only the files found, and a clean report does not cover the rest.

Example
    $ ckptlint check https://host/hf_clip_tiny/    # the corpus' save_pretrained folder behind a plain web server
    CK005 info     folder not listed: the names loaders open were asked for one by one; found config.json,
                   model.safetensors, preprocessor_config.json; other files in the folder were not seen
                   cause: a plain http(s) server does not list folders: ckptlint probed 28 file names (HEAD /
                   ranged GET) and judged the files it found; files under other names (more pickles, *.py model
                   code) were not looked at
                   fix: check a store that lists the folder to see every file: hf://ORG/REPO, s3://BUCKET/PREFIX/,
                   gs://BUCKET/PREFIX/ or a local copy (huggingface-cli download ORG/REPO --local-dir DIR)

Fix
    Check the folder where it can be listed: ``hf://ORG/REPO[@REVISION]``, ``s3://BUCKET/PREFIX/``,
    ``gs://BUCKET/PREFIX/``, or a local copy. ``--ignore CK005`` silences it when the conventional files are
    all you need.
"""

from __future__ import annotations

from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule

MAX_SHOWN = 12


class FolderNotListed(Message):
    code = "CK005"
    message = (
        "folder not listed: the names loaders open were asked for one by one; found {found}; other files in the "
        "folder were not seen"
    )
    cause = (
        "a plain http(s) server does not list folders: ckptlint probed {n} file names (HEAD / ranged GET) and "
        "judged the files it found; files under other names (more pickles, *.py model code) were not looked at"
    )
    fix = (
        "check a store that lists the folder to see every file: hf://ORG/REPO, s3://BUCKET/PREFIX/, "
        "gs://BUCKET/PREFIX/ or a local copy (huggingface-cli download ORG/REPO --local-dir DIR)"
    )


@rule(
    "CK005",
    "info",
    "folder not listed: only the files loaders open by name were looked at (says which)",
    stage=Stage.FACTS,
    order=5,
    rank=101,
)
class FolderNotListedRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        facts = ctx.ckpt.metadata.get("unlisted_folder")
        if not isinstance(facts, dict):
            return []
        probed = [str(n) for n in facts.get("probed", [])]
        found = [str(n) for n in facts.get("found", [])]
        shown = ", ".join(found[:MAX_SHOWN]) + (f", … ({len(found)} files)" if len(found) > MAX_SHOWN else "")
        return [
            FolderNotListed(
                details={"probed": probed, "found": found},
                found=shown or "none of them",
                n=len(probed),
            )
        ]
