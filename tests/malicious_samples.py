"""Malicious checkpoint samples, written at test time into a temp dir (no malicious bytes are committed).

Each sample follows a technique that public advisories and write-ups describe (protocol and opcode variants,
scanner deny-list bypasses such as the CVE-2025-1716 ``pip.main`` one, ``builtins`` aliases and dotted names,
torch.load ``weights_only`` themes such as the legacy tar path of CVE-2025-32434, nested loaders, zip tricks,
polyglots, TorchScript, numpy object arrays). Every payload was written for this project from those
descriptions; no other scanner's test corpus is used. A payload only ever creates the file ``target`` (a path in
a temp dir): ``touch target`` through a shell, or ``open(target, 'w')`` in Python.

``Sample.loader`` says how the payload fires for the positive control (``fire`` below, run in a subprocess):
``pickle`` (``pickle.load`` on every stream), ``torch`` (``torch.load(weights_only=False)``; ``torch_fh`` on an
open file object, for names ending in ``.safetensors``, which torch.load hands to safetensors), ``numpy``
(``np.load(allow_pickle=True)``, every array), ``torch:<file>`` (torch.load of a file inside a sample folder), or
None when it is not live here (EXT opcodes need a registry entry, TorchScript runs no file operation, a loader
that reads only part of the file...): those are still files a scanner must flag.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------------------------------------------------------
# opcode helpers
# ---------------------------------------------------------------------------------------------------------------


def u(text: str) -> bytes:
    """BINUNICODE (protocol 1+)."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def su(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4)."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def bb(data: bytes) -> bytes:
    """BINBYTES (protocol 3)."""
    return b"B" + struct.pack("<I", len(data)) + data


def glob(module: str, name: str) -> bytes:
    """GLOBAL (every protocol)."""
    return f"c{module}\n{name}\n".encode()


def sglob(module: str, name: str) -> bytes:
    """STACK_GLOBAL from two SHORT_BINUNICODE strings (protocol 4)."""
    return su(module) + su(name) + b"\x93"


def call(func: bytes, *args: bytes) -> bytes:
    """``func(*args)`` with MARK ... TUPLE REDUCE."""
    return func + b"(" + b"".join(args) + b"tR"


def strlist(items: list[str]) -> bytes:
    return b"](" + b"".join(u(i) for i in items) + b"e"


