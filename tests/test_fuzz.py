"""Robustness: mutated, truncated and spliced real files of every format give a report or one-line exit 2.

Seeds are real files (the corpus in tests/data, and files written here by torch, numpy, flax, safetensors and pickle).
Hypothesis mutates them (derandomized, so CI is reproducible; ``CKPTLINT_FUZZ_EXAMPLES`` scales the number of
examples by hand); each outcome must be a ``Report`` whose file either has findings or a one-line ``error``,
within a time bound, never an exception. A sample of mutants also goes through the CLI in a subprocess under
resource limits (address space, CPU time, wall time). Targeted tests give each reader absurd lengths, sizes,
shapes, counts and nesting depths, and check that it refuses them before allocating (tracemalloc peak) and fast.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import malicious_samples as ms
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptlint import check
from ckptlint.engine import fact_findings
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers import read_checkpoint

EXAMPLES = int(os.environ.get("CKPTLINT_FUZZ_EXAMPLES", "250"))
# Wall-time limits here catch hangs and exponential blow-ups (hours), never speed: that is measured by
# benchmarks/bench_bounds.py; they are loose enough for a loaded 2-core CI machine.
MAX_SECONDS_PER_FILE = 60.0
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------------------------
# seeds: real files of every format
# --------------------------------------------------------------------------------------------------------------


def _torch_bytes(obj: object, legacy: bool) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _seeds(corpus: Path) -> dict[str, bytes]:
    import argparse

    import torch
    from flax import serialization
    from safetensors.numpy import save as st_save

    state = {
        "epoch": 2,
        "state_dict": {"w": torch.ones(3, 4), "b": torch.zeros(4, dtype=torch.bfloat16)},
        "optimizer": {
            "state": {0: {"exp_avg": torch.zeros(3)}},
            "param_groups": [{"lr": 0.1, "params": [0]}],
        },
        "args": argparse.Namespace(lr=0.1, model="tiny"),
    }
    arrays = {"params/w": np.ones((2, 3), np.float32), "params/b": np.zeros(3, np.float16)}
    npz, npy = io.BytesIO(), io.BytesIO()
    np.savez(npz, **arrays, obj=np.array([{"a": 1}], dtype=object))
    np.save(npy, np.arange(6, dtype=np.int32).reshape(2, 3))
    return {
        "safetensors": (corpus / "timm" / "timm_vit_clip_tiny.safetensors").read_bytes(),
        "safetensors_small": st_save(arrays, metadata={"format": "np"}),
        "torch_zip": (corpus / "open_clip" / "openclip_tiny_trainer_ckpt.pt").read_bytes(),
        "torch_zip_small": _torch_bytes(state, legacy=False),
        "torch_legacy": _torch_bytes(state, legacy=True),
        "npz": (corpus / "big_vision" / "tiny_vit.npz").read_bytes(),
        "npz_small": npz.getvalue(),
        "npy": npy.getvalue(),
        "msgpack": serialization.to_bytes(
            {"params": {"dense": {"kernel": np.ones((2, 3), np.float32)}}, "step": 3}
        ),
        "pickle_p2": pickle.dumps(arrays, protocol=2),
        "pickle_p5": pickle.dumps({"a": arrays, "t": torch.ones(2)}, protocol=5),
        "torch_tar": ms.tar_checkpoint(ms.tar_members({"w": ((2, 2), [1.0, 2.0, 3.0, 4.0])})),
        "index": b"",  # filled by the fixture: a shard index next to two real shards
    }


@pytest.fixture(scope="session")
def seeds(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], Path]:
    from safetensors.numpy import save_file

    shard_dir = tmp_path_factory.mktemp("shards")
    save_file({"a": np.ones(3, np.float32)}, str(shard_dir / "model-00001-of-00002.safetensors"))
    save_file({"b": np.ones(2, np.float32)}, str(shard_dir / "model-00002-of-00002.safetensors"))
    index = {
        "metadata": {"total_size": 20},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    data = _seeds(corpus)
    data["index"] = json.dumps(index).encode()
    return data, shard_dir


# --------------------------------------------------------------------------------------------------------------
# mutations (shared by hypothesis and the seeded CLI run)
# --------------------------------------------------------------------------------------------------------------

MUTATIONS = ("truncate", "flip", "overwrite", "insert", "delete", "splice", "absurd", "zero")
ABSURD_INTS = (0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFFFFFFFFFF, 1 << 62, 1 << 31, 0x80000000, 0)


def _position(size: int, pick: int, where: int) -> int:
    """Mutations go mostly where headers live: the first 4 KiB, the last 4 KiB (zip directories), anywhere."""
    if size == 0:
        return 0
    if where == 0:
        return pick % min(size, 4096)
    if where == 1:
        return max(0, size - 1 - pick % min(size, 4096))
    return pick % size


def mutate(data: bytes, kind: str, picks: list[int], payload: bytes, other: bytes) -> bytes:
    """One mutation of ``data``; ``picks`` are random ints choosing positions, ``payload`` bytes to write."""
    out = bytearray(data)
    size = len(out)
    at = _position(size, picks[0], picks[1] % 3)
    if kind == "truncate":
        return bytes(out[:at])
    if kind == "flip":
        for i, pick in enumerate(picks[2:6]):
            pos = _position(size, pick, (picks[1] + i) % 3)
            if pos < size:
                out[pos] ^= 1 << (pick % 8)
        return bytes(out)
    if kind == "overwrite":
        out[at : at + len(payload)] = payload
        return bytes(out)
    if kind == "insert":
        return bytes(out[:at] + payload + out[at:])
    if kind == "delete":
        return bytes(out[:at] + out[at + 1 + picks[2] % 64 :])
    if kind == "splice":
        cut = _position(len(other), picks[2], picks[3] % 3)
        return bytes(out[:at] + other[cut:])
    if kind == "absurd":
        value = ABSURD_INTS[picks[2] % len(ABSURD_INTS)]
        width = (2, 4, 8)[picks[3] % 3]
        out[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        return bytes(out)
    out[at : at + 1 + picks[2] % 512] = b"\0" * (1 + picks[2] % 512)  # zero
    return bytes(out)


def assert_report(path: Path) -> None:
    """A Report with one FileReport: either readable, or an error of one line with a CK001 finding."""
    start = time.perf_counter()
    report = check(str(path))
    elapsed = time.perf_counter() - start
    (file,) = report.files
    if file.error is not None:
        assert "\n" not in file.error and file.error.strip(), file.error
        assert any(f.code == "CK001" for f in file.findings)
    assert elapsed < MAX_SECONDS_PER_FILE, f"{path.name}: {elapsed:.1f}s"


def _write_mutant(directory: Path, seed_name: str, data: bytes) -> Path:
    suffix = {"index": ".safetensors.index.json", "npy": ".npy", "msgpack": ".msgpack"}.get(seed_name, ".bin")
    path = directory / f"mutant{suffix}"
    path.write_bytes(data)
    return path


SEED_NAMES = (
    "safetensors", "safetensors_small", "torch_zip", "torch_zip_small", "torch_legacy", "npz", "npz_small", "npy",
    "msgpack", "pickle_p2", "pickle_p5", "torch_tar", "index",
)  # fmt: skip


def test_mutated_real_files_give_a_report_or_one_line_error(
    seeds: tuple[dict[str, bytes], Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    data, shard_dir = seeds
    assert sorted(data) == sorted(SEED_NAMES)
    workdir = tmp_path_factory.mktemp("mutants")
    for shard in shard_dir.iterdir():  # a mutated index finds the real shards next to it
        (workdir / shard.name).write_bytes(shard.read_bytes())
    seen: set[str] = set()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        seed=st.sampled_from(SEED_NAMES),
        kind=st.sampled_from(MUTATIONS),
        picks=st.lists(st.integers(min_value=0, max_value=1 << 32), min_size=6, max_size=6),
        payload=st.binary(min_size=1, max_size=16),
        other=st.sampled_from(SEED_NAMES),
    )
    def run(seed: str, kind: str, picks: list[int], payload: bytes, other: str) -> None:
        seen.add(seed)
        mutant = mutate(data[seed], kind, picks, payload, data[other])
        assert_report(_write_mutant(workdir, seed, mutant))

    run()
    assert len(seen) >= len(SEED_NAMES) - 2  # every format was exercised


# --------------------------------------------------------------------------------------------------------------
# the CLI under resource limits
# --------------------------------------------------------------------------------------------------------------

ADDRESS_SPACE = 2 << 30  # the whole CLI process, numpy included
CPU_SECONDS = 120


# The limits are set by a fresh interpreter that then becomes the CLI (exec): no preexec_fn, which would run
# Python code between fork and exec in a process where JAX threads may hold locks.
LIMITED_CLI = (
    "import os, resource, sys\n"
    f"resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))\n"
    f"resource.setrlimit(resource.RLIMIT_CPU, ({CPU_SECONDS}, {CPU_SECONDS}))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'ckptlint', *sys.argv[1:]])\n"
)


def test_cli_on_mutants_stays_within_memory_and_time(
    seeds: tuple[dict[str, bytes], Path], tmp_path: Path
) -> None:
    """60 mutants (seeded), absurd files and a bomb of 2-byte objects, checked by one CLI process limited to
    2 GiB of address space and 120 s of CPU: every file gets a result, exit 0/1/2, no traceback."""
    data, _ = seeds
    rng = random.Random(1234)
    files = []
    for i in range(60):
        seed = SEED_NAMES[i % len(SEED_NAMES)]
        kind = MUTATIONS[rng.randrange(len(MUTATIONS))]
        picks = [rng.randrange(1 << 32) for _ in range(6)]
        mutant = mutate(data[seed], kind, picks, rng.randbytes(8), data[rng.choice(SEED_NAMES)])
        sub = tmp_path / f"m{i}"
        sub.mkdir()
        files.append(_write_mutant(sub, seed, mutant))
    for name, make in ABSURD.items():
        files.append(tmp_path / f"absurd_{name}.bin")
        files[-1].write_bytes(make())
    bomb = (
        tmp_path / "objects.pkl"
    )  # 4M empty dicts appended to a list: the most objects per byte a pickle holds
    bomb.write_bytes(b"\x80\x02]" + b"}a" * (4 << 20) + b".")
    files.append(bomb)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", LIMITED_CLI, "check", "--format", "json", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    elapsed = time.perf_counter() - start
    assert result.returncode in (0, 1, 2), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    report = json.loads(result.stdout)
    assert len(report["files"]) == len(files)
    for file in report["files"]:
        assert file["error"] is None or "\n" not in file["error"]
    assert elapsed < 240


# --------------------------------------------------------------------------------------------------------------
# absurd values: refused before allocating, quickly
# --------------------------------------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _patch_zip_size(data: bytes, member: str, size: int) -> bytes:
    """Set the uncompressed size of ``member`` in its local and central headers."""
    out = bytearray(data)
    name = member.encode()
    at = 0
    while (at := out.find(name, at)) >= 0:
        if out[at - 30 : at - 26] == b"PK\x03\x04":
            out[at - 30 + 22 : at - 30 + 26] = struct.pack("<I", size)
        elif out[at - 46 : at - 42] == b"PK\x01\x02":
            out[at - 46 + 24 : at - 46 + 28] = struct.pack("<I", size)
        at += 1
    return bytes(out)


def _npy(
    header: str, version: tuple[int, int] = (1, 0), length: int | None = None, data: bytes = b""
) -> bytes:
    text = header.encode("latin1")
    fmt = "<H" if version == (1, 0) else "<I"
    size = len(text) if length is None else length
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, size) + text + data


def _msgpack_array(shape: list[int], dtype: str, raw: bytes) -> bytes:
    import msgpack

    inner = msgpack.packb((shape, dtype, raw))
    return b"\x81" + msgpack.packb("w") + b"\xc9" + struct.pack(">I", len(inner)) + b"\x01" + inner


def _deep_pickle_tuple() -> bytes:
    return b"\x80\x02" + b"(" * 5000 + b")" + b"t" * 5000 + b"."


ABSURD: dict[str, Callable[[], bytes]] = {
    # safetensors: header length far beyond the file, at the 100 MB limit, and a header nested 100k deep
    "safetensors_len_u64_max": lambda: struct.pack("<Q", (1 << 64) - 1) + b"{}" + b"\0" * 64,
    "safetensors_len_99MB": lambda: struct.pack("<Q", 99_000_000) + b'{"a":' + b" " * 64,
    "safetensors_deep_json": lambda: (lambda h: struct.pack("<Q", len(h)) + h)(
        b'{"__metadata__":{"x":"y"},"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    ),
    "safetensors_huge_shape": lambda: (
        (lambda h: struct.pack("<Q", len(h)) + h)(
            json.dumps({"a": {"dtype": "F32", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 16]}}).encode()
        )
        + b"\0" * 16
    ),
    # npy: header length above numpy's limit, shape whose bytes overflow, descr nested deeply
    "npy_header_len_u32_max": lambda: _npy("{", (2, 0), length=0xFFFFFFFF),
    "npy_huge_shape": lambda: _npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }\n"
    ),
    "npy_deep_descr": lambda: _npy(
        "{'descr': "
        + "[('a', " * 2000
        + "'<f4'"
        + ")]" * 2000
        + ", 'fortran_order': False, 'shape': (1,), }\n"
    ),
    "npy_deep_literal": lambda: _npy("(" * 4000 + ")" * 4000),
    # npz: a member whose zip directory size is absurd (4 GiB), an object array claiming 4 GiB of pickle
    "npz_member_size_4GiB": lambda: _patch_zip_size(
        _zip({"a.npy": _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", data=b"\0" * 8)}),
        "a.npy",
        0xFFFFFFFF,
    ),
    "npz_object_pickle_binbytes": lambda: _zip(
        {
            "o.npy": _npy(
                "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }\n",
                data=b"\x80\x03B\xff\xff\xff\xff",
            )
        }
    ),
    # torch zip: data.pkl whose directory size is 4 GiB; 20000 members
    "torch_zip_pkl_4GiB": lambda: _patch_zip_size(
        _zip({"a/data.pkl": b"\x80\x02}q\x00.", "a/version": b"3\n"}), "a/data.pkl", 0xFFFFFFFF
    ),
    "torch_zip_many_members": lambda: _zip(
        {"a/data.pkl": b"\x80\x02}.", **{f"a/x{i}": b"" for i in range(20_000)}}
    ),
    # msgpack: map32 / str32 / array32 counts far beyond the file, nesting 100k deep, an ndarray of 2**124 bytes
    "msgpack_map32": lambda: b"\xdf\xff\xff\xff\xff" + b"\xa1a\x01" * 4,
    "msgpack_str32": lambda: b"\x81\xa1a\xdb\xff\xff\xff\xff" + b"x" * 16,
    "msgpack_deep": lambda: b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0",
    "msgpack_huge_array": lambda: _msgpack_array([1 << 62, 1 << 62], "float32", b"\0" * 8),
    # pickles: deep marks, 4 GiB lengths, a frame larger than the file
    "pickle_deep_marks": _deep_pickle_tuple,
    "pickle_binbytes8": lambda: b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"\0" * 16,
    "pickle_frame": lambda: b"\x80\x04\x95" + struct.pack("<Q", 1 << 62) + b"}.",
    # tar: a GNU long-name header claiming 1 GiB
    "tar_longname_1GiB": lambda: _tar_longname(1 << 30),
}


def _tar_longname(size: int) -> bytes:
    block = bytearray(512)
    block[0:13] = b"././@LongLink"
    block[100:108] = b"0000644\0"
    block[124:136] = b"%011o\0" % size
    block[156:157] = b"L"
    block[257:263] = b"ustar "
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % (sum(block))
    return bytes(block) + b"x" * 4096


@pytest.mark.parametrize("name", sorted(ABSURD))
def test_absurd_values_are_refused_before_allocating(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.bin"
    path.write_bytes(ABSURD[name]())
    tracemalloc.start()
    start = time.perf_counter()
    try:
        try:
            ckpt = read_checkpoint(path)
        except UnreadableCheckpoint as exc:
            assert "\n" not in exc.reason
        else:  # readable only when what it claims is consistent: then nothing absurd was listed
            assert all(t.nbytes is None or t.nbytes <= path.stat().st_size for t in ckpt.tensors.values()), (
                ckpt
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    size = path.stat().st_size
    assert peak < 64 * size + (16 << 20), f"{name}: peak {peak >> 20} MiB for a {size >> 10} KiB file"
    assert elapsed < MAX_SECONDS_PER_FILE, f"{name}: {elapsed:.1f}s"


def test_large_pickle_member_is_streamed_not_read_whole(tmp_path: Path) -> None:
    """A data.pkl over 16 MiB is walked through zipfile's stream: the peak does not grow with the member (zipfile
    seeks forward in reads of at most 16 MiB), and the tensors are still listed."""
    import torch

    peaks = []
    for mib in (24, 72):
        path = tmp_path / f"big_pickle_{mib}.pt"
        torch.save({"w": torch.zeros(2, 3), "note": "x" * (mib << 20)}, path)
        tracemalloc.start()
        try:
            ckpt = read_checkpoint(path)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        path.unlink()
        assert ckpt.tensors["w"].shape == (2, 3) and fact_findings(ckpt) == []
    assert peaks[1] < peaks[0] + (4 << 20) and peaks[1] < 48 << 20, [p >> 20 for p in peaks]
