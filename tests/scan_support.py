"""Many small real checkpoints for scan tests (written by safetensors and torch), and JSONL helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

STRIP = ("path", "stats")  # what may differ between the same file read locally and remotely


def write_checkpoints(
    root: Path, n: int, *, per_dir: int = 100, torch_every: int = 200, data_bytes: int = 0
) -> list[str]:
    """``n`` checkpoints under ``root/run_XX/``; returns their paths relative to ``root``.

    Mostly safetensors files of a few small tensors (shapes, dtypes and key sets vary with the index; some carry
    optimizer state), a torch zip every ``torch_every`` files (a trainer checkpoint: model, optimizer, epoch),
    and two safetensors files cut inside their header (unreadable: CK001). ``data_bytes`` adds a tensor of that
    many bytes to each safetensors file (tensor data that a header-only reader never fetches).
    """
    import torch
    from safetensors.numpy import save

    names = []
    broken = {n // 3, (2 * n) // 3 + 1}
    for i in range(n):
        folder = root / f"run_{i // per_dir:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % torch_every == torch_every // 2:
            name = f"run_{i // per_dir:02d}/step_{i:05d}.pt"
            model = {f"layers.{j}.weight": torch.zeros(4, 4) for j in range(1 + i % 3)}
            torch.save(
                {"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "epoch": i},
                root / name,
            )
            names.append(name)
            continue
        dtype = (np.float32, np.float16)[i % 2]
        tensors = {f"blocks.{j}.weight": np.zeros((i % 5 + 1, 8), dtype) for j in range(2 + i % 7)}
        if data_bytes:
            tensors["embed.weight"] = np.zeros((data_bytes // 2,), np.float16)
        if i % 10 == 3:
            tensors.update(
                {f"optimizer.state.{j}.exp_avg": np.zeros((i % 5 + 1, 8), np.float32) for j in range(2)}
            )
        data = save(tensors, metadata={"format": "pt"})
        if i in broken:
            data = data[: 8 + len(data[8:]) // 4]
        name = f"run_{i // per_dir:02d}/step_{i:05d}.safetensors"
        (root / name).write_bytes(data)
        names.append(name)
    return names


def jsonl(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a JSONL report into (FileReport objects, summary objects); every line must be JSON."""
    files, summaries = [], []
    for line in text.splitlines():
        doc = json.loads(line)
        (summaries if set(doc) == {"summary"} else files).append(doc)
    return files, summaries


def strip(doc: dict[str, Any]) -> str:
    """A FileReport without what depends on where the file was read from, as canonical JSON."""
    return json.dumps({k: v for k, v in doc.items() if k not in STRIP}, sort_keys=True)