def p2(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def framed(proto: int, *chunks: bytes) -> bytes:
    """Protocol 4/5 stream whose body is cut into FRAMEs at the given opcode boundaries."""
    out = b"\x80" + bytes([proto])
    for chunk in chunks:
        out += b"\x95" + struct.pack("<Q", len(chunk)) + chunk
    return out


def touch(target: str) -> str:
    return f"touch {target}"


def py_touch(target: str) -> str:
    return f"open({target!r}, 'w').close()"


def os_system(target: str, module: str = "posix") -> bytes:
    return call(glob(module, "system"), u(touch(target)))


class _Reduce:
    """An object whose pickle calls ``func(*args)`` (used with the real pickler, for realistic streams)."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, ...]:
        return self.func, self.args


def evil_object(target: str) -> _Reduce:
    return _Reduce(os.system, touch(target))


# ---------------------------------------------------------------------------------------------------------------
# samples
# ---------------------------------------------------------------------------------------------------------------

Writer = Callable[[Path, str], Path]


@dataclass(frozen=True)
class Sample:
    name: str
    theme: str
    write: Writer
    globals: frozenset[str] = field(default_factory=frozenset)  # CK301 (or the CK001 reason) must name these
    loader: str | None = "pickle"


SAMPLES: dict[str, Sample] = {}


def sample(name: str, theme: str, globals_: set[str] | None = None, loader: str | None = "pickle"):
    def register(write: Writer) -> Writer:
        SAMPLES[name] = Sample(name, theme, write, frozenset(globals_ or ()), loader)
        return write

    return register


def pickle_sample(
    name: str, theme: str, globals_: set[str], data: Callable[[str], bytes], **kw: object
) -> None:
    def write(directory: Path, target: str) -> Path:
        path = directory / f"{name}.pkl"
        path.write_bytes(data(target))
        return path

    sample(name, theme, globals_, **kw)(write)  # type: ignore[arg-type]


# -- every protocol, FRAME ---------------------------------------------------------------------------------------

pickle_sample(
    "proto0_os_system",
    "protocol 0 text GLOBAL + REDUCE (the classic __reduce__ payload)",
    {"os.system"},
    lambda t: f"cos\nsystem\n(S'{touch(t)}'\ntR.".encode(),
)
pickle_sample(
    "proto1_os_system",
    "protocol 1 binary opcodes without PROTO",
    {"os.system"},
    lambda t: b"cos\nsystem\n(U" + bytes([len(touch(t))]) + touch(t).encode() + b"tR.",
)
pickle_sample(
    "proto2_posix_system", "protocol 2, posix alias of os", {"posix.system"}, lambda t: p2(os_system(t))
)
pickle_sample(
    "proto3_os_system_bytes",
    "protocol 3 with the command as bytes",
    {"os.system"},
    lambda t: b"\x80\x03" + call(glob("os", "system"), bb(touch(t).encode())) + b".",
)
pickle_sample(
    "proto4_stack_global_frame",
    "protocol 4 FRAME + STACK_GLOBAL + MEMOIZE",
    {"os.system"},
    lambda t: framed(4, sglob("os", "system") + b"\x94" + su(touch(t)) + b"\x94\x85\x94R\x94."),
)
pickle_sample(
    "proto5_split_frames",
    "protocol 5, the payload cut across several FRAMEs",
    {"subprocess.call"},
    lambda t: framed(
        5,
        su("subprocess") + su("call"),
        b"\x93" + b"](" + su("touch") + su(t) + b"e",
        b"\x85R.",
    ),
)
pickle_sample(
    "proto0_inst",
    "INST opcode (protocol 0 instantiation)",
    {"os.system"},
    lambda t: f"(S'{touch(t)}'\nios\nsystem\n.".encode(),
)
pickle_sample(
    "opcode_obj",
    "OBJ opcode",
    {"os.system"},
    lambda t: b"(" + glob("os", "system") + u(touch(t)) + b"o.",
)
pickle_sample(
    "opcode_newobj_ex",
    "NEWOBJ_EX of a process class (scanners that only track REDUCE)",
    {"subprocess.Popen"},
    lambda t: b"\x80\x04" + sglob("subprocess", "Popen") + b"(" + strlist(["touch", t]) + b"t}\x92.",
    loader=None,
)
pickle_sample(
    "build_setstate_injection",
    "BUILD stores __setstate__ = os.system on an instance; a second BUILD calls it with the command",
    {"os.system"},
    lambda t: p2(
        glob("argparse", "Namespace")
        + b")\x81}"
        + u("__setstate__")
        + glob("os", "system")
        + b"sb"
        + u(touch(t))
        + b"b"
    ),
)
pickle_sample(
    "py2_builtin_eval",
    "Python 2 name __builtin__.eval, mapped to builtins by fix_imports (a builtins alias)",
    {"builtins.eval"},
    lambda t: p2(call(glob("__builtin__", "eval"), u(f"__import__('os').system({touch(t)!r})"))),
)
pickle_sample(
    "py2_commands_getoutput",
    "Python 2 module commands, mapped to subprocess (picklescan-style deny-list aliasing)",
    {"subprocess.getoutput"},
    lambda t: p2(call(glob("commands", "getoutput"), u(touch(t)))),
)

# -- dangerous globals named in advisories ------------------------------------------------------------------------

pickle_sample(
    "builtins_exec",
    "builtins.exec",
    {"builtins.exec"},
    lambda t: p2(call(glob("builtins", "exec"), u(py_touch(t)))),
)
pickle_sample(
    "builtins_eval_stack_global",
    "builtins.eval through STACK_GLOBAL of memoised strings",
    {"builtins.eval"},
    lambda t: (
        b"\x80\x04"
        + su("builtins")
        + b"\x94"
        + su("eval")
        + b"\x94h\x00h\x01\x93"
        + su(f"exec({py_touch(t)!r})")
        + b"\x85R."
    ),
)
pickle_sample(
    "builtins_compile_exec",
    "builtins.exec(builtins.compile(...))",
    {"builtins.exec", "builtins.compile"},
    lambda t: p2(
        call(glob("builtins", "exec"), call(glob("builtins", "compile"), u(py_touch(t)), u("x"), u("exec")))
    ),
)
pickle_sample(
    "getattr_import_os",
    "getattr(__import__('os'), 'system'): reaching a callable through builtins",
    {"builtins.getattr", "builtins.__import__"},
    lambda t: p2(
        call(
            call(glob("builtins", "getattr"), call(glob("builtins", "__import__"), u("os")), u("system")),
            u(touch(t)),
        )
    ),
)
pickle_sample(
    "importlib_import_module",
    "importlib.import_module + getattr",
    {"importlib.import_module", "builtins.getattr"},
    lambda t: p2(
        call(
            call(glob("builtins", "getattr"), call(glob("importlib", "import_module"), u("os")), u("system")),
            u(touch(t)),
        )
    ),
)
pickle_sample(
    "subprocess_popen",
    "subprocess.Popen with an argument list",
    {"subprocess.Popen"},
    lambda t: p2(call(glob("subprocess", "Popen"), strlist(["touch", t]))),
)
pickle_sample(
    "subprocess_check_output",
    "subprocess.check_output",
    {"subprocess.check_output"},
    lambda t: p2(call(glob("subprocess", "check_output"), strlist(["touch", t]))),
)
pickle_sample(
    "runpy_run_code",
    "runpy._run_code (a picklescan deny-list bypass theme)",
    {"runpy._run_code"},
    lambda t: p2(call(glob("runpy", "_run_code"), u(py_touch(t)), b"}")),
)
pickle_sample(
    "pty_spawn", "pty.spawn", {"pty.spawn"}, lambda t: p2(call(glob("pty", "spawn"), strlist(["touch", t])))
)
pickle_sample(
    "timeit_exec",
    "timeit.timeit runs a statement string",
    {"timeit.timeit"},
    lambda t: p2(
        call(glob("timeit", "timeit"), u(py_touch(t)), u("pass"), glob("time", "perf_counter"), b"K\x01")
    ),
)
pickle_sample(
    "cprofile_run",
    "cProfile.run runs a statement string",
    {"cProfile.run"},
    lambda t: p2(call(glob("cProfile", "run"), u(py_touch(t)))),
)
pickle_sample(
    "numpy_testing_runstring",
    "numpy.testing._private.utils.runstring (exec inside an allowed-looking library)",
    {"numpy.testing._private.utils.runstring"},
    lambda t: p2(call(glob("numpy.testing._private.utils", "runstring"), u(py_touch(t)), b"}")),
)
pickle_sample(
    "torch_jit_execwrapper",
    "torch.jit.unsupported_tensor_ops.execWrapper (exec inside torch)",
    {"torch.jit.unsupported_tensor_ops.execWrapper"},
    lambda t: p2(call(glob("torch.jit.unsupported_tensor_ops", "execWrapper"), u(py_touch(t)), b"}", b"}")),
)
pickle_sample(
    "marshal_function_type",
    "types.FunctionType(marshal.loads(code)) then call: code objects smuggled as bytes",
    {"types.FunctionType", "marshal.loads"},
    lambda t: (
        b"\x80\x03"
        + call(
            call(
                glob("types", "FunctionType"),
                call(glob("marshal", "loads"), bb(_marshalled(py_touch(t)))),
                b"}",
            )
        )
        + b"."
    ),
)
pickle_sample(
    "pickle_loads_nested",
    "pickle.loads of an inner payload",
    {"_pickle.loads", "os.system"},
    lambda t: b"\x80\x03" + call(glob("_pickle", "loads"), bb(p2(os_system(t, "os")))) + b".",
)
pickle_sample(
    "ctypes_libc_system",
    "ctypes.CDLL(None).system: native code",
    {"ctypes.CDLL", "builtins.getattr"},
    lambda t: (
        b"\x80\x03"
        + call(
            call(glob("builtins", "getattr"), call(glob("ctypes", "CDLL"), b"N"), u("system")),
            bb(touch(t).encode()),
        )
        + b"."
    ),
)
pickle_sample(
    "webbrowser_open",
    "webbrowser.open (runs $BROWSER)",
    {"webbrowser.open"},
    lambda t: p2(call(glob("webbrowser", "open"), u(t))),
)
pickle_sample(
    "socket_connect",
    "socket.create_connection (exfiltration)",
    {"socket.create_connection"},
    lambda t: p2(call(glob("socket", "create_connection"), b"(" + u("127.0.0.1") + b"K\x09t")),
    loader=None,
)
pickle_sample(
    "pip_main",
    "pip.main (the CVE-2025-1716 picklescan bypass)",
    {"pip.main"},
    lambda t: p2(
        call(glob("pip", "main"), strlist(["install", "--no-index", "--dry-run", "ckptlint-does-not-exist"]))
    ),
    loader=None,
)
pickle_sample(
    "functools_partial",
    "functools.partial(os.system, cmd)() (indirect call)",
    {"functools.partial", "os.system"},
    lambda t: p2(call(glob("functools", "partial"), glob("os", "system"), u(touch(t))) + b")R"),
)
pickle_sample(
    "operator_methodcaller",
    "operator.methodcaller('system', cmd)(__import__('os'))",
    {"operator.methodcaller", "builtins.__import__"},
    lambda t: p2(
        call(
            call(glob("operator", "methodcaller"), u("system"), u(touch(t))),
            call(glob("builtins", "__import__"), u("os")),
        )
    ),
)
pickle_sample(
    "builtins_open_write",
    "builtins.open(target, 'w'): file write",
    {"builtins.open"},
    lambda t: p2(call(glob("builtins", "open"), u(t), u("w"))),
)
pickle_sample(
    "io_fileio",
    "_io.FileIO(target, 'w')",
    {"_io.FileIO"},
    lambda t: p2(call(glob("_io", "FileIO"), u(t), u("w"))),
)
pickle_sample(
    "pathlib_touch_dotted",
    "protocol 4 dotted name pathlib.Path.touch",
    {"pathlib.Path.touch", "pathlib.Path"},
    lambda t: (
        b"\x80\x04"
        + sglob("pathlib", "Path.touch")
        + b"("
        + sglob("pathlib", "Path")
        + su(t)
        + b"\x85Rt"
        + b"R."
    ),
)
pickle_sample(
    "dotted_argparse_os_system",
    "protocol 4 dotted name through an allowed module: argparse._os.system",
    {"argparse._os.system"},
    lambda t: b"\x80\x04" + sglob("argparse", "_os.system") + su(touch(t)) + b"\x85R.",
)
pickle_sample(
    "dotted_torch_serialization_os",
    "protocol 4 dotted name through torch: torch.serialization.os.system",
    {"torch.serialization.os.system"},
    lambda t: b"\x80\x04" + sglob("torch.serialization", "os.system") + su(touch(t)) + b"\x85R.",
)
pickle_sample(
    "shutil_copyfile",
    "shutil.copyfile writes a file",
    {"shutil.copyfile"},
    lambda t: p2(call(glob("shutil", "copyfile"), u("/dev/null"), u(t))),
)
pickle_sample(
    "torch_rebuild_from_type_v2",
    "an allowed torch rebuild function calling a dangerous one (weights_only bypass theme)",
    {"os.system"},
    lambda t: p2(
        call(
            glob("torch._tensor", "_rebuild_from_type_v2"),
            glob("os", "system"),
            glob("torch", "Tensor"),
            b"(" + u(touch(t)) + b"t",
            b"}",
        )
    ),
)
pickle_sample(
    "torch_backward_hooks",
    "os.system hidden in a tensor's backward_hooks (runs later, not at load)",
    {"os.system"},
    lambda t: p2(glob("collections", "OrderedDict") + b")R" + u("h") + glob("os", "system") + b"s"),
    loader=None,
)
pickle_sample(
    "namespace_with_payload",
    "argparse.Namespace (an allowed class) carrying a payload in its state",
    {"os.system"},
    lambda t: p2(glob("argparse", "Namespace") + b")\x81}" + u("lr") + os_system(t, "os") + b"sb"),
)
pickle_sample(
    "trainer_record_called",
    "an allowed trainer record called with arguments (runs its constructor)",
    {"transformers.training_args.TrainingArguments"},
    lambda t: p2(
        call(glob("transformers.training_args", "TrainingArguments"), u(str(Path(t).parent / "out")))
    ),
    loader=None,
)
pickle_sample(
    "load_from_bytes_build_setstate",
    "torch.storage._load_from_bytes (allowed only as a direct call) planted as __setstate__ and reached by BUILD",
    {"torch.storage._load_from_bytes"},
    lambda t: p2(
        glob("argparse", "Namespace")
        + b")\x81}"
        + u("__setstate__")
        + glob("torch.storage", "_load_from_bytes")
        + b"sb"
        + b"B"
        + struct.pack("<I", len(p2(os_system(t))))
        + p2(os_system(t))
        + b"b"
    ),
)
pickle_sample(
    "load_from_bytes_append",
    "torch.storage._load_from_bytes planted as an object's append method and reached by APPEND",
    {"torch.storage._load_from_bytes"},
    lambda t: p2(
        glob("argparse", "Namespace")
        + b")\x81}"
        + u("append")
        + glob("torch.storage", "_load_from_bytes")
        + b"sb"
        + b"B"
        + struct.pack("<I", len(p2(os_system(t))))
        + p2(os_system(t))
        + b"a"
    ),
)
pickle_sample(
    "load_from_bytes_nested_legacy",
    "torch.storage._load_from_bytes with a nested legacy torch.save whose first stream runs code",
    {"torch.storage._load_from_bytes", "posix.system"},
    lambda t: b"\x80\x03" + call(glob("torch.storage", "_load_from_bytes"), bb(p2(os_system(t)))) + b".",
)

# -- memo games, names built on the stack, several streams ------------------------------------------------------

pickle_sample(
    "memo_reuse",
    "memo slot first holds a harmless module name, is overwritten with 'os' before STACK_GLOBAL reads it",
    {"os.system"},
    lambda t: (
        b"\x80\x04"
        + su("collections")
        + b"q\x000"
        + su("os")
        + b"q\x000"
        + su("OrderedDict")
        + b"q\x010"
        + su("system")
        + b"q\x010"
        + b"h\x00h\x01\x93"
        + su(touch(t))
        + b"\x85R."
    ),
)
pickle_sample(
    "memoize_index_games",
    "MEMOIZE after PUTs to high indices (indices reused and out of order)",
    {"os.system"},
    lambda t: (
        b"\x80\x04"
        + su("os")
        + b"r\xff\xff\x00\x00"
        + su("system")
        + b"\x94"
        + b"j\xff\xff\x00\x00h\x01\x93"
        + su(touch(t))
        + b"\x85R."
    ),
)
pickle_sample(
    "memo_missing_after_payload",
    "payload, then a GET of a memo slot never stored: the unpickler has run the payload before failing",
    {"os.system"},
    lambda t: b"\x80\x02" + os_system(t, "os") + b"0h\x07.",
)
pickle_sample(
    "memo_type_confused_after_payload",
    "payload, then STACK_GLOBAL of a memoised int (type confusion)",
    {"os.system"},
    lambda t: b"\x80\x04" + os_system(t, "os") + b"0K\x05\x94" + su("system") + b"\x94h\x00h\x01\x93.",
)
pickle_sample(
    "stack_built_name_rot13",
    "module and name computed on the stack with _codecs.encode(..., 'rot13') (an allowed global); stubs return no "
    "text, so the name is unknown: refused (CK001)",
    set(),
    lambda t: (
        b"\x80\x04"
        + call(glob("_codecs", "encode"), su("bf"), su("rot13"))
        + call(glob("_codecs", "encode"), su("flfgrz"), su("rot_13"))
        + b"\x93"
        + su(touch(t))
        + b"\x85R."
    ),
)
pickle_sample(
    "stack_built_name_computed",
    "module name produced by a call (str.lower via getattr): not knowable without running it",
    {"builtins.getattr"},
    lambda t: (
        b"\x80\x04"
        + call(call(glob("builtins", "getattr"), su("OS"), su("lower")))
        + su("system")
        + b"\x93"
        + su(touch(t))
        + b"\x85R."
    ),
)
pickle_sample(
    "appended_stream",
    "a benign pickle followed by a second stream (pickle.load called again, or a loader that reads on)",
    {"os.system"},
    lambda t: p2(b"}" + u("a") + b"K\x01s") + p2(os_system(t, "os")),
)
pickle_sample(
    "ext_opcode",
    "EXT1: the global comes from the loading process's copyreg registry, not from the file",
    set(),
    lambda t: b"\x80\x02\x82\x01" + b"(" + u(touch(t)) + b"tR.",
    loader=None,
)


def _marshalled(source: str) -> bytes:
    import marshal

    return marshal.dumps(compile(source, "x", "exec"))


# -- legacy torch, tar format -------------------------------------------------------------------------------------


def _legacy_bytes(obj: object) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _benign_state() -> dict[str, object]:
    import torch

    return {"w": torch.zeros(2, 3), "b": torch.ones(3)}


@sample(
    "legacy_payload_in_state_dict",
    "legacy torch.save whose object stream holds a payload",
    {"posix.system"},
    "torch",
)
def _legacy_in_state(directory: Path, target: str) -> Path:
    path = directory / "legacy_payload.pt"
    path.write_bytes(_legacy_bytes({**_benign_state(), "evil": evil_object(target)}))
    return path


@sample(
    "legacy_payload_as_magic",
    "legacy torch file whose first stream (the magic number) is the payload",
    {"os.system"},
    "torch",
)
def _legacy_magic(directory: Path, target: str) -> Path:
    data = _legacy_bytes(_benign_state())
    first_end = 15  # the magic-number stream: PROTO 2, LONG1 of 10 bytes, STOP
    assert data[:4] == b"\x80\x02\x8a\x0a" and data[14:15] == b"."
    path = directory / "legacy_magic.pt"
    path.write_bytes(p2(os_system(target, "os")) + data[first_end:])
    return path


@sample(
    "legacy_appended_stream", "a stream appended after a legacy torch file's raw data", {"os.system"}, None
)
def _legacy_appended(directory: Path, target: str) -> Path:
    path = directory / "legacy_appended.pt"
    path.write_bytes(_legacy_bytes(_benign_state()) + p2(os_system(target, "os")))
    return path


def tar_checkpoint(members: dict[str, bytes]) -> bytes:
    """A tar-format torch file (torch < 0.1.10) with the given ``storages``/``tensors``/``pickle`` members."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_members(
    tensors: dict[str, tuple[tuple[int, ...], list[float]]], extra: bytes = b""
) -> dict[str, bytes]:
    """``storages``/``tensors``/``pickle`` members holding float32 tensors (one storage each), as torch's legacy
    tar loader reads them; ``extra`` is pickled into the saved dict under "extra" (a raw pickle fragment)."""
    storages = pickle.dumps(len(tensors), protocol=2)
    tensor_part = pickle.dumps(len(tensors), protocol=2)
    obj = b"\x80\x02}("
    for i, (name, (shape, values)) in enumerate(tensors.items()):
        storages += p2(b"(" + u(f"s{i}") + u("cpu") + glob("torch", "FloatStorage") + b"t")
        storages += struct.pack("<q", len(values)) + struct.pack(f"<{len(values)}f", *values)
        tensor_part += p2(b"(J" + struct.pack("<i", i) + u(f"s{i}") + glob("torch", "FloatTensor") + b"t")
        strides = [1] * len(shape)
        for d in range(len(shape) - 2, -1, -1):
            strides[d] = strides[d + 1] * shape[d + 1]
        tensor_part += struct.pack("<ii", len(shape), 0)
        tensor_part += struct.pack(f"<{len(shape)}q", *shape) + struct.pack(f"<{len(shape)}q", *strides)
        tensor_part += struct.pack("<q", 0)
        obj += u(name) + u(str(i)) + b"Q"
    if extra:
        obj += u("extra") + extra
    storages += pickle.dumps([], protocol=2)
    return {"storages": storages, "tensors": tensor_part, "pickle": obj + b"u."}


