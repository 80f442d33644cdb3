"""Output paths: file or folder, the names of weights files per format, shard indexes, sidecars, and writing it all
atomically (a temporary file or folder next to OUT, renamed over it only once verified), never over the input."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ckptlint.errors import UnreadableCheckpoint, UsageError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy", ".msgpack")
# files of a checkpoint folder that are not copied into a folder OUT: weights, indexes, training state, pickles
_NOT_SIDECARS = re.compile(
    r"(\.(safetensors|bin|pt|pth|ckpt|npz|npy|msgpack|h5|onnx|gguf|tflite|ot|pkl|pickle|joblib|tmp)|\.index\.json)$",
    re.IGNORECASE,
)
_SHARD = re.compile(r"^(?P<stem>.+?)(?P<num>-\d+-of-\d+)\.(?P<ext>[A-Za-z0-9]+)$")
SUFFIXES = {
    "safetensors": (".safetensors",),
    "torch": (".bin", ".pt", ".pth", ".ckpt"),
    "npz": (".npz",),
    "msgpack": (".msgpack",),
}
# transformers / open_clip names for the same weights in another format
_RENAMES = {
    "safetensors": {
        "pytorch_model": "model",
        "open_clip_pytorch_model": "open_clip_model",
        "flax_model": "model",
        "tf_model": "model",
    },
    "torch": {
        "model": "pytorch_model",
        "open_clip_model": "open_clip_pytorch_model",
        "flax_model": "pytorch_model",
    },
    "msgpack": {"model": "flax_model", "pytorch_model": "flax_model"},
    "npz": {},
}


def weights_name(name: str, fmt: str) -> str:
    """The file name ``name`` (a weights file, a shard or an index) gets when written as ``fmt``:
    ``pytorch_model-00001-of-00002.bin`` -> ``model-00001-of-00002.safetensors``; unchanged when it already has
    a suffix of that format."""
    index = name.endswith(".index.json")
    base = name.removesuffix(".index.json")
    shard = _SHARD.match(base)
    if shard:
        stem, num, ext = shard["stem"], shard["num"], "." + shard["ext"]
    else:
        stem, num = _strip_suffix(base), ""
        ext = base[len(stem) :]
    if ext in SUFFIXES[fmt]:
        return name
    stem = _RENAMES[fmt].get(stem, stem)
    ext = SUFFIXES[fmt][0]
    if fmt == "torch" and not num and not stem.endswith("pytorch_model"):
        ext = ".pt"
    return f"{stem}{num}{ext}" + (".index.json" if index else "")


def _strip_suffix(name: str) -> str:
    for suffix in WEIGHT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_file_output(out: Path) -> bool:
    """OUT names a single weights file (it ends in a weights suffix); otherwise it is a folder."""
    return out.name.endswith(WEIGHT_SUFFIXES)


def sidecar_files(folder: Path) -> list[Path]:
    """The files of an input folder a folder OUT carries over: configs, tokenizer files, README..."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p for p in entries if p.is_file() and not p.name.startswith(".") and not _NOT_SIDECARS.search(p.name)
    ]


def check_output(src: Path, dst: Path, inputs: list[Path], *, folder: bool) -> None:
    """Refuse to write over the input (a file read, or the input folder), inside the input folder, into a
    missing folder, or over an existing non-empty folder."""
    if not src.exists():
        raise UnreadableCheckpoint(str(src), "no such file or directory")
    for path in [src, *inputs]:
        if os.path.abspath(path) == os.path.abspath(dst) or (dst.exists() and _same(path, dst)):
            raise UsageError(f"{dst}: refusing to overwrite the input")
    if src.is_dir() and (
        Path(os.path.abspath(dst)).is_relative_to(os.path.abspath(src))
        or dst.resolve().is_relative_to(src.resolve())
    ):
        raise UsageError(f"{dst}: refusing to write inside the input folder")
    if not dst.parent.resolve().is_dir():
        raise UsageError(f"{dst}: folder {dst.parent} does not exist")
    if dst.is_dir():
        if not folder:
            raise UsageError(f"{dst}: is a folder")
        if any(dst.iterdir()):
            raise UsageError(f"{dst}: folder exists and is not empty")
    elif folder and dst.exists():
        raise UsageError(f"{dst}: exists and is not a folder")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(dst: Path) -> Iterator[Path]:
    """A temporary path next to ``dst``; renamed over ``dst`` only if the block succeeds."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the output is an ordinary file
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(dst: Path) -> Iterator[Path]:
    """A temporary folder next to ``dst``; renamed to ``dst`` only if the block succeeds."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        for p in tmp.iterdir():
            with open(p, "rb+") as fh:
                os.fsync(fh.fileno())
        if dst.is_dir():
            dst.rmdir()  # empty (checked before writing)
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_sidecars(files: list[Path], folder: Path, skip: set[str]) -> list[str]:
    """Copy ``files`` into ``folder`` (names in ``skip`` excepted); returns the names copied."""
    copied = []
    for path in files:
        if path.name in skip:
            continue
        shutil.copyfile(path, folder / path.name)
        copied.append(path.name)
    return copied


def write_index(path: Path, weight_map: dict[str, str], total_size: int, metadata: dict[str, object]) -> None:
    """A shard index as transformers writes it: ``metadata.total_size`` and the sorted ``weight_map``."""
    doc = {
        "metadata": {**metadata, "total_size": total_size},
        "weight_map": dict(sorted(weight_map.items())),
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
