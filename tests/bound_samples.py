"""Crafted inputs that cost a naive reader far more than their size (issue 9, "Unbounded cost"), written at test
time: each ``Bound`` names a file, how to write it, and what ckptlint must do with it (``verdict``: "read" = a
report, "refused" = CK001 whose reason contains ``reason``). Used by tests/test_bounds.py (work counters and
RLIMIT_AS in a subprocess) and benchmarks/bench_bounds.py (times and peak memory).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Bound:
    name: str
    write: Callable[[Path], None]
    verdict: str  # "read" or "refused"
    reason: str = ""  # part of the refusal reason


def _bu(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def memo_tuple(path: Path) -> None:
    """A 1,000-item tuple memoised once, then referenced 28,000 times (60 KB): re-walked per use, 48 s."""
    path.write_bytes(b"\x80\x02](" + b"(" + b"K\x01" * 1000 + b"tq\x00" + b"h\x00" * 28_000 + b"e.")


def size_copies(path: Path) -> None:
    """torch.Size called 40,000 times on one memoised 5,000-int list (250 KB): each call copied it, 38 s/800 MB."""
    call = b"h\x01h\x02\x85R"
    path.write_bytes(
        b"\x80\x02ctorch\nSize\nq\x01]q\x02(" + b"K\x01" * 5000 + b"e0](" + call * 40_000 + b"e."
    )


def nested_keys_pickle(path: Path) -> None:
    """Twelve nested dicts with 64 KiB keys over 5,000 leaves (0.8 MB): every leaf key is 786 KB long."""
    data = b"\x80\x02"
    for i in range(12):
        data += b"}" + _bu(chr(97 + i) * (1 << 16))
    data += b"}(" + b"".join(_bu(f"l{j}") + b"K\x01" for j in range(5000)) + b"u" + b"s" * 12 + b"."
    path.write_bytes(data)


def nested_keys_msgpack(path: Path) -> None:
    """The same in a flax msgpack file."""
    import msgpack

    tree: dict = {f"l{j}": 1 for j in range(5000)}
    for i in range(12):
        tree = {chr(97 + i) * (1 << 16): tree}
    path.write_bytes(msgpack.packb(tree))


def many_pickle_members(path: Path) -> None:
    """A torch zip with 50,000 .pkl members besides data.pkl (12 s)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        zf.writestr("archive/version", "3\n")
        for i in range(50_000):
            zf.writestr(f"archive/x{i}.pkl", b"\x80\x02}.")


def safetensors_header(n: int) -> Callable[[Path], None]:
    """A safetensors file whose header lists ``n`` tensors (360,000 make a 24 MB header: 12 s and 730 MB)."""

    def write(path: Path) -> None:
        header = {
            f"layers.{i}.w": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
            for i in range(n)
        }
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with path.open("wb") as fh:
            fh.write(struct.pack("<Q", len(raw)))
            fh.write(raw)
            fh.write(bytes(4 * n))

    return write


def empty_dicts(path: Path) -> None:
    """Four million empty dicts in a list (4 MB): 4 million objects of 64 bytes, then rebuilt."""
    path.write_bytes(b"\x80\x02](" + b"}" * 4_000_000 + b"e.")


def empty_sets(path: Path) -> None:
    """Half a million empty sets (0.5 MB): 216 bytes each."""
    path.write_bytes(b"\x80\x02](" + b"\x8f" * 500_000 + b"e.")


def tuple_references(path: Path) -> None:
    """Four million references to one 16-int tuple (8 MB)."""
    path.write_bytes(b"\x80\x02(" + b"K\x01" * 16 + b"tq\x00](" + b"h\x00" * 4_000_000 + b"e.")


def protocol0_ints(path: Path) -> None:
    """A protocol-0 list of 1.3 million ints (12 MB): text opcodes, so joblib's pure-Python reading is judged."""
    path.write_bytes(pickle.dumps(list(range(1_300_000)), protocol=0))


def zip_bomb_joblib(path: Path) -> None:
    """A zlib joblib file (1 MB) whose pickle holds a 1 GiB BINBYTES of zeros."""
    comp = zlib.compressobj(9)
    out = [comp.compress(b"\x80\x04B" + struct.pack("<I", 1 << 30))]
    zeros = bytes(1 << 24)
    out += [comp.compress(zeros) for _ in range(64)]
    out.append(comp.compress(b".") + comp.flush())
    path.write_bytes(b"".join(out))


def huge_central_directory(path: Path) -> None:
    """A zip whose central directory lists 600,000 empty members (52 MB): zipfile builds them all."""
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(600_000):
            zf.writestr(str(i), b"")


def many_nested_payloads(path: Path) -> None:
    """pickle.dumps of 40,000 tensors: one nested torch.load payload per storage (a legacy file each)."""
    import torch

    path.write_bytes(pickle.dumps({f"t{i}": torch.zeros(1) for i in range(40_000)}))


def msgpack_leaves(path: Path) -> None:
    """A flax msgpack map of 2.5 million int leaves (32 MB), written entry by entry."""
    import msgpack

    n = 2_500_000
    with path.open("wb") as fh:
        fh.write(b"\xdf" + struct.pack(">I", n))
        for start in range(0, n, 100_000):
            fh.write(
                b"".join(msgpack.packb(f"k{i}") + msgpack.packb(i) for i in range(start, start + 100_000))
            )


def npz_members(path: Path) -> None:
    """An npz of 140,000 one-element arrays (32 MB)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.zeros(1, np.float32))
    member = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(140_000):
            zf.writestr(f"a{i}.npy", member)


BOUNDS = [
    Bound("memo_tuple.pkl", memo_tuple, "read"),
    Bound("size_copies.pkl", size_copies, "read"),
    Bound("nested_keys.pkl", nested_keys_pickle, "refused", "key path is longer than"),
    Bound("nested_keys.msgpack", nested_keys_msgpack, "refused", "key path is longer than"),
    Bound("many_pickle_members.pt", many_pickle_members, "refused", "pickle members"),
    Bound("header_360k.safetensors", safetensors_header(360_000), "read"),
    Bound("empty_dicts.pkl", empty_dicts, "refused", "objects to build"),
    Bound("empty_sets.pkl", empty_sets, "refused", "objects to build"),
    Bound("tuple_references.pkl", tuple_references, "read"),
    Bound("protocol0_ints.pkl", protocol0_ints, "read"),
    Bound("zip_bomb.joblib", zip_bomb_joblib, "refused", "decompresses to more than"),
    Bound("huge_central_directory.npz", huge_central_directory, "refused", "central directory"),
    Bound("nested_payloads.pkl", many_nested_payloads, "read"),
    Bound("leaves.msgpack", msgpack_leaves, "refused", "more than"),
    Bound("npz_members.npz", npz_members, "read"),
]
