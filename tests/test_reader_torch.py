"""torch.save files (zip and legacy serialisation) read opcode by opcode must match torch.load(weights_only=True).

Every file here is written at test time by torch.save from real models (open_clip, timm, transformers) and
trainer-style dicts; the ground truth is what torch itself loads from the trusted file.
"""

from __future__ import annotations

import collections
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import tvshim  # noqa: F401  (before open_clip / timm)
from tiny_models import tiny_models as build_tiny_models

from ckptlint.checkpoint import Checkpoint
from ckptlint.engine import fact_findings
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers import pickle_file, read_checkpoint, torch_zip

SERIALISATIONS = ("zip", "legacy")


# --------------------------------------------------------------------------------------------------------------
# ground truth helpers (independent of the code under test)
# --------------------------------------------------------------------------------------------------------------


def torch_tree(obj: Any, prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    """What torch.load gave: dotted key -> (shape, dtype name) for every tensor, as ckptlint should key it."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = (tuple(obj.shape), str(obj.dtype).removeprefix("torch."))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(torch_tree(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(torch_tree(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def has_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, dict):
        return any(has_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(has_tensor(v) for v in obj)
    return False


def dump_tree(ck: Checkpoint) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(t.shape), t.dtype) for k, t in ck.tensors.items()}


def save(obj: Any, path: Path, serialisation: str) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=serialisation == "zip")
    return path


def tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


# --------------------------------------------------------------------------------------------------------------
# real objects
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def models(corpus: Path) -> dict[str, torch.nn.Module]:
    return build_tiny_models(corpus)


def trainer_dict(model: torch.nn.Module) -> dict[str, Any]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.zero_grad()
    return {
        "epoch": 2,
        "step": 100,
        "name": "tiny-run",
        "state_dict": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0},
        "args": {"lr": 1e-3, "betas": (0.9, 0.99), "tags": ["a", "b"]},
    }


def odd_tensors(legacy: bool) -> dict[str, Any]:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "base": base,
        "row": base[1],
        "col": base[:, 2],
        "transposed": base.t(),
        "flat": base.view(-1),
        "same": base,
        "strided": base[::2, 1::3],
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0),
        "empty2d": torch.zeros(0, 5),
        "param": torch.nn.Parameter(torch.ones(3, 2)),
        "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False),
        "i8": torch.arange(5, dtype=torch.int8),
        "u8": torch.arange(5, dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "i64": torch.arange(3),
        "f64": torch.zeros(2, dtype=torch.float64),
        "c64": torch.zeros(2, dtype=torch.complex64),
        "f16": torch.zeros(2, 2, dtype=torch.float16),
        "bf16": torch.zeros(3, dtype=torch.bfloat16),
        "layers": [torch.zeros(2), torch.ones(3)],
        "pair": (torch.zeros(1), "label"),
        "nested": {"deeper": {"w": torch.zeros(2, 2)}},
        "device": torch.device("cpu"),
        "dtype": torch.float16,
        "size": torch.Size([2, 3]),
        "note": "x" * 1000,
        # dtypes without a legacy storage class: torch 2.13 saves but cannot load them in the legacy format
        **(
            {}
            if legacy
            else {"f8": torch.zeros(4, dtype=torch.float8_e4m3fn), "u16": torch.zeros(4, dtype=torch.uint16)}
        ),
    }


@pytest.fixture(scope="session")
def saved(models: dict[str, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> file, for every object in both serialisations."""
    out_dir = tmp_path_factory.mktemp("torch_files")
    objects: dict[str, Any] = {}
    for name, model in models.items():
        sd = model.state_dict()
        objects[f"{name}_sd"] = sd
        objects[f"{name}_fp16"] = {k: v.half() for k, v in sd.items()}
        objects[f"{name}_bf16"] = collections.OrderedDict((k, v.to(torch.bfloat16)) for k, v in sd.items())
        objects[f"{name}_params"] = dict(model.named_parameters())
    objects["trainer"] = trainer_dict(models["open_clip"])
    objects["bare_tensor"] = torch.zeros(2, 3)
    objects["list_root"] = [torch.zeros(2), {"a": torch.ones(1)}]
    files = {}
    for name, obj in objects.items():
        for ser in SERIALISATIONS:
            files[f"{name}-{ser}"] = save(obj, out_dir / f"{name}-{ser}.pt", ser)
    for ser in SERIALISATIONS:
        files[f"odd-{ser}"] = save(odd_tensors(ser == "legacy"), out_dir / f"odd-{ser}.pt", ser)
    return files


# --------------------------------------------------------------------------------------------------------------
# ground-truth equality
# --------------------------------------------------------------------------------------------------------------

NAMES = [
    f"{n}-{s}"
    for n in (
        *(f"{m}_{v}" for m in ("open_clip", "timm", "hf_clip") for v in ("sd", "fp16", "bf16", "params")),
        "trainer",
        "odd",
        "bare_tensor",
        "list_root",
    )
    for s in SERIALISATIONS
]


@pytest.mark.parametrize("name", NAMES)
def test_dump_equals_torch_load(saved: dict[str, Path], name: str) -> None:
    path = saved[name]
    ref = torch.load(path, weights_only=True)
    ck = read_checkpoint(path)
    assert ck.format == ("torch-zip" if name.endswith("-zip") else "torch-legacy")
    expected = torch_tree(ref) if not isinstance(ref, torch.Tensor) else {path.stem: torch_tree(ref)[""]}
    assert dump_tree(ck) == expected
    assert fact_findings(ck) == []
    assert ck.key_sep == "."
    expected_groups = (
        [k for k, v in ref.items() if isinstance(v, (dict, list, tuple)) and has_tensor(v)]
        if isinstance(ref, dict)
        else []
    )
    if isinstance(ref, list):
        expected_groups = [
            str(i) for i, v in enumerate(ref) if isinstance(v, (dict, list, tuple)) and has_tensor(v)
        ]
    assert ck.groups == expected_groups


@pytest.mark.parametrize("ser", SERIALISATIONS)
def test_bytes_and_offsets_point_at_the_tensor_data(saved: dict[str, Path], ser: str) -> None:
    """nbytes, storage and offset locate each contiguous tensor's bytes exactly (header facts, checked once)."""
    path = saved[f"odd-{ser}"]
    ref = torch.load(path, weights_only=True)
    ck = read_checkpoint(path)
    raw = path.read_bytes()
    zf = zipfile.ZipFile(path) if ser == "zip" else None
    checked = 0
    for key, info in ck.tensors.items():
        node: Any = ref
        for part in key.split("."):
            node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
        assert info.nbytes == node.numel() * node.element_size()
        if not node.is_contiguous() or node.numel() == 0:
            continue
        if zf is not None:
            assert info.storage in zf.namelist() and "/data/" in info.storage
            data = zf.read(info.storage)
        else:
            assert info.storage is None
            data = raw
        assert data[info.offset : info.offset + info.nbytes] == tensor_bytes(node), key
        checked += 1
    assert checked >= 15


def test_trainer_metadata_and_groups(saved: dict[str, Path]) -> None:
    ck = read_checkpoint(saved["trainer-zip"])
    assert ck.groups == ["state_dict", "optimizer"]
    assert ck.metadata["epoch"] == 2
    assert ck.metadata["step"] == 100
    assert ck.metadata["name"] == "tiny-run"
    assert ck.metadata["scaler.scale"] == 65536.0
    assert ck.metadata["args.lr"] == 1e-3
    assert ck.metadata["args.betas"] == [0.9, 0.99]
    assert ck.metadata["optimizer.param_groups"][0]["lr"] == 1e-3
    assert "state_dict.visual.conv1.weight" in ck.tensors
    assert "optimizer.state.0.exp_avg" in ck.tensors


def test_odd_metadata_is_bounded(saved: dict[str, Path]) -> None:
    ck = read_checkpoint(saved["odd-zip"])
    assert ck.metadata["device"] == "cpu"
    assert ck.metadata["dtype"] == "torch.float16"
    assert ck.metadata["size"] == [2, 3]
    assert ck.metadata["pair.1"] == "label"
    assert len(ck.metadata["note"]) < 300 and ck.metadata["note"].startswith("xxx")


# --------------------------------------------------------------------------------------------------------------
# the corpus in tests/data
# --------------------------------------------------------------------------------------------------------------


def corpus_torch_files(corpus: Path) -> list[Path]:
    return sorted(corpus.glob("open_clip/*.pt")) + sorted(corpus.glob("hf/*/pytorch_model.bin"))


def test_corpus_torch_files_match_torch_load(corpus: Path) -> None:
    files = corpus_torch_files(corpus)
    assert len(files) >= 7
    for path in files:
        ck = read_checkpoint(path)
        ref = torch.load(path, weights_only=True)
        assert ck.format == "torch-zip"
        assert dump_tree(ck) == torch_tree(ref), path
        assert fact_findings(ck) == [], path
        assert ck.files == [str(path)]


def test_corpus_trainer_checkpoint(corpus: Path) -> None:
    ck = read_checkpoint(corpus / "open_clip" / "openclip_tiny_trainer_ckpt.pt")
    ref = torch.load(corpus / "open_clip" / "openclip_tiny_trainer_ckpt.pt", weights_only=True)
    assert ck.groups == [k for k, v in ref.items() if isinstance(v, dict) and has_tensor(v)]
    assert ck.metadata["epoch"] == ref["epoch"]
    assert all(k.startswith("state_dict.") for k in ck.tensors)


# --------------------------------------------------------------------------------------------------------------
# TorchScript, extra members
# --------------------------------------------------------------------------------------------------------------


def test_torchscript_archive_is_reported_not_run(tmp_path: Path) -> None:
    model = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()))
    path = tmp_path / "scripted.pt"
    model.save(str(path))
    ck = read_checkpoint(path)
    ts = [f for f in fact_findings(ck) if "TorchScript" in f.message]
    assert len(ts) == 1 and ts[0].code == "CK301" and ts[0].severity == "error"
    assert any(m.endswith(".py") for m in ts[0].details["code_members"])
    assert "__torch__.torch.nn.modules.linear.Linear" in ts[0].details["classes"]
    assert fact_findings(ck) == ts  # TorchScript classes are part of that one finding
    ref = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: t.shape for k, t in ck.tensors.items() if k in ref} == ref


