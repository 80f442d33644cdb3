"""Checkpoint folders (HF ``save_pretrained``, open_clip hub folders, sharded folders): the weights a loader picks.

A folder is read as the weights file its loader would pick, plus the small configs next to it. The other weight
files are listed in ``metadata["other_weight_files"]`` so that rules can tell "you loaded the HF file, the open_clip
one is ``open_clip_pytorch_model.bin``". The configs are attached by ``ckptlint.readers.sidecars``.

Security: a folder is judged on every file in it that a loader may unpickle (the other weight files,
``training_args.bin``, ``optimizer.pt``, ``rng_state.pth``, pickles): their CK301 findings are added, each naming
its file (``_other_file_findings``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.findings import Finding
from ckptlint.readers.sidecars import attach_sidecars, list_files

# open_clip.factory._find_checkpoint_in_dir's preference (open_clip_torch 3.3.0)
OPEN_CLIP_ORDER = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
# transformers' from_pretrained: safetensors before torch pickles, a single file before a sharded index
HF_ORDER = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "flax_model.msgpack",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy", ".msgpack", ".index.json")
# files a trainer writes next to the weights; they are training state, never the model's weights
_TRAINING_STATE = re.compile(
    r"^(optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt|training_args\.bin|rng_state(_\d+)?\.pth)$"
)
_SHARD_NAME = re.compile(r"^.+-\d+-of-\d+\.[A-Za-z0-9]+$")


def read(path: Path) -> Checkpoint:
    """Read the folder at ``path``: the preferred weights file, the other weight files' names, the sidecars."""
    from ckptlint.readers import read_checkpoint

    p = str(path)
    names = list_files(path)
    has_open_clip_config = "open_clip_config.json" in names
    chosen, others = pick_weights(names, open_clip=has_open_clip_config)
    if chosen is None:
        raise UnreadableCheckpoint(
            p,
            "no weights file in directory (looked for model.safetensors, pytorch_model.bin, open_clip_model.safetensors, "
            "*.index.json, *.safetensors, *.bin, *.pt, *.pth, *.ckpt, *.npz, *.msgpack)",
        )
    inner = read_checkpoint(path / chosen)
    if chosen.startswith("open_clip_") or (has_open_clip_config and "config.json" not in names):
        fmt = "open_clip-dir"
    elif "config.json" in names:
        fmt = "hf-dir"
    else:
        fmt = inner.format
    metadata: dict[str, Any] = dict(inner.metadata)
    metadata["weights_file"] = chosen
    metadata["weights_format"] = inner.format
    if others:
        metadata["other_weight_files"] = others
    training_state = sorted(n for n in names if _TRAINING_STATE.match(n))
    if training_state:
        metadata["training_state_files"] = training_state
    ckpt = (
        inner.model_copy(  # the inner reader's facts (tensors, shards…) stay; the folder's own are set here
            update={
                "path": p,
                "format": fmt,
                "metadata": metadata,
                "sidecars": [],
                "files": list(inner.files),
                "findings": list(inner.findings) + _other_file_findings(path, names, judged=inner.files),
            }
        )
    )
    return attach_sidecars(ckpt, path, names=names)


# files next to the weights that a loader may unpickle (the other weight files, training_args.bin, optimizer.pt,
# rng_state.pth, pickles): a folder is judged on every file in it that could run code, not just the one read
_UNPICKLED_SUFFIXES = (*(s for s in WEIGHT_SUFFIXES if s != ".index.json"), ".pkl", ".pickle", ".joblib")
_CODE_FORMATS = frozenset({"pickle", "torch-zip", "npz", "npy"})


def _other_file_findings(directory: Path, names: list[str], judged: list[str]) -> list[Finding]:
    """CK301 findings of the folder's other files that could run code when loaded, each naming its file.

    A file that cannot be read is skipped unless its pickle broke part-way (an unpickler may have run code by
    then): that is CK301 too, failing closed.
    """
    from ckptlint.readers import read_checkpoint
    from ckptlint.readers.sniff import sniff

    seen = {Path(f).name for f in judged}
    out: list[Finding] = []
    for name in names:
        if name in seen or not name.endswith(_UNPICKLED_SUFFIXES):
            continue
        file = directory / name
        try:
            if sniff(file) not in _CODE_FORMATS:
                continue
            found = [f for f in read_checkpoint(file).findings if f.code == "CK301"]
        except UnreadableCheckpoint as exc:
            from ckptlint.readers.pickle_globals import failure_findings

            found = failure_findings(exc, f"the pickle in {name}", name, str(file))
        out.extend(
            f.model_copy(update={"message": f"{name}: {f.message}", "details": {**f.details, "file": name}})
            for f in found
        )
    return out


def _is_weights(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) and not _TRAINING_STATE.match(name)


def pick_weights(names: list[str], *, open_clip: bool) -> tuple[str | None, list[str]]:
    """The weights file a loader would pick among ``names`` and the other weight files (shards excluded).

    With ``open_clip_config.json`` present, open_clip's ``_find_checkpoint_in_dir`` decides (exactly: preferred
    names first, else ``*.safetensors`` then ``*.bin``/``*.pth`` in sorted order). Otherwise transformers' order,
    then open_clip's names, then any weights file (safetensors first, sorted).
    """
    has_index = any(n.endswith(".index.json") for n in names)
    candidates = [n for n in names if _is_weights(n) and not (has_index and _SHARD_NAME.match(n))]
    chosen: str | None = None
    if open_clip:
        chosen = _open_clip_choice(names)
    if chosen is None:
        chosen = next((n for n in (*HF_ORDER, *OPEN_CLIP_ORDER) if n in candidates), None)
    if chosen is None and candidates:
        chosen = sorted(candidates, key=lambda n: (not n.endswith(".safetensors"), n))[0]
    return chosen, [n for n in candidates if n != chosen]


def _open_clip_choice(names: list[str]) -> str | None:
    found = sorted(n for n in names if n.endswith((".safetensors", ".bin", ".pth")))
    if not found:
        return None
    preferred = [n for n in found if n in OPEN_CLIP_ORDER]
    if preferred:
        return min(preferred, key=OPEN_CLIP_ORDER.index)
    found.sort(key=lambda n: n.endswith(".safetensors"), reverse=True)
    return found[0]
