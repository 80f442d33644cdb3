"""Header-read benchmark: ckptlint dump vs torch.load(mmap) / safetensors safe_open / np.load, side by side.

Builds ~1 GiB files of each format (and a 10 GiB safetensors with the same tensor count) under
``benchmarks/_data`` with the real libraries, then measures, per format, the whole process's wall time and
peak RSS (median of N runs, each a fresh interpreter) of:
  - ``ckptlint dump --format json FILE``
  - the format's own library opening the file the cheapest way it offers
and, in one process, the time of each further file after the first (``ckptlint.dump`` API).

Then the small-file start-up table: a fresh process of ``ckptlint check`` and ``ckptlint dump`` of one small
safetensors (8 tensors) against safetensors' own ``safe_open`` process listing its keys and shapes, interleaved
run by run (median wall time, peak RSS); and ``ckptlint check DIR --format jsonl`` of 200 and of 2,000 such files
(per further file = the difference over 1,800 files; RSS of both, to show memory flat in the number of files).

Every subprocess runs with bytecode caching on (``PYTHONPYCACHEPREFIX`` under ``_data``, one warm-up run first),
as an installed package would, whatever ``PYTHONDONTWRITEBYTECODE`` says, in an empty folder of the temp directory
(``_data`` lies in this repository, whose ``pyproject.toml`` ckptlint would read as a settings file), and ckptlint
as the ``ckptlint`` console script when it is installed.

Run by hand: ``python benchmarks/bench_read.py [--runs 10] [--keep] [--startup-only]``. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
CWD = Path(tempfile.gettempdir()) / "ckptlint-bench-cwd"  # no settings file in it nor above it
PY = sys.executable
# the console script users run (``pip install`` writes it next to the interpreter), else ``python -m ckptlint``
_SCRIPT = Path(PY).parent / "ckptlint"
CKPTLINT = [str(_SCRIPT)] if _SCRIPT.is_file() else [PY, "-m", "ckptlint"]
N_TENSORS = 256  # 256 tensors × 1M float32 = 1 GiB
NUMEL = 1 << 20


def _state_dict():
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        f"blocks.{i // 8}.layer{i % 8}.weight": torch.randn(1024, 1024, generator=g) for i in range(N_TENSORS)
    }


def build() -> dict[str, Path]:
    """Write every benchmark file once (skipped when present)."""
    DATA.mkdir(exist_ok=True)
    files = {
        "safetensors": DATA / "w1g.safetensors",
        "safetensors-10g": DATA / "w10g.safetensors",
        "torch-zip": DATA / "w1g.pt",
        "torch-legacy": DATA / "w1g_legacy.pt",
        "npz": DATA / "w1g.npz",
        "flax-msgpack": DATA / "w1g.msgpack",
    }
    if all(p.exists() for p in files.values()):
        return files
    import numpy as np
    import torch
    from flax import serialization
    from safetensors.torch import save_file

    sd = _state_dict()
    save_file(sd, files["safetensors"])
    torch.save(sd, files["torch-zip"])
    torch.save(sd, files["torch-legacy"], _use_new_zipfile_serialization=False)
    arrays = {k.replace(".", "/"): v.numpy() for k, v in sd.items()}
    np.savez(files["npz"], **arrays)
    nested: dict = {}
    for k, v in arrays.items():
        node = nested
        *parents, leaf = k.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    files["flax-msgpack"].write_bytes(serialization.to_bytes(nested))
    del sd, arrays, nested
    _write_big_safetensors(files["safetensors-10g"])
    return files


def _write_big_safetensors(path: Path) -> None:
    """10 GiB, same tensor count (40 MiB each). safetensors' save_file would need 20 GiB of RAM here, so the
    header is written per the safetensors spec and the data region left sparse; the library row of the
    table opens this very file with safe_open, which validates it."""
    header, offset = {}, 0
    for i in range(N_TENSORS):
        n = 10240 * 1024 * 4
        header[f"blocks.{i // 8}.layer{i % 8}.weight"] = {
            "dtype": "F32",
            "shape": [10240, 1024],
            "data_offsets": [offset, offset + n],
        }
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as fh:
        fh.write(len(blob).to_bytes(8, "little") + blob)
        fh.truncate(8 + len(blob) + offset)


LIB_SNIPPETS = {
    "safetensors": "from safetensors import safe_open\nf=safe_open(P,'np')\n[f.get_slice(k).get_shape() for k in f.keys()]",
    "safetensors-10g": "from safetensors import safe_open\nf=safe_open(P,'np')\n[f.get_slice(k).get_shape() for k in f.keys()]",
    "torch-zip": "import torch\nsd=torch.load(P,mmap=True,weights_only=True)\n[v.shape for v in sd.values()]",
    "torch-legacy": "import torch\nsd=torch.load(P,weights_only=True)\n[v.shape for v in sd.values()]",
    "npz": "import numpy as np\nz=np.load(P)\n[z[k].shape for k in z.files]",
    "flax-msgpack": "from flax import serialization\nd=serialization.msgpack_restore(open(P,'rb').read())",
}
LIB_NAMES = {
    "safetensors": "safe_open",
    "safetensors-10g": "safe_open",
    "torch-zip": "torch.load(mmap=True, weights_only=True)",
    "torch-legacy": "torch.load(weights_only=True) (mmap needs zip)",
    "npz": "np.load + each array",
    "flax-msgpack": "flax msgpack_restore",
}


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPYCACHEPREFIX"] = str(DATA / "pycache")
ENV["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p)


def _rss_of(cmd: list[str], ok: tuple[int, ...] = (0,)) -> float:
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=ENV, cwd=CWD
    )
    assert out.returncode in ok, out.stderr
    return int(out.stderr.strip().splitlines()[-1]) / 1024


def _wall(cmd: list[str], ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    rc = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=CWD
    ).returncode
    assert rc in ok, (cmd, rc)
    return time.perf_counter() - t0


def median_run(cmd: list[str], runs: int) -> tuple[float, float]:
    _wall(cmd)  # warm-up: bytecode cache
    walls = [_wall(cmd) for _ in range(runs)]
    return statistics.median(walls), _rss_of(cmd)


def _small_files(folder: Path, n: int) -> list[Path]:
    """``n`` small safetensors (8 float32 tensors of 4×4, keys in no known layout), written by safetensors."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"f{i:05d}.safetensors"
        if not p.exists():
            save_file({f"blocks.{j}.weight": np.full((4, 4), i, np.float32) for j in range(8)}, str(p))
        out.append(p)
    return out


