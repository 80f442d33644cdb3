"""A write plan: for each output tensor, the input tensor(s) it comes from and the operations that turn them into it.

An ``Entry`` with no operations is a copy (renamed or not): its bytes are copied as they are, never decoded. With
operations (transpose, reshape, split, concat/fuse, cast), the inputs are read as numpy arrays by byte range, one
entry at a time, so memory stays bounded by the largest tensor. Shapes and dtypes of every output are known before
anything is written (``Entry.out_shape``), so headers can be written first and the result verified afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ckptlint.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from ckptlint.checkpoint import Checkpoint

Shape = tuple[int, ...]


class Op:
    """One step of an entry's pipeline: a list of arrays in, a list of arrays out (usually one each)."""

    def shapes(self, shapes: list[Shape], dtypes: list[str]) -> tuple[list[Shape], list[str]]:
        """Output shapes and dtypes for these inputs; raises ValueError when they do not fit."""
        raise NotImplementedError

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


def _each(shapes: list[Shape], fn: Callable[[Shape], Shape]) -> list[Shape]:
    return [fn(s) for s in shapes]


@dataclass(frozen=True)
class Transpose(Op):
    """Permute axes (``None``: reverse them, as ``.T``)."""

    axes: tuple[int, ...] | None = None

    def _axes(self, ndim: int) -> tuple[int, ...]:
        axes = tuple(range(ndim))[::-1] if self.axes is None else tuple(a % ndim for a in self.axes)
        if sorted(axes) != list(range(ndim)):
            raise ValueError(f"transpose axes {self.axes} do not fit {ndim} dimensions")
        return axes

    def shapes(self, shapes: list[Shape], dtypes: list[str]) -> tuple[list[Shape], list[str]]:
        return _each(shapes, lambda s: tuple(s[a] for a in self._axes(len(s)))), dtypes

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [a.transpose(self._axes(a.ndim)) for a in arrays]


