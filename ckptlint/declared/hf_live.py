"""Tier (b): any transformers model class, built by transformers itself on the meta device (``pip install
'ckptlint[hf]'``), cached per config on disk so that a second run imports neither transformers nor torch.

The class is taken from the ``transformers`` package only (never ``trust_remote_code``: a config's ``auto_map`` is
ignored); the config class parses ``config.json`` as ``from_pretrained`` would (a sub-config class reads its
parent's ``vision_config``…); the model is built with ``torch.device("meta")`` (no weight allocated, nothing
downloaded) and what ``from_pretrained`` compares a checkpoint with is read from it
(``ckptlint.declared.hf_introspect``). The result is cached under ``$CKPTLINT_CACHE_DIR`` (default
``~/.cache/ckptlint``) in ``hf-models/<sha256>.json``, keyed by the config, the class and the versions of
transformers, torch and ckptlint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from ckptlint._version import __version__
from ckptlint.archs.spec import MAX_REPEAT
from ckptlint.checkpoint import Checkpoint
from ckptlint.declared.hf_config import FLOATS, declared_dtype, file_dtype
from ckptlint.expected import Expected, ExpectedTensor, Unchecked

SKIP = ("transformers_version", "architectures", "auto_map", "dtype", "torch_dtype")
# config fields that count modules transformers builds one by one (n_layer, num_hidden_layers, encoder_layers,
# num_local_experts…): past MAX_REPEAT, building the model is unbounded work (a billion GPT-2 blocks on the meta
# device never finish), so ckptlint refuses to build it, as it bounds every other input
_MODULE_COUNT = re.compile(r"(?:layers?|blocks?|experts)$")


def available() -> bool:
    """Whether transformers and torch can be imported here (without importing them)."""
    try:
        return (
            importlib.util.find_spec("transformers") is not None
            and importlib.util.find_spec("torch") is not None
        )
    except (ImportError, ValueError):
        return False


def _versions() -> str | None:
    try:
        return f"transformers {metadata.version('transformers')}, torch {metadata.version('torch')}"
    except metadata.PackageNotFoundError:
        return None


def cache_dir() -> Path:
    root = os.environ.get("CKPTLINT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "ckptlint"
    )
    return Path(root) / "hf-models"


def base_class(model_type: str) -> str | None:
    """The class ``AutoModel`` builds for ``model_type``."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
    except Exception:  # an installed but broken transformers: no tier (b)
        return None
    name = MODEL_MAPPING_NAMES.get(model_type)
    return name if isinstance(name, str) else None


def _cache_path(content: dict[str, Any], name: str) -> Path | None:
    versions = _versions()
    if versions is None:
        return None
    key = json.dumps(
        {"config": content, "class": name, "versions": versions, "ckptlint": __version__}, sort_keys=True
    )
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def cached(content: dict[str, Any], name: str) -> bool:
    """Whether ``facts(content, name)`` is on disk already (then neither transformers nor torch is imported)."""
    path = _cache_path(content, name)
    return path is not None and path.is_file()


def facts(content: dict[str, Any], name: str) -> dict[str, Any]:
    """The model ``name`` builds from ``content`` (cached): ``introspect()``'s facts, or ``{"refused": reason}``."""
    path = _cache_path(content, name)
    if path is not None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    result = _build(content, name)
    if "unavailable" in result or path is None:
        return result
    try:  # the cache is an optimisation: a read-only home must not fail the check
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(result, f)
        os.replace(tmp, path)
    except OSError:
        pass
    return result