_TAR_TENSORS = {"w": ((2, 3), [0.0] * 6), "b": ((3,), [1.0, 1.0, 1.0])}


@sample(
    "tar_payload_in_pickle",
    "legacy tar-format torch file, payload in its pickle member (torch.load's tar path; CVE-2025-32434 theme)",
    {"posix.system"},
    "torch",
)
def _tar_pickle(directory: Path, target: str) -> Path:
    path = directory / "tar_payload.pt"
    path.write_bytes(tar_checkpoint(tar_members(_TAR_TENSORS, os_system(target))))
    return path


@sample(
    "tar_payload_in_storages",
    "tar-format file whose storages count stream is the payload",
    {"os.system"},
    "torch",
)
def _tar_storages(directory: Path, target: str) -> Path:
    members = tar_members(_TAR_TENSORS)
    members["storages"] = p2(os_system(target, "os")) + members["storages"]
    path = directory / "tar_storages.pt"
    path.write_bytes(tar_checkpoint(members))
    return path


@sample(
    "safetensors_tar_polyglot",
    "a valid safetensors file whose first 512 bytes are a tar header: torch.load takes the tar path",
    {"posix.system"},
    "torch_fh",
)
def _safetensors_tar(directory: Path, target: str) -> Path:
    path = directory / "polyglot_tar.safetensors"
    path.write_bytes(safetensors_tar_polyglot(tar_checkpoint(tar_members(_TAR_TENSORS, os_system(target)))))
    return path


