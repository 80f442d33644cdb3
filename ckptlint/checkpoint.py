"""The one model every reader returns: a flat tree of tensor headers plus what surrounds them.

Nothing downstream knows which file format a ``Checkpoint`` came from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ckptlint.dtypes import nbytes_for
from ckptlint.facts import SecurityFacts
from ckptlint.findings import Finding

# Schemas are built on first validation/serialisation, not at import: ``ckptlint dump`` must start fast.
_LAZY = ConfigDict(defer_build=True)


class TensorInfo(BaseModel):
    """Header facts of one tensor; its values are never read unless a rule asks."""

    model_config = _LAZY

    shape: tuple[int, ...]
    dtype: str  # numpy / ml_dtypes name: float32, float16, bfloat16, int64, bool, ...
    nbytes: int
    storage: str | None = None  # where the bytes live: zip member, shard file, npz member
    offset: int | None = None  # byte offset of the data inside ``storage`` (or the file) when known

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class Sidecar(BaseModel):
    """A config file found next to the weights (HF config, preprocessor, open_clip config, tokenizer...)."""

    model_config = _LAZY

    name: str  # file name, relative to the checkpoint's directory
    kind: str  # hf-config | hf-preprocessor | open_clip-config | tokenizer | timm-config | other
    content: dict[str, Any] | None = None  # parsed JSON when small and valid, else None


class Checkpoint(BaseModel):
    """A checkpoint's structure: ``key -> TensorInfo`` with the file's own full keys."""

    model_config = _LAZY

    path: str
    format: str  # safetensors | safetensors-sharded | torch-zip | torch-legacy | torch-tar | pickle | npz | npy | flax-msgpack | hf-dir | open_clip-dir
    key_sep: str = "."  # how the file's nested names are joined: "." for torch/HF, "/" for big_vision/flax
    tensors: dict[str, TensorInfo] = Field(default_factory=dict)
    groups: list[str] = Field(
        default_factory=list
    )  # top-level containers: params/opt/chrono, state_dict/optimizer
    metadata: dict[str, Any] = Field(
        default_factory=dict
    )  # embedded: safetensors __metadata__, non-tensor values
    sidecars: list[Sidecar] = Field(default_factory=list)
    files: list[str] = Field(
        default_factory=list
    )  # every file actually read (shards, the weights inside a folder)
    findings: list[Finding] = Field(
        default_factory=list
    )  # findings the input itself carries (a read-back dump) or a reader still builds
    security: SecurityFacts = Field(default_factory=SecurityFacts)  # what a loader could run (CK301/CK302)

    @property
    def num_params(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def sidecar(self, kind: str) -> Sidecar | None:
        """The first sidecar of ``kind``, if any."""
        return next((s for s in self.sidecars if s.kind == kind), None)


def tensor_info(
    shape: tuple[int, ...] | list[int],
    dtype: str,
    nbytes: int | None = None,
    storage: str | None = None,
    offset: int | None = None,
) -> TensorInfo:
    """Build a ``TensorInfo`` without pydantic validation (readers create thousands; types are theirs to get right)."""
    shp = tuple(int(d) for d in shape)
    return TensorInfo.model_construct(
        shape=shp,
        dtype=dtype,
        nbytes=nbytes_for(shp, dtype) if nbytes is None else int(nbytes),
        storage=storage,
        offset=offset,
    )


def guess_key_sep(keys: Iterable[str]) -> str:
    """``/`` when the keys are slash-joined (big_vision, flax), else ``.`` (torch, HF, safetensors)."""
    slashes = dots = 0
    for k in keys:
        slashes += k.count("/")
        dots += k.count(".")
    return "/" if slashes > dots else "."


def slash_groups(keys: Iterable[str]) -> list[str]:
    """Sorted distinct first path segments of the keys that contain ``/`` (``params``, ``opt``, ``chrono``)."""
    return sorted({k.split("/", 1)[0] for k in keys if "/" in k})
