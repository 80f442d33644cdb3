"""The expectation a checkpoint is checked against: what a model definition will ask for."""

from __future__ import annotations

from typing import Any, Literal

from ckptlint.checkpoint import Checkpoint
from ckptlint.model import Model
from ckptlint.record import field, record


@record(kw_only=True)
class ExpectedTensor(Model):
    """Shape and dtype a model definition gives one parameter or persistent buffer."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if type(self.shape) is not tuple:  # a list or torch.Size: compared with TensorInfo.shape, a tuple
            self.shape = tuple(self.shape)


@record(kw_only=True)
class Expected(Model):
    """An expected parameter tree, named the way the expected model names its keys.

    Keys are a torch model's ``state_dict()`` keys, or a flax parameter path joined with ``/``
    relative to the ``params`` collection.
    """

    arch: str  # contract name: clippo, bv-vit, bv-siglip, open_clip, hf-clip, hf-clip-vision, hf-siglip, timm-vit, ...
    variant: str | None = None  # "B/16", "ViT-B-16", "custom"
    source: Literal["flag", "inferred", "declared", "model", "spec"] = "flag"
    framework: str = "torch"  # big_vision | open_clip | hf | timm | torch | flax
    key_sep: str = "."
    tensors: dict[str, ExpectedTensor] = field(default_factory=dict)
    # width, depth, heads, patch, image_size, context_length...
    params: dict[str, Any] = field(default_factory=dict)
    # tower -> key prefixes, e.g. {"text": ["txt/"]}
    towers: dict[str, list[str]] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)  # mean/std/size/interpolation when known
    description: str = ""  # e.g. "big_vision proj.clippo.one_tower"
    declared_by: str | None = None  # source "declared": the config file (open_clip_config.json)
    declared_name: str | None = None  # source "declared": the declared model (ViT-B-16, ...)
    # the declared library's loading semantics around the tree (transformers: base-model prefix, tied weights,
    # ignore patterns, key conversions; ckptlint.declared.hf_load), empty for a plain state_dict load
    load: dict[str, Any] = field(default_factory=dict)


@record(frozen=True)
class Unchecked:
    """Why no architecture was compared with the weights (a fact of the run; CK004 reports it).

    Whoever tried to build an expectation and could not says why (``reason``, one clause, e.g. "config.json
    declares model_type llama, which no built-in family describes") and, when there is one, the fix.
    """

    reason: str
    fix: str | None = None
    declared_by: str | None = None
    refused: str | None = (
        None  # the library itself refuses the declaration: why (CK113 reports it as an error)
    )


def expected_from_checkpoint(ckpt: Checkpoint, source: Literal["spec", "model"] = "spec") -> Expected:
    """Use a reference checkpoint (or a dumped spec JSON read back as a Checkpoint) as the expectation."""
    return Expected(
        arch="spec",
        variant=None,
        source=source,
        framework="flax" if ckpt.key_sep == "/" else "torch",
        key_sep=ckpt.key_sep,
        tensors={k: ExpectedTensor(shape=t.shape, dtype=t.dtype) for k, t in ckpt.tensors.items()},
        description=f"reference {ckpt.path}",
    )
