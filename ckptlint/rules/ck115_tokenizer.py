"""CK115 — tokenizer does not fit the embedding

What it does
    When tokenizer files sit next to the weights (``tokenizer.json``, ``vocab.json``, ``added_tokens.json``,
    ``tokenizer_config.json``, ``special_tokens_map.json``, read as JSON only), compares the token ids they use
    with the rows of the model's token embedding: a tokenizer with more tokens (added tokens included) than the
    embedding has rows is an error, and so is a special token (``bos_token``…, or a ``*_token_id`` of the
    declaration) whose id falls outside the table. Fewer tokens than rows is normal (embeddings are padded to a
    multiple of 64 or 128) and says nothing.

Why is this bad?
    Tokens added with ``tokenizer.add_tokens`` but no ``model.resize_token_embeddings`` load fine — then the first
    text that contains one indexes past the embedding table: ``IndexError: index out of range in self`` on CPU, a
    device-side assert on GPU. A special-token id outside the table fails the same way at the first pad or
    end-of-sequence.

Example
    $ ckptlint check llama_added_tokens    # a tiny LlamaForCausalLM folder, tokenizer.add_tokens without resize
    CK115 error    tokenizer has 100 tokens (ids up to 99, 4 added) but the embedding
                   model.embed_tokens.weight has 96 rows
                   fix: model.resize_token_embeddings(len(tokenizer)) and save the model again, or remove the
                   added tokens from the tokenizer files

Fix
    Resize the embeddings after adding tokens (``model.resize_token_embeddings(len(tokenizer))``, then
    ``save_pretrained``), or ship the tokenizer the weights were trained with.
"""

from __future__ import annotations

from ckptlint.checkpoint import TensorInfo
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule

# token embeddings, by the names the libraries give them (the first 2-d one found is the table)
EMBEDDINGS = (
    "embed_tokens.weight",
    "word_embeddings.weight",
    "token_embedding.weight",
    "tok_embeddings.weight",
    "shared.weight",
    "wte.weight",
    "embed_in.weight",
    "token_embedding",
)
CONFIG_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


class TooManyTokens(Message):
    code = "CK115"
    message = "tokenizer has {count} tokens (ids up to {max_id}, {added} added) but the embedding {key} has {rows} rows"
    cause = (
        "tokens were added to the tokenizer without resizing the model's embeddings: the model loads, then the "
        "first text with one of them indexes past the table (IndexError: index out of range in self)"
    )
    fix = (
        "model.resize_token_embeddings(len(tokenizer)) and save the model again, or remove the added tokens from "
        "the tokenizer files"
    )


class SpecialOutside(Message):
    code = "CK115"
    message = "{what} {verb} id {id}, outside the embedding {key} ({rows} rows)"
    cause = "the first time the model sees this token it indexes past the embedding table"
    fix = "set {what} to a token inside the vocabulary (ids 0..{last}), or resize the embeddings"


def embedding(view: dict[str, TensorInfo]) -> tuple[str, int] | None:
    """The token embedding table of ``view`` (its key and rows), by name."""
    for suffix in EMBEDDINGS:
        for key, t in view.items():
            if key.endswith(suffix) and len(t.shape) == 2:
                return key, int(t.shape[0])
    return None


@rule(
    "CK115",
    "error",
    "tokenizer does not fit the embedding: more tokens than rows, or a special-token id outside it",
    stage=Stage.METADATA,
    order=4,
    rank=60,
)
class TokenizerRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        facts = ctx.ckpt.tokenizer
        found = embedding(ctx.view)
        if found is None:
            return []
        key, rows = found
        key = ctx.file_key(key)
        out: list[Message] = []
        if facts is not None and facts.max_id is not None and facts.max_id >= rows:
            out.append(
                TooManyTokens(
                    keys=[key],
                    details={
                        "tokens": facts.count,
                        "max_id": facts.max_id,
                        "added": facts.added,
                        "rows": rows,
                        "files": facts.files,
                    },
                    count=facts.count,
                    max_id=facts.max_id,
                    added=facts.added,
                    key=key,
                    rows=rows,
                )
            )
        if facts is None:  # the ids are checked when the folder ships a tokenizer
            return out
        ids: dict[str, int] = {
            f"the tokenizer's {k}": v for k, v in facts.special.items() if isinstance(v, int)
        }
        config = ctx.ckpt.sidecar("hf-config")
        content = config.content if config is not None and isinstance(config.content, dict) else {}
        for name in CONFIG_IDS:
            value = content.get(name)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, int) and not isinstance(v, bool) and config is not None:
                    ids.setdefault(f"{config.name} {name}", v)
        covered = facts.max_id if out else -1  # ids the tokens finding already accounts for
        outside: dict[int, list[str]] = {}
        for what, value in ids.items():
            if value >= rows and value > covered:
                outside.setdefault(value, []).append(what)
        for value, names in outside.items():
            what = ", ".join(names)
            out.append(
                SpecialOutside(
                    keys=[key],
                    details={"tokens": names, "id": value, "rows": rows},
                    what=what,
                    verb="has" if len(names) == 1 else "have",
                    id=value,
                    key=key,
                    rows=rows,
                    last=rows - 1,
                )
            )
        return out