def safetensors_tar_polyglot(tar: bytes) -> bytes:
    """A safetensors file (one uint8 tensor over the data region) that is also the tar archive ``tar``.

    The tar's first header becomes the safetensors length + JSON header: its name field starts with the 8-byte
    header length, the JSON text fills the rest of the block (the tar fields sit inside a metadata string), and
    the first member's data covers the rest of the header; the real members follow in the data region.
    """
    import tarfile

    header_len = 1024 - 8  # two tar blocks: the first header and its (dummy) member data
    block = bytearray(b" " * 512)
    block[0:8] = struct.pack("<Q", header_len)
    json_start = b'{"__metadata__":{"x":"'
    block[8 : 8 + len(json_start)] = json_start
    # tar fields (octal text, all inside the JSON string): mode, uid, gid, size (512: the second block), mtime
    fields = {
        100: b"0000644 ",
        108: b"0000000 ",
        116: b"0000000 ",
        124: b"00000001000 ",
        136: b"00000000000 ",
    }
    for at, text in fields.items():
        block[at : at + len(text)] = text
    block[156:157] = b"0"  # regular file
    # bytes 0..7 hold NULs (the length): tarfile cuts the name there; everything else must be JSON-safe text
    data_block = bytearray(b" " * 512)
    tensor_len = len(tar)
    tail = (
        b'"},"t":{"dtype":"U8","shape":['
        + str(tensor_len).encode()
        + b'],"data_offsets":[0,'
        + str(tensor_len).encode()
        + b"]}}"
    )
    data_block[512 - len(tail) :] = tail
    block[148:156] = b"        "
    checksum = 256 + sum(block[:148]) + sum(block[156:])  # the checksum field counts as spaces
    block[148:156] = b"%06o  " % checksum  # no NUL: it would break the JSON string
    if not tarfile.TarInfo.frombuf(bytes(block), "utf-8", "surrogateescape"):
        raise AssertionError("not a tar header")
    return bytes(block) + bytes(data_block) + tar