def test_extra_pickle_member_is_judged(tmp_path: Path) -> None:
    src = tmp_path / "src.pt"
    torch.save({"w": torch.zeros(2)}, src)
    dst = tmp_path / "extra.pt"
    payload = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.writestr("src/extra.pkl", payload)
    ck = read_checkpoint(dst)
    assert dump_tree(ck) == {"w": ((2,), "float32")}
    [finding] = fact_findings(ck)
    assert (
        finding.code == "CK301" and "posix.system" in finding.message and "src/extra.pkl" in finding.message
    )


def test_duplicate_member_names_are_refused(tmp_path: Path) -> None:
    """torch (miniz) and zipfile may read different copies of a repeated name: ckptlint refuses (exit 2)."""
    src = tmp_path / "src.pt"
    torch.save({"w": torch.zeros(2)}, src)
    dst = tmp_path / "dup.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zout.writestr("src/data.pkl", zin.read("src/data.pkl"))
    with pytest.raises(UnreadableCheckpoint, match="more than once") as info:
        read_checkpoint(dst)
    assert info.value.refused


# --------------------------------------------------------------------------------------------------------------
# corrupt and truncated input: UnreadableCheckpoint with one line, never another exception
# --------------------------------------------------------------------------------------------------------------


def assert_unreadable(path: Path, reader: Any = None) -> str:
    with pytest.raises(UnreadableCheckpoint) as info:
        (reader or read_checkpoint)(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path))
    return text


