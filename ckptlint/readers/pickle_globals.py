"""Which pickle globals a checkpoint may import, and which ones are known to be dangerous.

The safe set is default-deny: it lists the exact names that ``torch.save``, ``np.save``/``pickle`` of numpy
arrays, ``joblib.dump`` and plain Python data produce (re-derived from torch's ``_weights_only_unpickler``
allow-list and from what the libraries emit, see tests), each with the *kind* that says how
:mod:`ckptlint.readers.pickle_interpret` judges a use of it. Everything else is an unsafe global; nothing here
is ever imported.
"""

from __future__ import annotations

from ckptlint.dtypes import ITEM_BITS, TORCH_DTYPE, TORCH_STORAGE

# ---------------------------------------------------------------------------------------------------------------
# The safe set. Each name maps to a *kind*: how the walker interprets a call of it (never by importing it).
# ---------------------------------------------------------------------------------------------------------------

_TORCH_REBUILDERS = {
    "torch._utils._rebuild_tensor": "tensor_v1",
    "torch._utils._rebuild_tensor_v2": "tensor_v2",
    "torch._utils._rebuild_tensor_v3": "tensor_v3",
    "torch._utils._rebuild_qtensor": "qtensor",
    "torch._utils._rebuild_parameter": "parameter",
    "torch._utils._rebuild_parameter_with_state": "parameter",
    "torch._utils._rebuild_meta_tensor_no_storage": "meta_tensor",
    "torch._utils._rebuild_wrapper_subclass": "wrapper_subclass",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": "device_tensor",
    "torch._utils._rebuild_device_tensor_from_numpy": "device_tensor",
    "torch._utils._rebuild_sparse_tensor": "composite_tensor",
    "torch._utils._rebuild_nested_tensor": "composite_tensor",
    "torch._tensor._rebuild_from_type_v2": "from_type_v2",
    "torch.nn.parameter.Parameter": "parameter_class",
    "torch.Size": "size",
    "torch.device": "device",
    "torch.serialization._get_layout": "layout",
    "torch.storage.UntypedStorage": "storage_class",
    "torch.storage.TypedStorage": "storage_class",
    "torch.Tensor": "tensor_class",
    # pickle.dumps(tensor) outside torch.save nests a legacy torch.save of the storage; the walker verifies the
    # nested bytes itself (and flags this global when it cannot)
    "torch.storage._load_from_bytes": "load_from_bytes",
}

# torch dtypes that the canonical table does not name (their element sizes, for storage arithmetic)
_TORCH_EXTRA_DTYPE_BYTES = {
    "complex32": 4,
    "qint8": 1,
    "quint8": 1,
    "qint32": 4,
    "quint4x2": 1,
    "quint2x4": 1,
    "bits1x8": 1,
    "bits2x4": 1,
    "bits4x2": 1,
    "bits8": 1,
    "bits16": 2,
    "float4_e2m1fn_x2": 1,
    **{f"int{i}": 1 for i in range(1, 8)},
    **{f"uint{i}": 1 for i in range(1, 8)},
}
_TORCH_QSCHEMES = (
    "per_tensor_affine",
    "per_tensor_symmetric",
    "per_channel_affine",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
)
_TENSOR_TYPE_NAMES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")

_NUMPY_CORE = ("numpy.core", "numpy._core")
_NUMPY_FUNCS = {
    "multiarray._reconstruct": "np_reconstruct",
    "multiarray.scalar": "np_scalar",
    "numeric._frombuffer": "np_frombuffer",
}
_NUMPY_SCALAR_TYPES = (
    "bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 longdouble "
    "complex64 complex128 clongdouble str_ bytes_ void datetime64 timedelta64 intc uintc"
)
_ML_DTYPES = (
    "bfloat16 float8_e3m4 float8_e4m3 float8_e4m3b11fnuz float8_e4m3fn float8_e4m3fnuz float8_e5m2 "
    "float8_e5m2fnuz float8_e8m0fnu float6_e2m3fn float6_e3m2fn float4_e2m1fn int2 int4 uint2 uint4"
)

_NUMPY_DTYPE_CLASSES = (
    "Bool Int8 UInt8 Int16 UInt16 Int32 UInt32 Int64 UInt64 Float16 Float32 Float64 LongDouble Complex64 "
    "Complex128 CLongDouble Str Bytes Void DateTime64 TimeDelta64"
)

