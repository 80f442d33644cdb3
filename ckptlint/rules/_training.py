"""Which tensors of a checkpoint are training state rather than weights (``rules/training_state.toml``)."""

from __future__ import annotations

from functools import cache
from typing import Any

from ckptlint.checkpoint import Checkpoint, TensorInfo
from ckptlint.record import field, record
from ckptlint.ruledata import load_toml


@cache
def table() -> dict[str, Any]:
    return load_toml("training_state.toml")


@record
class TrainingSplit:
    """A checkpoint cut into weights and what travels with them."""

    weights: dict[str, TensorInfo] = field(default_factory=dict)
    state: dict[str, TensorInfo] = field(default_factory=dict)  # optimizer moments, counters, step…
    optimizer_groups: list[str] = field(default_factory=list)
    counter_groups: list[str] = field(default_factory=list)
    weights_group: str | None = None  # "params", "state_dict"… when the weights sit under one group
    non_tensor: list[str] = field(default_factory=list)  # metadata entries such as epoch, name

    @property
    def has_state(self) -> bool:
        return bool(self.optimizer_groups or self.counter_groups or self.state)


def _first(key: str, sep: str) -> str:
    return key.split(sep, 1)[0]


def _header_metadata(ckpt: Checkpoint) -> bool:
    """Whether ``ckpt.metadata`` is a safetensors header's ``__metadata__`` (of the file or a folder's weights)."""
    weights_format = ckpt.metadata.get("weights_format")
    fmt = weights_format if isinstance(weights_format, str) else ckpt.format
    return fmt.startswith("safetensors")


def split(ckpt: Checkpoint) -> TrainingSplit:
    """Split ``ckpt`` into weights and training state, by its top-level groups."""
    t = table()
    sep = ckpt.key_sep
    groups = list(ckpt.groups) or sorted({_first(k, sep) for k in ckpt.tensors if sep in k})
    # Non-tensor top-level entries of a trainer dict (epoch, name…) are kept by readers in metadata; a safetensors
    # header's __metadata__ (also kept there) is a string table beside flat weights, never a trainer dict.
    meta_top = (
        []
        if _header_metadata(ckpt)
        else [k for k in ckpt.metadata if isinstance(k, str) and k in t["counters"]]
    )
    out = TrainingSplit(non_tensor=meta_top)

    bv = t["big_vision"]
    if sep == "/" and bv["params_group"] in groups:
        root = bv["params_group"] + "/"
        out.weights_group = bv["params_group"]
        for k, v in ckpt.tensors.items():
            (out.weights if k.startswith(root) else out.state)[k] = v
        others = sorted({_first(k, sep) for k in out.state})
        out.optimizer_groups = [g for g in others if g in t["optimizer"] or g not in t["counters"]]
        out.counter_groups = [g for g in others if g in t["counters"] and g not in t["optimizer"]]
        return out
    if sep == "/" and any(k.startswith(bv["old_params_prefix"]) for k in ckpt.tensors):
        root = bv["old_params_prefix"]
        out.weights_group = root.rstrip("/")
        for k, v in ckpt.tensors.items():
            (out.weights if k.startswith(root) else out.state)[k] = v
        out.optimizer_groups = ["opt"] if out.state else []  # opt/target/ alone is just the weights
        return out

    optimizer = set(t["optimizer"])
    counters = set(t["counters"])
    weights = set(t["weights"])
    tensor_groups = {_first(k, sep) for k in ckpt.tensors}
    is_trainer_dict = (
        bool(tensor_groups & optimizer)
        or bool(meta_top)
        or (bool(ckpt.groups) and bool(set(ckpt.groups) & (optimizer | counters)))
    )
    if not is_trainer_dict:
        out.weights = dict(ckpt.tensors)
        return out
    for k, v in ckpt.tensors.items():
        g = _first(k, sep)
        (out.state if g in optimizer or g in counters else out.weights)[k] = v
    present = sorted(set(groups) | tensor_groups | set(meta_top))
    out.optimizer_groups = [g for g in present if g in optimizer]
    out.counter_groups = [g for g in present if g in counters]
    wg = [g for g in present if g in weights]
    out.weights_group = wg[0] if len(wg) == 1 else None
    return out