@sample(
    "msgpack_pickle_polyglot",
    "a flax msgpack file that is also a pickle: torch.load / pickle.load run it",
    {"posix.system"},
    "pickle",
)
def _msgpack_pickle(directory: Path, target: str) -> Path:
    path = directory / "polyglot.msgpack"
    path.write_bytes(msgpack_pickle_polyglot(p2(os_system(target))[2:-1]))
    return path


def msgpack_pickle_polyglot(payload: bytes) -> bytes:
    """fixmap(8) = NEWTRUE; int key 0x43 = SHORT_BINBYTES whose length byte is the value's str8 marker (0xd9):
    the pickle swallows 217 bytes of msgpack and lands inside a bin value that holds ``0 0 payload .``."""
    import msgpack

    head = b"\x88" + b"\x43" + b"\xd9"  # map of 8, key 67 ('C'), value: str8 ...
    first_value = b"x" * 200
    out = head + bytes([len(first_value)]) + first_value  # str8 length byte, 200 chars
    # the pickle's BINBYTES covers 217 bytes after the length byte: the str8 length + 200 chars + 16 more bytes
    key2 = b"\xa4pad0"
    bin_value = b"\xc4"  # bin8: its length byte follows
    rest = 217 - (1 + len(first_value)) - len(key2) - 2
    filler = b"\xa0" * 0  # nothing
    pickle_part = b"0" * rest + b"00" + payload + b"."
    # rest bytes of the bin payload are swallowed by the pickle, then POPs (harmless on the two pushed values)
    out += key2 + bin_value + bytes([len(pickle_part)]) + pickle_part + filler
    entries = [(f"k{i}", i) for i in range(6)]
    for k, v in entries:
        out += msgpack.packb(k) + msgpack.packb(v)
    msgpack.unpackb(out, strict_map_key=False)  # a valid msgpack map
    return out


