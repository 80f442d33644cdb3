"""Layout detection (ckptlint.archs.detect.detect_layout) on the corpus and on files the libraries write at test time.

Every file is read back with the library that trusts it (torch.load(weights_only=True), safetensors, np.load without
pickles, flax msgpack) into a Checkpoint holding exactly the file's keys; when ckptlint's own reader for the format
is importable, it must give the same answer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tvshim  # noqa: F401  (must precede open_clip / timm)

# isort: split
import open_clip
import timm
import transformers

from ckptlint.archs.detect import LayoutGuess, detect_layout
from ckptlint.checkpoint import Checkpoint, Sidecar, tensor_info


# ---- trusted loaders -> Checkpoint -----------------------------------------------------------------------------
def _flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}."))
    elif isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj
    return out


def torch_file(path: Path) -> Checkpoint:
    obj = torch.load(path, weights_only=True, map_location="meta")
    tensors = {k: tensor_info(v.shape, str(v.dtype).removeprefix("torch.")) for k, v in _flatten(obj).items()}
    return Checkpoint(path=str(path), format="torch-zip", tensors=tensors)


def safetensors_file(path: Path, sidecars: list[Sidecar] | None = None) -> Checkpoint:
    from safetensors import safe_open

    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64"}
    with safe_open(path, "pt") as f:
        keys = list(f.keys())
        tensors = {
            k: tensor_info(f.get_slice(k).get_shape(), names[f.get_slice(k).get_dtype()]) for k in keys
        }
    return Checkpoint(path=str(path), format="safetensors", tensors=tensors, sidecars=sidecars or [])


def npz_file(path: Path) -> Checkpoint:
    with np.load(path, allow_pickle=False) as z:  # files written by this test or the read-only corpus
        tensors = {
            k: tensor_info(z[k].shape, "bfloat16" if z[k].dtype.str.endswith("V2") else z[k].dtype.name)
            for k in z.files
        }
    return Checkpoint(path=str(path), format="npz", key_sep="/", tensors=tensors)


def hf_dir(path: Path) -> Checkpoint:
    config = json.loads((path / "config.json").read_text())
    weights = path / "model.safetensors"
    ck = safetensors_file(weights) if weights.exists() else torch_file(path / "pytorch_model.bin")
    ck.sidecars = [Sidecar(name="config.json", kind="hf-config", content=config)]
    return ck


def with_ckptlint_reader(path: Path, ck: Checkpoint) -> None:
    """ckptlint's own reader (when it has landed) gives the same layout as the trusted loader."""
    try:
        from ckptlint.readers import read_checkpoint

        ours = read_checkpoint(path)
    except ImportError:
        return
    assert detect_layout(ours) == detect_layout(ck)


def assert_layout(ck: Checkpoint, name: str, root: str, towers: set[str], arch: str) -> LayoutGuess:
    guess = detect_layout(ck)
    assert (guess.name, guess.root, set(guess.towers_present), guess.arch) == (name, root, towers, arch), (
        guess
    )
    assert 0.5 <= guess.confidence <= 1.0
    assert guess.evidence and all(k in ck.tensors for k in guess.evidence)
    return guess


# ---- the corpus ------------------------------------------------------------------------------------------------
CORPUS_CASES = {
    "big_vision/tiny_clippo.npz": ("big_vision", "params/", {"vision"}, "clippo"),
    "big_vision/tiny_vit.npz": ("big_vision", "params/", {"vision"}, "bv-vit"),
    "big_vision/tiny_vit_bare.npz": ("big_vision", "", {"vision"}, "bv-vit"),
    "open_clip/openclip_tiny.pt": ("open_clip", "", {"vision", "text"}, "open_clip"),
    "open_clip/openclip_tiny_compile_orig_mod_prefix.pt": (
        "open_clip",
        "_orig_mod.",
        {"vision", "text"},
        "open_clip",
    ),
    "open_clip/openclip_tiny_ddp_module_prefix.pt": ("open_clip", "module.", {"vision", "text"}, "open_clip"),
    "open_clip/openclip_tiny_trainer_ckpt.pt": (
        "open_clip",
        "state_dict.module.",
        {"vision", "text"},
        "open_clip",
    ),
    "open_clip/openclip_tiny_customtext.pt": ("open_clip_custom_text", "", {"vision", "text"}, "open_clip"),
    "open_clip/openclip_tiny_fp16.safetensors": ("open_clip", "", {"vision", "text"}, "open_clip"),
    "timm/timm_vit_clip_tiny.safetensors": ("timm", "", {"vision"}, "timm-vit"),
    "hf/hf_clip_tiny": ("hf", "", {"vision", "text"}, "hf-clip"),
    "hf/hf_clip_tiny_bin": ("hf", "", {"vision", "text"}, "hf-clip"),
    "hf/hf_clip_tiny_old_position_ids": ("hf", "", {"vision", "text"}, "hf-clip"),
    "hf/hf_clipvision_tiny": ("hf_vision", "", {"vision"}, "hf-clip-vision"),
    "hf/hf_siglip_tiny": ("hf", "", {"vision", "text"}, "hf-siglip"),
}


