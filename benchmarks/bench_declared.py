"""Declared-expectation benchmark: checking a transformers folder against its config.json, side by side.

Builds folders with ``save_pretrained`` under ``benchmarks/_data/declared`` — real tensor counts (full depth, e.g.
32 Llama layers, 8 Mixtral experts per layer) at tiny widths, so that what is measured is the per-key work, not
bytes — and measures, each in a fresh interpreter (median of N runs):

  - ``ckptlint check FOLDER`` with the built-in family (tier a: no torch, no transformers);
  - the same with the built-in families switched off, so transformers builds the class on the meta device
    (tier b), first with an empty cache, then cached;
  - transformers itself: ``AutoModel...from_pretrained(FOLDER, device_map="meta", output_loading_info=True)``;

and, in one process, the time of one more folder with tier (a) (``ckptlint.check`` after a warm-up).

Run by hand: ``python benchmarks/bench_declared.py [--runs 5]``. Prints a Markdown table for README.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "_data" / "declared"
PY = sys.executable
# this machine's torchvision wheel needs tests/tvshim.py before transformers is imported
PRELUDE = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\ntry:\n    import tvshim\nexcept ImportError:\n    pass\n"

MODELS = {
    "Llama (32 layers)": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=256,
            pad_token_id=1,
            bos_token_id=1,
            eos_token_id=1,
        ),
    ),
    "Mixtral (32 layers × 8 experts)": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=256,
            num_local_experts=8,
            pad_token_id=1,
            bos_token_id=1,
            eos_token_id=1,
        ),
    ),
    "BERT base (12 layers)": (
        "BertConfig",
        "BertForMaskedLM",
        dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=12, num_attention_heads=4, vocab_size=256
        ),
    ),
    "CLIP ViT-B (12 + 12 layers)": (
        "CLIPConfig",
        "CLIPModel",
        dict(
            text_config=dict(
                hidden_size=64,
                intermediate_size=96,
                num_hidden_layers=12,
                num_attention_heads=4,
                vocab_size=256,
            ),
            vision_config=dict(
                hidden_size=64,
                intermediate_size=96,
                num_hidden_layers=12,
                num_attention_heads=4,
                image_size=224,
                patch_size=16,
            ),
        ),
    ),
}


def build() -> dict[str, tuple[Path, str]]:
    DATA.mkdir(parents=True, exist_ok=True)
    out = {}
    for label, (config, cls, kwargs) in MODELS.items():
        folder = DATA / cls
        if not (folder / "config.json").exists():
            code = PRELUDE + (
                f"import torch, transformers\ntorch.manual_seed(0)\n"
                f"m = transformers.{cls}(transformers.{config}(**{kwargs!r}))\nm.save_pretrained({str(folder)!r})\n"
            )
            subprocess.run([PY, "-c", code], check=True, capture_output=True)
        out[label] = (folder, cls)
    return out


def timed(code: str, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"failed: {code}\n{proc.stderr[-2000:]}")
    return elapsed


def median(code: str, runs: int, env: dict[str, str] | None = None, prepare=None) -> float:
    times = []
    for _ in range(runs):
        if prepare:
            prepare()
        times.append(timed(code, env))
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    folders = build()
    cache = Path(tempfile.mkdtemp(prefix="ckptlint-bench-cache-"))
    env = {"CKPTLINT_CACHE_DIR": str(cache), "NO_COLOR": "1"}
    cli = (
        PRELUDE.split("try:")[0]
        + "from ckptlint.cli import main\nsys.argv = ['ckptlint', 'check', {!r}]\nmain()\n"
    )
    tier_b_body = (
        "import ckptlint.declared.hf as hf\nhf.builtin = lambda name: None  # built-in families off: tier (b)\n"
        "from ckptlint.cli import main\nsys.argv = ['ckptlint', 'check', {!r}]\nmain()\n"
    )
    tier_b = PRELUDE + tier_b_body
    tier_b_cached = (
        PRELUDE.split("try:")[0] + tier_b_body
    )  # a cached run imports neither torch nor transformers
    hf_meta = PRELUDE + (
        "import transformers\ncls = transformers.{cls}\n"
        "m, info = cls.from_pretrained({folder!r}, device_map='meta', output_loading_info=True)\n"
    )
    further = (
        PRELUDE.split("try:")[0]
        + "import time, ckptlint\nckptlint.check({first!r})\nt = time.perf_counter()\nckptlint.check({folder!r})\n"
        "print(time.perf_counter() - t)\n"
    )
    rows = []
    for label, (folder, cls) in folders.items():
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), "np") as f:
            n = len(list(f.keys()))
        a = median(cli.format(str(folder)), args.runs, env)
        other = next(p for p, _ in folders.values() if p != folder)
        proc = subprocess.run(
            [PY, "-c", further.format(first=str(other), folder=str(folder))],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        one_more = float(proc.stdout.strip().splitlines()[-1]) * 1000
        b_first = median(
            tier_b.format(str(folder)),
            max(1, args.runs // 2),
            env,
            prepare=lambda: shutil.rmtree(cache, ignore_errors=True),
        )
        timed(tier_b.format(str(folder)), env)  # fill the cache
        b_cached = median(tier_b_cached.format(str(folder)), args.runs, env)
        meta = median(hf_meta.format(cls=cls, folder=str(folder)), max(1, args.runs // 2), env)
        rows.append((label, n, a, one_more, b_first, b_cached, meta))
    shutil.rmtree(cache, ignore_errors=True)
    print(
        "| model | tensors in the file | tier (a) process (s) | tier (a) one more folder (ms) | tier (b) process, "
        "uncached (s) | tier (b) process, cached (s) | transformers `from_pretrained(device_map='meta')` process (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, n, a, one_more, b_first, b_cached, meta in rows:
        print(f"| {label} | {n} | {a:.2f} | {one_more:.0f} | {b_first:.2f} | {b_cached:.2f} | {meta:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
