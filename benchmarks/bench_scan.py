"""Scan benchmark: files per second for 2,000 remote checkpoints — local threads vs Ray vs Dask — with 0 and
20 ms of latency injected per request, bytes and requests fetched per file, and the CLI's memory as the number
of files grows (JSONL streaming keeps no report).

The checkpoints are the tests' scan corpus (safetensors files of a few small tensors plus 256 KiB of tensor data,
some with optimizer state, a small torch zip every 200, two cut short), served by the tests' Range server (tests/_range_server.py) in a child
process, so the server does not compete with the scan for this process's GIL. Ray and Dask run local clusters of
2 worker processes (started once; their start-up is reported apart); the local engine uses 64 threads.

Run by hand: ``python benchmarks/bench_scan.py [--runs 3] [--files 2000]``. Prints a Markdown table for README.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path.insert(0, str(TESTS))

SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from _range_server import RangeServer
with RangeServer(Path({root!r})) as srv:
    srv.latency = {latency!r}
    print(srv.url(""), flush=True)
    while True:
        time.sleep(3600)
"""


class Served:
    """The corpus behind a Range server in a child process, with ``latency`` seconds added to every request."""

    def __init__(self, root: Path, latency: float) -> None:
        code = SERVER.format(tests=str(TESTS), root=str(root), latency=latency)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.base = self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def timed_scan(urls: list[str], engine: str, address: str | None) -> tuple[float, list]:
    import ckptlint

    start = time.perf_counter()
    reports = list(ckptlint.scan(urls, engine=engine, engine_address=address, stats=True))
    return time.perf_counter() - start, reports


def peak_rss_mib(cmd: list[str]) -> float:
    """Peak RSS of a child process (sampled every 20 ms)."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.02)
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--data-kib", type=int, default=256, help="tensor data per safetensors file")
    args = parser.parse_args()

    import dask
    import ray
    from distributed import LocalCluster
    from scan_support import write_checkpoints

    root = Path(tempfile.mkdtemp(prefix="bench_scan_"))
    names = write_checkpoints(root, args.files, data_bytes=args.data_kib * 1024)

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ray_start = time.perf_counter() - t
    t = time.perf_counter()
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    dask_start = time.perf_counter() - t
    engines = {
        "local (64 threads)": ("local", None),
        "ray (2 workers)": ("ray", None),
        "dask (2 workers)": ("dask", cluster.scheduler_address),
    }

    rows = []
    for latency in (0.0, 0.020):
        served = Served(root, latency)
        urls = [served.base + n for n in names]
        try:
            for label, (engine, address) in engines.items():
                timed_scan(urls[:100], engine, address)  # warm the workers (imports, connections)
                times, reports = [], []
                for _ in range(args.runs):
                    elapsed, reports = timed_scan(urls, engine, address)
                    times.append(elapsed)
                assert sorted(r.path for r in reports) == sorted(urls)
                ok = [r for r in reports if r.stats is not None]
                rows.append(
                    (
                        f"{latency * 1000:.0f} ms",
                        label,
                        len(urls) / statistics.median(times),
                        len(urls) / max(times),
                        len(urls) / min(times),
                        statistics.mean(r.stats.bytes for r in ok),
                        statistics.mean(r.stats.requests for r in ok),
                    )
                )
                print(rows[-1], file=sys.stderr, flush=True)
        finally:
            served.close()
    cluster.close()
    ray.shutdown()

    served = Served(root, 0.0)
    rss = {}
    try:
        for n in (args.files // 10, args.files):
            urls = [served.base + name for name in names[:n]]
            out = root / f"out_{n}.jsonl"
            cmd = [
                sys.executable,
                "-m",
                "ckptlint",
                "check",
                *urls,
                "--format",
                "jsonl",
                "--output",
                str(out),
            ]
            rss[n] = peak_rss_mib(cmd)
    finally:
        served.close()

    import ckptlint

    sizes = [os.path.getsize(root / n) for n in names]
    print(
        f"Measured {time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, ckptlint {ckptlint.__version__}, ray {ray.__version__}, "
        f"dask {dask.__version__}; {len(names)} files, median file {statistics.median(sizes) / 1024:.0f} KiB; "
        f"median of {args.runs} runs (min–max in brackets). Engine start-up, not counted: Ray "
        f"{ray_start:.1f} s, Dask {dask_start:.1f} s.\n"
    )
    print("| latency per request | engine | files/s | bytes fetched per file | requests per file |")
    print("|---|---|---|---|---|")
    for latency, label, median, low, high, nbytes, nreq in rows:
        print(
            f"| {latency} | {label} | {median:,.0f} ({low:,.0f}–{high:,.0f}) | {nbytes:,.0f} | {nreq:.2f} |"
        )
    print(
        f"\nPeak RSS of `ckptlint check URL... --format jsonl --output F`: {rss[args.files // 10]:.0f} MiB for "
        f"{args.files // 10} files, {rss[args.files]:.0f} MiB for {args.files} files."
    )


if __name__ == "__main__":
    main()
