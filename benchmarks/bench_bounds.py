"""Resource bounds: CPU time and peak memory of ``ckptlint check`` on the crafted inputs of
``tests/bound_samples.py`` (issue 9's "unbounded cost" files and others), one process per file, and the time
ckptlint's safetensors reader takes on a 360,000-tensor header next to ``safetensors.safe_open``.

Run by hand: ``python benchmarks/bench_bounds.py [--only NAME ...]``; it prints a Markdown table for README and
the machine it ran on. Each figure is the best of ``--repeat`` runs (CPU time of the child: user + system;
peak RSS: the child's VmHWM). tests/test_bounds.py asserts the bounds with work counters instead of times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import bound_samples as bs  # noqa: E402

CHILD = r"""
import json, sys
from ckptlint.api import check_files
(file,) = check_files(sys.argv[1]).files
hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
print(json.dumps({"error": file.error, "codes": sorted({f.code for f in file.findings}), "rss": hwm}))
"""

HEADER = r"""
import sys, time
from pathlib import Path
which, path = sys.argv[1], sys.argv[2]
start = time.process_time()
if which == "safe_open":
    from safetensors import safe_open
    with safe_open(path, "np") as f:
        keys = list(f.keys())
        shapes = [f.get_slice(k).get_shape() for k in keys]
else:
    from ckptlint.readers import read_checkpoint
    read_checkpoint(Path(path))
print(time.process_time() - start)
"""


def run_child(args: list[str]) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=900)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return cpu, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names of tests/bound_samples.py BOUNDS to run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bound in bs.BOUNDS:
            if args.only and bound.name not in args.only:
                continue
            path = Path(tmp) / bound.name
            bound.write(path)
            best: tuple[float, dict] | None = None
            for _ in range(args.repeat):
                cpu, stdout = run_child(["-c", CHILD, str(path)])
                result = json.loads(stdout)
                if best is None or cpu < best[0]:
                    best = (cpu, result)
            assert best is not None
            cpu, result = best
            codes = ", ".join(c for c in result["codes"] if c in ("CK001", "CK301", "CK302"))
            verdict = f"refused: {result['error'][:70]}…" if result["error"] else f"read: {codes or 'clean'}"
            rows.append((bound.name, path.stat().st_size, cpu, result["rss"], verdict))
            print(f"{bound.name}: {cpu:.2f} s, {result['rss'] >> 20} MiB, {verdict}", file=sys.stderr)
            path.unlink()
        header = Path(tmp) / "header_360k.safetensors"
        bs.safetensors_header(360_000)(header)
        with header.open("rb") as fh:
            header_mb = int.from_bytes(fh.read(8), "little") / 1e6
        times = {}
        for which in ("safe_open", "ckptlint"):
            times[which] = min(
                float(run_child(["-c", HEADER, which, str(header)])[1]) for _ in range(args.repeat)
            )
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}\n")  # fmt: skip
    print("| crafted input | size | CPU time | peak RSS | verdict |")
    print("|---|---:|---:|---:|---|")
    for name, size, cpu, rss, verdict in rows:
        print(f"| `{name}` | {size / 1e6:.1f} MB | {cpu:.2f} s | {rss >> 20} MiB | {verdict} |")
    print(f"\nA safetensors file of 360,000 tensors (a {header_mb:.0f} MB header): "
          f"`safe_open` + every shape {times['safe_open']:.2f} s, ckptlint's reader {times['ckptlint']:.2f} s.")  # fmt: skip


if __name__ == "__main__":
    main()