def load_any(path: Path) -> Checkpoint:
    if path.is_dir():
        return hf_dir(path)
    if path.suffix == ".npz":
        return npz_file(path)
    if path.suffix == ".safetensors":
        return safetensors_file(path)
    return torch_file(path)


@pytest.mark.parametrize("rel", list(CORPUS_CASES))
def test_corpus_layouts(corpus: Path, rel: str) -> None:
    ck = load_any(corpus / rel)
    assert_layout(ck, *CORPUS_CASES[rel])
    with_ckptlint_reader(corpus / rel, ck)


def test_hf_arch_hint_without_config_uses_keys(corpus: Path) -> None:
    ck = safetensors_file(corpus / "hf" / "hf_siglip_tiny" / "model.safetensors")  # no config.json sidecar
    assert detect_layout(ck).arch == "hf-siglip"
    ck = safetensors_file(corpus / "hf" / "hf_clip_tiny" / "model.safetensors")
    assert detect_layout(ck).arch == "hf-clip"


def test_unknown_and_empty() -> None:
    assert detect_layout(Checkpoint(path="x", format="safetensors")).name == "unknown"
    lm = {f"model.layers.{i}.self_attn.q_proj.weight": tensor_info((8, 8), "float32") for i in range(3)}
    guess = detect_layout(Checkpoint(path="x", format="safetensors", tensors=lm))
    assert guess == LayoutGuess() and guess.arch is None


# ---- files the libraries write at test time, the ways users make them ----------------------------------------
@pytest.fixture(scope="module")
def oc_model(corpus: Path) -> torch.nn.Module:
    return open_clip.CLIP(**json.loads((corpus / "open_clip" / "ckptlint-tiny-ViT.json").read_text()))


def _trainer_dict(model: torch.nn.Module, key: str = "state_dict") -> dict[str, Any]:
    wrapped = torch.nn.DataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    return {"epoch": 1, key: wrapped.state_dict(), "optimizer": opt.state_dict()}


@pytest.mark.parametrize(
    ("how", "root"),
    [
        ("plain", ""),
        ("dataparallel", "module."),
        ("compile", "_orig_mod."),
        ("compile_then_dataparallel", "module._orig_mod."),
        ("trainer_state_dict", "state_dict.module."),
        ("trainer_model", "model.module."),
    ],
)
def test_open_clip_saved_the_ways_users_save(
    oc_model: torch.nn.Module, tmp_path: Path, how: str, root: str
) -> None:
    obj: Any
    if how == "plain":
        obj = oc_model.state_dict()
    elif how == "dataparallel":
        obj = torch.nn.DataParallel(oc_model).state_dict()
    elif how == "compile":
        obj = torch.compile(oc_model).state_dict()
    elif how == "compile_then_dataparallel":
        obj = torch.nn.DataParallel(torch.compile(oc_model)).state_dict()
    else:
        obj = _trainer_dict(oc_model, key=how.split("_", 1)[1])
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    ck = torch_file(path)
    assert_layout(ck, "open_clip", root, {"vision", "text"}, "open_clip")
    with_ckptlint_reader(path, ck)


