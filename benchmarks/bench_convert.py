"""Convert benchmark: ``ckptlint convert`` (no torch) vs the library way of doing the same, side by side.

Builds full-size checkpoints with random weights under ``benchmarks/_data/convert`` (no hub): an open_clip
ViT-B-16 hub folder (``open_clip.create_model('ViT-B-16')`` saved by open_clip's ``save_for_hf``) and a big_vision
SigLIP B/16 two-towers npz (random arrays of the shapes big_vision saves, flattened with '/'). Then it measures
each whole process's wall time and peak RSS (median of N runs, each a fresh interpreter):

  - open_clip → transformers CLIPModel: ``ckptlint convert DIR OUT --to hf-clip`` vs the steps of transformers'
    ``convert_clip_original_pytorch_to_hf.py`` (not in the wheel): build the open_clip model from the folder,
    build a ``CLIPModel`` from a ``CLIPConfig``, copy each parameter in (q/k/v chunked, projections transposed),
    ``save_pretrained``;
  - open_clip → timm ``vit_base_patch16_clip_224``: ``ckptlint convert DIR OUT --to timm-vit`` vs
    ``timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))`` (timm's
    ``checkpoint_filter_fn``) then ``save_file``;
  - big_vision SigLIP → open_clip ViT-B-16-SigLIP: ``ckptlint convert NPZ OUT --to open_clip`` vs
    ``open_clip.create_model('ViT-B-16-SigLIP')`` + ``load_big_vision_weights`` + ``save_file``.

Run by hand: ``python benchmarks/bench_convert.py [--runs 3] [--keep]``. Prints a Markdown table for README.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data" / "convert"
PY = sys.executable
ROOT = HERE.parent
TVSHIM = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import tvshim\n"


class _NoTokenizer:
    """open_clip's save_for_hf saves a tokenizer too; the benchmark has none to save."""

    def save_pretrained(self, folder: str) -> None:
        pass


def build() -> dict[str, Path]:
    DATA.mkdir(parents=True, exist_ok=True)
    files = {"open_clip": DATA / "vit_b16_open_clip", "big_vision": DATA / "siglip_b16.npz"}
    if not files["open_clip"].exists():
        sys.path.insert(0, str(ROOT / "tests"))
        importlib.import_module("tvshim")  # before open_clip: see tests/tvshim.py
        import open_clip
        import torch
        from open_clip.push_to_hf_hub import save_for_hf

        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-16")
        cfg = open_clip.get_model_config("ViT-B-16")
        save_for_hf(model, _NoTokenizer(), cfg, str(files["open_clip"]), safe_serialization=True)
    if not files["big_vision"].exists():
        import numpy as np

        from ckptlint.archs import resolve_expected

        rng = np.random.default_rng(0)
        tree = resolve_expected("bv-siglip:B/16", None).tensors
        arrays = {
            f"params/{k}": rng.standard_normal(t.shape, dtype=np.float32) * 0.02 for k, t in tree.items()
        }
        np.savez(files["big_vision"], **arrays)
    return files


_HF_STEPS = """
import open_clip, torch
from transformers import CLIPConfig, CLIPModel
oc = open_clip.create_model('local-dir:{src}').eval()
v, t = oc.visual, oc
config = CLIPConfig(
    projection_dim=512,
    text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12,
                     max_position_embeddings=77, vocab_size=49408, hidden_act='gelu', eos_token_id=2),
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                       image_size=224, patch_size=16, hidden_act='gelu'))
hf = CLIPModel(config).eval()
def blocks(hf_layers, oc_blocks):
    for h, o in zip(hf_layers, oc_blocks):
        q, k, vv = o.attn.in_proj_weight.chunk(3); qb, kb, vb = o.attn.in_proj_bias.chunk(3)
        a = h.self_attn
        a.q_proj.weight.data, a.k_proj.weight.data, a.v_proj.weight.data = q, k, vv
        a.q_proj.bias.data, a.k_proj.bias.data, a.v_proj.bias.data = qb, kb, vb
        a.out_proj.weight.data, a.out_proj.bias.data = o.attn.out_proj.weight, o.attn.out_proj.bias
        h.layer_norm1.weight.data, h.layer_norm1.bias.data = o.ln_1.weight, o.ln_1.bias
        h.layer_norm2.weight.data, h.layer_norm2.bias.data = o.ln_2.weight, o.ln_2.bias
        h.mlp.fc1.weight.data, h.mlp.fc1.bias.data = o.mlp.c_fc.weight, o.mlp.c_fc.bias
        h.mlp.fc2.weight.data, h.mlp.fc2.bias.data = o.mlp.c_proj.weight, o.mlp.c_proj.bias
with torch.no_grad():
    vm, tm = hf.vision_model, hf.text_model
    vm.embeddings.patch_embedding.weight.data = v.conv1.weight
    vm.embeddings.class_embedding.data = v.class_embedding
    vm.embeddings.position_embedding.weight.data = v.positional_embedding
    vm.pre_layrnorm.weight.data, vm.pre_layrnorm.bias.data = v.ln_pre.weight, v.ln_pre.bias
    vm.post_layernorm.weight.data, vm.post_layernorm.bias.data = v.ln_post.weight, v.ln_post.bias
    blocks(vm.encoder.layers, v.transformer.resblocks)
    hf.visual_projection.weight.data = v.proj.data.T.contiguous()
    tm.embeddings.token_embedding.weight.data = t.token_embedding.weight
    tm.embeddings.position_embedding.weight.data = t.positional_embedding
    tm.final_layer_norm.weight.data, tm.final_layer_norm.bias.data = t.ln_final.weight, t.ln_final.bias
    blocks(tm.encoder.layers, t.transformer.resblocks)
    hf.text_projection.weight.data = t.text_projection.data.T.contiguous()
    hf.logit_scale.data = t.logit_scale
hf.save_pretrained('{out}')
"""