@dataclass(frozen=True)
class Reshape(Op):
    """Reshape in C order; one dimension may be -1."""

    shape: tuple[int, ...]

    def _resolve(self, s: Shape) -> Shape:
        numel = 1
        for d in s:
            numel *= d
        known = 1
        for d in self.shape:
            if d != -1:
                known *= d
        free = self.shape.count(-1)
        if free > 1 or (free == 0 and known != numel) or (free == 1 and (known == 0 or numel % known)):
            raise ValueError(f"cannot reshape {list(s)} into {list(self.shape)}")
        return tuple(numel // known if d == -1 else d for d in self.shape)

    def shapes(self, shapes: list[Shape], dtypes: list[str]) -> tuple[list[Shape], list[str]]:
        return _each(shapes, self._resolve), dtypes

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [a.reshape(self._resolve(a.shape)) for a in arrays]


@dataclass(frozen=True)
class Split(Op):
    """Take part ``index`` of ``parts`` equal parts (or of explicit ``sizes``) along ``axis``: a fused qkv weight
    becomes q, k and v with three entries over the same source (index 0, 1, 2)."""

    axis: int
    index: int
    parts: int | None = None
    sizes: tuple[int, ...] | None = None

    def _bounds(self, s: Shape) -> tuple[int, int, int]:
        if not s:
            raise ValueError("cannot split a 0-d tensor")
        axis = self.axis % len(s)
        n = s[axis]
        sizes = self.sizes
        if sizes is None:
            if not self.parts or n % self.parts:
                raise ValueError(
                    f"dimension {axis} of {list(s)} does not split into {self.parts} equal parts"
                )
            sizes = (n // self.parts,) * self.parts
        if sum(sizes) != n or not 0 <= self.index < len(sizes):
            raise ValueError(
                f"split sizes {list(sizes)} (part {self.index}) do not fit dimension {axis} of {list(s)}"
            )
        start = sum(sizes[: self.index])
        return axis, start, start + sizes[self.index]

    def shapes(self, shapes: list[Shape], dtypes: list[str]) -> tuple[list[Shape], list[str]]:
        def one(s: Shape) -> Shape:
            axis, start, end = self._bounds(s)
            return (*s[:axis], end - start, *s[axis + 1 :])

        return _each(shapes, one), dtypes

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for a in arrays:
            axis, start, end = self._bounds(a.shape)
            index = [slice(None)] * a.ndim
            index[axis] = slice(start, end)
            out.append(a[tuple(index)])
        return out


@dataclass(frozen=True)
class Concat(Op):
    """Join all inputs along ``axis`` (fuse q, k and v into one qkv weight)."""

    axis: int = 0

    def shapes(self, shapes: list[Shape], dtypes: list[str]) -> tuple[list[Shape], list[str]]:
        if not shapes or len(set(dtypes)) != 1:
            raise ValueError(f"concat needs inputs of one dtype, got {dtypes}")
        first = shapes[0]
        if not first:
            raise ValueError("cannot concatenate 0-d tensors")
        axis = self.axis % len(first)
        rest = [s[:axis] + s[axis + 1 :] for s in shapes]
        if any(len(s) != len(first) for s in shapes) or len(set(rest)) != 1:
            raise ValueError(f"shapes {[list(s) for s in shapes]} do not concatenate along axis {axis}")
        return [(*first[:axis], sum(s[axis] for s in shapes), *first[axis + 1 :])], dtypes[:1]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        import numpy as np

        return [np.concatenate(arrays, axis=self.axis % arrays[0].ndim)]


@dataclass(frozen=True)
class Stack(Op):
    """Stack all inputs along a new ``axis``."""

    axis: int = 0

    def shapes(self, shapes: list[Shape], dtypes: list[str]) -> tuple[list[Shape], list[str]]:
        if not shapes or len(set(shapes)) != 1 or len(set(dtypes)) != 1:
            raise ValueError(f"stack needs inputs of one shape and dtype, got {[list(s) for s in shapes]}")
        s = shapes[0]
        axis = self.axis % (len(s) + 1)
        return [(*s[:axis], len(shapes), *s[axis:])], dtypes[:1]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        import numpy as np

        return [np.stack(arrays, axis=self.axis % (arrays[0].ndim + 1))]


@dataclass(frozen=True)
class Cast(Op):
    """Convert to another dtype (canonical name: ``float32``, ``bfloat16``...)."""

    dtype: str

    def shapes(self, shapes: list[Shape], dtypes: list[str]) -> tuple[list[Shape], list[str]]:
        return shapes, [self.dtype] * len(dtypes)

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        from ckptlint.writers.arrays import numpy_dtype

        return [a.astype(numpy_dtype(self.dtype)) for a in arrays]


@dataclass(frozen=True)
class Index(Op):
    """Slice ``index`` of the leading axis (one block of a stacked, ``nn.scan``-saved tensor); as the first
    operation of an entry the writer reads only that slice's bytes."""

    index: int

    def shapes(self, shapes: list[Shape], dtypes: list[str]) -> tuple[list[Shape], list[str]]:
        if any(not s or not 0 <= self.index < s[0] for s in shapes):
            raise ValueError(f"no slice {self.index} in {[list(s) for s in shapes]}")
        return [s[1:] for s in shapes], dtypes

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [a[self.index] for a in arrays]


@dataclass(frozen=True)
class Fill(Op):
    """A new tensor of ``shape`` and ``dtype`` holding ``value`` everywhere (an entry without sources): the zero
    bias timm's CLIP heads have and open_clip's projections lack."""

    shape: tuple[int, ...]
    dtype: str
    value: float = 0.0

    def shapes(self, shapes: list[Shape], dtypes: list[str]) -> tuple[list[Shape], list[str]]:
        if shapes:
            raise ValueError("fill takes no input")
        return [self.shape], [self.dtype]

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        import numpy as np

        from ckptlint.writers.arrays import numpy_dtype

        return [np.full(self.shape, self.value, dtype=numpy_dtype(self.dtype))]


@dataclass(frozen=True)
class Entry:
    """Output tensor ``out`` made from input tensor(s) ``src`` (a key or a tuple of keys) through ``ops``."""

    out: str
    src: str | tuple[str, ...]
    ops: tuple[Op, ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.src,) if isinstance(self.src, str) else tuple(self.src)

    @property
    def is_copy(self) -> bool:
        """One source and no operation: the bytes are copied as they are."""
        return not self.ops and len(self.sources) == 1

    def out_spec(self, ckpt: Checkpoint) -> tuple[Shape, str]:
        """The output's (shape, dtype), from the inputs' headers; UsageError when the operations do not fit."""
        infos = [ckpt.tensors[k] for k in self.sources]
        shapes, dtypes = [tuple(i.shape) for i in infos], [i.dtype for i in infos]
        try:
            for op in self.ops:
                shapes, dtypes = op.shapes(shapes, dtypes)
        except ValueError as exc:
            raise UsageError(
                f"{ckpt.path}: cannot make {self.out!r} from {list(self.sources)}: {exc}"
            ) from None
        if len(shapes) != 1:
            raise UsageError(
                f"{ckpt.path}: {self.out!r} from {list(self.sources)} gives {len(shapes)} tensors, not one "
                "(add a Concat or Stack)"
            )
        return shapes[0], dtypes[0]


@dataclass
class WritePlan:
    """What to write: the entries, in output order, and how to treat what is not a tensor.

    ``keep_value``: for torch and flax msgpack outputs of an input of the same family, a non-tensor value (an
    ``epoch``, a step counter) under its flat key is kept when it returns True, and the input's nesting is kept
    when every entry is an unrenamed copy; None writes a flat mapping of the entries only.
    ``metadata``: safetensors ``__metadata__`` (None: the input's own, ``{"format": "pt"}`` for torch inputs).
    ``extra_files``: for a folder OUT, files to write next to the weights (name -> bytes), e.g. a new config.json.
    ``copy_sidecars``: copy the input folder's other small files (configs, tokenizer, README) into a folder OUT.
    ``weights_name``: for a folder OUT, the one weights file to write (``model.safetensors``), whatever the input's
    files were called and however many shards it had; None keeps the input's names (converted to the format).
    """

    entries: list[Entry]
    keep_value: Callable[[str], bool] | None = None
    metadata: dict[str, str] | None = None
    extra_files: dict[str, bytes] = field(default_factory=dict)
    copy_sidecars: bool = True
    weights_name: str | None = None

    @classmethod
    def of(cls, entries: Iterable[Entry] | WritePlan) -> WritePlan:
        return entries if isinstance(entries, WritePlan) else cls(list(entries))

    def check(self, ckpt: Checkpoint) -> dict[str, tuple[Shape, str]]:
        """Validate against the input: sources exist, outputs are unique and non-empty; returns their specs."""
        if not self.entries:
            raise UsageError(f"{ckpt.path}: nothing would be left to write")
        specs: dict[str, tuple[Shape, str]] = {}
        for entry in self.entries:
            missing = [k for k in entry.sources if k not in ckpt.tensors]
            if missing:
                raise UsageError(f"{ckpt.path}: no tensor {missing[0]!r} to make {entry.out!r} from")
            if entry.out in specs:
                raise UsageError(f"{ckpt.path}: the plan writes {entry.out!r} twice")
            specs[entry.out] = entry.out_spec(ckpt)
        return specs

    @property
    def pure_filter(self) -> bool:
        """Every entry is an unrenamed copy: the output is the input with tensors left out."""
        return all(e.is_copy and e.out == e.src for e in self.entries)


def plan_from_keymap(ckpt: Checkpoint, keymap: Callable[[str], str | None]) -> tuple[WritePlan, list[str]]:
    """A plan of copies from a key map (input key -> output key, None to drop); also the dropped keys.

    Non-tensor values are kept where the key map keeps their key. Raises UsageError when nothing is left or two
    tensors would get the same name.
    """
    entries: list[Entry] = []
    dropped: list[str] = []
    for key in ckpt.tensors:
        new = keymap(key)
        if new is None:
            dropped.append(key)
        else:
            entries.append(Entry(new, key))
    if not entries:
        raise UsageError(f"{ckpt.path}: nothing would be left to write")
    if len({e.out for e in entries}) != len(entries):
        raise UsageError(f"{ckpt.path}: the renaming would give two tensors the same name")
    return WritePlan(entries, keep_value=lambda k: keymap(k) is not None), dropped


def split_entries(out_keys: Sequence[str], src: str, axis: int = 0) -> list[Entry]:
    """Entries that split ``src`` into ``len(out_keys)`` equal parts along ``axis`` (fused qkv -> q, k, v)."""
    return [Entry(k, src, (Split(axis, i, parts=len(out_keys)),)) for i, k in enumerate(out_keys)]


def describe_op(op: Any) -> str:
    """Short text for an operation (``transpose``, ``split 1/3 on axis 0``)."""
    if isinstance(op, Split):
        return f"split {op.index + 1}/{op.parts or len(op.sizes or ())} on axis {op.axis}"
    return type(op).__name__.lower()
