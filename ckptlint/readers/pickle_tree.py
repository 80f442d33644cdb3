"""Turn the object a pickle walk rebuilt into a Checkpoint's flat parts: dotted tensor keys, metadata, groups.

Nested dicts (trainer checkpoints ``{"epoch", "state_dict", "optimizer", ...}``) become dotted keys
(``state_dict.visual.conv1.weight``); list and tuple items holding tensors are numbered
(``optimizer.state.0.exp_avg``); other leaves go to metadata under their dotted key, truncated so that a file
cannot make the report large.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

from ckptlint.checkpoint import TensorInfo, tensor_info
from ckptlint.readers.limits import MAX_TENSORS, KeyPaths, LimitExceeded
from ckptlint.readers.pickle_globals import torch_itemsize
from ckptlint.readers.pickle_values import (
    ArrayRef,
    Blob,
    Composite,
    GlobalValue,
    Instance,
    NpDType,
    Opaque,
    StorageRef,
    TensorRef,
    TextBlob,
)

MAX_DEPTH = 64  # container nesting that is expanded into keys
MAX_NODES = 1 << 21  # values visited (shared sub-trees are expanded once per reference)
MAX_SHARED = 16  # times one container may be expanded (saved under several keys); more is a billion-laughs
MAX_META_ENTRIES = 1000
MAX_META_ITEMS = 16  # items shown of a list/dict leaf
MAX_META_CHARS = 256
TRUNCATED_KEY = "__truncated__"
_LEAVES = frozenset(
    {int, float, str, bool, bytes, complex, type(None)}
)  # never a tensor, never expanded  # metadata entry saying how many entries were left out


class TreeTooLarge(Exception):
    """The rebuilt object expands past a bound: more than MAX_NODES values (e.g. a billion-laughs of shared lists),
    MAX_TENSORS tensors, or key paths past readers/limits.py."""


@dataclass
class Tree:
    """What a Checkpoint needs from a pickled object."""

    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


def flatten(root: Any, *, sep: str = ".", root_key: str = "tensor") -> Tree:
    """Flatten ``root`` into dotted tensor keys, metadata leaves and top-level groups.

    ``root_key`` names a bare tensor at the root (the readers pass the file's stem, as the npy reader does).
    Raises ``TreeTooLarge`` when shared references expand beyond ``MAX_NODES`` values.
    """
    while isinstance(root, ArrayRef) and root.shape == () and root.items is not None and len(root.items) == 1:
        root = root.items[0]  # np.save(dict) pickles a 0-d object array around the dict
    flat = _Flattener(sep)
    flat.visit(root, None, 0, set(), root_key)
    tree = Tree(flat.tensors, flat.metadata)
    if flat.dropped:
        tree.metadata[TRUNCATED_KEY] = f"{flat.dropped} more metadata entries not shown"
    children = flat.children(root)
    if children is not None and not isinstance(root, Composite):
        tree.groups = [
            _key_text(key)
            for key, value in children
            if key is not None
            and isinstance(_container(value), (dict, list, tuple))
            and flat.has_tensor(value, 0)
        ]
    return tree


def tensor_of(value: Any) -> TensorInfo | None:
    """The TensorInfo of a rebuilt tensor, array or bare storage; None for anything else."""
    if isinstance(value, TensorRef) and not value.pending:
        size = torch_itemsize(value.dtype)
        storage = value.storage
        offset = None
        if storage is not None and storage.data_offset is not None and size is not None:
            offset = storage.data_offset + value.offset * size
        nbytes = math.prod(value.shape) * size if size is not None else None
        return tensor_info(value.shape, value.dtype, nbytes, storage.member if storage else None, offset)
    if isinstance(value, ArrayRef) and not value.pending and value.dtype != "object":
        nbytes = math.prod(value.shape) * value.itemsize if value.itemsize else None
        return tensor_info(value.shape, value.dtype, nbytes, None, value.data_offset)
    if isinstance(value, StorageRef):
        return tensor_info((value.numel,), value.dtype, value.nbytes, value.member, value.data_offset)
    return None


def _container(value: Any) -> Any:
    """The dict/list a value's children come from (an unsafe object's state, an object array's items)."""
    if isinstance(value, Instance):
        return _state_dict(value.state)
    if isinstance(value, ArrayRef) and value.dtype == "object":
        return value.items
    return value


def _state_dict(state: Any) -> dict[Any, Any] | None:
    if isinstance(state, dict):
        return state
    if isinstance(state, tuple) and len(state) == 2:  # (state, slotstate)
        merged: dict[Any, Any] = {}
        for part in state:
            if isinstance(part, dict):
                merged.update(part)
        return merged or None
    return None


class _Flattener:
    def __init__(self, sep: str) -> None:
        self.keys = KeyPaths(sep)
        self.tensors: dict[str, TensorInfo] = {}
        self.metadata: dict[str, Any] = {}
        self.dropped = 0
        self.nodes = 0
        self._has: dict[int, bool] = {}
        self._expanded: dict[int, int] = {}
        self._suffix: dict[str, int] = {}

    def children(self, value: Any) -> list[tuple[Any, Any]] | None:
        """(sub-key, child) pairs of a container to expand; None for a leaf. Sub-keys are raw (a dict key, an
        item index: ``_key_text`` renders them when needed); a None sub-key keeps the key."""
        if isinstance(value, Composite):
            return list(enumerate(value.parts))
        if isinstance(value, ArrayRef) and value.dtype == "object" and value.items is not None:
            if value.shape == () and len(value.items) == 1:
                return [(None, value.items[0])]
            return list(enumerate(value.items)) if self.has_tensor(value, 0) else None
        source = _container(value)
        if isinstance(source, dict):
            return list(source.items())
        if isinstance(source, (list, tuple)) and self.has_tensor(source, 0):
            return list(enumerate(source))
        return None

    def has_tensor(self, value: Any, depth: int) -> bool:
        """Whether a tensor is reachable from ``value`` (cached per object; cycles count as no)."""
        if tensor_of(value) is not None or isinstance(value, Composite):
            return True
        source = _container(value)
        if not isinstance(source, (dict, list, tuple)) or depth > MAX_DEPTH:
            return False
        ident = id(source)
        known = self._has.get(ident)
        if known is not None:
            return known
        self._has[ident] = False
        self._count()
        items = source.values() if isinstance(source, dict) else source
        found = any(self.has_tensor(v, depth + 1) for v in items)
        self._has[ident] = found
        return found

    def _count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise TreeTooLarge(f"the pickled object expands to more than {MAX_NODES} values")

    def visit(self, value: Any, key: str | None, depth: int, path: set[int], root_key: str) -> None:
        self._count()
        info = tensor_of(value)
        if info is not None:
            self._put(self.tensors, key if key is not None else root_key, info)
            return
        children = self.children(value)
        if children is None or not children:
            self._meta(key if key is not None else root_key, value)
            return
        ident = id(value)
        if ident in path:
            self._meta(key or root_key, "<cycle>")
            return
        if depth >= MAX_DEPTH:
            self._meta(key or root_key, f"<nested deeper than {MAX_DEPTH} levels>")
            return
        times = self._expanded[ident] = self._expanded.get(ident, 0) + 1
        if times > MAX_SHARED:
            raise TreeTooLarge(
                f"one container is referenced more than {MAX_SHARED} times (the object expands without bound)"
            )
        path.add(ident)
        for sub, child in children:
            if type(child) in _LEAVES and len(self.metadata) >= MAX_META_ENTRIES:
                self._count()  # a plain leaf past the shown metadata: counted, its key never built
                self.dropped += 1
                continue
            child_key = key if sub is None else self._join(key, sub if type(sub) is str else _key_text(sub))
            self.visit(child, child_key, depth + 1, path, root_key)
        path.discard(ident)

    def _join(self, key: str | None, sub: str) -> str:
        try:
            return self.keys.join(key, sub)
        except LimitExceeded as exc:
            raise TreeTooLarge(f"the pickled object is too large: {exc}") from None

    def _meta(self, key: str, value: Any) -> None:
        if len(self.metadata) >= MAX_META_ENTRIES:
            self.dropped += 1
            return
        self._put(self.metadata, key, meta_value(value))

    def _put(self, target: dict[str, Any], key: str, value: Any) -> None:
        if key in self.tensors or key in self.metadata:
            n = self._suffix.get(key, 2)  # next suffix to try: keys rendered alike cost O(1) each, not O(n)
            while f"{key}#{n}" in self.tensors or f"{key}#{n}" in self.metadata:
                n += 1
            self._suffix[key] = n + 1
            key = f"{key}#{n}"
        if target is self.tensors and len(self.tensors) >= MAX_TENSORS:
            raise TreeTooLarge(f"the pickled object is too large: it holds more than {MAX_TENSORS} tensors")
        target[key] = value


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return str(key)
    if isinstance(key, int):
        return str(key) if abs(key) < 1 << 64 else f"<int of {key.bit_length()} bits>"
    if isinstance(key, bytes):
        return key.decode("latin-1")
    return str(meta_value(key))


def meta_value(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, size-bounded rendering of a non-tensor value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 1 << 63 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_META_CHARS else value[:MAX_META_CHARS] + f"… ({len(value)} chars)"
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, (list, tuple, set, frozenset)):
        if depth >= 3:
            return f"<{type(value).__name__} of {len(value)}>"
        items = list(value)[:MAX_META_ITEMS] if not isinstance(value, (set, frozenset)) else _sorted(value)
        out = [meta_value(v, depth + 1) for v in items]
        if len(value) > MAX_META_ITEMS:
            out.append(f"… {len(value) - MAX_META_ITEMS} more")
        return out
    if isinstance(value, dict):
        if depth >= 3:
            return f"<dict of {len(value)}>"
        out_d = {_key_text(k): meta_value(v, depth + 1) for k, v in list(value.items())[:MAX_META_ITEMS]}
        if len(value) > MAX_META_ITEMS:
            out_d["…"] = f"{len(value) - MAX_META_ITEMS} more"
        return out_d
    if isinstance(value, TensorRef):
        return f"<tensor {list(value.shape)} {value.dtype}>"
    if isinstance(value, ArrayRef):
        if value.items is not None:
            return meta_value(value.items, depth)
        return f"<array {list(value.shape)} {value.dtype}>"
    if isinstance(value, GlobalValue):
        return value.name
    if isinstance(value, NpDType):
        return value.name
    if isinstance(value, StorageRef):
        return f"<storage {value.key}>"
    if isinstance(value, Composite):
        return f"<{value.kind} tensor>"
    if isinstance(value, (Opaque, Blob, TextBlob)):
        return repr(value)
    return f"<{type(value).__name__}>"


def _sorted(values: set[Any] | frozenset[Any]) -> list[Any]:
    items = list(values)[: MAX_META_ITEMS * 4]
    with contextlib.suppress(TypeError):
        items.sort()
    return items[:MAX_META_ITEMS]