_TIMM_STEPS = """
import timm
from safetensors.torch import save_file
m = timm.create_model('vit_base_patch16_clip_224', pretrained=True, num_classes=512,
                      pretrained_cfg_overlay=dict(file='{src}/open_clip_model.safetensors'))
save_file(m.state_dict(), '{out}/model.safetensors')
"""

_SIGLIP_STEPS = """
import open_clip
from open_clip.convert import load_big_vision_weights
from safetensors.torch import save_file
m = open_clip.create_model('ViT-B-16-SigLIP')
load_big_vision_weights(m, '{src}')
save_file(m.state_dict(), '{out}/open_clip_model.safetensors')
"""


def cases(files: dict[str, Path], out: Path) -> list[tuple[str, list[str], str]]:
    """(label, ckptlint argv, equivalent library script) per row."""
    ck = [PY, "-m", "ckptlint", "convert"]
    oc, bv = str(files["open_clip"]), str(files["big_vision"])
    return [
        (
            "open_clip ViT-B-16 → transformers CLIPModel",
            [*ck, oc, str(out / "ck"), "--to", "hf-clip"],
            TVSHIM + _HF_STEPS.format(src=oc, out=out / "lib"),
        ),
        (
            "open_clip ViT-B-16 → timm vit_base_patch16_clip_224",
            [*ck, oc, str(out / "ck"), "--to", "timm-vit"],
            TVSHIM + _TIMM_STEPS.format(src=oc, out=out / "lib"),
        ),
        (
            "big_vision SigLIP B/16 → open_clip ViT-B-16-SigLIP",
            [*ck, bv, str(out / "ck"), "--to", "open_clip"],
            TVSHIM + _SIGLIP_STEPS.format(src=bv, out=out / "lib"),
        ),
    ]


def run(cmd: list[str], runs: int, out: Path) -> tuple[float, float]:
    walls, rss = [], []
    for _ in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        (out / "lib").mkdir()
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if proc.returncode not in (0, 1):  # ckptlint exits 1 when the check of OUT finds an error
            raise SystemExit(f"{cmd[:6]} failed:\n{proc.stderr[-2000:]}")
        rss.append(int(proc.stderr.strip().splitlines()[-1]) / 1024)
    return statistics.median(walls), statistics.median(rss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep benchmarks/_data/convert")
    args = ap.parse_args()
    files = build()
    out = DATA / "out"
    print(
        f"machine: {os.cpu_count()} cores, {os.uname().sysname} {os.uname().release}, Python {sys.version.split()[0]}"
    )
    sizes = {k: sum(f.stat().st_size for f in (p.iterdir() if p.is_dir() else [p])) for k, p in files.items()}
    print(f"inputs: {', '.join(f'{k} {n / (1 << 20):.0f} MiB' for k, n in sizes.items())}\n")
    print("| conversion | `ckptlint convert` (s) | RSS (MiB) | library (s) | RSS (MiB) |")
    print("|---|---|---|---|---|")
    for label, ck_cmd, script in cases(files, out):
        cw, cr = run(ck_cmd, args.runs, out)
        lw, lr = run([PY, "-c", script], args.runs, out)
        print(f"| {label} | {cw:.2f} | {cr:.0f} | {lw:.2f} | {lr:.0f} |", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