@sample(
    "safetensors_pickle_polyglot",
    "a valid safetensors file that is also a pickle (hops over the JSON header, payload in the tensor data)",
    {"posix.system"},
    "pickle",
)
def _safetensors_pickle(directory: Path, target: str) -> Path:
    path = directory / "polyglot_pickle.safetensors"
    path.write_bytes(safetensors_pickle_polyglot(p2(os_system(target))[2:-1]))
    return path


def safetensors_pickle_polyglot(payload: bytes) -> bytes:
    """Byte 0 is SHORT_BINSTRING ('U', 0x55) whose length byte is the second byte of the header length: the
    string swallows the rest of the length and the start of the JSON; from there POP + SHORT_BINSTRING hops
    (length bytes printable, so the JSON string stays valid) cross the header, the last one ends exactly where
    the data region starts, which holds ``0 payload .``."""
    prefix = b'{"__metadata__":{"x":"'
    first = 8 + len(prefix) - 2  # 'U' at 0, its length byte at 1, string from 2 to the JSON string's start
    header_len = 0x55 + 256 * first
    data = b"0" + payload + b"."
    tail = (
        b'"},"t":{"dtype":"U8","shape":['
        + str(len(data)).encode()
        + b'],"data_offsets":[0,'
        + str(len(data)).encode()
        + b"]}}"
    )
    start = 8 + len(prefix)  # pickle position: inside the JSON string
    end = 8 + header_len  # where the data region starts
    last_len = 120
    chain = bytearray()
    remaining = end - start - (3 + last_len)
    while remaining:  # hops of 3 + n bytes, n in 40..90 (printable length bytes, never '"' or '\\')
        n = min(90, remaining - 3)
        if 0 < remaining - 3 - n < 43:
            n = remaining - 3 - 43
        chain += b"0U" + bytes([n]) + b"a" * n
        remaining -= 3 + n
    last_content = b"a" * (last_len - len(tail)) + tail
    pad_in_string = last_len - len(tail)
    assert pad_in_string >= 0
    chain += b"0U" + bytes([last_len]) + last_content
    header = prefix + bytes(chain)
    assert len(header) == header_len, (len(header), header_len)
    out = struct.pack("<Q", header_len) + header + data
    json.loads(header)  # valid JSON
    assert out[0:1] == b"U" and out[1] == first
    return out


# -- torch zip archives -------------------------------------------------------------------------------------------


def _torch_zip_members() -> list[tuple[zipfile.ZipInfo, bytes]]:
    import torch

    buf = io.BytesIO()
    torch.save(_benign_state(), buf)
    with zipfile.ZipFile(buf) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


def _entry_payload(target: str) -> bytes:
    """One more dict entry for data.pkl: ``evil = posix.system(cmd)`` (inserted before its final SETITEMS)."""
    return u("evil") + os_system(target)


def _patched_data_pkl(data: bytes, target: str) -> bytes:
    assert data.endswith(b"u.")
    return data[:-2] + _entry_payload(target) + b"u."


def write_zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as out:
        for info, data in members:
            out.writestr(info, data)
    return path


def _data_pkl_name(members: list[tuple[zipfile.ZipInfo, bytes]]) -> str:
    return next(i.filename for i, _ in members if i.filename.endswith("/data.pkl"))


def _zip_with(
    directory: Path, name: str, target: str, transform: Callable[[zipfile.ZipInfo, bytes], list]
) -> Path:
    members: list[tuple[zipfile.ZipInfo | str, bytes]] = []
    for info, data in _torch_zip_members():
        members.extend(transform(info, data))
    return write_zip(directory / name, members)


@sample(
    "zip_data_pkl_entry", "torch.save archive whose data.pkl gains a payload entry", {"posix.system"}, "torch"
)
def _zip_entry(directory: Path, target: str) -> Path:
    return _zip_with(
        directory,
        "zip_entry.pt",
        target,
        lambda i, d: [(i, _patched_data_pkl(d, target) if i.filename.endswith("/data.pkl") else d)],
    )


@sample(
    "zip_wrong_extension",
    "the same archive named .safetensors (scanners that trust extensions)",
    {"posix.system"},
    "torch_fh",
)
def _zip_ext(directory: Path, target: str) -> Path:
    path = _zip_entry(directory, target)
    return path.rename(directory / "model.safetensors")


@sample("zip_extra_pickle_member", "an extra .pkl member that torch.load does not read", {"os.system"}, None)
def _zip_extra(directory: Path, target: str) -> Path:
    def transform(info: zipfile.ZipInfo, data: bytes) -> list:
        out = [(info, data)]
        if info.filename.endswith("/data.pkl"):
            out.append((info.filename.replace("data.pkl", "extra.pkl"), p2(os_system(target, "os"))))
        return out

    return _zip_with(directory, "zip_extra.pt", target, transform)


