"""Preprocessing metadata found with a checkpoint (sidecars, embedded metadata) and the shared tables it is judged
by (``rules/preprocessing.toml``; what each family was trained with is in its family file)."""

from __future__ import annotations

import contextlib
import json
from functools import cache
from typing import Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.record import field, record
from ckptlint.ruledata import load_toml


@cache
def table() -> dict[str, Any]:
    return load_toml("preprocessing.toml")


@record
class Found:
    """One recorded value and where it came from."""

    value: Any
    source: str


@record
class Preprocessing:
    """Everything recorded about preprocessing: field -> value with its source."""

    fields: dict[str, Found] = field(default_factory=dict)
    tag: str | None = None  # "timm:vit_base_patch16_clip_224.openai" when a pretrained tag is named
    tokenizer: str | None = None  # where a tokenizer is described, if anywhere
    sources: list[str] = field(default_factory=list)

    def put(self, name: str, value: Any, source: str) -> None:
        if value is None or name in self.fields:
            return
        self.fields[name] = Found(value, source)
        if source not in self.sources:
            self.sources.append(source)

    def get(self, name: str) -> Any:
        f = self.fields.get(name)
        return f.value if f else None


def _floats(v: Any) -> list[float] | None:
    if isinstance(v, (int, float)):
        return [float(v)] * 3
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
        return [float(x) for x in v]
    return None


def _size(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, int) for x in v):
        return int(v[-1])
    if isinstance(v, dict):
        for k in ("height", "shortest_edge", "width", "longest_edge"):
            if isinstance(v.get(k), int):
                return int(v[k])
    return None


def _interp(v: Any) -> str | None:
    if isinstance(v, int):
        return table()["resample"].get(str(v), str(v))
    return v if isinstance(v, str) else None


def _from_hf_preprocessor(pp: Preprocessing, c: dict[str, Any], src: str) -> None:
    pp.put("mean", _floats(c.get("image_mean")), src)
    pp.put("std", _floats(c.get("image_std")), src)
    crop = _size(c.get("crop_size")) if c.get("do_center_crop", True) else None
    pp.put("size", crop or _size(c.get("size")), src)
    pp.put("interpolation", _interp(c.get("resample")), src)


def _from_open_clip_config(pp: Preprocessing, c: dict[str, Any], src: str) -> None:
    pcfg = c.get("preprocess_cfg") or {}
    mcfg = c.get("model_cfg") or {}
    pp.put("mean", _floats(pcfg.get("mean")), src)
    pp.put("std", _floats(pcfg.get("std")), src)
    pp.put("interpolation", _interp(pcfg.get("interpolation")), src)
    pp.put("resize_mode", pcfg.get("resize_mode"), src)
    pp.put("size", _size(pcfg.get("size")) or _size((mcfg.get("vision_cfg") or {}).get("image_size")), src)
    text = mcfg.get("text_cfg") or {}
    pp.put("context_length", text.get("context_length"), src)
    if mcfg and pp.tokenizer is None:
        pp.tokenizer = text.get("hf_tokenizer_name") or f"open_clip default tokenizer ({src})"


def _from_hf_config(pp: Preprocessing, c: dict[str, Any], src: str) -> None:
    vision = c.get("vision_config") if isinstance(c.get("vision_config"), dict) else c
    text = c.get("text_config") if isinstance(c.get("text_config"), dict) else {}
    pp.put("size", _size(vision.get("image_size")), src)
    pp.put("context_length", text.get("max_position_embeddings"), src)
    if isinstance(c.get("_name_or_path"), str) and c["_name_or_path"] and pp.tag is None:
        pp.tag = "hf:" + c["_name_or_path"]


def _from_timm_config(pp: Preprocessing, c: dict[str, Any], src: str) -> None:
    pcfg = c.get("pretrained_cfg") if isinstance(c.get("pretrained_cfg"), dict) else c
    pp.put("mean", _floats(pcfg.get("mean")), src)
    pp.put("std", _floats(pcfg.get("std")), src)
    pp.put("size", _size(pcfg.get("input_size")), src)
    pp.put("interpolation", _interp(pcfg.get("interpolation")), src)
    arch = c.get("architecture") or pcfg.get("architecture")
    tag = pcfg.get("tag")
    if arch and tag and pp.tag is None:
        pp.tag = f"timm:{arch}.{tag}"


_META_ALIASES = {
    "mean": "mean",
    "image_mean": "mean",
    "std": "std",
    "image_std": "std",
    "image_size": "size",
    "input_size": "size",
    "size": "size",
    "interpolation": "interpolation",
    "resample": "interpolation",
    "resize_mode": "resize_mode",
    "context_length": "context_length",
}


def _from_metadata(pp: Preprocessing, meta: dict[str, Any], src: str, depth: int = 0) -> None:
    for key, value in meta.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, str) and value[:1] and (value[:1] in "[{" or value.strip().isdigit()):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        name = _META_ALIASES.get(key.lower())
        if name in ("mean", "std"):
            pp.put(name, _floats(value), src)
        elif name == "size":
            pp.put(name, _size(value), src)
        elif name == "interpolation":
            pp.put(name, _interp(value), src)
        elif name is not None:
            pp.put(name, value, src)
        elif isinstance(value, dict) and depth < 2 and key.lower() in (
            "preprocess_cfg", "preprocessing", "pretrained_cfg", "data_config", "image_processor",
        ):  # fmt: skip
            _from_metadata(pp, value, src, depth + 1)
        elif (
            key.lower() in ("pretrained", "pretrained_tag", "tag")
            and isinstance(value, str)
            and pp.tag is None
        ):
            pp.tag = value


def gather(ckpt: Checkpoint) -> Preprocessing:
    """Preprocessing facts recorded in ``ckpt``'s sidecars and embedded metadata (never guessed)."""
    pp = Preprocessing()
    # what preprocesses first (a processor config), what describes the model last (its architecture config)
    priority = {"hf-preprocessor": 0, "open_clip-config": 1, "timm-config": 2, "hf-config": 3}
    for sc in sorted(ckpt.sidecars, key=lambda s: priority.get(s.kind, 9)):
        c = sc.content
        if sc.kind == "tokenizer" and pp.tokenizer is None:
            pp.tokenizer = sc.name
        if not isinstance(c, dict):
            continue
        if sc.kind == "hf-preprocessor":
            _from_hf_preprocessor(pp, c, sc.name)
        elif sc.kind == "open_clip-config":
            _from_open_clip_config(pp, c, sc.name)
        elif sc.kind == "timm-config":
            _from_timm_config(pp, c, sc.name)
        elif sc.kind == "hf-config":
            _from_hf_config(pp, c, sc.name)
    if ckpt.metadata:
        _from_metadata(pp, ckpt.metadata, "embedded metadata")
    return pp


def close(a: list[float] | None, b: list[float] | None) -> bool:
    tol = float(table()["tolerance"])
    return (
        a is not None
        and b is not None
        and len(a) == len(b)
        and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))
    )


def named(values: list[float] | None, *, short: bool = False) -> str:
    """``[0.5, 0.5, 0.5] -> "inception (0.5, 0.5, 0.5)"``: the well-known name of a mean/std triple if any.

    ``short`` gives only the name when there is one (``"openai"``).
    """
    if values is None:
        return "none"
    text = "(" + ", ".join(f"{v:g}" for v in values) + ")"
    for name, pair in table()["named"].items():
        if close(values, pair["mean"]) or close(values, pair["std"]):
            return name if short else f"{name} {text}"
    return text