def test_open_clip_custom_text_and_openai_layouts(corpus: Path, tmp_path: Path) -> None:
    cfg = json.loads((corpus / "open_clip" / "ckptlint-tiny-ViT.json").read_text())
    custom = open_clip.CustomTextCLIP(**cfg)
    open_clip.model.convert_weights_to_lp(custom)
    torch.save(custom.state_dict(), tmp_path / "custom.pt")
    assert_layout(
        torch_file(tmp_path / "custom.pt"), "open_clip_custom_text", "", {"vision", "text"}, "open_clip"
    )
    # OpenAI's state_dicts carry input_resolution / context_length / vocab_size next to the CLIP keys (open_clip's
    # build_model_from_openai_state_dict drops them), with fp16 weights
    openai_like = {
        "text_cfg": {**cfg["text_cfg"], "width": 64, "heads": 1, "mlp_ratio": 4.0},
        "vision_cfg": {**cfg["vision_cfg"], "mlp_ratio": 4.0},
    }
    clip = open_clip.CLIP(
        **{**cfg, **openai_like}
    )  # OpenAI's builder assumes heads = width // 64, mlp_ratio 4
    open_clip.model.convert_weights_to_lp(clip)
    sd = {
        **clip.state_dict(),
        "input_resolution": torch.tensor(32),
        "context_length": torch.tensor(16),
        "vocab_size": torch.tensor(100),
    }
    torch.save(sd, tmp_path / "openai.pt")
    ck = torch_file(tmp_path / "openai.pt")
    assert_layout(ck, "openai_clip", "", {"vision", "text"}, "open_clip")
    rebuilt = open_clip.model.build_model_from_openai_state_dict(
        dict(sd)
    )  # the loader accepts this very file
    assert {k for k in ck.tensors if k not in ("input_resolution", "context_length", "vocab_size")} == set(
        rebuilt.state_dict()
    )


def test_open_clip_visual_only_export(oc_model: torch.nn.Module, tmp_path: Path) -> None:
    sd = {k: v for k, v in oc_model.state_dict().items() if k.startswith("visual.")}
    torch.save(sd, tmp_path / "visual.pt")
    assert_layout(torch_file(tmp_path / "visual.pt"), "open_clip", "", {"vision"}, "open_clip")


@pytest.mark.parametrize(
    ("cls", "config_cls", "name", "towers", "arch"),
    [
        ("CLIPModel", "CLIPConfig", "hf", {"vision", "text"}, "hf-clip"),
        ("CLIPVisionModel", "CLIPVisionConfig", "hf_vision", {"vision"}, "hf-clip-vision"),
        ("SiglipModel", "SiglipConfig", "hf", {"vision", "text"}, "hf-siglip"),
        ("SiglipVisionModel", "SiglipVisionConfig", "hf_vision", {"vision"}, "hf-siglip-vision"),
    ],
)
def test_hf_save_pretrained(
    tmp_path: Path, cls: str, config_cls: str, name: str, towers: set[str], arch: str
) -> None:
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config_type = getattr(transformers, config_cls)
    if "Vision" in config_cls:
        config = config_type(**tiny, image_size=32, patch_size=8)
    else:
        config = config_type(
            text_config={**tiny, "vocab_size": 100, "max_position_embeddings": 16},
            vision_config={**tiny, "image_size": 32, "patch_size": 8},
        )
    getattr(transformers, cls)(config).save_pretrained(tmp_path)
    ck = hf_dir(tmp_path)
    assert_layout(ck, name, "", towers, arch)
    with_ckptlint_reader(tmp_path, ck)
    ck.sidecars = []  # the weights file alone
    assert detect_layout(ck).arch == arch


def test_hf_vision_saved_by_transformers_4_has_a_vision_model_prefix(tmp_path: Path) -> None:
    """transformers 4.x CLIPVisionModel files name keys vision_model.*; 5.x strips that prefix when loading."""
    model = transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    )
    from safetensors.torch import save_file

    save_file(
        {f"vision_model.{k}": v.contiguous() for k, v in model.state_dict().items()},
        tmp_path / "model.safetensors",
    )
    assert_layout(
        safetensors_file(tmp_path / "model.safetensors"),
        "hf_vision",
        "vision_model.",
        {"vision"},
        "hf-clip-vision",
    )