@sample(
    "zip_renamed_upper_case",
    "data.pkl renamed DATA.PKL: torch's zip reader matches names ignoring case",
    {"posix.system"},
    "torch",
)
def _zip_upper(directory: Path, target: str) -> Path:
    def transform(info: zipfile.ZipInfo, data: bytes) -> list:
        if info.filename.endswith("/data.pkl"):
            return [(info.filename.replace("data.pkl", "DATA.PKL"), _patched_data_pkl(data, target))]
        return [(info, data)]

    return _zip_with(directory, "zip_upper.pt", target, transform)


@sample(
    "zip_case_duplicate",
    "a benign data.pkl plus data.PKL holding the payload (the one torch loads)",
    {"posix.system"},
    "torch",
)
def _zip_case_dup(directory: Path, target: str) -> Path:
    def transform(info: zipfile.ZipInfo, data: bytes) -> list:
        out = [(info, data)]
        if info.filename.endswith("/data.pkl"):
            out.append((info.filename.replace("data.pkl", "data.PKL"), _patched_data_pkl(data, target)))
        return out

    return _zip_with(directory, "zip_case_dup.pt", target, transform)


@sample(
    "zip_exact_duplicate", "two members named data.pkl, the second with the payload", {"posix.system"}, None
)
def _zip_dup(directory: Path, target: str) -> Path:
    import warnings

    def transform(info: zipfile.ZipInfo, data: bytes) -> list:
        out = [(info, data)]
        if info.filename.endswith("/data.pkl"):
            out.append((info.filename, _patched_data_pkl(data, target)))
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        return _zip_with(directory, "zip_dup.pt", target, transform)


@sample(
    "zip_data_descriptor_flag",
    "archive written with data descriptors (flag bit 3), payload in data.pkl",
    {"posix.system"},
    "torch",
)
def _zip_dd(directory: Path, target: str) -> Path:
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = io.BytesIO()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            return self.buf.write(b)

    sink = Unseekable()
    with zipfile.ZipFile(sink, "w") as out:
        for info, data in _torch_zip_members():
            out.writestr(
                info.filename,
                _patched_data_pkl(data, target) if info.filename.endswith("/data.pkl") else data,
            )
    path = directory / "zip_dd.pt"
    path.write_bytes(sink.buf.getvalue())
    return path