def _build(content: dict[str, Any], name: str) -> dict[str, Any]:
    from ckptlint.declared.hf_introspect import build_meta, introspect, model_class

    try:
        cls = model_class(name)
    except Exception as exc:  # transformers (or torch) installed but not importable here
        return {
            "unavailable": f"transformers cannot be imported here ({type(exc).__name__}: {exc})".splitlines()[
                0
            ]
        }
    if cls is None:
        import transformers

        return {"missing": f"transformers {transformers.__version__} has no model class {name}"}
    config_cls = cls.config_class
    doc = {k: v for k, v in content.items() if k not in SKIP}
    sub = getattr(config_cls, "base_config_key", None)
    if doc.get("model_type") != config_cls.model_type and sub and isinstance(doc.get(sub), dict):
        doc = dict(doc[sub])  # CLIPVisionModel from a CLIPModel config: its vision_config, as from_pretrained
    doc.pop("model_type", None)
    try:
        config = config_cls(**doc)
    except Exception as exc:  # the library refuses the config: that is the verdict (CK113)
        return {"refused": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    try:
        return introspect(build_meta(cls, config))
    except Exception as exc:
        return {
            "refused": f"{name}({config_cls.__name__}) fails: {type(exc).__name__}: {exc}".splitlines()[0]
        }


def _fields(content: dict[str, Any]) -> dict[str, Any]:
    """Every int or bool field of the config (one level of sub-configs), as CK113's parameters (path -> value)."""
    out: dict[str, Any] = {}
    for k, v in content.items():
        if k in SKIP or k.endswith("_token_id"):
            continue
        if isinstance(v, (bool, int)):
            out[k] = v
        elif isinstance(v, dict) and k.endswith("_config"):
            out.update(
                {
                    f"{k}.{kk}": vv
                    for kk, vv in v.items()
                    if isinstance(vv, (bool, int)) and not kk.endswith("_token_id")
                }
            )
    if isinstance(content.get("id2label"), dict):
        out["num_labels"] = len(content["id2label"])
    return out


def _apply(content: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(content))
    for path, value in overrides.items():
        if path == "num_labels":
            out["id2label"] = {str(i): f"LABEL_{i}" for i in range(int(value))}
            out["label2id"] = {f"LABEL_{i}": i for i in range(int(value))}
            continue
        node = out
        *subs, leaf = path.split(".")
        for s in subs:
            node = node.setdefault(s, {})
        node[leaf] = value
    return out


def expected(
    ckpt: Checkpoint | None,
    file: str,
    content: dict[str, Any],
    name: str,
    source: str,
    overrides: dict[str, Any] | None = None,
) -> Expected | Unchecked:
    """The expectation of tier (b) for the class ``name`` built from ``content`` (with ``overrides`` applied)."""
    built = _apply(content, overrides or {})
    fields = _fields(built)
    notes: dict[str, str] = {}
    huge = [p for p, v in fields.items() if _MODULE_COUNT.search(p) and type(v) is int and v > MAX_REPEAT]
    held = _numbered_blocks(ckpt) if ckpt is not None and len(huge) == 1 else None
    if huge and (held is None or huge[0].endswith("experts")):
        result = _too_many(fields, huge)
    elif huge:
        # as for a built-in family (``declared.hf``): built with one block more than the file holds, whose keys
        # are the first from_pretrained would report missing; CK113 names the field, the note says the rest
        (field, value), (count, prefix) = (huge[0], fields[huge[0]]), held  # type: ignore[misc]
        result = facts(_apply(built, {field: count + 1}), name)
        notes[field] = (
            f"from_pretrained would build all {value:,} blocks ({field} = {value}), if memory allowed: every block "
            f"past the file's {count} ({prefix}.0–{count - 1}) is missing and initialised randomly "
            f"({value - count:,} blocks); the raw diff lists the missing keys of block {count} only"
        )
    else:
        result = facts(built, name)
    if "missing" in result or "unavailable" in result:
        reason = result.get("missing") or result["unavailable"]
        return Unchecked(reason=f"{file} declares {name}: {reason}", declared_by=file)
    info = {
        "file": file,
        "kind": "hf-config",
        "class": name,
        "what": name,
        "model_type": content.get("model_type"),
        "tier": "transformers",
        "fields": {p: ("id2label" if p == "num_labels" else p) for p in fields},
        "given": sorted(fields),
        "counted": ["num_labels"] if "num_labels" in fields else [],
        "overrides": dict(overrides or {}),
        "refused": [{"fields": result.get("fields", []), "message": result["refused"]}]
        if "refused" in result
        else [],
        "notes": notes,
        "modalities": _modalities(content),
        "content": content,
    }
    dtype = declared_dtype(content) or file_dtype(ckpt)
    tensors = {
        k: ExpectedTensor(shape=tuple(shape), dtype=dtype if d in FLOATS and dtype else d)
        for k, (shape, d) in result.get("tensors", {}).items()
    }
    load = {}
    if "tensors" in result:
        load = {
            "kind": "transformers",
            "model_type": result.get("model_type"),
            "base_prefix": result["base_prefix"],
            "tied": result["tied"],
            "ignore_missing": result["ignore_missing"],
            "ignore_unexpected": result["ignore_unexpected"] + result["extra_unexpected"],
            "transforms": result["transforms"],
        }
    built_type = load.get("model_type") or content.get("model_type")  # --arch GPT2LMHeadModel: gpt2
    return Expected(
        arch=name,
        variant=None,
        source=source,  # type: ignore[arg-type]
        framework="hf",
        key_sep=".",
        tensors=tensors,
        params={**fields, "declared": info},
        description=f"transformers {built_type}, built by transformers on the meta device",
        declared_by=file if source == "declared" else None,
        declared_name=name,
        load=load,
    )


def _too_many(fields: dict[str, Any], huge: list[str]) -> dict[str, Any]:
    """The refusal of a config whose module counts ``huge`` are past what ckptlint builds (see ``_MODULE_COUNT``)
    when the weights do not tell the count (no numbered blocks, several groups, experts)."""
    said = " and ".join(f"{p} = {fields[p]}" for p in huge)
    return {
        "refused": f"{said}: more than ckptlint builds ({MAX_REPEAT}); from_pretrained would build every one of "
        "them before it reads a weight",
        "fields": huge,
    }


def _numbered_blocks(ckpt: Checkpoint) -> tuple[int, str] | None:
    """(N, prefix) when the weights number blocks 0…N-1 under one prefix (``transformer.h.0.…``) and nowhere else
    at the top of their keys; else None (no numbered blocks, or several groups: which one a field counts is not
    clear)."""
    groups: dict[str, set[int]] = {}
    for key in ckpt.tensors:
        parts = key.split(".")
        at = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        if at is not None:
            groups.setdefault(".".join(parts[:at]), set()).add(int(parts[at]))
    if len(groups) != 1:
        return None
    ((prefix, indices),) = groups.items()
    return (len(indices), prefix) if indices == set(range(len(indices))) else None


def _modalities(content: dict[str, Any]) -> list[str]:
    out = []
    if "text_config" in content or "vocab_size" in content:
        out.append("text")
    if "vision_config" in content or "image_size" in content:
        out.append("vision")
    if "num_mel_bins" in content or "audio_config" in content:
        out.append("audio")
    return out


def rebuild(ckpt: Checkpoint, info: dict[str, Any], overrides: dict[str, Any]) -> Expected | None:
    """The class of ``info`` (``params["declared"]``) built again from its config with ``overrides``."""
    result = expected(
        ckpt,
        info["file"],
        info["content"],
        info["class"],
        "declared",
        {**info.get("overrides", {}), **overrides},
    )
    return result if isinstance(result, Expected) else None
