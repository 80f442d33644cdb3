"""``--jobs``: wall time and CPU of ``ckptlint check FILES --jobs N`` against one job, on many small files.

Builds N copies of a small real checkpoint (open_clip's tiny DDP state_dict from the test corpus, 62 tensors) under
``benchmarks/_data/jobs`` and runs, each a fresh process, ``ckptlint check FILES --jobs J`` for several file counts
(median of R runs; CPU = user + sys of the process). ``--jobs N`` runs N reader threads in one process (no worker
processes for local files), so the table shows what threads cost or save on small local files.

Run by hand: ``python benchmarks/bench_jobs.py [--runs 3] [--counts 8,40,200] [--jobs 2]``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "_data" / "jobs"
SOURCE = ROOT / "tests" / "data" / "corpus" / "open_clip" / "openclip_tiny_ddp_module_prefix.pt"


def build(count: int) -> list[Path]:
    DATA.mkdir(parents=True, exist_ok=True)
    files = [DATA / f"f{i:04d}.pt" for i in range(count)]
    for f in files:
        if not f.exists():
            shutil.copy(SOURCE, f)
    return files


def one_run(files: list[Path], jobs: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ckptlint",
            "check",
            *map(str, files),
            "--jobs",
            str(jobs),
            "--format",
            "json",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--counts", default="8,40,200")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs\n")
    print("| files | --jobs (threads) | wall (s) | CPU (s) |")
    print("|---|---|---|---|")
    for count in (int(c) for c in args.counts.split(",")):
        files = build(count)
        for jobs in (1, args.jobs):
            runs = [one_run(files, jobs) for _ in range(args.runs)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"| {count} | {jobs} | {wall:.2f} | {cpu:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