def _patch_member_headers(path: Path, member: str, patch: Callable[[bytearray, int, bool], None]) -> Path:
    """Apply ``patch(data, header_offset, is_central)`` to the local and central headers of ``member``."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    at = 0
    while True:
        at = data.find(name, at)
        if at < 0:
            break
        if data[at - 30 : at - 26] == b"PK\x03\x04":
            patch(data, at - 30, False)
        elif data[at - 46 : at - 42] == b"PK\x01\x02":
            patch(data, at - 46, True)
        at += 1
    path.write_bytes(bytes(data))
    return path


@sample("zip_encrypted_flag", "payload member marked encrypted (flag bit 0) though it is not", set(), None)
def _zip_encrypted(directory: Path, target: str) -> Path:
    path = _zip_entry(directory, target).rename(directory / "zip_encrypted.pt")
    member = _data_pkl_name(_torch_zip_members())

    def patch(data: bytearray, at: int, central: bool) -> None:
        data[at + (8 if central else 6)] |= 0x01

    return _patch_member_headers(path, member, patch)


@sample("zip_crc_mismatch", "payload member whose CRC-32 does not match", {"posix.system"}, "torch")
def _zip_crc(directory: Path, target: str) -> Path:
    path = _zip_entry(directory, target).rename(directory / "zip_crc.pt")
    member = _data_pkl_name(_torch_zip_members())

    def patch(data: bytearray, at: int, central: bool) -> None:
        data[at + (16 if central else 14)] ^= 0xFF

    return _patch_member_headers(path, member, patch)


@sample("zip_corrupt_central_directory", "payload archive with a corrupt central directory", set(), None)
def _zip_cd(directory: Path, target: str) -> Path:
    path = _zip_entry(directory, target).rename(directory / "zip_cd.pt")
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    cd_offset = struct.unpack("<I", data[eocd + 16 : eocd + 20])[0]
    data[cd_offset : cd_offset + 4] = b"XX\x01\x02"
    path.write_bytes(bytes(data))
    return path


@sample("zip_path_traversal", "extra members named ../../evil.pkl and /abs/evil.pkl", {"os.system"}, None)
def _zip_traversal(directory: Path, target: str) -> Path:
    def transform(info: zipfile.ZipInfo, data: bytes) -> list:
        out = [(info, data)]
        if info.filename.endswith("/data.pkl"):
            out.append(("../../evil.pkl", p2(os_system(target, "os"))))
            out.append(("/abs/evil.pkl", p2(os_system(target, "os"))))
        return out

    return _zip_with(directory, "zip_traversal.pt", target, transform)


@sample(
    "zip_nested_archive",
    "data.pkl loads a nested torch zip through torch.storage._load_from_bytes (torch.load(weights_only=False))",
    {"torch.storage._load_from_bytes"},
    "torch",
)
def _zip_nested(directory: Path, target: str) -> Path:
    inner = _zip_entry(directory, target).read_bytes()
    (directory / "zip_entry.pt").unlink()

    def transform(info: zipfile.ZipInfo, data: bytes) -> list:
        if info.filename.endswith("/data.pkl"):
            entry = (
                u("nested")
                + glob("torch.storage", "_load_from_bytes")
                + b"B"
                + struct.pack("<I", len(inner))
                + inner
                + b"\x85R"
            )
            data = data[:-2] + entry + b"u."
        return [(info, data)]

    return _zip_with(directory, "zip_nested.pt", target, transform)


@sample(
    "zip_storage_is_npy_object_array",
    "a storage member that is also an npy object array: np.load(allow_pickle=True) of the .pt runs it",
    {"posix.system"},
    "numpy",
)
def _zip_storage_npy(directory: Path, target: str) -> Path:
    npy = _npy_object_bytes(target)

    def transform(info: zipfile.ZipInfo, data: bytes) -> list:
        if info.filename.endswith("/data/0"):
            data = npy + b"\0" * max(0, len(data) - len(npy))
        return [(info, data)]

    return _zip_with(directory, "zip_storage_npy.pt", target, transform)


@sample("torchscript_archive", "TorchScript archive: code/ members run when loaded", set(), None)
def _torchscript(directory: Path, target: str) -> Path:
    import torch

    class Tiny(
        torch.nn.Module
    ):  # no torch.nn layers: scripting one here would rename (mangle) it for other tests
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.weight * 2

    path = directory / "scripted.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Tiny()), str(path))
    return path


# -- numpy --------------------------------------------------------------------------------------------------------


def _npy_object_bytes(target: str) -> bytes:
    import numpy as np

    arr = np.empty((1,), dtype=object)
    arr[0] = evil_object(target)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


@sample("npz_object_array", "np.savez with an object array holding a payload", {"posix.system"}, "numpy")
def _npz_object(directory: Path, target: str) -> Path:
    import numpy as np

    path = directory / "objects.npz"
    arr = np.empty((1,), dtype=object)
    arr[0] = evil_object(target)
    np.savez(path, weights=np.zeros(3, np.float32), meta=arr)
    return path


@sample("npz_compressed_object_array", "np.savez_compressed with an object array", {"posix.system"}, "numpy")
def _npz_compressed(directory: Path, target: str) -> Path:
    import numpy as np

    path = directory / "objects_compressed.npz"
    arr = np.empty((1,), dtype=object)
    arr[0] = evil_object(target)
    np.savez_compressed(path, weights=np.zeros(3, np.float32), meta=arr)
    return path


@sample(
    "npz_member_without_npy_suffix",
    "an object array stored under a member name without .npy",
    {"posix.system"},
    "numpy",
)
def _npz_nosuffix(directory: Path, target: str) -> Path:
    import numpy as np

    path = directory / "nosuffix.npz"
    np.savez(path, weights=np.zeros(3, np.float32))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("config/meta", _npy_object_bytes(target))
    return path


@sample("npy_object_array", "a single .npy object array", {"posix.system"}, "numpy")
def _npy_object(directory: Path, target: str) -> Path:
    path = directory / "objects.npy"
    path.write_bytes(_npy_object_bytes(target))
    return path


# -- folders ------------------------------------------------------------------------------------------------------


def _hf_folder(directory: Path, name: str) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    folder = directory / name
    folder.mkdir()
    save_file({"w": np.zeros((2, 3), np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}))
    return folder


@sample(
    "hf_folder_training_args",
    "clean model.safetensors next to a training_args.bin that runs code (Trainer checkpoints)",
    {"posix.system"},
    "torch:training_args.bin",
)
def _hf_training_args(directory: Path, target: str) -> Path:
    import torch

    folder = _hf_folder(directory, "hf_training_args")
    torch.save({"args": evil_object(target)}, folder / "training_args.bin")
    return folder


@sample(
    "hf_folder_pytorch_model_bin",
    "clean model.safetensors next to a pytorch_model.bin that runs code",
    {"posix.system"},
    "torch:pytorch_model.bin",
)
def _hf_bin(directory: Path, target: str) -> Path:
    import torch

    folder = _hf_folder(directory, "hf_bin")
    torch.save({**_benign_state(), "evil": evil_object(target)}, folder / "pytorch_model.bin")
    return folder


@sample(
    "sharded_index_payload_shard",
    "pytorch_model.bin.index.json whose second shard runs code",
    {"posix.system"},
    "torch:pytorch_model-00002-of-00002.bin",
)
def _sharded(directory: Path, target: str) -> Path:
    import torch

    folder = directory / "sharded"
    folder.mkdir()
    torch.save({"a": torch.zeros(2)}, folder / "pytorch_model-00001-of-00002.bin")
    torch.save(
        {"b": torch.zeros(2), "evil": evil_object(target)}, folder / "pytorch_model-00002-of-00002.bin"
    )
    index = {
        "metadata": {"total_size": 16},
        "weight_map": {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"},
    }
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return folder / "pytorch_model.bin.index.json"


# ---------------------------------------------------------------------------------------------------------------
# writing and firing
# ---------------------------------------------------------------------------------------------------------------


def write_all(directory: Path, target_dir: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write every sample (or ``names``) into ``directory``, each aimed at ``target_dir / <name>``."""
    out: dict[str, Path] = {}
    for name in names or sorted(SAMPLES):
        sub = directory / name
        sub.mkdir(parents=True, exist_ok=True)
        out[name] = SAMPLES[name].write(sub, str(target_dir / name))
    return out


FIRE_SCRIPT = r"""
import json, os, pickle, sys, time
jobs = json.loads(sys.argv[1])
os.environ["BROWSER"] = "touch %s"
for path, loader in jobs:
    try:
        if loader == "pickle":
            with open(path, "rb") as fh:
                while True:
                    try:
                        pickle.load(fh)
                    except EOFError:
                        break
        elif loader == "torch":
            import torch
            torch.load(path, weights_only=False)
        elif loader == "torch_fh":  # a file object: torch.load does not look at a name's extension then
            import torch
            with open(path, "rb") as fh:
                torch.load(fh, weights_only=False)
        elif loader.startswith("torch:"):
            import torch
            torch.load(os.path.join(path if os.path.isdir(path) else os.path.dirname(path), loader[6:]),
                       weights_only=False)
        elif loader == "numpy":
            import numpy as np
            loaded = np.load(path, allow_pickle=True)
            if hasattr(loaded, "files"):
                for key in loaded.files:
                    loaded[key]
    except BaseException as exc:  # the payload ran (or not) before the loader gave up
        print(path, type(exc).__name__, str(exc)[:200], file=sys.stderr)
time.sleep(1.0)  # payloads that spawn a process (Popen, webbrowser) finish asynchronously
"""
