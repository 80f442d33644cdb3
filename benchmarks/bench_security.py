"""Security benchmark: detection and false-positive rates and time per file, ckptlint vs picklescan, modelscan
and fickling, on ckptlint's own malicious samples and on benign files written by the real libraries.

Malicious set: every sample of ``tests/malicious_samples.py`` (written from public advisories; never another
scanner's corpus), each aimed at a file in a temp dir that must not exist afterwards. Benign set: torch.save
state dicts and trainer dicts (both serialisations), HF ``save_pretrained`` folders (safetensors and .bin) and
an HF Trainer checkpoint folder, timm and open_clip files, safetensors, npz (np.savez and the big_vision corpus
files), npy, flax msgpack, pickled numpy arrays, and the shared corpus.

Each tool runs the way its documentation says, one process per file or folder (so times include start-up):
  - ckptlint: ``ckptlint check --select CK301 --format json PATH``; flagged = a CK301 finding, error = CK001.
  - picklescan: ``picklescan -p PATH`` and ``picklescan --strict -p PATH`` (its default-deny mode); exit 1 =
    flagged, 2 = scan error.
  - modelscan: ``modelscan -p PATH -r json -o OUT``; exit 1 = flagged, 2 = error, 3 = no supported file
    (skipped: counted as not flagged).
  - fickling: its Python API (``fickling.scan_zip_archive`` for zip archives, ``fickling.scan_file`` otherwise,
    both ``graceful=True``; for a folder, every file in it); severity above LIKELY_SAFE = flagged, scan errors =
    error. fickling's CLI (``fickling --check-safety``) only parses raw pickles.
A shard index is given to ckptlint as is and to the peers as its folder.
"Detected" counts flagged files; "fail-closed" adds the files a tool refused with an error (a user sees no
"clean" verdict). Run by hand: ``python benchmarks/bench_security.py [--tools ...] [--keep DIR]``; it prints a
Markdown table for README and the machine it ran on. Python bytecode caching is enabled for every tool.
The malicious set includes one live payload per technique of issue 9 (``tests/technique_samples.py``).

``--speed``: 80 real torch files (tiny open_clip, timm, HF CLIP and ResNet-18 state and trainer dicts, both
serialisations) scanned by ``ckptlint check --select CK301`` and ``picklescan -p`` on the folder (one process:
CPU time of the child, and wall time, which a busy machine inflates), and per file in process (ckptlint's reader
vs picklescan's ``scan_file_path``, CPU time).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
BIN = Path(sys.executable).parent
CORPUS = Path(os.environ.get("CKPTLINT_CORPUS", ROOT / "tests" / "data" / "corpus"))
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPATH"] = str(ROOT)
TIMEOUT = 300

FICKLING = r"""
import sys, zipfile
from pathlib import Path
import fickling
from fickling.analysis import Severity
def scan(path):
    if zipfile.is_zipfile(path):
        return list(fickling.scan_zip_archive(str(path), graceful=True).values())
    return [fickling.scan_file(str(path), graceful=True)]
target = Path(sys.argv[1])
files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
results = [r for f in files for r in scan(f)]
if any(r.severity > Severity.LIKELY_SAFE for r in results):
    sys.exit(1)
