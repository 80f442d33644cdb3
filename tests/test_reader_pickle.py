"""Plain pickles (numpy arrays, tensors, data) and the walker's bounds, against what pickle.load itself gives.

Ground truth comes from ``pickle.load`` on files this test just wrote (trusted), or on hand-written streams that
contain no global at all (so loading them runs nothing).
"""

from __future__ import annotations

import math
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import numpy.lib.format as npformat
import pytest
import torch

from ckptlint.api import check_files as check
from ckptlint.api import failure_findings
from ckptlint.engine import fact_findings
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers import pickle_file, read_checkpoint

PROTOCOLS = range(6)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def unreadable(path: Path) -> str:
    with pytest.raises(UnreadableCheckpoint) as info:
        pickle_file.read(path)
    text = str(info.value)
    assert "\n" not in text
    return text


def plain(value: Any) -> Any:
    """pickle.load's value in the JSON-safe form ckptlint's metadata uses (test-side, independent)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [plain(v) for v in sorted(value)]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------------------------------------------
# numpy arrays and tensors in plain pickles, every protocol
# --------------------------------------------------------------------------------------------------------------


def numpy_payload() -> dict[str, Any]:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    return {
        "f32": base,
        "i64": np.arange(5),
        "big_endian": np.zeros(3, dtype=">f2"),
        "bf16": np.zeros(3, dtype=ml_dtypes.bfloat16),
        "big": np.ones((200, 100)),  # 160 KB: skipped, never read
        "fortran": np.asfortranarray(base),
        "strided": np.arange(10)[::2],
        "struct": np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8")]),
        "text": np.array(["abc", "de"]),
        "dates": np.array(["2020-01-01"], dtype="M8[D]"),
        "zero_d": np.array(3.0),
        "bool": np.array([True, False]),
        "scalar": np.float64(2.5),
        "int_scalar": np.int32(7),
        "bool_scalar": np.bool_(True),
        "objects": np.array([1, "x"], dtype=object),
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_numpy_pickle_matches_pickle_load(tmp_path: Path, protocol: int) -> None:
    path = write(tmp_path, f"np{protocol}.pkl", pickle.dumps(numpy_payload(), protocol=protocol))
    ref = pickle.loads(path.read_bytes())
    ck = read_checkpoint(path)
    assert ck.format == "pickle" and fact_findings(ck) == []
    arrays = {k: v for k, v in ref.items() if isinstance(v, np.ndarray) and v.dtype != object}
    assert {k: (t.shape, t.dtype) for k, t in ck.tensors.items()} == {
        k: (v.shape, v.dtype.name) for k, v in arrays.items()
    }
    for key in ("scalar", "int_scalar", "bool_scalar"):
        assert ck.metadata[key] == ref[key].item()
    assert ck.metadata["objects"] == [1, "x"]
    for key, arr in arrays.items():
        assert ck.tensors[key].nbytes == arr.nbytes, key
    big = ck.tensors["big"]
    if protocol >= 3:  # raw bytes in the file: the offset points at the array data
        raw = path.read_bytes()
        assert raw[big.offset : big.offset + big.nbytes] == ref["big"].tobytes()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tensors_pickled_directly(tmp_path: Path, protocol: int) -> None:
    """pickle.dump of tensors nests a legacy torch.save per storage (torch.storage._load_from_bytes)."""
    w = torch.randn(3, 4)
    obj = {
        "w": w,
        "col": w[:, 1],
        "h": torch.zeros(2, 2, dtype=torch.float16),
        "bf": torch.zeros(3, dtype=torch.bfloat16),
        "p": torch.nn.Parameter(torch.ones(2)),
        "big": torch.zeros(300, 100),  # its nested payload is larger than what is read inline
        "lr": 0.1,
    }
    path = write(tmp_path, f"t{protocol}.pkl", pickle.dumps(obj, protocol=protocol))
    ref = pickle.loads(path.read_bytes())
    ck = read_checkpoint(path)
    assert fact_findings(ck) == []
    assert {k: (t.shape, t.dtype) for k, t in ck.tensors.items()} == {
        k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in ref.items()
        if isinstance(v, torch.Tensor)
    }
    assert ck.metadata == {"lr": 0.1}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_data_matches_pickle_load(tmp_path: Path, protocol: int) -> None:
    data = {
        "int": 3,
        "neg": -70000,
        "big": 2**70,
        "float": 1.5,
        "nan": float("nan"),
        "str": "héllo",
        "bytes": b"\x00\x01",
        "none": None,
        "flags": [True, False],
        "tuple": (1, (2, 3)),
        "set": {3, 1, 2},
        "frozen": frozenset({"a"}),
        "nested": {"a": {"b": [1, 2, {"c": 4}]}},
        "complex": 1 + 2j,
        "empty": {},
    }
    path = write(tmp_path, f"d{protocol}.pkl", pickle.dumps(data, protocol=protocol))
    ck = read_checkpoint(path)
    ref = pickle.loads(path.read_bytes())
    assert fact_findings(ck) == [] and ck.tensors == {}
    expected = {k: plain(v) for k, v in ref.items() if k not in ("nested", "bytes", "complex", "big")}
    expected["nested.a.b"] = plain(ref["nested"]["a"]["b"])
    got = dict(ck.metadata)
    assert got.pop("bytes") == "<2 bytes>"
    assert got.pop("complex") == str(1 + 2j)
    assert got.pop("big") == "<int of 71 bits>"
    assert got == expected


def test_bare_array_is_keyed_by_file_stem(tmp_path: Path) -> None:
    path = write(tmp_path, "weights.pkl", pickle.dumps(np.zeros((2, 5), np.float16)))
    ck = read_checkpoint(path)
    assert list(ck.tensors) == ["weights"] and ck.tensors["weights"].shape == (2, 5)


def test_memo_games_match_pickle_load(tmp_path: Path) -> None:
    """Reused, overwritten and optimised-away memo slots resolve exactly as pickle.load resolves them."""
    # dict, "a" -> list [1] put at 0; slot 0 then overwritten with the string "x"; "b" -> GET 0 ("x")
    stream = b"\x80\x02}(X\x01\x00\x00\x00a]q\x00K\x01aX\x01\x00\x00\x00xq\x000X\x01\x00\x00\x00bh\x00u."
    path = write(tmp_path, "memo.pkl", stream)
    assert read_checkpoint(path).metadata == plain(pickle.loads(stream))
    for protocol in (2, 4):
        optimised = pickletools.optimize(pickle.dumps(numpy_payload(), protocol=protocol))
        path = write(tmp_path, f"opt{protocol}.pkl", optimised)
        ck = read_checkpoint(path)
        assert set(ck.tensors) == {
            k for k, v in numpy_payload().items() if isinstance(v, np.ndarray) and v.dtype != object
        }
        assert fact_findings(ck) == []


def test_np_save_object_array_is_rebuilt_from_its_pickle(tmp_path: Path) -> None:
    """What np.load(allow_pickle=True) unpickles after the .npy header, parsed by CPython under stubs."""
    from ckptlint.facts import SecurityFacts
    from ckptlint.readers.pickle_stream import parse_stream
    from ckptlint.readers.pickle_tree import flatten
    from ckptlint.readers.pickle_walker import Budget, Source

    value = np.array({"w": np.zeros((2, 3), np.float32), "layers": [np.ones(4)], "step": 7}, dtype=object)
    path = tmp_path / "obj.npy"
    np.save(path, value, allow_pickle=True)
    ref = np.load(path, allow_pickle=True).item()
    facts = SecurityFacts()
    with open(path, "rb") as fh:
        npformat.read_magic(fh)
        npformat.read_array_header_1_0(fh)
        start = fh.tell()
        rebuilt, end = parse_stream(Source.of_file(fh), start, member="obj.npy", facts=facts, budget=Budget())
    assert not facts and end == path.stat().st_size
    tree = flatten(rebuilt, sep="/", root_key="obj")
    assert {k: (t.shape, t.dtype) for k, t in tree.tensors.items()} == {
        "w": ((2, 3), "float32"),
        "layers/0": ((4,), ref["layers"][0].dtype.name),
    }
    assert tree.metadata == {"step": 7}
    assert tree.groups == ["layers"]


# --------------------------------------------------------------------------------------------------------------
# several streams in one file
# --------------------------------------------------------------------------------------------------------------

BENIGN = pickle.dumps({"w": np.zeros(2)}, protocol=2)
EVIL_OS_SYSTEM = b"cos\nsystem\n(S'true'\ntR."  # protocol 0: os.system('true'); never loaded here


def test_two_benign_streams(tmp_path: Path) -> None:
    ck = read_checkpoint(write(tmp_path, "two.pkl", BENIGN + pickle.dumps([1, 2], protocol=4)))
    assert fact_findings(ck) == [] and list(ck.tensors) == ["w"]


def test_appended_malicious_stream_is_flagged(tmp_path: Path) -> None:
    ck = read_checkpoint(write(tmp_path, "appended.pkl", BENIGN + EVIL_OS_SYSTEM))
    assert list(ck.tensors) == ["w"]
    [finding] = fact_findings(ck)
    assert finding.code == "CK301" and "os.system" in finding.message and "dangerous" in finding.message
    assert finding.details["offsets"] == [len(BENIGN)]


def test_trailing_garbage_fails_closed(tmp_path: Path) -> None:
    ck = read_checkpoint(write(tmp_path, "garbage.pkl", BENIGN + b"\xff\xfe not a pickle"))
    assert [f.code for f in fact_findings(ck)] == ["CK301"]
    assert "cannot verify" in fact_findings(ck)[0].message


def test_appended_stream_after_legacy_torch_data(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(3)}, path, _use_new_zipfile_serialization=False)
    assert fact_findings(read_checkpoint(path)) == []
    path.write_bytes(path.read_bytes() + EVIL_OS_SYSTEM)
    ck = read_checkpoint(path)
    assert ck.format == "torch-legacy" and list(ck.tensors) == ["w"]
    assert [f.details.get("global") for f in fact_findings(ck)] == ["os.system"]


# --------------------------------------------------------------------------------------------------------------
# constructs the walker cannot prove harmless: CK301, never "clean"
# --------------------------------------------------------------------------------------------------------------

CANNOT_VERIFY = {
    # the loaders fail on these (no copyreg registration, no persistent_load): exit 2, never clean
    "ext1": b"\x80\x02\x82\x01)R.",
    "persistent_id": b"\x80\x02X\x03\x00\x00\x00keyQ.",
    # mutating a global of the safe set at load time (monkey-patching the real class)
    "build_on_imported_class": b"\x80\x02ccollections\nOrderedDict\n}X\x01\x00\x00\x00aK\x01sb.",
    "setitem_on_imported_class": b"\x80\x02ccollections\nOrderedDict\nK\x01K\x02s.",
}


@pytest.mark.parametrize("name", sorted(CANNOT_VERIFY))
def test_unverifiable_constructs(tmp_path: Path, name: str) -> None:
    (file,) = check(str(write(tmp_path, f"{name}.pkl", CANNOT_VERIFY[name]))).files
    assert file.error or any(f.code == "CK301" and f.severity == "error" for f in file.findings)


def test_computed_stack_global_name(tmp_path: Path) -> None:
    """STACK_GLOBAL whose name comes from an (unsafe) call result: under stubs the call returns no text, so the
    parse stops there (exit 2), naming the global called before."""
    stream = (
        b"\x80\x04\x8c\x08builtins\x8c\x03str\x93\x8c\x02os\x85R"  # builtins.str('os'): computed module name
        b"\x8c\x06system\x93\x8c\x04true\x85R."
    )
    (file,) = check(str(write(tmp_path, "computed.pkl", stream))).files
    assert file.error and "a global whose name is computed when the file is loaded" in file.error
    assert "builtins.str" in " | ".join(f.message for f in file.findings if f.code == "CK301")


def test_nested_pickle_loads_payload_is_judged(tmp_path: Path) -> None:
    inner = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
    stream = b"\x80\x03c_pickle\nloads\nC" + bytes([len(inner)]) + inner + b"\x85R."
    ck = read_checkpoint(write(tmp_path, "nested.pkl", stream))
    names = {f.details.get("global") for f in fact_findings(ck)}
    assert names == {"_pickle.loads", "posix.system"}
    assert all(f.details["dangerous"] for f in fact_findings(ck))


def test_nested_torch_load_payload_is_judged(tmp_path: Path) -> None:
    """torch.storage._load_from_bytes is accepted only when the nested torch.save it loads is itself clean."""
    benign = pickle.dumps(torch.zeros(3), protocol=2)
    assert fact_findings(read_checkpoint(write(tmp_path, "benign.pkl", benign))) == []
    inner = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}.\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R."
    stream = b"\x80\x03ctorch.storage\n_load_from_bytes\nC" + bytes([len(inner)]) + inner + b"\x85R."
    ck = read_checkpoint(write(tmp_path, "evil_nested.pkl", stream))
    names = {f.details.get("global") for f in fact_findings(ck)}
    assert {"torch.storage._load_from_bytes", "os.system"} <= names


# --------------------------------------------------------------------------------------------------------------
# malformed streams and bounds: one line, bounded memory and time
# --------------------------------------------------------------------------------------------------------------

ABSURD = {
    "BINBYTES": b"\x80\x03B\xff\xff\xff\xff",
    "BINBYTES8": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60),
    "BYTEARRAY8": b"\x80\x05\x96" + struct.pack("<Q", 1 << 60),
    "BINUNICODE": b"\x80\x02X\xff\xff\xff\x7f",
    "BINUNICODE8": b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62),
    "BINSTRING": b"\x80\x01T\xff\xff\xff\x7f",
    "LONG4": b"\x80\x02\x8b\xff\xff\xff\x7f",
    "FRAME": b"\x80\x04\x95" + struct.pack("<Q", 1 << 62),
    "negative BINSTRING": b"T\xff\xff\xff\xff",
}


@pytest.mark.parametrize("name", sorted(ABSURD))
def test_absurd_lengths_are_refused_before_allocating(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "absurd.pkl", ABSURD[name] + b"\x00" * 64)
    tracemalloc.start()
    try:
        unreadable(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


MALFORMED = {
    "empty after PROTO": b"\x80\x02",
    "no STOP": b"\x80\x02}q\x00",
    "unknown opcode": b"\x80\x02\xff.",
    "unsupported protocol": b"\x80\x09N.",
    "stack underflow": b"\x80\x02R.",
    "missing memo": b"\x80\x02h\x05.",
    "missing mark": b"\x80\x02K\x01t.",
    "odd dict": b"(K\x01d.",
    "append to int": b"\x80\x02K\x01K\x02a.",
    "unhashable key": b"\x80\x02}]K\x01s.",
    "deep marks": b"(" * 20_000 + b".",
    "stack global of ints": b"\x80\x04K\x01K\x02\x93.",
    "global without newline": b"cos",
    "out-of-band buffer": b"\x80\x05\x97.",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_streams_are_unreadable(tmp_path: Path, name: str) -> None:
    text = unreadable(write(tmp_path, "bad.pkl", MALFORMED[name]))
    assert "malformed pickle" in text


def test_unreadable_still_names_unsafe_globals(tmp_path: Path) -> None:
    path = write(tmp_path, "evil_then_broken.pkl", b"cos\nsystem\n(S'true'\ntR\xff")
    with pytest.raises(UnreadableCheckpoint) as info:
        pickle_file.read(path)
    assert "os.system" in str(info.value)
    assert [f.details["global"] for f in failure_findings(info.value)] == ["os.system"]


def test_safe_global_used_unexpectedly_is_flagged(tmp_path: Path) -> None:
    """A rebuild function of the safe set called with arguments torch.save never writes: CK301, not clean."""
    stream = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(NK\x00X\x01\x00\x00\x00xK\x01\x89NtR."
    findings = fact_findings(read_checkpoint(write(tmp_path, "odd.pkl", stream)))
    assert [(f.code, f.details["global"]) for f in findings] == [("CK301", "torch._utils._rebuild_tensor_v2")]


def test_billion_laughs_is_bounded(tmp_path: Path) -> None:
    """Each tuple holds the previous one twice, down to an array: 2**40 tensor keys if expanded."""
    body = pickle.dumps(np.zeros(1), protocol=2)[:-1]  # an array left on the stack (STOP removed)
    for _ in range(40):
        body += b"q\xc8h\xc8\x86"  # memo slot 200 = x; push (x, x)
    path = write(tmp_path, "laughs.pkl", body + b".")
    start = time.perf_counter()
    assert "expands" in unreadable(path)
    assert time.perf_counter() - start < 60  # a hang guard (expanded: hours), not a speed measure


def test_deeply_nested_key_does_not_crash_the_interpreter(tmp_path: Path) -> None:
    """CPython hashes nested tuples recursively in C: a million-deep tuple key would segfault if hashed."""
    path = write(tmp_path, "deep_key.pkl", b"\x80\x02})" + b"\x85" * 1_000_000 + b"K\x01s.")
    code = (
        "import sys; from pathlib import Path; from ckptlint.readers import pickle_file\n"
        "from ckptlint.errors import UnreadableCheckpoint\n"
        f"try:\n    pickle_file.read(Path({str(path)!r}))\nexcept UnreadableCheckpoint as e:\n    print(e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-500:]
    assert "nested too deeply" in result.stdout


def test_sniffed_protocol_0_and_1(tmp_path: Path) -> None:
    for protocol in (0, 1):
        path = write(tmp_path, f"p{protocol}.pkl", pickle.dumps({"w": np.zeros(3)}, protocol=protocol))
        assert list(read_checkpoint(path).tensors) == ["w"]


CALL_OPCODES = {
    "REDUCE": b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.",
    "OBJ": b"(cos\nsystem\nS'true'\no.",
    "INST": b"(S'true'\nios\nsystem\n.",
    "NEWOBJ": b"\x80\x02cos\nsystem\n)\x81.",
    "NEWOBJ_EX": b"\x80\x04\x8c\x02os\x8c\x06system\x93)}\x92.",
    "BUILD state": b"\x80\x02}cos\nsystem\nb.",
    "dict value": b"\x80\x02}X\x01\x00\x00\x00kcos\nsystem\ns.",
    "memoised name": b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93.",
}


@pytest.mark.parametrize("name", sorted(CALL_OPCODES))
def test_every_way_to_reach_a_global_is_flagged(tmp_path: Path, name: str) -> None:
    (file,) = check(str(write(tmp_path, "evil.pkl", CALL_OPCODES[name]))).files
    found = [f for f in file.findings if f.code == "CK301"]
    assert [f.details.get("global") for f in found] == ["os.system"]
    assert found[0].details["dangerous"] is True


def test_memoised_nested_payload_is_walked_once(tmp_path: Path) -> None:
    """A nested torch.save referenced 20000 times through the memo costs one walk, not 20000."""
    blob = next(
        arg
        for op, arg, _ in pickletools.genops(pickle.dumps(torch.zeros(3), protocol=3))
        if op.name.endswith("BINBYTES")
    )
    stream = (
        b"\x80\x03ctorch.storage\n_load_from_bytes\nq\x00B"
        + len(blob).to_bytes(4, "little")
        + blob
        + b"\x85q\x01]("
        + b"h\x00h\x01R" * 20_000
        + b"e."
    )
    path = write(tmp_path, "repeated.pkl", stream)
    start = time.perf_counter()
    ck = read_checkpoint(path)
    assert time.perf_counter() - start < 60  # a hang guard (re-walked per use: minutes), not a speed measure
    assert fact_findings(ck) == [] and len(ck.tensors) == 20_000
    assert {(t.shape, t.dtype) for t in ck.tensors.values()} == {((3,), "float32")}  # bare storages