_BUILTIN_DATA = {
    "builtins.set": "set",
    "builtins.frozenset": "frozenset",
    "builtins.complex": "complex",
    "builtins.slice": "slice",
    "builtins.bytearray": "bytearray",
    "builtins.bytes": "bytes",
    "builtins.range": "range",
    "builtins.Ellipsis": "constant",
    "builtins.NotImplemented": "constant",
    "collections.OrderedDict": "dict",
    "collections.Counter": "dict",
    # timm's CheckpointSaver (and fairseq, iformer releases) store the training arguments as a Namespace:
    # importing argparse runs nothing, and a Namespace is rebuilt from a plain attribute dict
    "argparse.Namespace": "namespace",
    "_codecs.encode": "codecs_encode",
    # joblib.dump: each array is a NumpyArrayWrapper rebuilt by NEWOBJ + BUILD of its attributes, its bytes follow
    # in the stream (joblib reads them; no code of the wrapper runs but read_array, which reads bytes)
    "joblib.numpy_pickle.NumpyArrayWrapper": "joblib_array",
    "numpy.memmap": "np_type",
}


# HF Trainer saves ``training_args.bin`` with ``torch.save(TrainingArguments(...))``. Its records are plain classes
# rebuilt by NEWOBJ without arguments and BUILD of an attribute dict (no __init__ runs; tests check against the
# installed libraries that none defines __setstate__, __setattr__ or __new__: tests/test_safe_set.py), its enums are str enums called
# with their value (``ExplicitEnum._missing_`` only raises). Used in any other way they are unsafe (see walker).
_TRAINER_RECORDS = (
    "transformers.training_args.TrainingArguments",
    "transformers.training_args_seq2seq.Seq2SeqTrainingArguments",
    "transformers.trainer_pt_utils.AcceleratorConfig",
    "accelerate.state.PartialState",
)
_TRAINER_ENUMS = (
    "transformers.trainer_utils.SchedulerType",
    "transformers.trainer_utils.IntervalStrategy",
    "transformers.trainer_utils.SaveStrategy",
    "transformers.trainer_utils.HubStrategy",
    "transformers.trainer_utils.FSDPOption",
    "transformers.training_args.OptimizerNames",
    "transformers.debug_utils.DebugOption",
    "accelerate.utils.dataclasses.DistributedType",
)


def _build_safe_globals() -> dict[str, str]:
    safe: dict[str, str] = dict(_TORCH_REBUILDERS)
    safe.update(_BUILTIN_DATA)
    safe.update(dict.fromkeys(_TRAINER_RECORDS, "record"))
    safe.update(dict.fromkeys(_TRAINER_ENUMS, "enum"))
    for name in (*TORCH_DTYPE, *_TORCH_EXTRA_DTYPE_BYTES):
        if not name[0].isupper():
            safe[f"torch.{name}"] = "torch_dtype"
    for name in (*TORCH_STORAGE, "QUInt4x2Storage", "QUInt2x4Storage"):
        safe[f"torch.{name}"] = "storage_class"
        safe[f"torch.cuda.{name}"] = "storage_class"
    for name in _TENSOR_TYPE_NAMES:
        for module in ("torch", "torch.cuda", "torch.sparse", "torch.cuda.sparse"):
            if name != "Bool" or "sparse" not in module:
                safe[f"{module}.{name}Tensor"] = "tensor_class"
    for scheme in _TORCH_QSCHEMES:
        safe[f"torch.{scheme}"] = "constant"
    for core in _NUMPY_CORE:
        for func, kind in _NUMPY_FUNCS.items():
            safe[f"{core}.{func}"] = kind
    safe["numpy.ndarray"] = "np_ndarray"
    safe["numpy.dtype"] = "np_dtype"
    for name in _NUMPY_SCALAR_TYPES.split():
        safe[f"numpy.{name}"] = "np_type"
    for name in _ML_DTYPES.split():
        safe[f"ml_dtypes.{name}"] = "np_type"
    for name in _NUMPY_DTYPE_CLASSES.split():  # numpy >= 1.25: type(np.dtype(...)), pickled as a class
        safe[f"numpy.dtypes.{name}DType"] = "np_type"
    return safe


SAFE_GLOBALS: dict[str, str] = _build_safe_globals()

# storage class name (without module) -> canonical dtype; UntypedStorage holds bytes
STORAGE_DTYPES: dict[str, str] = {
    **TORCH_STORAGE,
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8",
    "TypedStorage": "uint8",
}


def torch_dtype_name(attr: str) -> str:
    """Canonical dtype name for ``torch.<attr>`` (``float32``); torch's own name when there is no canonical one."""
    return TORCH_DTYPE.get(attr, attr)


