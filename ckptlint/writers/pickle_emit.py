"""A small pickle emitter for torch's ``data.pkl``: protocol 2, the opcodes ``torch.load(weights_only=True)`` reads.

Why not ``pickle.Pickler``: it pickles real objects, and ckptlint has no torch tensors to give it (torch is not
needed to rewrite a torch file). What ``torch.save`` writes (``torch/serialization.py`` ``_save``, described, not
copied) is an ordinary protocol-2 pickle in which each tensor is a call of ``torch._utils._rebuild_tensor_v2``
with ``(storage, storage_offset, size, stride, requires_grad, backward_hooks)`` — ``_rebuild_tensor_v3`` plus the
dtype for dtypes that have no legacy storage class (uint16, float8...) — and each storage is a persistent id
``('storage', <storage class>, key, location, numel)`` whose bytes are the archive's ``data/<key>`` member;
storage keys are numbered in the order storages are first met. ``backward_hooks`` is an empty ``OrderedDict``;
a state_dict is an ``OrderedDict`` whose ``_metadata`` attribute is set by BUILD. Values are memoized as the
standard pickler does, so an object referenced twice (a tied weight) is loaded as one object.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from ckptlint.dtypes import TORCH_STORAGE

# canonical dtype -> torch's legacy storage class (the one torch.save names for that dtype)
STORAGE_CLASS: dict[str, str] = {
    dtype: cls for cls, dtype in TORCH_STORAGE.items() if not cls.startswith(("QInt", "QUInt"))
}
TORCH_DTYPE_ATTR = {
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
}
MAX_DEPTH = 256


class EmitError(ValueError):
    """The value cannot be written as a weights_only-loadable pickle."""


@dataclass(eq=False)
class OutStorage:
    """A storage of the output: dtype of its elements, size in bytes, and how to write its bytes."""

    dtype: str
    nbytes: int
    write: Callable[[IO[bytes]], None]
    itemsize: int = 1

    @property
    def typed(self) -> bool:
        return self.dtype in STORAGE_CLASS


@dataclass(eq=False)
class OutTensor:
    """A tensor of the output: a view (offset and strides in elements) of an ``OutStorage``."""

    storage: OutStorage
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int = 0
    dtype: str = ""

    def __post_init__(self) -> None:
        self.dtype = self.dtype or self.storage.dtype


class ODictOut(dict):  # type: ignore[type-arg]
    """An ``OrderedDict`` of the output, with the attributes BUILD sets on it (a state_dict's ``_metadata``)."""

    attrs: dict[Any, Any] | None = None


@dataclass(frozen=True)
class TorchDtype:
    """``torch.<name>`` as a value (a dtype stored in a checkpoint's config)."""

    name: str


@dataclass
class Emitter:
    """Pickles a value; ``storages`` lists the storages it referenced, in key order (key = index)."""

    out: bytearray = field(default_factory=bytearray)
    storages: list[OutStorage] = field(default_factory=list)
    _keys: dict[int, str] = field(default_factory=dict)
    _memo: dict[Any, int] = field(default_factory=dict)

    def dump(self, value: Any) -> bytes:
        self.out += b"\x80\x02"
        self._save(value, 0)
        self.out += b"."
        return bytes(self.out)

    # -- memo ----------------------------------------------------------------------------------------------
    def _put(self, ident: Any) -> None:
        index = len(self._memo)
        self._memo[ident] = index
        self.out += b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)

    def _get(self, ident: Any) -> bool:
        index = self._memo.get(ident)
        if index is None:
            return False
        self.out += b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)
        return True

    # -- values --------------------------------------------------------------------------------------------
    def _save(self, value: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise EmitError(f"nested deeper than {MAX_DEPTH} levels")
        if value is None:
            self.out += b"N"
        elif value is True:
            self.out += b"\x88"
        elif value is False:
            self.out += b"\x89"
        elif isinstance(value, int):
            self._int(value)
        elif isinstance(value, float):
            self.out += b"G" + struct.pack(">d", value)
        elif isinstance(value, str):
            self._str(value)
        elif isinstance(value, bytes):
            self._global("_codecs", "encode")  # protocol 2 spells bytes as _codecs.encode(latin-1 text)
            self._str(value.decode("latin-1"))
            self._str("latin1")
            self.out += b"\x86R"
        elif isinstance(value, TorchDtype):
            if value.name not in TORCH_DTYPE_ATTR:
                raise EmitError(f"torch.{value.name} is not a dtype torch.load(weights_only=True) knows")
            self._global("torch", value.name)
        elif isinstance(value, OutTensor):
            self._tensor(value)
        elif isinstance(value, (list, tuple, dict)):
            self._container(value, depth)
        else:
            raise EmitError(f"a {type(value).__name__} value")

    def _int(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        elif -(1 << 31) <= value < (1 << 31):
            self.out += b"J" + struct.pack("<i", value)
        else:
            n = (value.bit_length() + 8) // 8  # two's complement, little-endian, with room for the sign
            raw = value.to_bytes(n, "little", signed=True)
            if n > 255:
                raise EmitError(f"an integer of {value.bit_length()} bits")
            self.out += b"\x8a" + bytes([n]) + raw

    def _str(self, value: str) -> None:
        raw = value.encode("utf-8", "surrogatepass")
        self.out += b"X" + struct.pack("<I", len(raw)) + raw

    def _global(self, module: str, name: str) -> None:
        ident = ("global", module, name)
        if not self._get(ident):
            self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
            self._put(ident)

    def _container(self, value: list[Any] | tuple[Any, ...] | dict[Any, Any], depth: int) -> None:
        if self._get(id(value)):
            return
        if isinstance(value, tuple):
            self.out += b"("
            for item in value:
                self._save(item, depth + 1)
            self.out += b"t"
            self._put(id(value))
            return
        if isinstance(value, list):
            self.out += b"]"
            self._put(id(value))
            self._batched(value, b"e", depth)
            return
        if isinstance(value, ODictOut):
            self._global("collections", "OrderedDict")
            self.out += b")R"
        else:
            self.out += b"}"
        self._put(id(value))
        self._batched(list(value.items()), b"u", depth)
        if isinstance(value, ODictOut) and value.attrs:
            self._container(value.attrs, depth + 1)
            self.out += b"b"

    def _batched(self, items: list[Any], op: bytes, depth: int) -> None:
        for start in range(0, len(items), 1000):  # the batch size of pickle's own APPENDS / SETITEMS
            self.out += b"("
            for item in items[start : start + 1000]:
                if op == b"u":
                    self._save(item[0], depth + 1)
                    self._save(item[1], depth + 1)
                else:
                    self._save(item, depth + 1)
            self.out += op

    def _tensor(self, t: OutTensor) -> None:
        if self._get(id(t)):
            return
        st = t.storage
        if st.dtype != t.dtype:
            raise EmitError(f"a {t.dtype} tensor over a {st.dtype} storage")
        self._global("torch._utils", "_rebuild_tensor_v2" if st.typed else "_rebuild_tensor_v3")
        self.out += b"("
        key = self._keys.get(id(st))
        if key is None:
            key = self._keys[id(st)] = str(len(self.storages))
            self.storages.append(st)
        self.out += b"("
        self._str("storage")
        if st.typed:
            self._global("torch", STORAGE_CLASS[st.dtype])
            numel = st.nbytes // st.itemsize
        else:
            self._global("torch.storage", "UntypedStorage")
            numel = st.nbytes
        self._str(key)
        self._str("cpu")
        self._int(numel)
        self.out += b"tQ"
        self._int(t.offset)
        self._tuple_of_ints(t.shape)
        self._tuple_of_ints(t.stride)
        self.out += b"\x89"  # requires_grad
        self._global("collections", "OrderedDict")
        self.out += b")R"  # backward_hooks
        if not st.typed:
            if t.dtype not in TORCH_DTYPE_ATTR:
                raise EmitError(f"dtype {t.dtype} has no torch equivalent")
            self._global("torch", t.dtype)
        self.out += b"tR"
        self._put(id(t))

    def _tuple_of_ints(self, values: tuple[int, ...]) -> None:
        if len(values) == 0:
            self.out += b")"
            return
        if len(values) > 3:
            self.out += b"("
        for v in values:
            self._int(v)
        self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(values), b"t")
