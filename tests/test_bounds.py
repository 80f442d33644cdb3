"""Bounded cost: every crafted input of tests/bound_samples.py is read (or refused with the bound named) by a
ckptlint process limited to 640 MiB of address space (RLIMIT_AS), with a peak RSS under 512 MiB and a work count
linear in the file's size: opcodes walked, values rebuilt, tree nodes visited, key characters built, tensors
recorded, bytes decompressed — counted by wrapping those functions in the subprocess. No wall-clock assertion:
times are in benchmarks/bench_bounds.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bound_samples as bs
import pytest

from ckptlint.readers.joblib_stream import MAX_DECOMPRESSED

ROOT = Path(__file__).resolve().parent.parent
ADDRESS_SPACE = 640 << 20  # 512 MiB above the ~100 MiB an idle interpreter with numpy maps
MAX_RSS = 512 << 20
WORK_PER_BYTE = 8  # counted steps per input byte, all counters together

RUN = r"""
import importlib, json, pkgutil, resource, sys
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import ckptlint.readers
from ckptlint import checkpoint
from ckptlint.api import check_files
for info in pkgutil.iter_modules(ckptlint.readers.__path__):
    importlib.import_module(f"ckptlint.readers.{info.name}")
from ckptlint.readers import joblib_stream, limits, pickle_interpret, pickle_tree, pickle_walker
work = dict.fromkeys(("ops", "values", "nodes", "key_chars", "tensors", "decompressed"), 0)

def counting(owner, name, counter, amount=lambda result, args: 1):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        result = inner(*args, **kwargs)
        work[counter] += amount(result, args)
        return result
    setattr(owner, name, wrapper)
    return wrapper

counting(pickle_walker.Walker, "walk", "ops", lambda scan, args: scan.ops)
counting(pickle_interpret.Interpreter, "value", "values")
counting(pickle_tree._Flattener, "_count", "nodes")
counting(limits.KeyPaths, "join", "key_chars", lambda key, args: len(key))
counting(joblib_stream.Decompressed, "_more", "decompressed", lambda out, args: len(out or b""))
original = checkpoint.tensor_info
counted = counting(checkpoint, "tensor_info", "tensors")
for module in list(sys.modules.values()):
    if module is not None and getattr(module, "tensor_info", None) is original:
        module.tensor_info = counted
(file,) = check_files(sys.argv[1]).files
print(json.dumps({
    "error": file.error, "codes": sorted({f.code for f in file.findings}), "work": work,
    "rss": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024,  # (ru_maxrss survives exec)
}))
"""


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bounds")


@pytest.mark.parametrize("bound", bs.BOUNDS, ids=[b.name for b in bs.BOUNDS])
def test_crafted_input_is_bounded(bound: bs.Bound, crafted: Path) -> None:
    path = crafted / bound.name
    bound.write(path)
    size = path.stat().st_size
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(path), str(ADDRESS_SPACE)], capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    path.unlink()
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert "MemoryError" not in (out["error"] or ""), out["error"]
    if bound.verdict == "refused":
        assert out["error"] and bound.reason in out["error"], out
        assert "CK001" in out["codes"]
    else:
        assert out["error"] is None, out["error"]
    decompressed = out["work"].pop(
        "decompressed"
    )  # bounded by MAX_DECOMPRESSED, not by the (compressed) size
    assert decompressed <= MAX_DECOMPRESSED + (1 << 20)
    work = sum(out["work"].values())
    assert work <= WORK_PER_BYTE * size + 100_000, (out["work"], size)
    assert out["rss"] < MAX_RSS, (out["rss"] >> 20, "MiB")