sys.exit(2 if any(r.errors for r in results) else 0)
"""

# --------------------------------------------------------------------------------------------------------------
# tools: path -> "flagged" | "error" | "clean" | "skipped"
# --------------------------------------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=ENV, cwd=cwd)


def ckptlint(path: Path, cwd: Path) -> str:
    result = _run([str(BIN / "ckptlint"), "check", "--select", "CK301", "--format", "json", str(path)], cwd)
    if result.returncode not in (0, 1, 2) or not result.stdout.strip():
        return "error"
    (file,) = json.loads(result.stdout)["files"]
    if any(f["code"] == "CK301" for f in file["findings"]):
        return "flagged"
    return "error" if file["error"] else "clean"


def _by_exit(code: int) -> str:
    return {0: "clean", 1: "flagged", 2: "error", 3: "skipped"}.get(code, "error")


def picklescan(path: Path, cwd: Path, strict: bool = False) -> str:
    return _by_exit(
        _run([str(BIN / "picklescan"), *(["--strict"] if strict else []), "-p", str(path)], cwd).returncode
    )


def modelscan(path: Path, cwd: Path) -> str:
    out = cwd / "modelscan.json"
    return _by_exit(
        _run([str(BIN / "modelscan"), "-p", str(path), "-r", "json", "-o", str(out)], cwd).returncode
    )


def fickling(path: Path, cwd: Path) -> str:
    return _by_exit(_run([sys.executable, "-c", FICKLING, str(path)], cwd).returncode)


TOOLS: dict[str, Callable[[Path, Path], str]] = {
    "ckptlint": ckptlint,
    "picklescan": picklescan,
    "picklescan --strict": lambda p, c: picklescan(p, c, strict=True),
    "modelscan": modelscan,
    "fickling": fickling,
}

# --------------------------------------------------------------------------------------------------------------
# samples
# --------------------------------------------------------------------------------------------------------------

CATEGORIES = (
    ("issue 9 techniques (tests/technique_samples.py)", ("technique_",)),
    ("folders (HF, sharded)", ("hf_folder", "sharded")),
    ("polyglots", ("safetensors_", "msgpack_")),
    ("legacy + tar torch files", ("legacy_", "tar_")),
    ("zip tricks, TorchScript", ("zip_", "torchscript")),
    ("numpy object arrays", ("npz_", "npy_")),
    ("memo / stack games, streams", ("memo", "stack_built", "appended", "ext_opcode")),
    (
        "allowed globals abused",
        ("torch_rebuild", "torch_backward", "namespace_", "trainer_record", "load_from"),
    ),
    ("protocols and opcodes", ("proto", "opcode_", "build_setstate", "py2_")),
    ("dangerous globals", ("",)),
)


def category(name: str) -> str:
    return next(label for label, prefixes in CATEGORIES if name.startswith(prefixes))


def malicious(directory: Path, canaries: Path) -> dict[str, Path]:
    import malicious_samples as ms
    import technique_samples as ts

    out = ms.write_all(directory, canaries)
    for _, sample in ts.ALL:  # issue 9's techniques (shipped model code is a warning, not a payload)
        if sample.loader != "remote_code":
            out[f"technique_{sample.name}"] = ts.write(
                directory / "techniques", sample, str(canaries / sample.name)
            )
    return out


def benign(directory: Path) -> dict[str, Path]:
    """Benign files and folders written by the real libraries (plus the shared corpus)."""
    importlib.import_module("tvshim")  # before open_clip / timm import torchvision (see tests/tvshim.py)
    import argparse as ap

    import numpy as np
    import open_clip
    import timm
    import torch
    from flax import serialization
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file as save_torch
    from transformers import CLIPConfig, CLIPModel

    out: dict[str, Path] = {}
    torch.manual_seed(0)
    open_clip.add_model_config(CORPUS / "open_clip" / "ckptlint-tiny-ViT.json")
    text = dict(
        hidden_size=32, intermediate_size=37, num_attention_heads=2, num_hidden_layers=2, vocab_size=99
    )
    text.update(max_position_embeddings=16, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    vision = dict(hidden_size=32, image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2)
    models = {
        "open_clip": open_clip.create_model("ckptlint-tiny-ViT"),
        "timm": timm.create_model(
            "vit_base_patch16_clip_224",
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            num_classes=16,
        ),
        "hf_clip": CLIPModel(
            CLIPConfig(text_config=text, vision_config=dict(vision, intermediate_size=37), projection_dim=16)
        ),
    }
    for name, model in models.items():
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        trainer = {
            "epoch": 1, "state_dict": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": torch.amp.GradScaler("cpu").state_dict(), "args": ap.Namespace(lr=1e-3, model=name, epochs=10),
        }  # fmt: skip
        for legacy in (False, True):
            tag = "_legacy" if legacy else ""
            out[f"{name}_state_dict{tag}"] = directory / f"{name}_sd{tag}.pt"
            torch.save(
                model.state_dict(), out[f"{name}_state_dict{tag}"], _use_new_zipfile_serialization=not legacy
            )
            out[f"{name}_trainer{tag}"] = directory / f"{name}_trainer{tag}.pth.tar"
            torch.save(trainer, out[f"{name}_trainer{tag}"], _use_new_zipfile_serialization=not legacy)
        out[f"{name}_safetensors"] = directory / f"{name}.safetensors"
        save_torch(
            {k: v.contiguous() for k, v in model.state_dict().items()}, str(out[f"{name}_safetensors"])
        )
    for safe in (True, False):
        out[f"hf_folder_safetensors_{safe}"] = directory / f"hf_clip_{safe}"
        models["hf_clip"].save_pretrained(out[f"hf_folder_safetensors_{safe}"], safe_serialization=safe)
    trainer_dir = _hf_trainer_checkpoint(directory / "hf_trainer")
    if trainer_dir is not None:
        out["hf_trainer_checkpoint"] = trainer_dir
    arrays = {"params/w": np.ones((4, 3), np.float32), "params/b": np.zeros(3, np.float16)}
    out["npz"] = directory / "arrays.npz"
    np.savez(out["npz"], **arrays)
    out["npz_compressed"] = directory / "arrays_compressed.npz"
    np.savez_compressed(out["npz_compressed"], **arrays)
    out["npy"] = directory / "array.npy"
    np.save(out["npy"], arrays["params/w"])
    out["numpy_safetensors"] = directory / "numpy.safetensors"
    save_numpy(arrays, str(out["numpy_safetensors"]))
    out["flax_msgpack"] = directory / "params.msgpack"
    out["flax_msgpack"].write_bytes(serialization.to_bytes({"params": arrays, "step": 3}))
    import pickle

    out["numpy_pickle"] = directory / "arrays.pkl"
    out["numpy_pickle"].write_bytes(pickle.dumps(arrays, protocol=4))
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file() and path.suffix != ".json":
            out[f"corpus/{path.relative_to(CORPUS)}"] = path
    for path in sorted(CORPUS.glob("hf/*")):
        out[f"corpus/{path.relative_to(CORPUS)}/"] = path
    return out


def _hf_trainer_checkpoint(directory: Path) -> Path | None:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return None
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    data = [{"input_ids": torch.tensor([1, 2, 3, 4]), "labels": torch.tensor(i % 2)} for i in range(4)]
    args = TrainingArguments(
        output_dir=str(directory), max_steps=1, save_steps=1, per_device_train_batch_size=2, report_to=[],
        use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=data).train()
    return sorted(directory.glob("checkpoint-*"))[-1]


# --------------------------------------------------------------------------------------------------------------
# running and reporting
# --------------------------------------------------------------------------------------------------------------


def measure(tools: list[str], items: dict[str, Path], cwd: Path) -> dict[str, dict[str, tuple[str, float]]]:
    results: dict[str, dict[str, tuple[str, float]]] = {}
    for tool in tools:
        run = TOOLS[tool]
        run(next(iter(items.values())), cwd)  # warm-up: bytecode caches, page cache
        results[tool] = {}
        for name, path in items.items():
            if tool != "ckptlint" and path.name.endswith(".index.json"):
                path = path.parent  # the peers scan the shards' folder (they do not read shard indexes)
            start = time.perf_counter()
            verdict = run(path, cwd)
            results[tool][name] = (verdict, time.perf_counter() - start)
    return results


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {}
    for dist in ("ckptlint", "picklescan", "modelscan", "fickling", "torch", "numpy"):
        try:
            out[dist] = version(dist)
        except Exception:  # not installed
            out[dist] = "-"
    return out


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def table(tools: list[str], bad: dict, good: dict, n_bad: int, n_good: int) -> str:
    lines = [
        "| tool | malicious detected | detected or refused (fail-closed) | benign false alarms | benign errors/skips "
        "| median s/file |",
        "|---|---|---|---|---|---|",
    ]
    for tool in tools:
        b = [v for v, _ in bad[tool].values()]
        g = [v for v, _ in good[tool].values()]
        times = [t for _, t in (*bad[tool].values(), *good[tool].values())]
        flagged = b.count("flagged")
        closed = flagged + b.count("error")
        lines.append(
            f"| {tool} | {flagged}/{n_bad} ({100 * flagged / n_bad:.0f}%) | {closed}/{n_bad} ({100 * closed / n_bad:.0f}%) "
            f"| {g.count('flagged')}/{n_good} ({100 * g.count('flagged') / n_good:.0f}%) "
            f"| {g.count('error') + g.count('skipped')}/{n_good} | {statistics.median(times):.2f} |"
        )
    return "\n".join(lines)


def by_category(tools: list[str], bad: dict) -> str:
    names = sorted(next(iter(bad.values())))
    cats = [label for label, _ in CATEGORIES]
    lines = ["| samples | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
    for cat in cats:
        members = [n for n in names if category(n) == cat]
        if not members:
            continue
        cells = []
        for tool in tools:
            flagged = sum(bad[tool][n][0] == "flagged" for n in members)
            cells.append(f"{flagged}/{len(members)}")
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def misses(tools: list[str], bad: dict, good: dict) -> str:
    lines = []
    for tool in tools:
        missed = sorted(n for n, (v, _) in bad[tool].items() if v != "flagged")
        alarms = sorted(n for n, (v, _) in good[tool].items() if v == "flagged")
        errors = sorted(n for n, (v, _) in good[tool].items() if v in ("error", "skipped"))
        lines.append(f"- **{tool}** missed: {', '.join(missed) or 'none'}; false alarms: {', '.join(alarms) or 'none'}"
                     f"; errors/skips on benign: {', '.join(errors) or 'none'}")  # fmt: skip
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# speed: a folder of real torch files, ckptlint against picklescan
# --------------------------------------------------------------------------------------------------------------

IN_PROCESS = r"""
import os, sys, time
tool, folder, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
paths = sorted(os.path.join(folder, p) for p in os.listdir(folder))
if tool == "ckptlint":
    from ckptlint.readers import read_checkpoint as scan