def rewrite_zip(src: Path, dst: Path, change: dict[str, bytes | None]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in change:
                if change[info.filename] is not None:
                    zout.writestr(info, change[info.filename])
            else:
                zout.writestr(info, zin.read(info))
    return dst


@pytest.fixture(scope="session")
def real_zip(corpus: Path) -> Path:
    return corpus / "open_clip" / "openclip_tiny.pt"


def test_truncated_zip(real_zip: Path, tmp_path: Path) -> None:
    data = real_zip.read_bytes()
    for cut in (1, 30, len(data) // 10, len(data) // 2, len(data) - 200, len(data) - 23, len(data) - 1):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        assert_unreadable(path)


def test_missing_and_short_storage_members(real_zip: Path, tmp_path: Path) -> None:
    missing = rewrite_zip(real_zip, tmp_path / "missing.pt", {"openclip_tiny/data/3": None})
    assert "openclip_tiny/data/3" in assert_unreadable(missing) and "missing" in assert_unreadable(missing)
    short = rewrite_zip(real_zip, tmp_path / "short.pt", {"openclip_tiny/data/3": b"\x00" * 4})
    assert "truncated storage member openclip_tiny/data/3" in assert_unreadable(short)


def test_crc_mismatch_in_data_pkl(real_zip: Path, tmp_path: Path) -> None:
    data = bytearray(real_zip.read_bytes())
    with zipfile.ZipFile(real_zip) as zf:
        info = zf.getinfo("openclip_tiny/data.pkl")
        assert info.compress_type == zipfile.ZIP_STORED
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 100] ^= 0x01  # a digit inside a memo index: still a pickle, but the CRC no longer matches
    path = tmp_path / "crc.pt"
    path.write_bytes(bytes(data))
    assert "CRC" in assert_unreadable(path)


def test_truncated_and_mutated_data_pkl(real_zip: Path, tmp_path: Path) -> None:
    """Valid zips around a broken pickle (CRC recomputed): a report or one line, never another exception."""
    with zipfile.ZipFile(real_zip) as zf:
        pkl = zf.read("openclip_tiny/data.pkl")
    for cut in (0, 1, 2, 50, len(pkl) // 2, len(pkl) - 1):
        path = rewrite_zip(real_zip, tmp_path / f"pkl{cut}.pt", {"openclip_tiny/data.pkl": pkl[:cut]})
        assert_unreadable(path, torch_zip.read)
    rng = random.Random(7)
    outcomes = collections.Counter()
    for _ in range(150):
        mutated = bytearray(pkl)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        path = rewrite_zip(real_zip, tmp_path / "mut.pt", {"openclip_tiny/data.pkl": bytes(mutated)})
        try:
            torch_zip.read(path)
            outcomes["report"] += 1
        except UnreadableCheckpoint as exc:
            assert "\n" not in str(exc)
            outcomes["unreadable"] += 1
    assert outcomes["unreadable"] > 0


def test_truncated_and_mutated_legacy(saved: dict[str, Path], tmp_path: Path) -> None:
    data = saved["open_clip_sd-legacy"].read_bytes()
    rng = random.Random(3)
    cuts = sorted({1, 2, 10, 30, len(data) - 1, *(rng.randrange(len(data)) for _ in range(40))})
    for cut in cuts:
        path = tmp_path / "cut.pt"
        path.write_bytes(data[:cut])
        assert_unreadable(path, pickle_file.read)
    pickle_end = data.index(b"\x80\x02]")  # the storage-key list: everything before it is pickle
    for _ in range(150):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(pickle_end)] = rng.randrange(256)
        path = tmp_path / "mut.pt"
        path.write_bytes(bytes(mutated))
        try:
            pickle_file.read(path)
        except UnreadableCheckpoint as exc:
            assert "\n" not in str(exc)


def test_readers_never_touch_storage_members(
    real_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Header-only: the zip reader opens pickle members and tiny metadata members, never data/*."""
    opened: list[str] = []
    original = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return original(self, name, *args, **kwargs)

    copy = tmp_path / "copy.pt"
    shutil.copy(real_zip, copy)
    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    torch_zip.read(copy)
    assert opened and not [n for n in opened if "/data/" in n]


def test_safe_set_covers_torch_weights_only_allow_list() -> None:
    """Every global torch.load(weights_only=True) accepts by default is in ckptlint's safe set (no false
    positives on what torch itself considers data), and the dangerous ones torch blocks are not."""
    from torch._weights_only_unpickler import _get_allowed_globals

    from ckptlint.readers.pickle_globals import SAFE_GLOBALS, danger_of

    assert set(_get_allowed_globals()) <= set(SAFE_GLOBALS)
    assert not [name for name in SAFE_GLOBALS if name.split(".")[0] in ("os", "posix", "nt", "sys")]
    allowed = {"torch.storage._load_from_bytes", "joblib.numpy_pickle.NumpyArrayWrapper"}  # judged where used
    assert all(danger_of(name) is None for name in SAFE_GLOBALS if name not in allowed)


@pytest.mark.parametrize(("field", "value"), [("flags", 0x0001), ("method", 99)])
def test_odd_zip_member_headers(real_zip: Path, tmp_path: Path, field: str, value: int) -> None:
    """An 'encrypted' flag or an unknown compression method on data.pkl: one line, exit 2."""
    data = bytearray(real_zip.read_bytes())
    name = b"openclip_tiny/data.pkl"
    central = data.index(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(name)] != name:
        central = data.index(b"PK\x01\x02", central + 4)
    local = int.from_bytes(data[central + 42 : central + 46], "little")
    offsets = {"flags": (central + 8, local + 6), "method": (central + 10, local + 8)}[field]
    for at in offsets:
        data[at : at + 2] = value.to_bytes(2, "little")
    path = tmp_path / "odd.pt"
    path.write_bytes(bytes(data))
    assert_unreadable(path, torch_zip.read)


def test_timm_and_hf_trainer_extras_are_not_flagged(
    models: dict[str, torch.nn.Module], tmp_path: Path
) -> None:
    """What timm's CheckpointSaver and HF Trainer's rng_state.pth store next to the weights: an argparse
    Namespace, numpy scalars and arrays, Python's random state. All data; none may be flagged."""
    import argparse
    import random

    import numpy as np

    state = {
        "epoch": 3,
        "arch": "vit_base_patch16_clip_224",
        "state_dict": models["timm"].state_dict(),
        "args": argparse.Namespace(model="vit_base_patch16_clip_224", lr=0.1, betas=(0.9, 0.999)),
        "metric": np.float64(0.75),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
        "dtype_class": type(np.dtype(np.uint32)),
    }
    path = tmp_path / "timm_ckpt.pth.tar"
    torch.save(state, path)
    ck = read_checkpoint(path)
    assert fact_findings(ck) == []
    ref = torch.load(path, weights_only=False)  # trusted: written just above
    expected = torch_tree(ref)
    expected["numpy.1"] = (ref["numpy"][1].shape, ref["numpy"][1].dtype.name)
    assert dump_tree(ck) == expected
    assert ck.metadata["args.lr"] == 0.1 and ck.metadata["args.model"] == "vit_base_patch16_clip_224"
    assert ck.metadata["metric"] == 0.75
    assert ck.metadata["numpy.0"] == "MT19937"
    assert ck.groups == ["state_dict", "numpy"]
