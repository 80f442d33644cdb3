"""Which pickle globals a checkpoint may import, which ones are known to be dangerous, and the CK301 log.

The safe set is default-deny: it lists the exact names that ``torch.save``, ``np.save``/``pickle`` of numpy
arrays and plain Python data produce (re-derived from torch's ``_weights_only_unpickler`` allow-list and from
what the libraries emit, see tests). Everything else is an unsafe global: the pickle walker never imports it and
records it here; the log turns every distinct unsafe global into one CK301 finding naming the global, the pickle
member and the opcode offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ckptlint.dtypes import ITEM_BITS, TORCH_DTYPE, TORCH_STORAGE
from ckptlint.findings import Finding, Severity

if TYPE_CHECKING:
    from ckptlint.errors import UnreadableCheckpoint

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


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with control characters escaped and its length bounded: names come from untrusted files and
    messages must stay on one line."""
    if text.isprintable() and len(text) <= limit:
        return text
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")


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


# ---------------------------------------------------------------------------------------------------------------
# The log of everything the walker could not accept. Findings are built at the end: one per distinct global.
# ---------------------------------------------------------------------------------------------------------------

# distinct unsafe globals reported one by one; the rest are summarised in one finding
MAX_GLOBAL_FINDINGS = 32
MAX_OFFSETS = 16

_FIX = (
    "Do not load this file with pickle.load, torch.load(weights_only=False) or np.load(allow_pickle=True). "
    "If you trust its source, load it with torch.load(weights_only=True) (which refuses unknown globals) and "
    "re-save the tensors as safetensors; otherwise discard the file."
)


@dataclass
class _Use:
    opcode: str
    member: str
    offsets: list[int] = field(default_factory=list)
    count: int = 0
    note: str = ""


@dataclass
class SecurityLog:
    """What a file's pickles reference outside the safe set, collected across every stream and member."""

    path: str
    torchscript: bool = False  # ``__torch__.*`` classes are TorchScript's own and reported once by the reader
    uses: dict[str, _Use] = field(default_factory=dict)
    unverifiable: list[Finding] = field(default_factory=list)
    torchscript_classes: set[str] = field(default_factory=set)
    events: int = (
        0  # everything recorded so far, repeats included (lets callers see if a nested walk added any)
    )

    def unsafe_global(self, fullname: str, member: str, offset: int, opcode: str, note: str = "") -> None:
        """Record one import of ``fullname`` by ``opcode`` at ``offset`` of pickle ``member``."""
        self.events += 1
        fullname, member = one_line(fullname, 200), one_line(member)
        if self.torchscript and fullname.startswith("__torch__."):
            self.torchscript_classes.add(fullname)
            return
        use = self.uses.get(fullname)
        if use is None:
            use = self.uses[fullname] = _Use(opcode, member, note=note)
        use.count += 1
        if len(use.offsets) < MAX_OFFSETS:
            use.offsets.append(offset)

    def cannot_verify(self, what: str, member: str, offset: int, reason: str) -> None:
        """Fail closed: something the walker cannot prove harmless becomes a CK301 finding of its own."""
        self.events += 1
        if len(self.unverifiable) >= MAX_GLOBAL_FINDINGS:
            return
        what, member, reason = one_line(what), one_line(member), one_line(reason)
        self.unverifiable.append(
            Finding(
                code="CK301",
                severity=Severity.ERROR,
                message=f"pickle contains {what} in {member} at offset {offset}, which ckptlint cannot verify",
                cause=f"{reason} An unpickler may run code here; ckptlint fails closed.",
                fix=_FIX,
                details={"what": what, "member": member, "offsets": [offset], "reason": reason},
            )
        )

    @property
    def unsafe_names(self) -> list[str]:
        return list(self.uses)

    def findings(self) -> list[Finding]:
        """One CK301 finding per distinct unsafe global (capped), then the unverifiable constructs."""
        out: list[Finding] = []
        items = list(self.uses.items())
        for name, use in items[:MAX_GLOBAL_FINDINGS]:
            out.append(_global_finding(name, use))
        rest = items[MAX_GLOBAL_FINDINGS:]
        if rest:
            names = [n for n, _ in rest]
            out.append(
                Finding(
                    code="CK301",
                    severity=Severity.ERROR,
                    message=f"pickle imports {len(rest)} more globals outside the safe set: "
                    + ", ".join(names[:10])
                    + (" …" if len(names) > 10 else ""),
                    cause="Unpickling this file imports and calls these globals; any of them may run code.",
                    fix=_FIX,
                    details={"globals": names[:200], "dangerous": [n for n in names if danger_of(n)][:200]},
                )
            )
        out.extend(self.unverifiable)
        return out

    def summary(self, limit: int = 5) -> str:
        """A short text naming the unsafe globals found so far (for one-line error messages)."""
        names = self.unsafe_names + [str(f.details.get("what")) for f in self.unverifiable]
        if not names:
            return ""
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        return ", ".join(names[:limit]) + more


def _global_finding(name: str, use: _Use) -> Finding:
    danger = danger_of(name)
    where = f"in {use.member} at offset {use.offsets[0]}" + (
        f" (and {use.count - 1} more place{'s' if use.count > 2 else ''})" if use.count > 1 else ""
    )
    if danger:
        message = f"pickle imports {name}, a dangerous global ({danger}), {where}"
        cause = (
            f"Unpickling this file imports {name} and calls it: loading the file runs code on your machine."
        )
    else:
        message = f"pickle imports {name}, which is outside the safe set of checkpoint globals, {where}"
        cause = (
            f"Unpickling this file imports {name}. Only tensor, array and plain-data globals are known to be "
            "harmless; importing or calling any other global can run arbitrary code."
        )
    if use.note:
        cause += f" {use.note}"
    return Finding(
        code="CK301",
        severity=Severity.ERROR,
        message=message,
        cause=cause,
        fix=_FIX,
        details={
            "global": name,
            "member": use.member,
            "opcode": use.opcode,
            "offsets": list(use.offsets),
            "count": use.count,
            "dangerous": danger is not None,
            "danger": danger,
        },
    )


def failure_findings(exc: UnreadableCheckpoint, what: str, member: str, path: str) -> list[Finding]:
    """Findings for a nested pickle that could not be read: the unsafe globals seen before it broke, and, when the
    stream itself is malformed, a fail-closed CK301 (an unpickler runs everything up to the break)."""
    found = list(exc.findings)
    if "malformed pickle" in exc.reason:
        log = SecurityLog(path)
        log.cannot_verify(what, member, 0, f"{exc.reason}.")
        found.extend(log.findings())
    return found
