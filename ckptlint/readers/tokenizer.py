"""Token ids the tokenizer files next to the weights use, read as JSON only (no tokenizer code is ever imported).

``tokenizer.json`` (the ``tokenizers`` format: ``model.vocab`` — a dict token -> id for BPE / WordPiece /
WordLevel, a list of ``[piece, score]`` for Unigram — and ``added_tokens``), ``vocab.json`` (a slow BPE vocabulary),
``added_tokens.json`` (token -> id), ``tokenizer_config.json`` (``added_tokens_decoder``: id -> token, and the
special tokens ``bos_token``…) and ``special_tokens_map.json``. The special tokens are resolved as transformers'
``from_pretrained`` does: ``tokenizer_config.json``'s, overridden by ``special_tokens_map.json``'s unless the
config has ``added_tokens_decoder`` (the current format, where the legacy map is not read). The result is a fact on
the Checkpoint (``TokenizerFacts``): CK115 compares it with the embedding, and ``ckptlint convert`` writes its
special-token ids into the target's config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ckptlint.checkpoint import TokenizerFacts

MAX_JSON = 64 << 20  # a tokenizer.json of a 256k vocabulary is ~20 MB; larger files are not parsed
SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def _load(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON:
        raise ValueError("too large")
    return json.loads(path.read_bytes())


def _content(token: Any) -> str | None:
    """A special token as written in the files: a string, or ``{"content": ...}`` (an AddedToken)."""
    if isinstance(token, str):
        return token
    if isinstance(token, dict) and isinstance(token.get("content"), str):
        return token["content"]
    return None


def tokenizer_facts(directory: Path, names: list[str]) -> TokenizerFacts | None:
    """What ``names`` (tokenizer files in ``directory``) say about token ids; None when none is readable JSON."""
    facts = TokenizerFacts()
    ids: dict[str, int] = {}  # token -> id
    added: dict[str, int] = {}
    specials: dict[str, str] = {}
    docs: dict[str, Any] = {}
    for name in (
        "tokenizer.json",
        "vocab.json",
        "added_tokens.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ):
        if name not in names:
            continue
        try:
            docs[name] = _load(directory / name)
        except (OSError, ValueError, RecursionError):
            facts.unread.append(name)
            continue
        facts.files.append(name)
    tok = docs.get("tokenizer.json")
    if isinstance(tok, dict):
        model = tok.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if isinstance(vocab, dict):
            ids.update({k: v for k, v in vocab.items() if isinstance(v, int)})
            facts.vocab = len(vocab)
        elif isinstance(vocab, list):  # Unigram: [piece, score] at index id
            ids.update(
                {p[0]: i for i, p in enumerate(vocab) if isinstance(p, list) and p and isinstance(p[0], str)}
            )
            facts.vocab = len(vocab)
        for entry in tok.get("added_tokens") or []:
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("id"), int)
                and isinstance(entry.get("content"), str)
            ):
                added[entry["content"]] = entry["id"]
    slow = docs.get("vocab.json")
    if isinstance(slow, dict) and facts.vocab is None:
        ids.update({k: v for k, v in slow.items() if isinstance(v, int)})
        facts.vocab = len(slow)
    more = docs.get("added_tokens.json")
    if isinstance(more, dict):
        added.update({k: v for k, v in more.items() if isinstance(v, int)})
    config = docs.get("tokenizer_config.json")
    decoder = config.get("added_tokens_decoder") if isinstance(config, dict) else None
    if isinstance(decoder, dict):
        for key, entry in decoder.items():
            content = _content(entry)
            if content is not None and key.lstrip("-").isdigit():
                added.setdefault(content, int(key))
    sources = [("tokenizer_config.json", config)]
    if not isinstance(decoder, dict):  # legacy files: the map overrides the config (transformers' order)
        sources.append(("special_tokens_map.json", docs.get("special_tokens_map.json")))
    for name, doc in sources:
        named = {k: c for k in SPECIAL if isinstance(doc, dict) and (c := _content(doc.get(k))) is not None}
        if named:
            specials.update(named)
            facts.special_from.append(name)
    if not ids and not added:
        return facts if facts.unread else None
    every = {**ids, **added}
    base = set(ids.values())
    facts.added = len({v for v in added.values() if v not in base})
    facts.count = len(set(every.values()))
    facts.max_id = max(every.values())
    facts.special = {k: every.get(c) for k, c in specials.items()}
    return facts
