"""Write benchmark: ``ckptlint strip`` (no torch) vs the library way of doing the same, side by side.

Builds ~1 GiB trainer checkpoints under ``benchmarks/_data`` with the real libraries — torch zip and legacy
(``{"state_dict": 128 × 4 MiB float32, "optimizer": Adam exp_avg of the same}``) and a big_vision-style npz
(``params/`` and ``opt/``) — and measures the whole process's wall time and peak RSS (median of N runs, each a
fresh interpreter) of keeping the weights only:

  - ``ckptlint strip --keep state_dict IN OUT`` vs ``torch.save(torch.load(IN, mmap=True)["state_dict"], OUT)``
  - ``... --to safetensors`` vs ``safetensors.torch.save_file(torch.load(IN, mmap=True)["state_dict"], OUT)``
  - the legacy file (torch cannot mmap it) and the npz (``np.load`` + ``safetensors.numpy.save_file``).

Run by hand: ``python benchmarks/bench_write.py [--runs 3] [--keep]``. Prints a Markdown table for README.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
PY = sys.executable
N = 128  # tensors of 1M float32 (4 MiB) in the weights, and as many in the optimizer state


def build() -> dict[str, Path]:
    DATA.mkdir(exist_ok=True)
    files = {
        "torch-zip": DATA / "trainer.pt",
        "torch-legacy": DATA / "trainer_legacy.pt",
        "npz": DATA / "trainer.npz",
    }
    if all(p.exists() for p in files.values()):
        return files
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    sd = {f"blocks.{i}.weight": torch.randn(1024, 1024, generator=g) for i in range(N)}
    opt = {
        "state": {i: {"exp_avg": torch.randn(1024, 1024, generator=g)} for i in range(N)},
        "param_groups": [],
    }
    obj = {"epoch": 1, "state_dict": sd, "optimizer": opt}
    torch.save(obj, files["torch-zip"])
    torch.save(obj, files["torch-legacy"], _use_new_zipfile_serialization=False)
    arrays = {f"params/{k.replace('.', '/')}": v.numpy() for k, v in sd.items()}
    arrays.update({f"opt/{i}/exp_avg": s["exp_avg"].numpy() for i, s in opt["state"].items()})
    np.savez(files["npz"], **arrays)
    return files


def cases(files: dict[str, Path], out: Path) -> list[tuple[str, list[str], str]]:
    """(label, ckptlint argv, equivalent library snippet) per row."""
    ck = [PY, "-m", "ckptlint", "strip"]
    pt, legacy, npz = (str(files[k]) for k in ("torch-zip", "torch-legacy", "npz"))
    load = "import torch\nsd=torch.load({p!r},mmap={m},weights_only=True)['state_dict']\n"
    return [
        (
            "torch zip → torch (keep state_dict)",
            [*ck, "--keep", "state_dict", pt, str(out / "o.pt")],
            load.format(p=pt, m=True) + f"torch.save(sd,{str(out / 'l.pt')!r})",
        ),
        (
            "torch zip → safetensors",
            [*ck, "--keep", "state_dict", "--to", "safetensors", pt, str(out / "o.safetensors")],
            load.format(p=pt, m=True)
            + f"from safetensors.torch import save_file\nsave_file(sd,{str(out / 'l.safetensors')!r})",
        ),
        (
            "legacy torch → torch zip",
            [*ck, "--keep", "state_dict", legacy, str(out / "o2.pt")],
            load.format(p=legacy, m=False) + f"torch.save(sd,{str(out / 'l2.pt')!r})",
        ),
        (
            "npz → safetensors (keep params)",
            [*ck, "--keep", "params", "--to", "safetensors", npz, str(out / "o.st")],
            f"import numpy as np\nfrom safetensors.numpy import save_file\nz=np.load({npz!r})\n"
            f"save_file({{k: z[k] for k in z.files if k.startswith('params/')}},{str(out / 'l.st')!r})",
        ),
    ]


def run(cmd: list[str], runs: int, out: Path) -> tuple[float, float]:
    walls, rss = [], []
    for _ in range(runs):
        for p in out.iterdir():
            p.unlink()
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        rss.append(int(proc.stderr.strip().splitlines()[-1]) / 1024)
    return statistics.median(walls), statistics.median(rss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep benchmarks/_data")
    args = ap.parse_args()
    files = build()
    out = DATA / "out"
    out.mkdir(exist_ok=True)
    print(
        f"machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}, Python {sys.version.split()[0]}"
    )
    print(f"inputs: {', '.join(f'{k} {p.stat().st_size / (1 << 30):.2f} GiB' for k, p in files.items())}\n")
    print("| operation | `ckptlint strip` (s) | RSS (MiB) | library (s) | RSS (MiB) |")
    print("|---|---|---|---|---|")
    for label, ck_cmd, snippet in cases(files, out):
        cw, cr = run(ck_cmd, args.runs, out)
        lw, lr = run([PY, "-c", snippet], args.runs, out)
        print(f"| {label} | {cw:.2f} | {cr:.0f} | {lw:.2f} | {lr:.0f} |")
    for p in out.iterdir():
        p.unlink()
    out.rmdir()
    if not args.keep:
        for p in files.values():
            p.unlink()


if __name__ == "__main__":
    main()
