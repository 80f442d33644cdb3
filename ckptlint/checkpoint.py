"""The one model every reader returns: a flat tree of tensor headers plus what surrounds them.

Nothing downstream knows which file format a ``Checkpoint`` came from. Readers record facts here (a shard that is
missing, …), never findings about them: the rules decide what a fact means.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ckptlint.dtypes import nbytes_for
from ckptlint.facts import SecurityFacts
from ckptlint.findings import Finding

# Schemas are built on first validation/serialisation, not at import: ``ckptlint dump`` must start fast.
_LAZY = ConfigDict(defer_build=True)

# Every format a reader may report (docs/CONTRACT.md "Format names"; found by sniffing bytes).
FormatName = Literal[
    "safetensors",
    "safetensors-sharded",
    "torch-zip",
    "torch-legacy",
    "torch-tar",
    "torch-sharded",
    "pickle",
    "npz",
    "npy",
    "flax-msgpack",
    "hf-dir",
    "open_clip-dir",
    "dump-json",
]


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


class MisplacedTensor(BaseModel):
    """A tensor the shard index and the shards disagree on."""

    model_config = _LAZY

    index: str | None  # the shard the index names for it (None: the index does not list it)
    found_in: list[str]  # the shards that hold it


class ShardFacts(BaseModel):
    """What the sharded reader saw of a ``*.index.json`` and its shards (CK002 and CK003 judge it)."""

    model_config = _LAZY

    missing_shards: list[str] = Field(default_factory=list)  # named by the index, not on disk
    lost_tensors: list[str] = Field(default_factory=list)  # indexed into a missing shard (sorted)
    tensors_in_no_shard: list[str] = Field(
        default_factory=list
    )  # indexed into a shard that lacks them (sorted)
    misplaced: dict[str, MisplacedTensor] = Field(
        default_factory=dict
    )  # in another/several shards, or unindexed
    unreferenced_shards: list[str] = Field(
        default_factory=list
    )  # shard-named files next to it, not in the index


class TokenizerFacts(BaseModel):
    """What the tokenizer files next to the weights say about token ids (read as JSON; CK115 judges it)."""

    model_config = _LAZY

    files: list[str] = Field(default_factory=list)  # the tokenizer files read
    vocab: int | None = None  # entries of the base vocabulary (tokenizer.json model.vocab, vocab.json)
    added: int = 0  # added tokens (tokenizer.json added_tokens, added_tokens.json, added_tokens_decoder)
    count: int = 0  # distinct token ids
    max_id: int | None = None  # the highest token id
    special: dict[str, int | None] = Field(
        default_factory=dict
    )  # bos_token... -> id (None: not in the vocab)
    unread: list[str] = Field(default_factory=list)  # tokenizer files too large or not valid JSON


class Checkpoint(BaseModel):
    """A checkpoint's structure: ``key -> TensorInfo`` with the file's own full keys."""

    model_config = _LAZY

    path: str
    format: FormatName
    # how the file's nested names are joined: "." for torch/HF, "/" for big_vision/flax
    key_sep: str = "."
    tensors: dict[str, TensorInfo] = Field(default_factory=dict)
    # top-level containers: params/opt/chrono, state_dict/optimizer
    groups: list[str] = Field(default_factory=list)
    # embedded: safetensors __metadata__, non-tensor values
    metadata: dict[str, Any] = Field(default_factory=dict)
    sidecars: list[Sidecar] = Field(default_factory=list)
    # every file actually read (shards, the weights inside a folder)
    files: list[str] = Field(default_factory=list)
    # findings the input itself carries (a read-back dump)
    findings: list[Finding] = Field(default_factory=list)
    # a sharded checkpoint's index and shards: what agrees and what does not
    shards: ShardFacts | None = None
    # the token ids the tokenizer files next to the weights use (DECL-HF, issue 11)
    tokenizer: TokenizerFacts | None = None
    # what a loader of the file (or folder) could run: globals, constructs not judged, shipped code (CK301/CK302)
    security: SecurityFacts = Field(default_factory=SecurityFacts)

    @property
    def num_params(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def has_facts(self) -> bool:
        """Whether the reader recorded anything for the FACTS rules to judge (shards, pickle globals…)."""
        return bool(self.findings) or self.shards is not None or bool(self.security)

    def sidecar(self, kind: str) -> Sidecar | None:
        """The first sidecar of ``kind``, if any."""
        return next((s for s in self.sidecars if s.kind == kind), None)


_set = object.__setattr__
_TENSOR_FIELDS = set(TensorInfo.model_fields)  # shared: every field is always set (saves ~700 bytes a tensor)


def tensor_info(
    shape: tuple[int, ...] | list[int],
    dtype: str,
    nbytes: int | None = None,
    storage: str | None = None,
    offset: int | None = None,
) -> TensorInfo:
    """Build a ``TensorInfo`` without validation, as ``model_construct`` does but ~4x faster (readers create
    hundreds of thousands; types are theirs to get right)."""
    shp = tuple(int(d) for d in shape)
    info = TensorInfo.__new__(TensorInfo)
    _set(info, "__dict__", {
        "shape": shp, "dtype": dtype, "nbytes": nbytes_for(shp, dtype) if nbytes is None else int(nbytes),
        "storage": storage, "offset": offset,
    })  # fmt: skip
    _set(info, "__pydantic_fields_set__", _TENSOR_FIELDS)
    _set(info, "__pydantic_extra__", None)
    _set(info, "__pydantic_private__", None)
    return info


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
