"""strip and fix never need torch: README's commands (and the ones findings suggest) run in a process where
``import torch`` (and jax, flax, transformers) fails, and OUT is then checked with torch in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
torch = pytest.importorskip("torch")

# Runs the CLI with an import hook that refuses the frameworks; reports any attempt and whether torch got in.
_BLOCKED_CLI = """
import importlib.abc, runpy, sys
BLOCKED = ("torch", "jax", "flax", "transformers", "open_clip", "timm")
attempts = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["ckptlint", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("ckptlint", run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    sys.stderr.write(f"\\nIMPORT-ATTEMPTS {attempts} LOADED {loaded}\\n")
sys.exit(code)
"""


def ckptlint_without_torch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED_CLI, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert "IMPORT-ATTEMPTS [] LOADED []" in proc.stderr, proc.stderr  # torch was never even tried
    return proc


def readme_commands() -> list[str]:
    """The strip/fix lines of README's "diff, strip, fix" block, comments removed."""
    text = (ROOT / "README.md").read_text()
    block = text.split("### diff, strip, fix", 1)[1].split("```", 2)[1]
    return [
        line.split("#", 1)[0].strip()
        for line in block.splitlines()
        if line.startswith(("ckptlint strip", "ckptlint fix"))
    ]


def test_readme_strip_and_fix_examples_without_torch(corpus: Path, tmp_path: Path) -> None:
    commands = readme_commands()
    assert commands == ["ckptlint strip --keep params IN OUT", "ckptlint fix IN OUT --arch open_clip"]
    # the README's own example files: big_vision CLIPPO (params/opt/chrono), open_clip saved under DDP
    inputs = {
        "strip": ROOT / "examples" / "clippo_tiny.npz",
        "fix": ROOT / "examples" / "openclip_tiny_ddp.pt",
    }
    variants = {  # and what the comment next to them promises: --drop opt,chrono; --to safetensors
        "strip": [[], ["--drop", "opt,chrono"], ["--to", "safetensors"]],
        "fix": [[], ["--to", "safetensors"]],
    }
    for command in commands:
        words = command.split()[1:]
        verb = words[0]
        for i, extra in enumerate(variants[verb]):
            base = (
                words if not extra or extra[0] != "--drop" else ["strip", "--drop", "opt,chrono", "IN", "OUT"]
            )
            out = (
                tmp_path
                / f"{verb}{i}.{'safetensors' if '--to' in extra else inputs[verb].suffix.lstrip('.')}"
            )
            argv = [str(inputs[verb]) if w == "IN" else str(out) if w == "OUT" else w for w in base]
            proc = ckptlint_without_torch(*argv, *(extra if extra and extra[0] == "--to" else []))
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert out.exists()
    with np.load(inputs["strip"], allow_pickle=False) as z:
        want = {k: z[k] for k in z.files if k.startswith("params/")}
    for name in ("strip0.npz", "strip1.npz"):
        with np.load(tmp_path / name, allow_pickle=False) as z:
            assert set(z.files) == set(want) and all(z[k].tobytes() == want[k].tobytes() for k in want)
    from safetensors.numpy import load_file

    st = load_file(str(tmp_path / "strip2.safetensors"))
    assert set(st) == set(want) and all(st[k].tobytes() == want[k].tobytes() for k in want)
    ddp = torch.load(inputs["fix"], weights_only=True)
    want_sd = {k.removeprefix("module."): v for k, v in ddp.items()}
    fixed = torch.load(tmp_path / "fix0.pt", weights_only=True, mmap=True)
    from safetensors.torch import load_file as load_pt

    for got in (fixed, load_pt(str(tmp_path / "fix1.safetensors"))):
        assert set(got) == set(want_sd) and all(torch.equal(got[k], v) for k, v in want_sd.items())


def test_ck201_suggestion_on_a_torch_trainer_checkpoint_without_torch(corpus: Path, tmp_path: Path) -> None:
    """The command CK201 suggests for a torch trainer checkpoint works as written, torch or not."""
    src = corpus / "open_clip" / "openclip_tiny_trainer_ckpt.pt"
    report = json.loads(ckptlint_without_torch("check", str(src), "--format", "json").stdout)
    fixes = [f["fix"] for f in report["files"][0]["findings"] if f["code"] == "CK201"]
    assert fixes and "ckptlint strip --keep state_dict IN OUT" in fixes[0]
    out = tmp_path / "weights.pt"
    proc = ckptlint_without_torch("strip", "--keep", "state_dict", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    want = torch.load(src, weights_only=True)
    got = torch.load(out, weights_only=True)
    assert list(got) == ["state_dict"] and list(got["state_dict"]) == list(want["state_dict"])
    for k, v in want["state_dict"].items():
        assert torch.equal(got["state_dict"][k], v)


def test_fix_folder_and_to_formats_without_torch(corpus: Path, tmp_path: Path) -> None:
    folder = corpus / "hf" / "hf_clip_tiny_old_position_ids"
    out = tmp_path / "fixed"
    proc = ckptlint_without_torch("fix", str(folder), str(out), "--arch", "hf-clip", "--to", "safetensors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from safetensors.torch import load_file

    want = {
        k: v
        for k, v in torch.load(folder / "pytorch_model.bin", weights_only=True).items()
        if "position_ids" not in k
    }
    got = load_file(str(out / "model.safetensors"))
    assert set(got) == set(want) and all(torch.equal(got[k], v) for k, v in want.items())
    legacy = tmp_path / "legacy.pt"
    torch.save(
        {"w": torch.arange(6.0).reshape(2, 3), "step": 4}, legacy, _use_new_zipfile_serialization=False
    )
    for to, name in (("same", "zip.pt"), ("npz", "w.npz"), ("msgpack", "w.msgpack")):
        proc = ckptlint_without_torch("strip", "--keep", "w", "--to", to, str(legacy), str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
    assert torch.equal(
        torch.load(tmp_path / "zip.pt", weights_only=True)["w"], torch.arange(6.0).reshape(2, 3)
    )
    with np.load(tmp_path / "w.npz") as z:
        assert z["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
