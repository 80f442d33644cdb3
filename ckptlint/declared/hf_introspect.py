"""What a transformers model class asks of a checkpoint, read from the class itself on torch's meta device.

``introspect(model)`` gives, for one built model: its ``state_dict()`` shapes and dtypes (parameters and persistent
buffers), its base-model prefix, its tied weights (``all_tied_weights_keys``: target -> source), the ignore
patterns ``from_pretrained`` applies to missing and unexpected keys (``_keys_to_ignore_on_load_*`` plus the
``rotary_emb.inv_freq`` / ``position_ids`` patterns it adds when the model has such buffers), its non-persistent
buffers, and the key conversions transformers applies on load (``get_model_conversion_mapping``), each as data.

Used by tier (b) (any model type, transformers installed: ``ckptlint.declared.hf_live``) and by the script that
generates the built-in families (``scripts/gen_hf_families.py``). torch and transformers are imported only inside
the functions here; nothing is ever downloaded and ``trust_remote_code`` is never used: a class is taken from the
``transformers`` package itself or not at all.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ckptlint.dtypes import TORCH_DTYPE

# transformers' renaming classes whose key renaming is the generic one (a regex and one replacement)
GENERIC_RENAMES = ("WeightRenaming", "PrefixChange")
# conversion ops whose effect on shapes ckptlint re-implements (ckptlint.declared.hf_load)
KNOWN_OPS = ("MergeModulelist", "Concatenate", "Chunk", "Transpose")


def model_class(name: str) -> Any:
    """The transformers class ``name`` (a ``PreTrainedModel`` subclass of the library itself), or None."""
    import transformers
    from transformers import PreTrainedModel

    if name not in _public_names():
        return None
    cls = getattr(transformers, name)  # an ImportError here is a broken installation: the caller says so
    if not (isinstance(cls, type) and issubclass(cls, PreTrainedModel)):
        return None
    if not (cls.__module__ or "").startswith("transformers."):
        return None
    return cls


@cache
def _public_names() -> frozenset[str]:
    import transformers

    return frozenset(dir(transformers))  # transformers' lazy module: slow to list, so once per process


def build_meta(cls: Any, config: Any) -> Any:
    """``cls(config)`` on the meta device: no weight is allocated, nothing is read or downloaded."""
    import torch

    with torch.device("meta"):
        return cls(config)


def transforms_of(model: Any) -> list[dict[str, Any]]:
    """The key conversions ``from_pretrained`` applies to this model's checkpoints, as data (load order)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightTransform

    out: list[dict[str, Any]] = []
    for t in get_model_conversion_mapping(model):
        name = type(t).__name__
        entry: dict[str, Any] = {
            "regex": t.compiled_sources.pattern,
            "sources": list(t.source_patterns),
            "targets": list(t.target_patterns),
        }
        if t.scope_prefix is not None:
            entry["scope"] = t.scope_prefix
            entry["base"] = t.base_model_prefix or ""
        if isinstance(t, WeightConverter):
            entry["kind"] = "convert"
            entry["ops"] = [_op(op) for op in t.operations]
        elif type(t).rename_source_key is WeightTransform.rename_source_key and name in GENERIC_RENAMES:
            entry["kind"] = "rename"
        else:
            entry["kind"] = "unsupported"
            entry["class"] = name
        out.append(entry)
    return out


def _op(op: Any) -> dict[str, Any]:
    name = type(op).__name__
    out: dict[str, Any] = {"op": name if name in KNOWN_OPS else f"unsupported:{name}"}
    for attr in ("dim", "dim0", "dim1", "check_dims", "num_shards_attribute"):
        value = getattr(op, attr, None)
        if value is not None and value is not False:
            out[attr] = value
    return out


def introspect(model: Any) -> dict[str, Any]:
    """Everything ``from_pretrained`` compares a checkpoint with, for this built model (JSON-serialisable)."""
    tensors: dict[str, list[Any]] = {}
    for key, t in model.state_dict().items():
        name = str(t.dtype).removeprefix("torch.")
        tensors[key] = [list(int(d) for d in t.shape), TORCH_DTYPE.get(name, name)]
    buffers = {n for n, _ in model.named_buffers()}
    persistent = set(tensors)
    extra = []
    if any(b.endswith("rotary_emb.inv_freq") for b in buffers):
        extra.append(r"rotary_emb\.inv_freq")
    if any(b.endswith("position_ids") for b in buffers):
        extra.append(r"(^|\.)position_ids$")
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    return {
        "class": type(model).__name__,
        "model_type": getattr(model.config, "model_type", None),
        "base_prefix": model.base_model_prefix or "",
        "tensors": tensors,
        "tied": {str(k): str(v) for k, v in tied.items()},
        "ignore_missing": sorted(model._keys_to_ignore_on_load_missing or []),
        "ignore_unexpected": sorted(model._keys_to_ignore_on_load_unexpected or []),
        "extra_unexpected": extra,
        "nonpersistent": sorted(b for b in buffers if b not in persistent),
        "transforms": transforms_of(model),
    }
