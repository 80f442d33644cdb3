"""Folders that declare their model, written by the libraries themselves, and what those libraries make of them.

* open_clip hub folders as ``open_clip.push_to_hf_hub.save_for_hf`` writes them: ``open_clip_model.safetensors``
  (``safetensors.torch.save_file`` of ``model.state_dict()``) and ``open_clip_config.json`` written by open_clip's
  own ``save_config_for_hf`` (``model_cfg`` + ``preprocess_cfg``). The tokenizer files ``save_for_hf`` also writes
  need an HF tokenizer (the tiny configs use open_clip's own), so they are left out.
* timm folders written by ``timm.models.save_for_hf`` (``config.json`` + ``model.safetensors``).

Ground truth is each library building the declared model from the folder (``open_clip.create_model('local-dir:')``,
``timm.create_model('local-dir:')``) and torch's ``load_state_dict(strict=False)`` with the folder's weights.
Import after ``engine_support`` (it imports ``tvshim`` first).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from engine_support import TINY_OPEN_CLIP_CFG, torch_load_report
from safetensors.torch import load_file, save_file

TINY_TIMM = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=32)
LoadReport = tuple[set[str], set[str], dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]


def set_fields(config: Path, fields: dict[str, Any]) -> None:
    """Edit a JSON config as a person would: ``{"model_cfg.text_cfg.context_length": 20}``; None deletes."""
    doc = json.loads(config.read_text())
    for path, value in fields.items():
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    config.write_text(json.dumps(doc, indent=2))


def open_clip_folder(
    folder: Path, cfg: dict[str, Any] | None = None, *, name: str = "ckptlint-decl-tiny", seed: int = 0
) -> Path:
    """An open_clip hub folder of the model ``cfg`` (default: the corpus' tiny ViT), written by open_clip."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf

    folder.mkdir(parents=True, exist_ok=True)
    source = folder.parent / f"{name}.json"  # open_clip registers a model config by its file name
    source.write_text(json.dumps(copy.deepcopy(cfg or TINY_OPEN_CLIP_CFG)))
    open_clip.add_model_config(source)
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors"
    )
    save_config_for_hf(model, folder / "open_clip_config.json", model_config=open_clip.get_model_config(name))
    return folder


def open_clip_report(folder: Path) -> LoadReport:
    """open_clip builds the model the folder declares; torch loads the folder's weights into it (strict=False)."""
    import open_clip

    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    return torch_load_report(model, load_file(folder / "open_clip_model.safetensors"))


def open_clip_loads(folder: Path) -> bool:
    """Whether ``create_model_from_pretrained('local-dir:…')`` loads the folder (it may resize position embeddings)."""
    import open_clip

    try:
        open_clip.create_model_from_pretrained(f"local-dir:{folder}")
    except RuntimeError:
        return False
    return True


def timm_folder(
    folder: Path, name: str = "vit_base_patch16_clip_224", kwargs: dict[str, Any] | None = None
) -> Path:
    """A timm folder (``config.json`` + ``model.safetensors``) written by ``timm.models.save_for_hf``; the model is
    ``name`` at the tiny ViT sizes unless ``kwargs`` are given."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **(TINY_TIMM if kwargs is None else kwargs))
    save_for_hf(model, folder, safe_serialization=True)
    return folder


def timm_report(folder: Path) -> LoadReport:
    """timm builds the model the folder declares (no weights); torch loads the folder's weights (strict=False)."""
    import timm

    model = timm.create_model(f"local-dir:{folder}", pretrained=False)
    return torch_load_report(model, load_file(folder / "model.safetensors"))


def timm_loads(folder: Path) -> bool:
    """Whether ``timm.create_model('local-dir:…', pretrained=True)`` loads the folder (it may resample or drop
    the head)."""
    import timm

    try:
        timm.create_model(f"local-dir:{folder}", pretrained=True)
    except RuntimeError:
        return False
    return True


def same_diff(diff: Any, report: LoadReport) -> bool:
    """The raw diff of a report equals the library's own load report."""
    missing, unexpected, mismatched = report
    return (
        diff is not None
        and set(diff.missing) == missing
        and set(diff.unexpected) == unexpected
        and {m.key: (tuple(m.expected), tuple(m.actual)) for m in diff.shape_mismatch} == mismatched
    )
