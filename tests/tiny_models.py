"""Tiny real models of each library, shared by the reader and security tests."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_models(corpus: Path) -> dict[str, torch.nn.Module]:
    """open_clip (the corpus' tiny config), timm CLIP ViT and transformers CLIPModel at tiny sizes, seeded."""
    import open_clip
    import timm
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    open_clip.add_model_config(corpus / "open_clip" / "ckptlint-tiny-ViT.json")
    text = dict(
        hidden_size=32, intermediate_size=37, num_attention_heads=2, num_hidden_layers=2, vocab_size=99
    )
    text.update(max_position_embeddings=16, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    vision = dict(hidden_size=32, image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2)
    timm_kwargs = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=16)
    hf_cfg = CLIPConfig(text_config=text, vision_config=dict(vision, intermediate_size=37), projection_dim=16)
    return {
        "open_clip": open_clip.create_model("ckptlint-tiny-ViT"),
        "timm": timm.create_model("vit_base_patch16_clip_224", pretrained=False, **timm_kwargs),
        "hf_clip": CLIPModel(hf_cfg),
    }
