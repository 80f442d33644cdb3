"""How the torch and numpy globals of the safe set are judged and rebuilt (mixed into the Interpreter).

``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and its siblings become
:class:`TensorRef` over the storage a persistent id named; numpy's ``_reconstruct`` then ``BUILD``,
``_frombuffer``, ``scalar`` and ``dtype`` become :class:`ArrayRef`, numbers and :class:`NpDType`; a joblib array
wrapper becomes the :class:`ArrayRef` whose bytes joblib read inline. Only the forms the libraries write are
accepted; anything else is flagged (CK301) through ``self.flag``, and an inconsistency that makes the loader
fail too (a tensor larger than its storage) raises :class:`Corrupt`. ``torch.storage._load_from_bytes`` is
accepted only when the whole torch file it loads verifies (``self.nested``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ckptlint.facts import SecurityFacts
from ckptlint.readers.pickle_globals import STORAGE_DTYPES, torch_dtype_name, torch_itemsize
from ckptlint.readers.pickle_stubs import Rec, stub_of
from ckptlint.readers.pickle_values import (
    ArrayRef,
    Blob,
    Composite,
    Corrupt,
    GlobalValue,
    NpDType,
    Opaque,
    StorageRef,
    TensorRef,
    np_dtype,
    short,
)

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_DIM = 1 << 62
MAX_NDIM = 64
MAX_NESTED = 3  # pickles nested inside pickles
# safe globals that are harmless only as the callee of the call ckptlint verifies
CALL_ONLY_KINDS = frozenset({"load_from_bytes", "record"})
# attributes an unpickler looks up on an object and calls: planting one with BUILD makes it a callee
PLANTED = {"BUILD": "__setstate__", "APPEND": "append", "EXTEND": "extend", "ADD": "add"}
_JOBLIB_KEYS = frozenset({"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"})
_NP_STRUCT = {"b1": "?", "i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q", "u8": "Q",
              "f2": "e", "f4": "f", "f8": "d"}  # fmt: skip


@dataclass
class StoragePid:
    """The fields of a torch ``('storage', storage_type, key, location, numel[, view_metadata])`` id."""

    key: str
    dtype: str
    untyped: bool
    numel: int
    location: str
    view: tuple[str, int, int] | None = None


def storage_pid(pid: Any, fields: int) -> StoragePid | str:
    """A torch storage persistent id of ``fields`` items (5 in zip archives, 6 in legacy files), rebuilt from
    recorded values; a text saying what is wrong otherwise."""
    if not isinstance(pid, tuple) or len(pid) != fields:
        return f"persistent id is not a {fields}-item storage tuple"
    typename = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
    if typename != "storage":
        return f"persistent id of type {short(typename)}, not 'storage'"
    stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if not isinstance(stype, GlobalValue) or stype.kind != "storage_class":
        return "storage type is not a torch storage class"
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    if isinstance(location, bytes):
        location = location.decode("latin-1")
    if not isinstance(key, (str, int)) or not isinstance(location, str):
        return "storage key or location is not a string"
    if type(numel) is not int or not 0 <= numel < MAX_DIM:
        return "storage size is not a non-negative int"
    cls = stype.name.rsplit(".", 1)[1]
    view = None
    if fields == 6 and pid[5] is not None:
        v = pid[5]
        if (
            not isinstance(v, tuple)
            or len(v) != 3
            or not isinstance(v[0], (str, bytes, int))
            or any(type(x) is not int or x < 0 for x in v[1:])
        ):
            return "storage view metadata is not (key, offset, size)"
        view = (v[0].decode("latin-1") if isinstance(v[0], bytes) else str(v[0]), v[1], v[2])
    untyped = cls in ("UntypedStorage", "TypedStorage")
    return StoragePid(str(key), STORAGE_DTYPES.get(cls, "uint8"), untyped, numel, location[:64], view)


class TensorKinds:
    """The torch, numpy and joblib interpretations of :class:`ckptlint.readers.pickle_interpret.Interpreter`."""

    # provided by the Interpreter
    member: str
    facts: SecurityFacts
    depth: int
    nested: Any
    locate: Callable[[bytes], int | None] | None
    _nested_seen: dict[int, tuple[Any, Any]]

    def flag(self, g: Rec, why: str) -> None:
        raise NotImplementedError

    def value(self, obj: Any, depth: int = 0) -> Any:
        raise NotImplementedError

    def _unexpected(self, g: Rec, rec: Rec, what: str) -> Opaque:
        raise NotImplementedError

    def _no_ops(self, g: Rec, rec: Rec) -> None:
        raise NotImplementedError

    def _last_state(self, rec: Rec) -> Any:
        raise NotImplementedError

    # torch tensors ----------------------------------------------------------------------------------------

    def _shape(self, value: Any, what: str, g: Rec) -> tuple[int, ...] | None:
        """A shape/stride tuple of non-negative ints; None (flagged) otherwise."""
        if (
            isinstance(value, (tuple, list))
            and len(value) <= MAX_NDIM
            and all(type(d) is int and 0 <= d < MAX_DIM for d in value)
        ):
            return tuple(value)
        if not isinstance(value, Opaque):
            self.flag(g, f"called with a {what} that is not a tuple of non-negative ints")
        return None

    def _dtype_arg(self, value: Any, g: Rec) -> str | None:
        if isinstance(value, GlobalValue) and value.kind == "torch_dtype":
            return torch_dtype_name(value.name.rsplit(".", 1)[1])
        if not isinstance(value, Opaque) and not (isinstance(value, GlobalValue) and value.kind is None):
            self.flag(g, "called with a dtype that is not a torch dtype")
        return None

    def make_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, dtype: Any, g: Rec) -> Any:
        if not isinstance(storage, StorageRef):
            if not isinstance(storage, Opaque):
                self.flag(g, f"called with a storage that is {short(storage)}")
            return Opaque("tensor")
        shape, strides = self._shape(size, "size", g), self._shape(stride, "stride", g)
        if shape is None or strides is None:
            return Opaque("tensor")
        if type(offset) is not int or not 0 <= offset < MAX_DIM:
            self.flag(g, "called with a storage offset that is not a non-negative int")
            return Opaque("tensor")
        if len(strides) != len(shape):
            raise Corrupt(f"tensor size {list(shape)} and stride {list(strides)} differ in length")
        name = storage.dtype
        if dtype is not None:
            found = self._dtype_arg(dtype, g)
            if found is None:
                return Opaque("tensor")
            name = found
        itemsize = storage.itemsize if name == storage.dtype else torch_itemsize(name)
        if itemsize and storage.nbytes is not None and all(shape):
            extent = offset + 1 + sum((s - 1) * st for s, st in zip(shape, strides, strict=True))
            available = storage.nbytes // itemsize
            if extent > available:
                raise Corrupt(
                    f"tensor of size {list(shape)} at offset {offset} needs {extent} elements of {name} "
                    f"but storage {storage.key} holds {available}"
                )
        return TensorRef(shape, name, storage, offset, stride=strides)

    def _tensor(self, g: Rec, rec: Rec, args: tuple[Any, ...], nargs: int, dtype_at: int | None) -> Any:
        self._no_ops(g, rec)
        if rec.how != "CALL" or len(args) < nargs:
            return self._unexpected(g, rec, "called")
        dtype = args[dtype_at] if dtype_at is not None else None
        return self.make_tensor(args[0], args[1], args[2], args[3], dtype, g)

    def _k_tensor_v1(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        return self._tensor(g, rec, args, 4, None)

    _k_tensor_v2 = _k_tensor_v1
    _k_qtensor = _k_tensor_v1

    def _k_tensor_v3(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        return self._tensor(g, rec, args, 7, 6)

    def _k_parameter(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if not args or (rec.how == "NEW" and g.name.startswith("torch._utils.")):
            return self._unexpected(g, rec, "called")
        if len(args) >= 4 and g.name.endswith("_with_state") and isinstance(args[3], dict):
            for k in args[3]:
                if isinstance(k, str) and (k in PLANTED.values() or k.startswith("__")):
                    self.flag(g, f"called with a state that sets {short(k)} on the tensor")
        value = args[0]
        if isinstance(value, (TensorRef, ArrayRef, Opaque, Composite)):
            return value
        return self._unexpected(g, rec, "called")

    _k_parameter_class = _k_parameter
    _k_device_tensor = _k_parameter

    def _k_meta_tensor(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if len(args) < 3:
            return self._unexpected(g, rec, "called")
        dtype, shape = self._dtype_arg(args[0], g), self._shape(args[1], "size", g)
        return Opaque("tensor") if dtype is None or shape is None else TensorRef(shape, dtype)

    def _k_wrapper_subclass(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if len(args) < 3:
            return self._unexpected(g, rec, "called")
        dtype, shape = self._dtype_arg(args[1], g), self._shape(args[2], "size", g)
        return Opaque("tensor") if dtype is None or shape is None else TensorRef(shape, dtype)

    def _k_composite_tensor(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        parts = list(args[1]) if len(args) > 1 and isinstance(args[1], (list, tuple)) else list(args)
        return Composite("sparse" if "sparse" in g.name else "nested", parts)

    def _k_from_type_v2(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        """``_rebuild_from_type_v2(func, new_type, args, state)`` calls ``func(*args)``: judged as that call."""
        self._no_ops(g, rec)
        if len(args) < 3 or not isinstance(args[2], (tuple, list)):
            return self._unexpected(g, rec, "called")
        func = args[0]
        if not isinstance(func, GlobalValue) or func.kind is None:
            return Opaque("tensor")  # an unsafe func is reported where it is imported
        if len(args) > 3 and isinstance(args[3], dict):
            for k in args[3]:
                if isinstance(k, str) and (k in PLANTED.values() or k.startswith("__")):
                    self.flag(g, f"called with a state that sets {short(k)} on the tensor")
        inner_rec = Rec("call", callee=None, how="CALL", args=tuple(args[2]))
        inner_g = Rec("global", name=func.name, offset=g.offset)
        handler = getattr(self, f"_k_{func.kind}", None)
        if handler is None or func.kind in CALL_ONLY_KINDS:
            self.flag(inner_g, f"called through {g.name}")
            return Opaque("tensor")
        return handler(inner_g, inner_rec, tuple(args[2]))

    def _k_tensor_class(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        """Legacy tensors: ``NEWOBJ`` of a tensor class, then ``BUILD`` (set_) with (storage, offset, size, stride)."""
        if rec.how != "NEW" or args:
            return self._unexpected(g, rec, "called")
        ops = rec.ops or []
        if len(ops) != 1 or ops[0][0] != "BUILD":
            self.flag(g, "a legacy tensor that is not rebuilt by one BUILD")
            return Opaque("tensor")
        state = self.value(ops[0][1])
        if not isinstance(state, tuple) or len(state) != 4:
            self.flag(g, "a legacy tensor whose state is not (storage, offset, size, stride)")
            return Opaque("tensor")
        return self.make_tensor(state[0], state[1], state[2], state[3], None, g)

    def _k_load_from_bytes(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        """``torch.storage._load_from_bytes(b)`` runs ``torch.load(io.BytesIO(b), weights_only=False)``."""
        self._no_ops(g, rec)
        if rec.how != "CALL" or len(args) != 1 or not isinstance(args[0], (bytes, Blob)):
            self.flag(g, "called with something other than one byte string: its nested torch.load cannot be "
                         "verified")  # fmt: skip
            return Opaque("nested torch.load")
        if self.nested is None or self.depth + 1 > MAX_NESTED:
            why = (
                "cannot be read here"
                if self.nested is None
                else f"is nested more than {MAX_NESTED} levels deep"
            )
            self.flag(g, f"its nested torch.load payload {why}")
            return Opaque("nested torch.load")
        data = args[0]
        seen = self._nested_seen.get(id(data))
        if seen is not None and seen[0] is data:  # the same payload through the memo: judged once
            return seen[1]
        label = f"{self.member}[torch.load payload at {g.offset}]"
        found = SecurityFacts()
        try:
            value = self.nested((data.offset, data.length) if isinstance(data, Blob) else data, label,
                                self.depth + 1, found)  # fmt: skip
        except Exception as exc:  # the nested payload does not verify (malformed, refused, corrupt)
            self.flag(g, f"its nested torch.load payload could not be verified: {short(str(exc))}")
            value = Opaque("nested torch.load")
        if found.unsafe:
            self.facts.merge(found)
            self.flag(g, "its nested torch.load payload imports unsafe globals")
        self._nested_seen[id(data)] = (data, value)
        return value

    def _k_storage_class(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        return self._unexpected(g, rec, "called")

    _k_torch_dtype = _k_storage_class
    _k_constant = _k_storage_class

    # numpy ------------------------------------------------------------------------------------------------

    def np_dtype_of(self, value: Any) -> NpDType | None:
        if isinstance(value, NpDType):
            return value
        if isinstance(value, str):
            return np_dtype(value)
        if isinstance(value, GlobalValue) and value.kind == "np_type":
            name = value.name.rsplit(".", 1)[1]
            if value.name.startswith("ml_dtypes."):
                return NpDType(name, name, None)
            if value.name.startswith("numpy.dtypes."):
                name = name.removesuffix("DType").lower()
                return NpDType(name, name, None)
            return NpDType(name, name.rstrip("_") if name != "bool_" else "bool", None)
        return None

    def _k_np_dtype(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        found = self.np_dtype_of(args[0]) if args else None
        if found is None or len(args) > 3 or rec.how != "CALL":
            return self._unexpected(g, rec, "called")
        dt = NpDType(found.spec, found.name, found.itemsize, found.byteorder)
        for op in rec.ops or ():
            if op[0] != "BUILD":
                self.flag(g, f"{op[0]} on a numpy dtype (checkpoints never do this)")
                continue
            state = self.value(op[1])
            if not isinstance(state, tuple):
                self.flag(g, "a numpy dtype whose state is not a tuple")
                continue
            if len(state) >= 2 and isinstance(state[1], str):
                dt.byteorder = state[1]
            if len(state) >= 6 and type(state[5]) is int and state[5] > 0:
                dt.itemsize = state[5]
            if len(state) >= 4 and state[3] is not None:  # a dtype with fields: numpy names it void<bits>
                dt.name = f"void{(dt.itemsize or 0) * 8}"
            if dt.name in ("datetime64", "timedelta64") and len(state) >= 9:
                meta = state[8]
                if isinstance(meta, tuple) and len(meta) == 2 and isinstance(meta[1], tuple):
                    meta = meta[1]
                if isinstance(meta, tuple) and meta and isinstance(meta[0], bytes):
                    dt.name = f"{dt.name}[{meta[0].decode('latin-1')[:8]}]"
        return dt

    def _k_np_reconstruct(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        if rec.how != "CALL" or len(args) != 3:
            return self._unexpected(g, rec, "called")
        return self._array(g, rec)

    def _k_np_ndarray(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        if rec.how != "NEW":
            return self._unexpected(g, rec, "called")
        return self._array(g, rec)

    def _array(self, g: Rec, rec: Rec) -> ArrayRef:
        """An array made empty, then filled by one BUILD (``ndarray.__setstate__``)."""
        arr = ArrayRef(pending=True)
        for op in rec.ops or ():
            if op[0] != "BUILD":
                self.flag(g, f"{op[0]} on a numpy array (checkpoints never do this)")
                continue
            self._build_array(arr, self.value(op[1]), g)
        return arr

    def _build_array(self, arr: ArrayRef, state: Any, g: Rec) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            self.flag(g, "a numpy array whose state is not a 4- or 5-tuple")
            return
        _shape, dtype, _fortran, data = state[-4:]
        shape = self._shape(_shape, "shape", g)
        dt = self.np_dtype_of(dtype)
        if shape is None or dt is None:
            return
        arr.shape, arr.dtype, arr.itemsize, arr.pending = shape, dt.name, dt.itemsize, False
        if dt.name == "object":
            arr.items = list(data) if isinstance(data, (list, tuple)) else None
            return
        if isinstance(data, Blob) and data.offset >= 0:
            arr.data_offset = data.offset
        elif isinstance(data, bytes) and self.locate is not None and len(data) >= 1024:
            arr.data_offset = self.locate(data)
        length = data.length if isinstance(data, Blob) else len(data) if isinstance(data, bytes) else None
        if length is not None and dt.itemsize and length != math.prod(shape) * dt.itemsize:
            raise Corrupt(
                f"numpy array data holds {length} bytes, shape {list(shape)} {dt.name} needs more or less"
            )

    def _k_np_frombuffer(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        if len(args) < 3:
            return self._unexpected(g, rec, "called")
        dt = self.np_dtype_of(args[1])
        shape = self._shape(args[2], "shape", g)
        if dt is None or shape is None:
            return Opaque("numpy array")
        arr = ArrayRef(shape, dt.name, dt.itemsize)
        if isinstance(args[0], Blob) and args[0].offset >= 0:
            arr.data_offset = args[0].offset
        elif isinstance(args[0], bytes) and self.locate is not None and len(args[0]) >= 1024:
            arr.data_offset = self.locate(args[0])
        return arr

    def _k_np_scalar(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        self._no_ops(g, rec)
        dt = self.np_dtype_of(args[0]) if args else None
        if dt is None or len(args) != 2:
            return self._unexpected(g, rec, "called")
        data = args[1]
        if dt.name == "object":
            return data
        fmt = _NP_STRUCT.get(dt.spec)
        if isinstance(data, bytes):
            order = ">" if dt.byteorder == ">" else "<"
            if fmt and struct.calcsize(fmt) == len(data):
                return struct.unpack(order + fmt, data)[0]
            if dt.spec in ("c8", "c16") and len(data) in (8, 16):
                re, im = struct.unpack(order + ("ff" if len(data) == 8 else "dd"), data)
                return complex(re, im)
            if dt.name == "bfloat16" and len(data) == 2:
                return struct.unpack("<f", b"\x00\x00" + data)[0]
        return Opaque(f"numpy {dt.name} scalar")

    def _k_np_type(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        return self._unexpected(g, rec, "called")

    # joblib -----------------------------------------------------------------------------------------------

    def _k_joblib_array(self, g: Rec, rec: Rec, args: tuple[Any, ...]) -> Any:
        """A joblib NumpyArrayWrapper whose BUILD the parse did not turn into an array (not joblib's reading)."""
        if rec.how != "NEW" or args:
            return self._unexpected(g, rec, "called")
        return Opaque("joblib array wrapper")

    def joblib_array(self, rec: Rec) -> Any:
        wrapper = rec.args[0]
        callee = stub_of(wrapper.callee)
        g = callee if callee is not None else Rec("global", name="joblib array")
        if wrapper.how != "NEW" or wrapper.args:
            return self._unexpected(g, wrapper, "called")
        state = self._last_state(wrapper)
        if not isinstance(state, dict) or not set(state) <= _JOBLIB_KEYS:
            self.flag(g, "a joblib array wrapper whose state is not the attributes joblib writes")
            return Opaque("joblib array")
        if len([op for op in wrapper.ops or () if op[0] == "BUILD"]) != 1 or len(wrapper.ops or ()) != 1:
            self.flag(g, "a joblib array wrapper rebuilt by more than one BUILD")
        sub = state.get("subclass")
        if not (isinstance(sub, GlobalValue) and sub.name in ("numpy.ndarray", "numpy.memmap")):
            self.flag(g, "a joblib array of a class other than numpy.ndarray")
        dt = self.np_dtype_of(state.get("dtype"))
        shape = self._shape(state.get("shape"), "shape", g)
        if dt is None or shape is None:
            return Opaque("joblib array")
        if rec.how == "objects":
            return ArrayRef(shape, "object", None, items=self._items(rec.kwargs["value"]))
        return ArrayRef(shape, dt.name, dt.itemsize, data_offset=rec.kwargs["offset"])

    def _items(self, value: Any) -> list[Any] | None:
        out = self.value(value)
        if isinstance(out, ArrayRef) and out.items is not None:
            return out.items
        return [out]
