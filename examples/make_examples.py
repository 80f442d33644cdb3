"""Write the tiny bundled example checkpoints with the real libraries (open_clip, timm, transformers).

Run: ``python examples/make_examples.py`` (needs the test extra). Each example is one real mistake from
the seed stories, at a size that fits in a repository. ``clippo_tiny.npz`` is not made here: big_vision
is not an installable package; it is the team's file written by big_vision's own code (commit fd2d3bd,
``utils.save_checkpoint``) — see README "Examples".
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

# isort: off
import tvshim  # noqa: E402,F401  (must precede open_clip: lets it import with CPU torch)

import open_clip  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPVisionModel,
    SiglipConfig,
    SiglipModel,
)
# isort: on

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 32,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 8,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 100,
        "width": 32,
        "heads": 2,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
}

# transformers towers of the same sizes (CLIP and SigLIP)
TINY_HF_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "max_position_embeddings": 16,
    "vocab_size": 100,
    "bos_token_id": 98,
    "eos_token_id": 99,
    "pad_token_id": 1,
}
TINY_HF_VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "image_size": 32,
    "patch_size": 8,
}


def tiny_open_clip() -> torch.nn.Module:
    """An open_clip CLIP with the tiny config above, registered under the name ``ckptlint-tiny``."""
    open_clip.factory._MODEL_CONFIGS["ckptlint-tiny"] = TINY_OPEN_CLIP
    torch.manual_seed(0)
    return open_clip.create_model("ckptlint-tiny")


def main() -> None:
    model = tiny_open_clip()
    # DDP-wrapped save: every key gets the `module.` prefix (what DistributedDataParallel's state_dict does).
    ddp_sd = {f"module.{k}": v for k, v in torch.nn.DataParallel(model).module.state_dict().items()}
    torch.save(ddp_sd, HERE / "openclip_tiny_ddp.pt")

    # timm's CLIP ViT holds only the vision tower (seed story 5).
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_base_patch16_clip_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
        num_classes=32,
    )
    save_file(vit.state_dict(), HERE / "timm_vit_clip_tiny.safetensors")

    # HF transformers CLIPModel saved with save_pretrained (seed story 3: the HF file, not the open_clip one).
    cfg = CLIPConfig(
        text_config=TINY_HF_TEXT,
        vision_config=TINY_HF_VISION,
        projection_dim=32,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(HERE / "hf_clip_tiny")
    # The vision tower alone, as transformers' CLIPVisionModel saves it (seed story 2: same ViT, other key names).
    torch.manual_seed(0)
    CLIPVisionModel(cfg.vision_config).save_pretrained(HERE / "hf_clipvision_tiny")

    # SigLIP saved as a bare weights file: no preprocessing metadata travels with it (seed story 4).
    siglip_cfg = SiglipConfig(
        text_config={**TINY_HF_TEXT, "projection_size": 32},
        vision_config=TINY_HF_VISION,
    )
    torch.manual_seed(0)
    siglip = SiglipModel(siglip_cfg)
    save_file(siglip.state_dict(), HERE / "siglip_tiny_local.safetensors")
    # ...and a SigLIP folder whose preprocessor carries CLIP's mean/std (what a copied CLIP processor does).
    siglip.save_pretrained(HERE / "siglip_tiny_clip_stats")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        HERE / "siglip_tiny_clip_stats"
    )
    declared_examples()
    for path in HERE.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    print("wrote examples to", HERE)


def declared_examples() -> None:
    """An open_clip hub folder whose open_clip_config.json no longer fits its weights, and weights of no known model."""
    import json

    from open_clip.push_to_hf_hub import save_config_for_hf

    model = tiny_open_clip()
    folder = HERE / "openclip_hub_context_length"
    folder.mkdir(exist_ok=True)
    # what open_clip's save_for_hf writes (less the tokenizer files), then context_length edited 16 -> 20
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    save_config_for_hf(model, folder / "open_clip_config.json", model_config=TINY_OPEN_CLIP)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"]["context_length"] = 20
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    # a small MLP's state_dict: no declaration, no layout ckptlint knows
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, HERE / "mlp.safetensors")


if __name__ == "__main__":
    main()