def small_file_startup(runs: int) -> None:
    """One small file's whole process, side by side (interleaved), then per further file and RSS over folders."""
    small = _small_files(DATA / "small1", 1)[0]
    cmds = {
        "`ckptlint check small.safetensors`": [*CKPTLINT, "check", str(small)],
        "`ckptlint dump small.safetensors`": [*CKPTLINT, "dump", str(small)],
        "safe_open process (keys and shapes)": [
            PY,
            "-c",
            f"P={str(small)!r}\n" + LIB_SNIPPETS["safetensors"],
        ],
    }
    for cmd in cmds.values():
        _wall(cmd)
    walls: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            walls[name].append(_wall(cmd))
    print("| process (one small safetensors, 8 tensors) | wall, median (min–max) s | peak RSS (MiB) |")
    print("|---|---|---|")
    for name, cmd in cmds.items():
        w = walls[name]
        print(f"| {name} | {statistics.median(w):.3f} ({min(w):.3f}–{max(w):.3f}) | {_rss_of(cmd):.0f} |")
    ratios = [a / b for a, b in zip(walls[next(iter(cmds))], walls[list(cmds)[2]], strict=True)]
    print(f"\ncheck / safe_open, pair by pair: median {statistics.median(ratios):.2f}×\n")
    sizes = {}
    for n in (200, 2000):
        folder = DATA / f"many{n}"
        _small_files(folder, n)
        cmd = [*CKPTLINT, "check", str(folder), "--format", "jsonl"]
        sizes[n] = _folder_run(cmd, max(3, runs // 3))
    per = (sizes[2000][0] - sizes[200][0]) / 1800 * 1000
    print("| `ckptlint check DIR --format jsonl` | wall, median (s) | peak RSS (MiB) |")
    print("|---|---|---|")
    for n, (w, r) in sizes.items():
        print(f"| {n:,} small safetensors | {w:.2f} | {r:.0f} |")
    print(f"\nper further file: {per:.2f} ms\n")


def _folder_run(cmd: list[str], runs: int) -> tuple[float, float]:
    _wall(cmd, ok=(0, 1))
    walls = [_wall(cmd, ok=(0, 1)) for _ in range(runs)]
    return statistics.median(walls), _rss_of(cmd, ok=(0, 1))


def further_file_ms(path: Path) -> float:
    """Median ms of a further ``dump --format json`` of a file of this format in one process (readers warm)."""
    code = (
        "import sys,time,json\nimport ckptlint\nfrom ckptlint.report.dump_json import render\n"
        "from ckptlint.archs.detect import detect_layout\np=sys.argv[1]\n"
        "c=ckptlint.dump(p); render(c, detect_layout(c).name)\nts=[]\n"
        "for _ in range(9):\n t=time.perf_counter(); c=ckptlint.dump(p); render(c, detect_layout(c).name)\n"
        " ts.append(time.perf_counter()-t)\nts.sort(); print(json.dumps(ts[len(ts)//2]*1000))"
    )
    out = subprocess.run([PY, "-c", code, str(path)], check=True, capture_output=True, text=True, env=ENV)
    return float(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep benchmarks/_data")
    ap.add_argument("--startup-only", action="store_true", help="only the small-file tables")
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    CWD.mkdir(exist_ok=True)
    small_file_startup(args.runs)
    if args.startup_only:
        return
    files = build()
    rows = []
    for fmt, path in files.items():
        size = path.stat().st_size / (1 << 30)
        ck_wall, ck_rss = median_run([*CKPTLINT, "dump", "--format", "json", str(path)], args.runs)
        lib_wall, lib_rss = median_run(
            [PY, "-c", f"P={str(path)!r}\n" + LIB_SNIPPETS[fmt]], max(3, args.runs // 3)
        )
        further = further_file_ms(path)
        rows.append(
            (fmt, f"{size:.1f} GiB", N_TENSORS, ck_wall, ck_rss, further, LIB_NAMES[fmt], lib_wall, lib_rss)
        )
    startup, startup_rss = median_run([*CKPTLINT, "--version"], args.runs)
    print(
        f"machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}, Python {sys.version.split()[0]}"
    )
    print(f"`ckptlint --version`: {startup:.3f} s, {startup_rss:.0f} MiB\n")
    print(
        "| format | size | tensors | `ckptlint dump` process (s) | RSS (MiB) | further file (ms) "
        "| library | library process (s) | RSS (MiB) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for fmt, size, n, cw, cr, ff, lib, lw, lr in rows:
        print(
            f"| {fmt} | {size} | {n} | {cw:.3f} | {cr:.0f} | {ff:.1f} | {lib} | {lw:.3f} | {lr:.0f} | {lw / cw:.1f}× |"
        )
    if not args.keep:
        for p in files.values():
            p.unlink()


if __name__ == "__main__":
    main()
