"""Differential tests: independent parsers read each generated pickle; where they disagree ckptlint never says
clean.

Streams: hypothesis builds objects (nested containers, memo sharing, globals safe and unsafe, BUILD with every
kind of state on every kind of object, call results), pickles them with every protocol, then rewrites them the
ways loaders disagree on (odd INT/LONG forms such as ``I0x1``/``I010``, text memo opcodes, re-framing with frames
that end inside an argument, extension codes, computed STACK_GLOBAL names, trailing bytes, one flipped byte). Each
stream is read by
- CPython's C unpickler under ckptlint's recording stubs (what pickle.load / torch.load run),
- the pure-Python unpickler under the same stubs (what joblib.load runs),
- ckptlint's opcode walker, and ``pickletools.genops`` (for streams without STACK_GLOBAL),
and written to a file checked by ckptlint. Whenever the parsers disagree on the globals reached or on where the
stream ends (or one of them fails), ckptlint must refuse (CK001) or flag (CK301); when they all agree and a
global outside ckptlint's safe set is reached, it must flag CK301.

Formats: files assembled from zip, tar, npy, legacy-torch and pickle parts (prepended, appended, nested) are put to
the loaders' own decisions — ``torch.serialization._is_zipfile``, ``tarfile.open`` (torch's legacy tar path),
``numpy.lib.format`` (np.load's magic and header) — and each stream a loader would unpickle is read by the C
stub parser: if any reaches an unsafe global, ckptlint must not be clean.

Derandomized (reproducible in CI, a few seconds); ``CKPTLINT_FUZZ_EXAMPLES`` raises the number of examples.
"""

from __future__ import annotations

import collections
import io
import itertools
import os
import pickle
import pickletools
import re
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import technique_samples as ts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptlint.api import check_files
from ckptlint.readers.pickle_globals import SAFE_GLOBALS
from ckptlint.readers.pickle_scan import ScanError, Source
from ckptlint.readers.pickle_stubs import Session, parse_c, parse_python, resolve
from ckptlint.readers.pickle_walker import Walker

EXAMPLES = max(60, int(os.environ.get("CKPTLINT_FUZZ_EXAMPLES", "250")) // 2)
SETTINGS = settings(
    max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)


# --------------------------------------------------------------------------------------------------------------
# objects to pickle: what their __reduce__ writes is all that matters (nothing here is ever loaded for real)
# --------------------------------------------------------------------------------------------------------------


class Reduced:
    """Pickles as ``target(*args)`` then BUILD ``state``, APPENDS ``items``, SETITEMS ``pairs`` (``target`` is a
    real global, written by name: the test never loads anything for real)."""

    def __init__(self, target: Any, args: tuple, state: Any, items: list, pairs: list) -> None:
        self.target, self.args, self.state, self.items, self.pairs = target, args, state, items, pairs

    def __reduce__(self) -> tuple:
        return (self.target, self.args, self.state, iter(self.items) if self.items else None,
                iter(self.pairs) if self.pairs else None)  # fmt: skip


def _globals() -> list[Any]:
    import argparse
    import importlib

    import torch  # noqa: F401  (so that torch's modules import)

    out: list[Any] = [collections.OrderedDict, dict, list, set, argparse.Namespace, os.system, eval, getattr]
    for module, name in (("torch._utils", "_rebuild_tensor_v2"), ("torch.storage", "_load_from_bytes"),
                         ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"), ("torch", "Size")):  # fmt: skip
        out.append(getattr(importlib.import_module(module), name))
    return out


GLOBALS = _globals()

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=6),
    st.binary(max_size=6),
)  # fmt: skip


def reduced(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(
        Reduced,
        st.sampled_from(GLOBALS),
        st.lists(children, max_size=3).map(tuple),
        st.one_of(st.none(), children, st.dictionaries(st.text(max_size=4), children, max_size=3),
                  st.tuples(st.dictionaries(st.text(max_size=3), children, max_size=2),
                            st.dictionaries(st.text(max_size=3), children, max_size=2))),
        st.lists(children, max_size=2),
        st.lists(st.tuples(st.text(max_size=3), children), max_size=2),
    )  # fmt: skip


objects = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
        st.frozensets(st.integers(0, 9), max_size=3),
        reduced(children),
    ),
    max_leaves=12,
)


def shared(value: Any) -> Any:
    """The same object under two keys: the memo is used."""
    return {"a": value, "b": value, "c": [value]}