@pytest.mark.parametrize(
    ("model_name", "kwargs"),
    [
        ("vit_base_patch16_clip_224", {}),
        ("vit_base_patch16_siglip_224", {}),
        ("vit_base_patch16_224", {"global_pool": "avg", "class_token": False}),
    ],
)
def test_timm_saved(tmp_path: Path, model_name: str, kwargs: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    model = timm.create_model(
        model_name, img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, **kwargs
    )
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    assert_layout(safetensors_file(tmp_path / "model.safetensors"), "timm", "", {"vision"}, "timm-vit")
    torch.save(_trainer_dict(model, key="model"), tmp_path / "trainer.pth")
    assert_layout(torch_file(tmp_path / "trainer.pth"), "timm", "model.module.", {"vision"}, "timm-vit")


def test_open_clip_siglip_with_a_timm_trunk_is_not_timm() -> None:
    with torch.device("meta"):
        model = open_clip.create_model("ViT-B-16-SigLIP", device="meta")
    sd = model.state_dict()
    ck = Checkpoint(
        path="m", format="safetensors", tensors={k: tensor_info(v.shape, "float32") for k, v in sd.items()}
    )
    assert_layout(ck, "open_clip_custom_text", "", {"vision", "text"}, "open_clip")


# ---- big_vision files: npz (utils.save_checkpoint is np.savez of "/"-joined names) and flax msgpack ------------
@pytest.fixture(scope="module")
def clippo_arrays(corpus: Path) -> dict[str, np.ndarray]:
    with np.load(corpus / "big_vision" / "tiny_clippo.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_big_vision_params_only_and_bare(clippo_arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    params = {k: v for k, v in clippo_arrays.items() if k.startswith("params/")}
    np.savez(tmp_path / "params.npz", **params)
    assert_layout(npz_file(tmp_path / "params.npz"), "big_vision", "params/", {"vision"}, "clippo")
    bare = {k[len("params/") :]: v for k, v in params.items()}
    np.savez(tmp_path / "bare.npz", **bare)
    assert_layout(npz_file(tmp_path / "bare.npz"), "big_vision", "", {"vision"}, "clippo")
    img = {k[len("img/") :]: v for k, v in bare.items() if k.startswith("img/")}
    np.savez(tmp_path / "img.npz", **img)  # what params['img'] holds: a plain ViT
    assert_layout(npz_file(tmp_path / "img.npz"), "big_vision", "", {"vision"}, "bv-vit")
    old = {"opt/target/" + k: v for k, v in bare.items()}  # very old flax.optim checkpoints
    np.savez(tmp_path / "old.npz", **old)
    assert_layout(npz_file(tmp_path / "old.npz"), "big_vision", "opt/target/", {"vision"}, "clippo")


def test_big_vision_two_towers(clippo_arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    params = {k: v for k, v in clippo_arrays.items() if k.startswith("params/img/")}
    params.update(
        {
            "params/txt/Embed_0/embedding": np.zeros((100, 32), np.float32),
            "params/txt/pos_embedding": np.zeros((1, 16, 32), np.float32),
            "params/t": np.zeros(1, np.float32),
            "params/b": np.zeros(1, np.float32),
        }
    )
    np.savez(tmp_path / "siglip.npz", **params)
    assert_layout(npz_file(tmp_path / "siglip.npz"), "big_vision", "params/", {"vision", "text"}, "bv-siglip")


def test_big_vision_flax_msgpack(clippo_arrays: dict[str, np.ndarray], tmp_path: Path) -> None:
    from flax import serialization
    from flax.traverse_util import flatten_dict, unflatten_dict

    nested = unflatten_dict(
        {tuple(k.split("/")): v for k, v in clippo_arrays.items() if k.startswith("params/")}
    )
    (tmp_path / "params.msgpack").write_bytes(serialization.msgpack_serialize(nested))
    restored = serialization.msgpack_restore((tmp_path / "params.msgpack").read_bytes())
    tensors = {k: tensor_info(v.shape, v.dtype.name) for k, v in flatten_dict(restored, sep="/").items()}
    ck = Checkpoint(path="params.msgpack", format="flax-msgpack", key_sep="/", tensors=tensors)
    assert_layout(ck, "big_vision", "params/", {"vision"}, "clippo")
    with_ckptlint_reader(tmp_path / "params.msgpack", ck)


# ---- cost ------------------------------------------------------------------------------------------------------
def test_detection_is_linear() -> None:
    """A 20k-key checkpoint (a large model) is classified in linear time: a quadratic detector would take minutes
    (the limit catches that, not speed; speed is measured in benchmarks/)."""
    keys = {f"blocks.{i}.attn.qkv.weight": tensor_info((2304, 768), "float32") for i in range(20000)}
    keys["patch_embed.proj.weight"] = tensor_info((768, 3, 16, 16), "float32")
    ck = Checkpoint(path="big", format="safetensors", tensors=keys)
    start = time.perf_counter()
    guess = detect_layout(ck)
    assert time.perf_counter() - start < 30.0
    assert guess.name == "timm"