# torch stores the sub-byte int4/uint4 shells one element per byte
_ITEMSIZE = {name: bits // 8 if bits % 8 == 0 else 1 for name, bits in ITEM_BITS.items()}
_ITEMSIZE.update(_TORCH_EXTRA_DTYPE_BYTES)


def torch_itemsize(dtype: str) -> int | None:
    """Bytes per element of a canonical or torch-only dtype name (None when unknown)."""
    return _ITEMSIZE.get(dtype)


# ---------------------------------------------------------------------------------------------------------------
# Known-dangerous globals: named as such in the CK301 message. Matching is by module prefix, or by the exact
# global, or by any component of a dotted attribute path (``torch`` + ``serialization.os.system``).
# ---------------------------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


_DANGEROUS_MODULES: dict[str, str] = {
    **dict.fromkeys(_words("os posix nt subprocess pty commands sh popen2"), "runs system commands"),
    **dict.fromkeys(_words("ctypes _ctypes cffi"), "calls native code"),
    **dict.fromkeys(
        _words(
            "runpy importlib imp pkgutil zipimport code codeop pdb bdb timeit cProfile profile trace doctest "
            "site ensurepip venv distutils setuptools"
        ),
        "imports or runs Python code",
    ),
    **dict.fromkeys(
        _words("pickle _pickle cPickle marshal dill cloudpickle joblib shelve copyreg copy_reg pickletools"),
        "loads a nested payload",
    ),
    **dict.fromkeys(
        _words("types functools operator inspect gc weakref sys ast _operator _functools"),
        "reaches arbitrary callables or interpreter state",
    ),
    **dict.fromkeys(
        _words("shutil tempfile glob fileinput io _io pathlib zipfile tarfile"), "reads or writes files"
    ),
    **dict.fromkeys(
        _words(
            "socket _socket ssl webbrowser urllib urllib2 http httplib requests ftplib smtplib telnetlib "
            "asyncio xmlrpc socketserver"
        ),
        "opens network connections",
    ),
    **dict.fromkeys(
        _words("multiprocessing threading _thread thread signal _posixsubprocess"),
        "starts processes or threads",
    ),
    **dict.fromkeys(_words("pip _pip pkg_resources"), "installs or imports packages"),
    "torch.jit": "loads TorchScript code",
    "torch.hub": "downloads and runs code",
    "torch._inductor": "compiles and runs code",
    "torch._dynamo": "compiles and runs code",
    "torch.utils.cpp_extension": "compiles and runs native code",
    "numpy.testing": "runs code",
    "numpy.f2py": "compiles and runs native code",
    "numpy.distutils": "compiles and runs native code",
}
_DANGEROUS_GLOBALS: dict[str, str] = {
    **{
        f"builtins.{name}": "evaluates code or reaches arbitrary attributes"
        for name in _words(
            "eval exec compile __import__ getattr setattr delattr globals locals vars breakpoint input open exit "
            "quit help memoryview __builtins__ type object classmethod staticmethod property super"
        )
    },
    "torch.load": "loads a nested payload",
    "torch.serialization.load": "loads a nested payload",
    "torch.serialization._load": "loads a nested payload",
    "torch.serialization._legacy_load": "loads a nested payload",
    "torch.storage._load_from_bytes": "loads a nested torch payload with an unrestricted unpickler",
    "numpy.load": "loads a nested payload",
    "numpy.lib.npyio.load": "loads a nested payload",
    "numpy.lib._npyio_impl.load": "loads a nested payload",
}
# dotted name components that alone mark a global as dangerous, wherever they appear
_DANGEROUS_COMPONENTS = frozenset(
    _words(
        "system popen eval exec __import__ __builtins__ __globals__ __subclasses__ __reduce__ __reduce_ex__ "
        "__code__ spawn execv execve os posix nt subprocess builtins getattr"
    )
)


def danger_of(fullname: str) -> str | None:
    """Why ``fullname`` (``module.name``) is known to be dangerous, or None when it is merely unknown."""
    if fullname in _DANGEROUS_GLOBALS:
        return _DANGEROUS_GLOBALS[fullname]
    parts = fullname.split(".")
    for i in range(len(parts), 0, -1):
        reason = _DANGEROUS_MODULES.get(".".join(parts[:i]))
        if reason:
            return reason
    if any(p in _DANGEROUS_COMPONENTS for p in parts[1:]):
        return "reaches a dangerous attribute through a dotted name"
    return None