# --------------------------------------------------------------------------------------------------------------
# rewrites: the forms loaders read differently
# --------------------------------------------------------------------------------------------------------------


def odd_ints(data: bytes, which: int) -> bytes:
    forms = [b"0x%x", b"0%o", b"+%d", b" %d", b"%d ", b"0o%o", b"%d_0", b"0%d"]

    def sub(m: re.Match[bytes]) -> bytes:
        value = int(m.group(2))
        text = forms[which % len(forms)] % abs(value) if b"%" in forms[which % len(forms)] else m.group(2)
        return m.group(1) + (b"-" if value < 0 else b"") + text + m.group(3)

    return re.sub(rb"(\n[IL]|^\x80\x01?[IL]|\([IL])(-?\d+)(L?\n)", sub, data, count=2)


def reframe(data: bytes, cuts: list[int]) -> bytes:
    """Protocol 4+ body re-split into FRAMEs at the given positions (some inside an argument)."""
    if not data.startswith(b"\x80") or data[1] < 4:
        return data
    body = b"".join(arg for op, arg, _ in _ops_raw(data) if op != "FRAME")
    points = sorted({min(max(c, 0), len(body)) for c in cuts} | {0, len(body)})
    out = data[:2]
    for a, b in itertools.pairwise(points):
        out += b"\x95" + struct.pack("<Q", b - a) + body[a:b]
    return out


