"""The transformers families ckptlint ships built in (tier a), and how to sample their configurations.

Each ``Family`` is one generated file ``rules/archs/<file>.toml``; each ``Group`` is one config class and the
model classes built from it. ``ints`` / ``bools`` / ``strings`` are the config fields varied when fitting (the
knobs: every field that changes a shape or a key must be one; ``scripts/gen_hf_families.py`` fails when perturbing
another field changes the model), with the values tried; ``derived`` are helper parameters the config does not
store (Phi-3's head_dim); ``parents`` lets a sub-config class be read from its parent's config.json
(``CLIPVisionModel`` from a CLIPModel folder's ``vision_config``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

LAYERS = [1, 2, 3]
LABELS = [2, 3, 5]
TOKENS = {"pad_token_id": 1, "bos_token_id": 1, "eos_token_id": 1}  # inside every sampled vocabulary


@dataclass
class Group:
    config: str
    classes: list[str]
    ints: dict[str, list[int]]
    bools: list[str] = field(default_factory=list)
    strings: dict[str, list[str]] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    parents: dict[str, str] = field(
        default_factory=dict
    )  # parent model_type -> path prefix ("vision_config.")
    fixed: dict[str, Any] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=lambda: ["text"])  # what the model takes in


@dataclass
class Family:
    file: str
    title: str
    module: str  # transformers/models/<module>
    groups: list[Group]


def param_name(path: str) -> str:
    """A config path as a parameter name: ``text_config.hidden_size`` -> ``text_hidden_size``."""
    if "." not in path:
        return path
    sub, _, leaf = path.rpartition(".")
    return f"{sub.removesuffix('_config')}_{leaf}"


def decoder_llm(prefix: str, extra_bools: tuple[str, ...] = (), head_dim: bool = True) -> Group:
    ints = {
        "vocab_size": [64, 90, 100, 130],
        "hidden_size": [24, 40, 48, 72],
        "intermediate_size": [20, 36, 52],
        "num_hidden_layers": LAYERS,
        "num_attention_heads": [2, 3, 4, 6],
        "num_key_value_heads": [1, 2, 3],
        "num_labels": LABELS,
    }
    if head_dim:
        ints["head_dim"] = [8, 10, 14]
    classes = [
        f"{prefix}{s}"
        for s in (
            "Model",
            "ForCausalLM",
            "ForSequenceClassification",
            "ForTokenClassification",
            "ForQuestionAnswering",
        )
    ]
    return Group(f"{prefix}Config", classes, ints, ["tie_word_embeddings", *extra_bools])


def _clip_like(
    prefix: str, vision_bools: tuple[str, ...] = (), extra_classes: tuple[str, ...] = ()
) -> list[Group]:
    text = {
        "vocab_size": [64, 90, 100],
        "hidden_size": [24, 48],
        "intermediate_size": [20, 36, 52],
        "num_hidden_layers": LAYERS,
        "num_attention_heads": [2, 3, 4],
        "max_position_embeddings": [16, 20, 24],
    }
    vision = {
        "hidden_size": [24, 36, 48],
        "intermediate_size": [20, 36, 52],
        "num_hidden_layers": LAYERS,
        "num_attention_heads": [2, 3, 4],
        "image_size": [24, 32, 48],
        "patch_size": [4, 8, 12],
        "num_channels": [1, 3],
    }
    t = prefix.lower()
    whole = {
        **{f"text_config.{k}": v for k, v in text.items()},
        **{f"vision_config.{k}": v for k, v in vision.items()},
    }
    extra: dict[str, list[int]] = {"num_labels": LABELS}
    if prefix == "CLIP":
        extra["projection_dim"] = [8, 16, 20]
    return [
        Group(
            f"{prefix}Config",
            [f"{prefix}Model", f"{prefix}ForImageClassification", *extra_classes],
            {**whole, **extra},
            [f"vision_config.{b}" for b in vision_bools],
            modalities=["text", "vision"],
        ),
        Group(
            f"{prefix}TextConfig",
            [f"{prefix}TextModel"] + ([f"{prefix}TextModelWithProjection"] if prefix == "CLIP" else []),
            {**text, **({"projection_dim": [8, 16, 20]} if prefix == "CLIP" else {})},
            parents={t: "text_config."},
        ),
        Group(
            f"{prefix}VisionConfig",
            [f"{prefix}VisionModel"] + ([f"{prefix}VisionModelWithProjection"] if prefix == "CLIP" else []),
            {**vision, **({"projection_dim": [8, 16, 20]} if prefix == "CLIP" else {})},
            list(vision_bools),
            parents={t: "vision_config."},
            modalities=["vision"],
        ),
    ]


FAMILIES: dict[str, Family] = {
    "llama": Family(
        "hf-llama", "transformers Llama", "llama", [decoder_llm("Llama", ("attention_bias", "mlp_bias"))]
    ),
    "mistral": Family("hf-mistral", "transformers Mistral", "mistral", [decoder_llm("Mistral")]),
    "qwen2": Family(
        "hf-qwen2",
        "transformers Qwen2",
        "qwen2",
        [
            Group(
                "Qwen2Config",
                decoder_llm("Qwen2").classes,
                decoder_llm("Qwen2", head_dim=False).ints,
                ["tie_word_embeddings"],
                derived={"head_dim": "hidden_size // num_attention_heads"},
            )
        ],
    ),
    "qwen3": Family("hf-qwen3", "transformers Qwen3", "qwen3", [decoder_llm("Qwen3", ("attention_bias",))]),
    "gemma2": Family(
        "hf-gemma2", "transformers Gemma 2", "gemma2", [decoder_llm("Gemma2", ("attention_bias",))]
    ),
    "gemma3_text": Family(
        "hf-gemma3",
        "transformers Gemma 3 (text)",
        "gemma3",
        [
            Group(
                "Gemma3TextConfig",
                ["Gemma3TextModel", "Gemma3ForCausalLM"],
                {k: v for k, v in decoder_llm("Gemma3").ints.items() if k != "num_labels"},
                ["tie_word_embeddings", "attention_bias"],
            ),
        ],
    ),
    "phi3": Family(
        "hf-phi3",
        "transformers Phi-3",
        "phi3",
        [
            Group(
                "Phi3Config",
                decoder_llm("Phi3").classes[:4],
                {k: v for k, v in decoder_llm("Phi3", head_dim=False).ints.items()},
                ["tie_word_embeddings"],
                derived={"head_dim": "hidden_size // num_attention_heads"},
                fixed=TOKENS,
            ),
        ],
    ),
    "mixtral": Family(
        "hf-mixtral",
        "transformers Mixtral",
        "mixtral",
        [
            Group(
                "MixtralConfig",
                decoder_llm("Mixtral").classes,
                {**decoder_llm("Mixtral").ints, "num_local_experts": [2, 3, 4]},
                ["tie_word_embeddings"],
            ),
        ],
    ),
    "bert": Family(
        "hf-bert",
        "transformers BERT",
        "bert",
        [
            Group(
                "BertConfig",
                [
                    "BertModel",
                    "BertForMaskedLM",
                    "BertForSequenceClassification",
                    "BertForTokenClassification",
                    "BertForQuestionAnswering",
                    "BertForPreTraining",
                    "BertForNextSentencePrediction",
                    "BertForMultipleChoice",
                    "BertLMHeadModel",
                ],
                {
                    "vocab_size": [64, 90, 100],
                    "hidden_size": [24, 48, 72],
                    "num_hidden_layers": LAYERS,
                    "num_attention_heads": [2, 3, 4],
                    "intermediate_size": [20, 36, 52],
                    "max_position_embeddings": [32, 40, 64],
                    "type_vocab_size": [1, 2, 3],
                    "num_labels": LABELS,
                },
                ["tie_word_embeddings"],
            ),
        ],
    ),
    "clip": Family("hf-clip-models", "transformers CLIP", "clip", _clip_like("CLIP")),
    "siglip": Family(
        "hf-siglip-models", "transformers SigLIP", "siglip", _clip_like("Siglip", ("vision_use_head",))
    ),
    "t5": Family(
        "hf-t5",
        "transformers T5",
        "t5",
        [
            Group(
                "T5Config",
                [
                    "T5Model",
                    "T5ForConditionalGeneration",
                    "T5EncoderModel",
                    "T5ForSequenceClassification",
                    "T5ForTokenClassification",
                    "T5ForQuestionAnswering",
                ],
                {
                    "vocab_size": [64, 90, 100],
                    "d_model": [24, 48],
                    "d_kv": [6, 8, 10],
                    "d_ff": [20, 36, 52],
                    "num_layers": LAYERS,
                    "num_decoder_layers": LAYERS,
                    "num_heads": [2, 3, 4],
                    "relative_attention_num_buckets": [8, 16, 32],
                    "num_labels": LABELS,
                },
                ["tie_word_embeddings"],
                {"feed_forward_proj": ["relu", "gated-gelu"]},
            ),
        ],
    ),
    "vit": Family(
        "hf-vit",
        "transformers ViT",
        "vit",
        [
            Group(
                "ViTConfig",
                ["ViTModel", "ViTForImageClassification", "ViTForMaskedImageModeling"],
                {
                    "hidden_size": [24, 36, 40, 48],
                    "num_hidden_layers": LAYERS,
                    # 5 and 3 divide not every width: the attention is heads * (width // heads) wide
                    "num_attention_heads": [2, 3, 4, 5],
                    "intermediate_size": [20, 36, 52],
                    "image_size": [24, 32, 48],
                    "patch_size": [4, 8, 12],
                    "num_channels": [1, 3],
                    "encoder_stride": [4, 8, 12],
                    "num_labels": LABELS,
                },
                ["qkv_bias"],
                modalities=["vision"],
            ),
        ],
    ),
    "dinov2": Family(
        "hf-dinov2",
        "transformers DINOv2",
        "dinov2",
        [
            Group(
                "Dinov2Config",
                ["Dinov2Model", "Dinov2ForImageClassification"],
                {
                    "hidden_size": [24, 36, 40, 48],
                    "num_hidden_layers": LAYERS,
                    # 5 and 3 divide not every width: the attention is heads * (width // heads) wide
                    "num_attention_heads": [2, 3, 4, 5],
                    "mlp_ratio": [2, 3, 4],
                    "image_size": [24, 32, 48],
                    "patch_size": [4, 8, 12],
                    "num_channels": [1, 3],
                    "num_labels": LABELS,
                },
                ["qkv_bias", "use_swiglu_ffn"],
                derived={
                    "mlp_dim": "int(hidden_size * mlp_ratio)",
                    "swiglu_dim": "(int(int(hidden_size * mlp_ratio) * 2 / 3) + 7) // 8 * 8",
                },
                modalities=["vision"],
            ),
        ],
    ),
    "whisper": Family(
        "hf-whisper",
        "transformers Whisper",
        "whisper",
        [
            Group(
                "WhisperConfig",
                ["WhisperModel", "WhisperForConditionalGeneration", "WhisperForAudioClassification"],
                {
                    "vocab_size": [64, 90, 100],
                    "num_mel_bins": [8, 10, 16],
                    "encoder_layers": LAYERS,
                    "encoder_attention_heads": [2, 3, 4],
                    "decoder_layers": LAYERS,
                    "decoder_attention_heads": [2, 3, 4],
                    "encoder_ffn_dim": [20, 36, 52],
                    "decoder_ffn_dim": [20, 36, 52],
                    "d_model": [24, 48, 72],
                    "max_source_positions": [16, 20, 24],
                    "max_target_positions": [16, 20, 24],
                    "classifier_proj_size": [8, 12, 16],
                    "num_labels": LABELS,
                },
                ["tie_word_embeddings"],
                fixed={**TOKENS, "decoder_start_token_id": 1},
                modalities=["audio", "text"],
            ),
        ],
    ),
}


def sample_values(group: Group, rng: random.Random) -> dict[str, Any]:
    """One random configuration of the knobs (config paths -> values)."""
    values: dict[str, Any] = {k: rng.choice(v) for k, v in group.ints.items()}
    values.update({b: rng.random() < 0.5 for b in group.bools})
    values.update({s: rng.choice(v) for s, v in group.strings.items()})
    return values


def config_kwargs(values: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Config-class keyword arguments for knob values (``text_config.x`` goes into the ``text_config`` dict)."""
    out: dict[str, Any] = dict(fixed)
    for path, value in values.items():
        node = out
        *subs, leaf = path.split(".")
        for sub in subs:
            node = node.setdefault(sub, {})
        node[leaf] = value
    return out


def make_config(group: Group, values: dict[str, Any]) -> Any:
    """The group's config class at knob values (transformers may refuse them: it raises)."""
    import transformers

    return getattr(transformers, group.config)(**config_kwargs(values, group.fixed))


def env_of(group: Group, values: dict[str, Any]) -> dict[str, Any]:
    """Knob values as parameters (``text_config.hidden_size`` -> ``text_hidden_size``), the derived ones added."""
    from ckptlint.archs.expr import evaluate

    env = {param_name(k): v for k, v in values.items()}
    for name, src in group.derived.items():
        env[name] = evaluate(src, env)
    return env
