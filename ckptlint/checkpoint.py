"""The one model every reader returns: a flat tree of tensor headers plus what surrounds them.

Nothing downstream knows which file format a ``Checkpoint`` came from. Readers record facts here (a shard that is
missing, …), never findings about them: the rules decide what a fact means.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import Any, Literal

from ckptlint.dtypes import nbytes_for
from ckptlint.facts import SecurityFacts
from ckptlint.findings import Finding
from ckptlint.model import Model
from ckptlint.record import field, record, slotted

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


_tensor_fields = attrgetter("shape", "dtype", "nbytes", "storage", "offset")  # what TensorInfo compares


# Readers make hundreds of thousands (``tensor_info``): slotted, positional, its methods written out (what
# ``@dataclass(slots=True)`` generates: init, repr, eq, unhashable), the fastest ``__init__`` there is. The
# docstring is the JSON schema's description: one line, as it was.
@slotted(storage=None, offset=None)
class TensorInfo(Model):
    """Header facts of one tensor; its values are never read unless a rule asks."""

    __slots__ = ("shape", "dtype", "nbytes", "storage", "offset")  # noqa: RUF023 (field order: pickles as before)
    __match_args__ = ("shape", "dtype", "nbytes", "storage", "offset")

    shape: tuple[int, ...]
    dtype: str  # numpy / ml_dtypes name: float32, float16, bfloat16, int64, bool, ...
    nbytes: int
    storage: str | None  # where the bytes live: zip member, shard file, npz member (default None)
    offset: int | None  # byte offset of the data inside ``storage`` (or the file) when known (default None)

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: str,
        nbytes: int,
        storage: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.shape = shape
        self.dtype = dtype
        self.nbytes = nbytes
        self.storage = storage
        self.offset = offset

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__qualname__}(shape={self.shape!r}, dtype={self.dtype!r}, nbytes={self.nbytes!r}, "
            f"storage={self.storage!r}, offset={self.offset!r})"
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return _tensor_fields(self) == _tensor_fields(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, as a dataclass

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@record(kw_only=True)
class Sidecar(Model):
    """A config file found next to the weights (HF config, preprocessor, open_clip config, tokenizer...)."""

    name: str  # file name, relative to the checkpoint's directory
    kind: str  # hf-config | hf-preprocessor | open_clip-config | tokenizer | timm-config | other
    content: dict[str, Any] | None = None  # parsed JSON when small and valid, else None
    error: str | None = None  # why a JSON file that was read is no JSON object (the parser's own words)


@record(kw_only=True)
class MisplacedTensor(Model):
    """A tensor the shard index and the shards disagree on."""

    index: str | None  # the shard the index names for it (None: the index does not list it)
    found_in: list[str]  # the shards that hold it


@record(kw_only=True)
class ShardFacts(Model):
    """What the sharded reader saw of a ``*.index.json`` and its shards (CK002 and CK003 judge it)."""

    missing_shards: list[str] = field(default_factory=list)  # named by the index, not on disk
    lost_tensors: list[str] = field(default_factory=list)  # indexed into a missing shard (sorted)
    # indexed into a shard that lacks them (sorted)
    tensors_in_no_shard: list[str] = field(default_factory=list)
    # in another/several shards, or unindexed
    misplaced: dict[str, MisplacedTensor] = field(default_factory=dict)
    # shard-named files next to it, not in the index
    unreferenced_shards: list[str] = field(default_factory=list)


@record(kw_only=True)
class TokenizerFacts(Model):
    """What the tokenizer files next to the weights say about token ids (read as JSON; CK115 judges it)."""

    files: list[str] = field(default_factory=list)  # the tokenizer files read
    vocab: int | None = None  # entries of the base vocabulary (tokenizer.json model.vocab, vocab.json)
    added: int = 0  # added tokens (tokenizer.json added_tokens, added_tokens.json, added_tokens_decoder)
    count: int = 0  # distinct token ids
    max_id: int | None = None  # the highest token id
    # bos_token... -> id (None: not in the vocab)
    special: dict[str, int | None] = field(default_factory=dict)
    special_from: list[str] = field(default_factory=list)  # the files whose special tokens ``special`` took
    unread: list[str] = field(default_factory=list)  # tokenizer files too large or not valid JSON


@record(kw_only=True)
class Checkpoint(Model):
    """A checkpoint's structure: ``key -> TensorInfo`` with the file's own full keys."""

    path: str
    format: FormatName
    # how the file's nested names are joined: "." for torch/HF, "/" for big_vision/flax
    key_sep: str = "."
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    # top-level containers: params/opt/chrono, state_dict/optimizer
    groups: list[str] = field(default_factory=list)
    # embedded: safetensors __metadata__, non-tensor values
    metadata: dict[str, Any] = field(default_factory=dict)
    sidecars: list[Sidecar] = field(default_factory=list)
    # every file actually read (shards, the weights inside a folder)
    files: list[str] = field(default_factory=list)
    # findings the input itself carries (a read-back dump)
    findings: list[Finding] = field(default_factory=list)
    # a sharded checkpoint's index and shards: what agrees and what does not
    shards: ShardFacts | None = None
    # the token ids the tokenizer files next to the weights use (DECL-HF, issue 11)
    tokenizer: TokenizerFacts | None = None
    # what a loader of the file (or folder) could run: globals, constructs not judged, shipped code (CK301/CK302)
    security: SecurityFacts = field(default_factory=SecurityFacts)

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


def tensor_info(
    shape: tuple[int, ...] | list[int],
    dtype: str,
    nbytes: int | None = None,
    storage: str | None = None,
    offset: int | None = None,
) -> TensorInfo:
    """A ``TensorInfo`` with ``shape`` as a tuple of ints and ``nbytes`` computed when not given (readers create
    hundreds of thousands; the other types are theirs to get right)."""
    shp = tuple(int(d) for d in shape)
    return TensorInfo(shp, dtype, nbytes_for(shp, dtype) if nbytes is None else int(nbytes), storage, offset)


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