def _ops_raw(data: bytes) -> list[tuple[str, bytes, int]]:
    """(opcode name, raw bytes of the opcode and its argument, position) after PROTO."""
    out = []
    ops = list(pickletools.genops(data))
    for i, (op, _, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name != "PROTO":
            out.append((op.name, data[pos:end], pos))
    return out


def text_memo(data: bytes) -> bytes:
    return re.sub(rb"q(.)", lambda m: b"p%d\n" % m.group(1)[0], data, count=3)


def with_ext(data: bytes, code: int) -> bytes:
    return data[:2] + b"\x82" + bytes([code & 0xFF]) + b"0" + data[2:]


def with_inst(data: bytes, obj: bool) -> bytes:
    """An INST (or OBJ) call pushed and popped before the object."""
    call = b"(cos\nsystem\nS'true'\no0" if obj else b"(S'true'\nios\nsystem\n0"
    return data[:2] + call + data[2:] if data.startswith(b"\x80") else call + data


def computed_global(data: bytes) -> bytes:
    return (
        data[:2]
        + b"cbuiltins\ngetattr\n(cbuiltins\nstr\nS'upper'\ntR(S'os'\ntR\x8c\x06system\x930"
        + data[2:]
    )


# --------------------------------------------------------------------------------------------------------------
# the parsers
# --------------------------------------------------------------------------------------------------------------


class _RawSession(Session):
    def __init__(self) -> None:
        super().__init__("fuzz", expected=None)
        self.raw: list[tuple[str, str]] = []

    def find_class(self, module: Any, name: Any, proto: int | None = None) -> Any:
        self.raw.append((module, name))
        return super().find_class(module, name, proto)


def stub_view(
    data: bytes, python: bool, persistent: bool = False
) -> tuple[list[tuple[str, str]], int | None]:
    """(globals find_class saw, end offset or None when the parse fails) with the C or pure-Python unpickler
    (``persistent``: with a persistent_load, as torch.load has)."""
    session = _RawSession()
    fh = io.BytesIO(data)
    try:
        if python:
            parse_python(fh, session, joblib=False)
        else:
            parse_c(fh, session, encoding="latin1", persistent=persistent)
    except Exception:
        return session.raw, None
    return session.raw, fh.tell()


def walker_view(data: bytes) -> tuple[list[tuple[str, str]], int | None, list[int]]:
    try:
        scan = Walker(Source(data), "fuzz", encoding="latin1").walk(0)
    except ScanError as exc:
        return [(g.module, g.name) for g in exc.globals], None, []
    return [(g.module, g.name) for g in scan.globals], scan.end, [g.proto for g in scan.globals]


def pickletools_view(data: bytes) -> tuple[list[tuple[str, str]], int | None] | None:
    """GLOBAL/INST names and the end, or None where pickletools cannot say (STACK_GLOBAL needs a stack)."""
    found: list[tuple[str, str]] = []
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name == "STACK_GLOBAL":
                return None
            if op.name in ("GLOBAL", "INST"):
                module, name = arg.split(" ", 1)
                found.append((module, name))
            if op.name == "STOP":
                return found, pos + 1
    except Exception:
        return found, None
    return found, None


def ckptlint_view(tmp: Path, data: bytes, name: str = "fuzz.pkl") -> set[str]:
    """The codes ckptlint gives the file (CK001 when it refuses)."""
    path = tmp / name
    path.write_bytes(data)
    (file,) = check_files(str(path)).files
    return {f.code for f in file.findings} | ({"CK001"} if file.error else set())


def unsafe(names: list[tuple[str, str]], protos: list[int] | None = None) -> bool:
    protos = protos or [0] * len(names)
    return any(
        SAFE_GLOBALS.get(resolve(m, n, p, torch=False)) is None
        for (m, n), p in zip(names, protos, strict=False)
    )


def judge(tmp: Path, data: bytes) -> None:
    c_globals, c_end = stub_view(data, python=False)
    py_globals, py_end = stub_view(data, python=True)
    w_globals, w_end, protos = walker_view(data)
    tools = pickletools_view(data)
    views = [(c_globals, c_end), (py_globals, py_end), (w_globals, w_end)] + ([tools] if tools else [])
    agree = all(v == views[0] for v in views) and c_end is not None
    codes = ckptlint_view(tmp, data)
    if not agree:
        assert codes & {"CK001", "CK301"}, ("parsers disagree, ckptlint is clean", views, data[:200])
    elif unsafe(c_globals, protos):
        assert "CK301" in codes, ("an unsafe global, not flagged", c_globals, codes, data[:200])


# --------------------------------------------------------------------------------------------------------------
# the stream tests
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("differential")


def _dumps(obj: Any, protocol: int) -> bytes | None:
    try:
        return pickle.dumps(obj, protocol=protocol)
    except Exception:  # e.g. a frozenset holding an unhashable value
        return None


@SETTINGS
@given(obj=objects, protocol=st.integers(0, 5), share=st.booleans(), rewrite=st.integers(0, 9),
       which=st.integers(0, 31), cuts=st.lists(st.integers(0, 400), max_size=4),
       flip=st.one_of(st.none(), st.tuples(st.integers(0, 10_000), st.integers(0, 255))))  # fmt: skip
def test_parsers_that_disagree_never_make_clean(
    tmp: Path, obj: Any, protocol: int, share: bool, rewrite: int, which: int, cuts: list[int], flip: Any
) -> None:
    data = _dumps(shared(obj) if share else obj, protocol)
    if data is None:
        return
    if rewrite == 1:
        data = odd_ints(data, which)
    elif rewrite == 2:
        data = reframe(data, cuts)
    elif rewrite == 3:
        data = text_memo(data)
    elif rewrite == 4:
        data = with_ext(data, which)
    elif rewrite == 5:
        data = computed_global(data)
    elif rewrite == 6:
        data += bytes([which]) * (which % 5)
    elif rewrite in (7, 8):
        data = with_inst(data, rewrite == 8)
    if flip is not None:
        at, value = flip
        at %= len(data)
        data = data[:at] + bytes([value]) + data[at + 1 :]
    judge(tmp, data)


@SETTINGS
@given(values=st.lists(st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=False)), min_size=1, max_size=4),
       which=st.integers(0, 31), protocol=st.integers(0, 1))  # fmt: skip
def test_text_numbers_in_every_form(tmp: Path, values: list[Any], which: int, protocol: int) -> None:
    """Protocol 0/1 numbers rewritten the ways strtol (base 0), int() and pickletools read differently."""
    judge(
        tmp, odd_ints(pickle.dumps([*values, Reduced(os.system, ("true",), None, [], [])], protocol=0), which)
    )
    judge(tmp, odd_ints(pickle.dumps(values, protocol=protocol), which))


def test_the_rewrites_reach_what_they_aim_at(tmp: Path) -> None:
    """The generator makes the divergences it claims (else the property above tests nothing)."""
    _, c_end = stub_view(odd_ints(pickle.dumps([5, 8], protocol=0), 1), python=False)
    _, py_end = stub_view(odd_ints(pickle.dumps([5, 8], protocol=0), 1), python=True)
    assert c_end is not None and py_end is None  # I010: octal for C, an error for pure Python
    framed = reframe(pickle.dumps({"key": "value" * 10}, protocol=4), [5])
    assert any(op.name == "FRAME" for op, _, _ in pickletools.genops(framed))
    computed = computed_global(pickle.dumps(1, protocol=4))  # getattr(str, "upper")("os") names the module
    assert stub_view(computed, python=False)[1] is None  # a stub never computes a name: the parse stops
    assert walker_view(computed)[1] is None
    assert ckptlint_view(tmp, computed) & {"CK001", "CK301"}
    evil = pickle.dumps(Reduced(os.system, ("echo",), None, [], []), protocol=2)
    assert (os.system.__module__, "system") in stub_view(evil, python=False)[0]
    judge(tmp, evil)


