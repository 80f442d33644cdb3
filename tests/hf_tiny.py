"""Tiny transformers models of many model types, saved with ``save_pretrained``, and broken declarations of them.

Each ``Tiny`` is a model class with a small config; each ``Edit`` changes the saved ``config.json`` (or saves the
base model's weights under the task class's config) the way a user might: a layer count edited by hand, a vocabulary
resized without the embeddings, the head count of another variant. Shared by the declared-expectation tests and the
benchmark; folders are written once per session.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tvshim  # noqa: F401  (transformers imports torchvision)

Config = dict[str, Any]


@dataclass
class Edit:
    change: Callable[[Config], None]
    fields: tuple[str, ...]  # the config field(s) CK113 may name (an ambiguous edit: either is the cause)
    base_weights: bool = False  # save the base model's weights under the task class's config


@dataclass
class Tiny:
    config: str
    cls: str
    kwargs: Config
    edits: dict[str, Edit] = field(default_factory=dict)
    base: str | None = None  # the base model class (for the "base weights under a task config" edit)


def _set(path: str, value: Any) -> Callable[[Config], None]:
    def change(c: Config) -> None:
        node = c
        *subs, leaf = path.split(".")
        for s in subs:
            node = node.setdefault(s, {})
        node[leaf] = value(node.get(leaf)) if callable(value) else value

    return change


def _more(path: str, n: int = 1) -> Edit:
    return Edit(_set(path, lambda v: v + n), (path,))


def _labels(n: int) -> Edit:
    def change(c: Config) -> None:
        c["id2label"] = {str(i): f"L{i}" for i in range(n)}
        c["label2id"] = {f"L{i}": i for i in range(n)}

    return Edit(change, ("id2label",))


LLM = dict(
    hidden_size=64,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=96,
    max_position_embeddings=64,
    pad_token_id=1,
    bos_token_id=1,
    eos_token_id=1,
)
LAYER_TYPES = Edit(_set("layer_types", ["full_attention"] * 3), ("layer_types", "num_hidden_layers"))
VISION = dict(
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)
TEXT = dict(
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    vocab_size=64,
    max_position_embeddings=16,
)

TINY: dict[str, Tiny] = {
    "llama": Tiny(
        "LlamaConfig",
        "LlamaForCausalLM",
        LLM,
        {
            "layers": _more("num_hidden_layers"),
            "vocab": Edit(_set("vocab_size", 160), ("vocab_size",)),
            "kv_heads": Edit(_set("num_key_value_heads", 4), ("num_key_value_heads",)),
            "layer_types": LAYER_TYPES,
            "base_weights": Edit(lambda c: None, ("architectures",), base_weights=True),
        },
        base="LlamaModel",
    ),
    "mistral": Tiny(
        "MistralConfig",
        "MistralForCausalLM",
        {**LLM, "head_dim": 16},
        {
            "layers": _more("num_hidden_layers"),
            "heads": Edit(_set("num_attention_heads", 8), ("num_attention_heads", "head_dim")),
            "intermediate": _more("intermediate_size", 16),
        },
    ),
    "qwen2": Tiny(
        "Qwen2Config",
        "Qwen2ForCausalLM",
        LLM,
        {
            "layers": _more("num_hidden_layers"),
            "vocab": _more("vocab_size", 32),
            "kv_heads": Edit(_set("num_key_value_heads", 4), ("num_key_value_heads",)),
        },
    ),
    "qwen3": Tiny(
        "Qwen3Config",
        "Qwen3ForCausalLM",
        {**LLM, "head_dim": 16},
        {
            "layers": _more("num_hidden_layers"),
            "head_dim": Edit(_set("head_dim", 8), ("head_dim",)),
            "hidden": Edit(_set("hidden_size", 96), ("hidden_size",)),
            "layer_types": LAYER_TYPES,
        },
    ),
    "gemma2": Tiny(
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {**LLM, "head_dim": 16},
        {
            "untied": Edit(_set("tie_word_embeddings", False), ("tie_word_embeddings",)),
            "layers": _more("num_hidden_layers"),
            "kv_heads": Edit(_set("num_key_value_heads", 1), ("num_key_value_heads",)),
            "layer_types": LAYER_TYPES,
        },
    ),
    "gemma3_text": Tiny(
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {**LLM, "head_dim": 16},
        {
            "layers": _more("num_hidden_layers"),
            "vocab": _more("vocab_size", 32),
            "kv_heads": Edit(_set("num_key_value_heads", 4), ("num_key_value_heads",)),
        },
    ),
    "phi3": Tiny(
        "Phi3Config",
        "Phi3ForCausalLM",
        LLM,
        {
            "layers": _more("num_hidden_layers"),
            "kv_heads": Edit(_set("num_key_value_heads", 4), ("num_key_value_heads",)),
            "vocab": _more("vocab_size", 32),
        },
    ),
    "mixtral": Tiny(
        "MixtralConfig",
        "MixtralForCausalLM",
        {**LLM, "num_local_experts": 3},
        {
            "experts": _more("num_local_experts"),
            "layers": _more("num_hidden_layers"),
            "vocab": _more("vocab_size", 32),
        },
    ),
    "bert": Tiny(
        "BertConfig",
        "BertForSequenceClassification",
        dict(
            hidden_size=32,
            intermediate_size=40,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=64,
            max_position_embeddings=32,
            num_labels=2,
        ),
        {
            "labels": _labels(3),
            "layers": _more("num_hidden_layers"),
            "positions": _more("max_position_embeddings", 8),
            "base_weights": Edit(lambda c: None, ("architectures",), base_weights=True),
        },
        base="BertModel",
    ),
    "clip": Tiny(
        "CLIPConfig",
        "CLIPModel",
        dict(text_config=TEXT, vision_config=VISION, projection_dim=16),
        {
            "image_size": Edit(_set("vision_config.image_size", 48), ("vision_config.image_size",)),
            "text_vocab": _more("text_config.vocab_size", 16),
            "vision_layers": _more("vision_config.num_hidden_layers"),
            "projection": Edit(_set("projection_dim", 24), ("projection_dim",)),
        },
    ),
    "siglip": Tiny(
        "SiglipConfig",
        "SiglipModel",
        dict(text_config=TEXT, vision_config=VISION),
        {
            "patch": Edit(_set("vision_config.patch_size", 4), ("vision_config.patch_size",)),
            "text_positions": _more("text_config.max_position_embeddings", 4),
            "no_head": Edit(_set("vision_config.vision_use_head", False), ("vision_config.vision_use_head",)),
        },
    ),
    "t5": Tiny(
        "T5Config",
        "T5ForConditionalGeneration",
        dict(d_model=32, d_kv=8, d_ff=40, num_layers=2, num_decoder_layers=1, num_heads=4, vocab_size=64),
        {
            "layers": _more("num_layers"),
            "d_kv": Edit(_set("d_kv", 16), ("d_kv",)),
            "vocab": _more("vocab_size", 16),
            "decoder_layers": _more("num_decoder_layers"),
        },
    ),
    "vit": Tiny(
        "ViTConfig",
        "ViTForImageClassification",
        {**VISION, "num_labels": 3},
        {
            "image_size": Edit(_set("image_size", 48), ("image_size",)),
            "patch": Edit(_set("patch_size", 4), ("patch_size",)),
            "labels": _labels(5),
            "base_weights": Edit(lambda c: None, ("architectures",), base_weights=True),
        },
        base="ViTModel",
    ),
    "dinov2": Tiny(
        "Dinov2Config",
        "Dinov2Model",
        dict(VISION, intermediate_size=None, mlp_ratio=2),
        {
            "image_size": Edit(_set("image_size", 48), ("image_size",)),
            "layers": _more("num_hidden_layers"),
            "patch": Edit(_set("patch_size", 4), ("patch_size",)),
        },
    ),
    "whisper": Tiny(
        "WhisperConfig",
        "WhisperForConditionalGeneration",
        dict(
            d_model=32,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=40,
            decoder_ffn_dim=40,
            vocab_size=64,
            num_mel_bins=8,
            max_source_positions=16,
            max_target_positions=16,
            pad_token_id=1,
            bos_token_id=1,
            eos_token_id=1,
            decoder_start_token_id=1,
        ),
        {
            "mel_bins": Edit(_set("num_mel_bins", 16), ("num_mel_bins",)),
            "encoder_layers": _more("encoder_layers"),
            "source_positions": _more("max_source_positions", 8),
        },
    ),
}


def _clean(kwargs: Config) -> Config:
    return {k: v for k, v in kwargs.items() if v is not None}


def save(tiny: Tiny, folder: Path, cls_name: str | None = None) -> Path:
    """``save_pretrained`` of ``tiny``'s model (or of ``cls_name`` with the same config), seeded."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, tiny.config)(**_clean(tiny.kwargs))
    model = getattr(transformers, cls_name or tiny.cls)(config)
    model.save_pretrained(folder)
    return folder