else:
    from picklescan.scanner import scan_file_path as scan
best = None
for _ in range(repeat):
    start = time.process_time()
    for path in paths:
        scan(path)
    spent = time.process_time() - start
    best = spent if best is None else min(best, spent)
print(best / len(paths))
"""


def torch_folder(directory: Path) -> Path:
    """80 torch files written by torch.save: state dicts and trainer dicts (model, AdamW state, epoch, an
    argparse.Namespace) of open_clip, timm, HF CLIP and a timm ResNet, both serialisations."""
    importlib.import_module("tvshim")
    import argparse as ap

    import open_clip
    import timm
    import torch
    from transformers import CLIPConfig, CLIPModel

    open_clip.add_model_config(str(CORPUS / "open_clip" / "ckptlint-tiny-ViT.json"))
    text = dict(hidden_size=32, intermediate_size=37, num_attention_heads=2, num_hidden_layers=2, vocab_size=99,
                max_position_embeddings=16)  # fmt: skip
    vision = dict(hidden_size=32, image_size=32, patch_size=8, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=37)  # fmt: skip
    models = {
        "open_clip": open_clip.create_model("ckptlint-tiny-ViT"),
        "timm_vit": timm.create_model(
            "vit_base_patch16_clip_224",
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            num_classes=16,
        ),
        "hf_clip": CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)),
        "resnet18": timm.create_model("resnet18", num_classes=10),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for param in model.parameters():
            param.grad = torch.ones_like(param)
        opt.step()
        for k in range(20):
            trainer = {"epoch": k, "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                       "args": ap.Namespace(lr=0.1)}  # fmt: skip
            obj = model.state_dict() if k % 4 < 2 else trainer
            torch.save(obj, directory / f"{name}_{k}.pt", _use_new_zipfile_serialization=k % 2 == 0)
    return directory


def speed(work: Path, repeat: int) -> str:
    folder = torch_folder(work / "torch80")
    n = len(list(folder.iterdir()))
    cli = {
        "ckptlint": [str(BIN / "ckptlint"), "check", "--select", "CK301", "--format", "json", str(folder)],
        "picklescan": [str(BIN / "picklescan"), "-p", str(folder)],
    }
    rows = []
    for tool, cmd in cli.items():
        _run(cmd, work)  # warm-up
        wall, cpu = [], []
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            _run(cmd, work)
            wall.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        scan = [sys.executable, "-c", IN_PROCESS, tool, str(folder), str(repeat)]
        per_file = float(_run(scan, work).stdout)
        rows.append(f"| {tool} | {min(cpu):.2f} s ({min(wall):.2f} s wall) | {1000 * per_file:.1f} ms |")
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    return "\n".join([
        f"Speed on {n} real torch files ({size:.0f} MB: state and trainer dicts of open_clip, timm, HF CLIP and "
        f"ResNet-18 models, zip and legacy serialisations), best of {repeat}:\n",
        "| tool | CLI on the folder: CPU (one process, start-up included) | scan per file, in process (CPU) |",
        "|---|---|---|",
        *rows,
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help="comma-separated subset of: " + ", ".join(TOOLS)
    )
    parser.add_argument("--keep", type=Path, default=None, help="write the samples here and keep them")
    parser.add_argument(
        "--speed", action="store_true", help="only the speed comparison on 80 real torch files"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs of the speed comparison (best is kept)")
    args = parser.parse_args()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        parser.error(f"unknown tools: {unknown}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="ckptlint-bench-security-"))
    canaries = work / "canaries"
    canaries.mkdir(parents=True, exist_ok=True)
    try:
        if args.speed:
            print(speed(work, args.repeat))
            print(
                f"\nMachine: {machine()}. Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items())
            )
            return 0
        bad_items = malicious(work / "malicious", canaries)
        (work / "benign").mkdir(exist_ok=True)
        good_items = benign(work / "benign")
        bad = measure(tools, bad_items, work)
        good = measure(tools, good_items, work)
        fired = sorted(p.name for p in canaries.iterdir())
        print(
            f"## Security benchmark ({len(bad_items)} malicious samples, {len(good_items)} benign files/folders)\n"
        )
        print(table(tools, bad, good, len(bad_items), len(good_items)))
        print("\nDetected (flagged) per kind of sample:\n")
        print(by_category(tools, bad))
        print("\n" + misses(tools, bad, good))
        print(
            f"\nMachine: {machine()}. Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + "."
        )
        print(f"Payloads that ran during the benchmark (must be none): {fired or 'none'}")
        return 1 if fired else 0
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
