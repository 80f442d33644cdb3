"""The special-token ids an input's tokenizer files give (``bos``, ``eos``, ``pad``), read as JSON only, for the
config a conversion writes: transformers' text configs default to OpenAI CLIP's ids (bos 49406, eos 49407, pad 1),
which a model with another vocabulary must not get.

The special tokens are named by ``tokenizer_config.json`` / ``special_tokens_map.json`` (``bos_token``…) and found
by name in ``tokenizer.json`` (``added_tokens``, ``model.vocab``), ``added_tokens.json``, ``vocab.json`` or
``tokenizer_config.json``'s ``added_tokens_decoder``. No tokenizer code is imported; a file over ``MAX_JSON`` is not
read. (A reader of these files for CK115 is coming in ``ckptlint/readers``; this one can then use its facts.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_JSON = 64 << 20  # a tokenizer.json of a 256k vocabulary is ~20 MB
SPECIAL = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "pad_token": "pad_token_id"}


def _load(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_JSON:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def _content(token: Any) -> str | None:
    if isinstance(token, str):
        return token
    if isinstance(token, dict) and isinstance(token.get("content"), str):
        return token["content"]
    return None


def _ids(docs: dict[str, Any]) -> dict[str, int]:
    """token -> id from every file that maps them."""
    ids: dict[str, int] = {}
    tok = docs.get("tokenizer.json")
    if isinstance(tok, dict):
        model = tok.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if isinstance(vocab, dict):
            ids.update({k: v for k, v in vocab.items() if isinstance(v, int)})
        elif isinstance(vocab, list):  # Unigram: [piece, score] at the index of its id
            ids.update(
                {p[0]: i for i, p in enumerate(vocab) if isinstance(p, list) and p and isinstance(p[0], str)}
            )
        for entry in tok.get("added_tokens") or []:
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("id"), int)
                and isinstance(entry.get("content"), str)
            ):
                ids[entry["content"]] = entry["id"]
    for name in ("vocab.json", "added_tokens.json"):
        doc = docs.get(name)
        if isinstance(doc, dict):
            ids.update({k: v for k, v in doc.items() if isinstance(v, int) and not isinstance(v, bool)})
    config = docs.get("tokenizer_config.json")
    decoder = config.get("added_tokens_decoder") if isinstance(config, dict) else None
    if isinstance(decoder, dict):
        for key, entry in decoder.items():
            content = _content(entry)
            if content is not None and key.isdigit():
                ids.setdefault(content, int(key))
    return ids


def special_ids(directory: Path, names: list[str]) -> dict[str, int]:
    """``{"bos_token_id": 0, ...}`` for the special tokens the tokenizer files ``names`` in ``directory`` name and
    map to an id (a token they name but do not map is left out)."""
    docs = {n: _load(directory / n) for n in names if n.endswith(".json")}
    named: dict[str, str] = {}
    for source in ("special_tokens_map.json", "tokenizer_config.json"):  # the tokenizer's own config wins
        doc = docs.get(source)
        if isinstance(doc, dict):
            named.update({k: c for k in SPECIAL if (c := _content(doc.get(k))) is not None})
    if not named:
        return {}
    ids = _ids(docs)
    return {SPECIAL[k]: ids[c] for k, c in named.items() if c in ids}
