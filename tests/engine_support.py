"""Helpers for the rule-engine tests: tiny real models, the frameworks' own load reports, files on disk.

Ground truth always comes from the libraries: expectations are real models' ``state_dict()`` (or clean
reference checkpoints read back), and the raw diff is compared with what ``load_state_dict`` itself reports.
Import this module before open_clip/timm (it imports ``tvshim`` first).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import tvshim  # noqa: F401  (must precede open_clip / timm)

from ckptlint.checkpoint import Checkpoint
from ckptlint.dtypes import TORCH_DTYPE
from ckptlint.engine import CheckConfig, run
from ckptlint.expected import Expected, ExpectedTensor
from ckptlint.readers import read_checkpoint
from ckptlint.results import FileReport

CORPUS = Path(os.environ.get("CKPTLINT_CORPUS", Path(__file__).resolve().parent / "data" / "corpus"))
TINY_OPEN_CLIP_CFG = json.loads((CORPUS / "open_clip" / "ckptlint-tiny-ViT.json").read_text())

_SIZE = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[([\d, ]*)\]\)"
)


def dtype_name(t: torch.Tensor) -> str:
    return TORCH_DTYPE[str(t.dtype).removeprefix("torch.")]


def expected_from_state_dict(
    sd: Mapping[str, torch.Tensor],
    arch: str,
    framework: str,
    *,
    variant: str | None = "tiny",
    towers: dict[str, list[str]] | None = None,
) -> Expected:
    """An expectation straight from a real model's ``state_dict()`` (persistent
    buffers included, as torch)."""
    return Expected(
        arch=arch,
        variant=variant,
        source="model",
        framework=framework,
        key_sep=".",
        tensors={k: ExpectedTensor(shape=tuple(v.shape), dtype=dtype_name(v)) for k, v in sd.items()},
        towers=towers or {},
    )


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def torch_load_report(
    model: torch.nn.Module, sd: Mapping[str, torch.Tensor]
) -> tuple[set[str], set[str], dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]:
    """What torch itself reports for ``model.load_state_dict(sd, strict=False)``.

    Returns (missing, unexpected, size mismatches ``key -> (model shape, checkpoint shape)``). Size mismatches
    raise even with ``strict=False``; they are parsed from the RuntimeError text, and the load is repeated
    with those tensors replaced by the model's own so that torch also gives its missing/unexpected lists.
    """
    model = copy.deepcopy(model)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    try:
        result = model.load_state_dict(dict(sd), strict=False)
    except RuntimeError as exc:
        for m in _SIZE.finditer(str(exc)):
            mismatched[m.group(1)] = (_shape(m.group(3)), _shape(m.group(2)))
        assert mismatched, f"unexpected load error: {str(exc)[:300]}"
        own = model.state_dict()
        patched = {k: (own[k].clone() if k in mismatched else v) for k, v in sd.items()}
        result = model.load_state_dict(patched, strict=False)
    return set(result.missing_keys), set(result.unexpected_keys), mismatched


def flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts/lists of tensors -> ``{"a.b.0.c": tensor}`` (the dotted keys torch
    files are read with)."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    return out


def save_torch(obj: Any, path: Path) -> Checkpoint:
    torch.save(obj, path)
    return read_checkpoint(path)


def save_safetensors(sd: Mapping[str, torch.Tensor], path: Path) -> Checkpoint:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path))
    return read_checkpoint(path)


def check(ckpt: Checkpoint, expected: Expected | None) -> FileReport:
    return run(ckpt, expected, CheckConfig())


def codes(report: FileReport) -> list[str]:
    return [f.code for f in report.findings]


def structural(report: FileReport) -> list[str]:
    """Codes of the findings, without the preprocessing warning every bare weights file gets."""
    return [f.code for f in report.findings if f.code != "CK107"]


def top(report: FileReport) -> str:
    return report.findings[0].code


def assert_diff_matches_torch(
    report: FileReport, model: torch.nn.Module, sd: Mapping[str, torch.Tensor]
) -> None:
    """The raw diff equals torch's own missing / unexpected / size-mismatch report for the same pair."""
    missing, unexpected, mismatched = torch_load_report(model, sd)
    diff = report.diff
    assert diff is not None
    assert set(diff.missing) == missing
    assert set(diff.unexpected) == unexpected
    assert {m.key: (tuple(m.expected), tuple(m.actual)) for m in diff.shape_mismatch} == mismatched


# ---- tiny real models --------------------------------------------------------------------------------------
def open_clip_tiny(*, custom_text: bool = False, **overrides: Any) -> torch.nn.Module:
    """open_clip's CLIP (or CustomTextCLIP) with the corpus' tiny config;
    ``vision_cfg``/``text_cfg`` overrides."""
    import open_clip

    cfg = copy.deepcopy(TINY_OPEN_CLIP_CFG)
    for part in ("vision_cfg", "text_cfg"):
        cfg[part].update(overrides.pop(part, {}))
    cfg.update(overrides)
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    torch.manual_seed(0)
    return cls(**cfg).eval()


def hf_config(name: str) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(CORPUS / "hf" / name)


def hf_clip_tiny() -> torch.nn.Module:
    from transformers import CLIPModel

    torch.manual_seed(0)
    return CLIPModel(hf_config("hf_clip_tiny")).eval()


def hf_clip_vision_tiny() -> torch.nn.Module:
    from transformers import CLIPVisionModel

    torch.manual_seed(0)
    return CLIPVisionModel(hf_config("hf_clipvision_tiny")).eval()


def hf_siglip_tiny() -> torch.nn.Module:
    from transformers import SiglipModel

    torch.manual_seed(0)
    return SiglipModel(hf_config("hf_siglip_tiny")).eval()


def timm_tiny(**overrides: Any) -> torch.nn.Module:
    """timm's vit_base_patch16_clip_224 at the corpus' tiny size (same keys/shapes as timm_vit_clip_tiny)."""
    import timm

    kw = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=32)
    kw.update(overrides)
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_clip_224", pretrained=False, **kw).eval()