# --------------------------------------------------------------------------------------------------------------
# format decisions against torch's and numpy's own checks
# --------------------------------------------------------------------------------------------------------------

EVIL = ts.touch_payload("/nonexistent/canary") + b"N."
BENIGN = pickle.dumps({"w": [1, 2, 3]}, protocol=2)


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npy(obj_pickle: bytes, descr: str = "'|O'") -> bytes:
    header = "{'descr': " + descr + ", 'fortran_order': False, 'shape': (1,), }"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + obj_pickle


def _tar_named(p: bytes) -> bytes:
    """A tar whose first member's name field is (the start of) a pickle stream."""
    name = (p[:90] if len(p) <= 90 else b"N.").decode("latin-1")
    return _tar({name: b"", "storages": BENIGN, "tensors": BENIGN, "pickle": BENIGN})


PARTS = {
    "legacy_tar_polyglot": lambda p: ts.legacy_tar_polyglot("/nonexistent/canary") if p is EVIL else _tar({}),
    "tar_named": _tar_named,
    "torch_zip_npy": lambda p: ts.torch_zip_with(
        BENIGN, {"archive/extra": ts.npy_with("'|O'", "(1,)", p, 12000)}
    ),
    "pickle": lambda p: p,
    "zip": lambda p: _zip({"archive/data.pkl": p, "archive/version": b"3\n"}),
    "zip_member_npy": lambda p: _zip({"archive/data.pkl": BENIGN, "extra": _npy(p)}),
    "tar": lambda p: _tar({"storages": BENIGN, "tensors": BENIGN, "pickle": p}),
    "npy": lambda p: _npy(p),
    "npy_struct": lambda p: _npy(p, "[('a', '<i4'), ('b', '|O')]"),
    "npz": lambda p: _zip({"w.npy": _npy(p)}),
}


def loader_streams(data: bytes) -> list[tuple[bytes, bool]]:
    """Every stream torch.load, np.load(allow_pickle=True) or pickle.load would unpickle from ``data`` (with
    whether the loader has a persistent_load), decided by their own checks (torch's ``_is_zipfile``, ``tarfile``,
    numpy's magic and header readers)."""
    import torch.serialization as ts

    streams = [(data, False), (data, True)]  # pickle.load, torch.load of a legacy file
    fh = io.BytesIO(data)
    if ts._is_zipfile(fh):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist():
                    raw = zf.read(info)
                    if info.filename.endswith("data.pkl"):
                        streams.append((raw, True))
                    streams.extend(_npy_streams(raw))
        except zipfile.BadZipFile:
            pass
    else:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                member = tar.extractfile("pickle")
                if member is not None:
                    streams.append((member.read(), True))
        except (tarfile.TarError, KeyError):
            pass
    streams.extend(_npy_streams(data))
    return streams


def _npy_streams(data: bytes) -> list[tuple[bytes, bool]]:
    fh = io.BytesIO(data)
    if fh.read(6) != np.lib.format.MAGIC_PREFIX:
        return []
    fh.seek(0)
    try:
        version = np.lib.format.read_magic(fh)
        _, _, dtype = np.lib.format._read_array_header(fh, version, max_header_size=1 << 20)
    except Exception:
        return []
    return [(fh.read(), False)] if dtype.hasobject else []


@SETTINGS
@given(part=st.sampled_from(sorted(PARTS)), evil=st.booleans(), prefix=st.sampled_from([b"", b"\x00" * 3, b"PK"]),
       suffix=st.sampled_from([b"", BENIGN, EVIL]))  # fmt: skip
def test_format_decisions_follow_the_loaders(
    tmp: Path, part: str, evil: bool, prefix: bytes, suffix: bytes
) -> None:
    data = prefix + PARTS[part](EVIL if evil else BENIGN) + suffix
    reached = [stub_view(stream, False, persistent) for stream, persistent in loader_streams(data)]
    codes = ckptlint_view(tmp, data, name="fuzz.pt")
    if any(unsafe(names) for names, _ in reached):
        assert codes & {"CK001", "CK301"}, (part, prefix, suffix[:8], codes)
