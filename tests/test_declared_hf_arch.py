"""``--arch ClassName``: a transformers class, built from the folder's config.json (transformers as the oracle).

``ckptlint check FOLDER --arch X`` must report what ``X.from_pretrained(FOLDER, output_loading_info=True,
ignore_mismatched_sizes=True)`` reports: the base-model prefix stripped or added, a CLIP folder read by the vision
class through its ``vision_config`` (transformers' PrefixChange), a task head left over.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import ckptlint as run_cli
from hf_tiny import TINY, broken, clean, oracle
from safetensors.torch import save_file

import ckptlint

CASES = [
    ("llama", "LlamaForCausalLM"),  # the declared class itself
    ("llama", "LlamaModel"),  # a task model's folder into its base model: lm_head is unexpected
    ("bert", "BertModel"),
    ("clip", "CLIPVisionModel"),  # vision_config of a CLIPModel folder; vision_model. prefix removed on load
    ("clip", "CLIPTextModel"),
    ("siglip", "SiglipVisionModel"),
    ("vit", "ViTModel"),  # legacy names renamed on load, classifier unexpected
    ("t5", "T5EncoderModel"),
]


def _diff(folder: Path, arch: str) -> dict[str, set]:
    f = ckptlint.check(str(folder), arch=arch).files[0]
    assert f.arch is not None and f.arch.name == arch and f.arch.source == "flag"
    assert f.diff is not None
    return {
        "missing": set(f.diff.missing),
        "unexpected": set(f.diff.unexpected),
        "mismatched": {(m.key, tuple(m.actual), tuple(m.expected)) for m in f.diff.shape_mismatch},
    }


@pytest.mark.parametrize(("name", "arch"), CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_arch_class_name_equals_from_pretrained(name: str, arch: str) -> None:
    folder = clean(name)
    assert _diff(folder, arch) == oracle(folder, arch)


def test_arch_class_name_on_a_broken_folder_names_the_field(tmp_path: Path) -> None:
    folder = broken(TINY["qwen2"], clean("qwen2"), "kv_heads", tmp_path / "qwen2")
    proc = run_cli("check", str(folder), "--arch", "Qwen2ForCausalLM")
    assert proc.returncode == 1, proc.stdout
    assert "expected: Qwen2ForCausalLM" in proc.stdout
    assert "CK113" in proc.stdout and "num_key_value_heads = 4, but the weights hold 2" in proc.stdout
    assert _diff(folder, "Qwen2ForCausalLM") == oracle(folder, "Qwen2ForCausalLM")


def test_arch_class_name_without_a_config_reads_the_weights(tmp_path: Path) -> None:
    """A bare safetensors file: the parameters come from the shapes (the family's probes)."""
    import transformers

    tiny = TINY["llama"]
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**tiny.kwargs))
    path = tmp_path / "llama.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    f = ckptlint.check(str(path), arch="LlamaForCausalLM").files[0]
    assert f.diff is not None and not (f.diff.missing or f.diff.unexpected or f.diff.shape_mismatch)
    assert [x.code for x in f.findings if x.severity.value == "error"] == []
    one_layer_less = {k: v for k, v in model.state_dict().items() if ".layers.1." not in k}
    save_file({k: v.contiguous() for k, v in one_layer_less.items()}, str(path))
    f = ckptlint.check(str(path), arch="LlamaForCausalLM").files[0]
    assert f.diff is not None and not f.diff.missing  # one layer less reads as a one-layer model


def test_unknown_class_is_a_usage_error_naming_the_install() -> None:
    proc = run_cli("check", str(clean("llama")), "--arch", "FalconForCausalLM")
    assert proc.returncode == 2
    assert "FalconForCausalLM" in proc.stderr


def test_arch_class_name_without_a_config_takes_a_head_count_that_divides_the_width(tmp_path: Path) -> None:
    """ViT's attention is heads * (width // heads) wide and the weights do not show the head count: transformers'
    default (12 heads) does not divide the tiny model's width (32), and a model built with it cannot take the
    weights; ckptlint takes a head count that divides the width, and the file is what it is, a ViT."""
    import transformers

    tiny = TINY["vit"]
    model = transformers.ViTForImageClassification(transformers.ViTConfig(**tiny.kwargs))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "vit.safetensors"
    save_file(state, str(path))
    default_heads = transformers.ViTForImageClassification(
        transformers.ViTConfig(
            **{**tiny.kwargs, "num_attention_heads": transformers.ViTConfig().num_attention_heads}
        )
    )
    with pytest.raises(RuntimeError, match="size mismatch"):
        default_heads.load_state_dict(state)
    f = ckptlint.check(str(path), arch="ViTForImageClassification").files[0]
    assert f.diff is not None and not (f.diff.missing or f.diff.unexpected or f.diff.shape_mismatch)
    assert [x.code for x in f.findings if x.severity.value == "error"] == []
