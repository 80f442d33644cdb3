"""Helpers for the ``ckptlint convert`` tests: tiny models written by the real libraries, fixed inputs, output
comparison. Import this module before open_clip/timm (it imports ``tvshim`` through ``engine_support``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import engine_support  # (imports tvshim before open_clip / timm)
import numpy as np
import torch

from ckptlint.api import check_files

CORPUS = engine_support.CORPUS
ATOL = 1e-5


def image(size: int = 32, n: int = 2, seed: int = 1) -> torch.Tensor:
    """A fixed batch of images (NCHW, float32, roughly normalised)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def tokens(vocab: int, length: int, n: int = 3, seed: int = 2, eos: int | None = None) -> torch.Tensor:
    """Fixed token ids: random ids below ``eos`` (default vocab - 1), an ``eos`` at varying positions, 0 after it;
    so argmax pooling and eos pooling pick the same position."""
    eos = vocab - 1 if eos is None else eos
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        end = 3 + (i * 5) % (length - 3)
        out[i, :end] = torch.randint(1, eos, (end,), generator=g)
        out[i, end] = eos
    return out


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    """Equal to ``atol`` (absolute), with the largest difference in the message."""
    a, b = a.detach().float(), b.detach().float()
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    assert diff <= atol, f"max difference {diff:.3g} > {atol}"


def same_tensors(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    """Key by key and value by value (bit for bit)."""
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:10]
    for k in a:
        assert a[k].shape == b[k].shape, (k, a[k].shape, b[k].shape)
        assert torch.equal(a[k].detach().cpu(), b[k].detach().cpu()), k


def errors(out: Path, arch: str) -> list[str]:
    """Error-level findings of ``check`` on ``out`` as ``arch``."""
    report = check_files([str(out)], arch=arch)
    return [
        f"{f.code} {f.message}" for fr in report.files for f in fr.findings if f.severity.value == "error"
    ]


class WordTokenizer:
    """A real ``tokenizers`` tokenizer (word level, tiny vocab) with ``save_pretrained``: what open_clip's
    ``save_for_hf`` writes next to the weights."""

    def __init__(self, vocab: int) -> None:
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from tokenizers.pre_tokenizers import Whitespace

        words = {f"w{i}": i for i in range(vocab)}
        self.tok = Tokenizer(WordLevel(words, unk_token="w0"))
        self.tok.pre_tokenizer = Whitespace()

    def save_pretrained(self, folder: str | Path) -> None:
        self.tok.save(str(Path(folder) / "tokenizer.json"))


def open_clip_folder(
    folder: Path, *, quick_gelu: bool = True, preprocess: dict[str, Any] | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A tiny open_clip CLIP saved as a hub folder by open_clip's own ``save_for_hf``; returns (model, config)."""
    import open_clip
    from open_clip.push_to_hf_hub import save_for_hf

    open_clip.add_model_config(CORPUS / "open_clip" / "ckptlint-tiny-ViT.json")
    cfg = json.loads((CORPUS / "open_clip" / "ckptlint-tiny-ViT.json").read_text())
    if quick_gelu:
        cfg["quick_gelu"] = True
    torch.manual_seed(0)
    model = open_clip.create_model(
        "ckptlint-tiny-ViT", force_quick_gelu=quick_gelu, force_preprocess_cfg=preprocess or {}
    ).eval()
    save_for_hf(
        model, WordTokenizer(cfg["text_cfg"]["vocab_size"]), cfg, str(folder), safe_serialization=True
    )
    return model, cfg


def numpy_state(sd: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


# ---- big_vision (the replica of tests/bv_replica.py computes big_vision's function) ------------------------------
def bv_params(npz: Path, root: str) -> Any:
    """The flax params tree under ``root`` of an npz, as big_vision's load_params gives it."""
    import jax.numpy as jnp
    from flax.traverse_util import unflatten_dict

    with np.load(npz) as z:
        flat = {tuple(k[len(root) :].split("/")): jnp.asarray(z[k]) for k in z.files if k.startswith(root)}
    return unflatten_dict(flat)


def nhwc(x: torch.Tensor) -> Any:
    import jax.numpy as jnp

    return jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def to_torch(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(a))


def siglip_config(scan: bool = False) -> dict[str, dict[str, Any]]:
    import bv_replica as bv

    return {tower: {**cfg, "scan": scan} for tower, cfg in bv.SIGLIP_TINY.items()}


def write_siglip_npz(path: Path, scan: bool = False) -> Path:
    """A tiny SigLIP two-towers checkpoint as big_vision saves params (flattened with '/', np.savez); ``scan``:
    the blocks stacked, as big_vision's scan=True (and its SigLIP releases) save them."""
    import bv_replica as bv
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict

    model = bv.TwoTowers(**siglip_config(scan))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 16), jnp.int32))[
        "params"
    ]
    np.savez(path, **{k: np.asarray(v) for k, v in flatten_dict({"params": params}, sep="/").items()})
    return path


def siglip_reference(npz: Path, scan: bool = False) -> dict[str, torch.Tensor]:
    """big_vision's outputs on the fixed inputs (image(), tokens(100, 16)): raw and normalised embeddings, t, b and
    two_towers' sigmoid logits."""
    import bv_replica as bv
    import jax.numpy as jnp

    x, t = image(), tokens(100, 16)
    out = bv.TwoTowers(**siglip_config(scan)).apply(
        {"params": bv_params(npz, "params/")}, nhwc(x), jnp.asarray(t.numpy())
    )
    ref = {k: to_torch(v) for k, v in zip(("zimg", "ztxt", "nimg", "ntxt", "t", "b"), out, strict=True)}
    ref["logits"] = ref["ntxt"] @ ref["nimg"].T * ref["t"].exp() + ref["b"]
    return ref


TRUNK = "ckptlint_test_siglip_tiny"  # a timm model of the tiny SigLIP image tower (open_clip builds trunks by name)


def tiny_siglip_trunk() -> str:
    """The tiny SigLIP image tower registered as a timm model name, with big_vision's tanh GELU."""
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    if not timm.is_model(TRUNK):

        def ckptlint_test_siglip_tiny(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
            args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)
            args.update(class_token=False, global_pool="map", act_layer="gelu_tanh")
            for k in (
                "pretrained_cfg",
                "pretrained_cfg_overlay",
                "cache_dir",
            ):  # create_model's, not the model's
                kwargs.pop(k, None)
            return VisionTransformer(**{**args, **kwargs})

        register_model(ckptlint_test_siglip_tiny)
    return TRUNK