_CLEAN: dict[str, Path] = {}


def clean(name: str) -> Path:
    """The clean folder of ``TINY[name]``, written once per process (removed at exit)."""
    if name not in _CLEAN:
        if not _CLEAN:
            root = Path(tempfile.mkdtemp(prefix="ckptlint-hf-"))
            atexit.register(shutil.rmtree, root, True)
            _CLEAN["<root>"] = root
        _CLEAN[name] = save(TINY[name], _CLEAN["<root>"] / name)
    return _CLEAN[name]


def edited(name: str, folder: Path, change: dict[str, Any]) -> Path:
    """A copy of the clean folder of ``TINY[name]`` with config.json fields set (``{"text_config.x": 3}``)."""
    shutil.copytree(clean(name), folder)
    config = json.loads((folder / "config.json").read_text())
    for path, value in change.items():
        node = config
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def broken(tiny: Tiny, clean: Path, name: str, folder: Path) -> Path:
    """A copy of the clean folder with ``tiny.edits[name]`` applied to its config.json (or its weights)."""
    edit = tiny.edits[name]
    if edit.base_weights:
        assert tiny.base is not None
        save(tiny, folder, tiny.base)
        path = folder / "config.json"
        config = json.loads(path.read_text())
        config["architectures"] = [tiny.cls]
        path.write_text(json.dumps(config, indent=2))
        return folder
    shutil.copytree(clean, folder)
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit.change(config)
    path.write_text(json.dumps(config, indent=2))
    return folder


def oracle(folder: Path, cls_name: str) -> dict[str, Any]:
    """transformers' own verdict: its loading info (missing, unexpected, mismatched), or the error it raises."""
    import transformers

    cls = getattr(transformers, cls_name)
    try:
        _, info = cls.from_pretrained(folder, output_loading_info=True, ignore_mismatched_sizes=True)
    except Exception as exc:  # the config is refused
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "missing": set(info["missing_keys"]),
        "unexpected": set(info["unexpected_keys"]),
        "mismatched": {(k, tuple(a), tuple(e)) for k, a, e in info["mismatched_keys"]},
    }


def check_folder(folder: Path, arch: str | None = None) -> Any:
    """ckptlint's FileReport of ``folder`` (read without error)."""
    import ckptlint

    (f,) = ckptlint.check(str(folder), arch=arch).files
    assert f.error is None
    return f


def errors(f: Any) -> list[tuple[str, str]]:
    """(code, message) of the report's error findings."""
    return [(x.code, x.message) for x in f.findings if x.severity.value == "error"]
