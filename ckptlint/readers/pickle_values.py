"""What a pickle's objects are rebuilt as: tensors, storages, arrays and placeholders, never the real objects.

:mod:`ckptlint.readers.pickle_interpret` builds these from what the inert stubs recorded while CPython's own
unpickler parsed the file; :mod:`ckptlint.readers.pickle_tree` flattens them into a Checkpoint's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckptlint.dtypes import NUMPY_KIND_NAMES, NUMPY_TYPESTR
from ckptlint.readers.pickle_globals import torch_itemsize


class Opaque:
    """Something not rebuilt (the result of an unsafe call, a value ckptlint does not interpret)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


class Instance(Opaque):
    """An object of an unsafe class (already reported); its BUILD state is kept so tensors inside are found."""

    __slots__ = ("args", "state")

    def __init__(self, what: str, args: Any = None, state: Any = None) -> None:
        super().__init__(what)
        self.args = args
        self.state = state


@dataclass(eq=False)
class Blob:
    """Bytes the parse skipped without reading them (a large argument): where they are in the file."""

    length: int
    offset: int

    def __repr__(self) -> str:
        return f"<bytes of {self.length} bytes>"


@dataclass(eq=False)
class TextBlob:
    """A text argument the parse skipped (kind ``u``: UTF-8, ``s``: a Python 2 string): where it is."""

    length: int
    offset: int
    kind: str

    def __repr__(self) -> str:
        return f"<text of {self.length} bytes>"


@dataclass(eq=False)
class StorageRef:
    """A torch storage: its key, element dtype, element count and where its bytes are (member and/or offset)."""

    key: str
    dtype: str
    numel: int  # elements of ``dtype`` (bytes for UntypedStorage)
    location: str = "cpu"
    member: str | None = None  # zip member holding the bytes; None: the file itself
    data_offset: int | None = None  # byte offset of element 0 inside ``member`` (or the file)
    untyped: bool = False
    itemsize: int | None = field(init=False)
    nbytes: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.itemsize = 1 if self.untyped else torch_itemsize(self.dtype)
        self.nbytes = None if self.itemsize is None else self.numel * self.itemsize


@dataclass(eq=False)
class TensorRef:
    """A tensor rebuilt from its storage: shape, dtype, storage and element offset into it."""

    shape: tuple[int, ...]
    dtype: str
    storage: StorageRef | None = None
    offset: int = 0  # in elements of ``dtype``
    pending: bool = False  # created by NEWOBJ of a tensor class; BUILD (set_) fills it in
    stride: tuple[int, ...] | None = None  # in elements; None when not given (meta tensors)


@dataclass(eq=False)
class ArrayRef:
    """A numpy array: shape and dtype; object arrays keep their items (they are pickled inline)."""

    shape: tuple[int, ...] = ()
    dtype: str = "float64"
    itemsize: int | None = None
    items: list[Any] | None = None
    data_offset: int | None = None
    pending: bool = False


@dataclass(eq=False)
class NpDType:
    """A numpy dtype: its type string (``f4``, ``V2``, ``U3``) and canonical name."""

    spec: str
    name: str
    itemsize: int | None
    byteorder: str = "="


class Attrs(dict):  # type: ignore[type-arg]
    """An object whose state is a plain attribute dict (argparse.Namespace, a trainer record)."""


class ODict(dict):  # type: ignore[type-arg]
    """A ``collections.OrderedDict``: a dict that remembers it was one and the attributes BUILD gave it (a
    state_dict's ``_metadata``), so that a writer can emit it again as ``torch.save`` did."""

    attrs: dict[Any, Any] | None = None


@dataclass(eq=False)
class Composite:
    """A tensor made of other tensors (sparse, nested): its parts are reported under numbered sub-keys."""

    kind: str
    parts: list[Any] = field(default_factory=list)


@dataclass(eq=False)
class GlobalValue:
    """A global used as a value (a dtype, a storage or tensor class, a numpy type): its name and safe kind."""

    name: str
    kind: str | None

    def __repr__(self) -> str:
        return self.name


class Corrupt(Exception):
    """The pickle is inconsistent in a way that makes the loader fail too (e.g. a tensor outside its storage)."""


def short(value: Any) -> str:
    """A short description of an untrusted value for messages (never a recursive repr)."""
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        text = repr(value) if not isinstance(value, int) or abs(value) < 1 << 64 else "<huge int>"
        return text[:40] + ("…" if len(text) > 40 else "")
    return f"a {type(value).__name__}"


def np_dtype(spec: str) -> NpDType:
    """Canonical name and item size of a numpy dtype string without byte order (``f4`` -> float32)."""
    spec = spec.lstrip("<>|=")
    if spec in NUMPY_TYPESTR:
        digits = "".join(c for c in spec if c.isdigit())
        return NpDType(spec, NUMPY_TYPESTR[spec], int(digits) if digits else None)
    kind, digits = spec[:1], spec[1:]
    size = int(digits) if digits.isdigit() else None
    if kind == "O":
        return NpDType(spec, "object", size)
    if kind in ("M", "m"):
        return NpDType(spec, "datetime64" if kind == "M" else "timedelta64", 8)
    if kind == "U" and size is not None:
        return NpDType(spec, f"str{size * 32}", size * 4)
    if kind in NUMPY_KIND_NAMES and size is not None:
        return NpDType(spec, f"{NUMPY_KIND_NAMES[kind]}{size * 8}", size)
    return NpDType(spec, spec or "unknown", size)
