"""The torch-free writer on torch files: what ``torch.load(weights_only=True)`` (and ``mmap=True``) reads back from
OUT equals what it reads from IN, tensor by tensor — values, dtypes, strides, shared storages, nesting."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_support import ckptlint

from ckptlint.writers import Entry, Reshape, Transpose, WritePlan, write_checkpoint

torch = pytest.importorskip("torch")

# every dtype torch.save writes through a legacy storage class (v2) or an untyped storage (v3)
DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.uint16,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
]


def load(path: Path, **kw):
    return torch.load(path, map_location="cpu", weights_only=True, **kw)


def same(a, b) -> None:
    """Equal tensors: dtype, shape, strides and bytes."""
    assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride(), (a, b)
    assert torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    )


def assert_tree_equal(got, want) -> None:
    if isinstance(want, torch.Tensor):
        same(got, want)
    elif isinstance(want, dict):
        assert type(got) is type(want) and list(got) == list(want)
        assert getattr(got, "_metadata", None) == getattr(want, "_metadata", None)
        for k in want:
            assert_tree_equal(got[k], want[k])
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_tree_equal(g, w)
    else:
        assert got == want


def trainer_checkpoint() -> dict:
    """A trainer checkpoint as real code writes one: state_dict (OrderedDict with _metadata), Adam state, epoch,
    a transposed view and a tied tensor sharing storage, a dtype value, a list of tensors."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    sd = model.state_dict()
    return {
        "epoch": 3,
        "state_dict": sd,
        "optimizer": opt.state_dict(),
        "proj_t": sd["0.weight"].t(),
        "tied": sd["0.weight"],
        "slice": sd["0.weight"][1:],
        "amp_dtype": torch.bfloat16,
        "history": [torch.arange(3), torch.ones(2, 2)],
        "name": "run-1",
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_strip_trainer_checkpoint_keeps_its_nesting(tmp_path: Path, legacy: bool) -> None:
    src = tmp_path / "trainer.pt"
    torch.save(trainer_checkpoint(), src, _use_new_zipfile_serialization=not legacy)
    out = tmp_path / "weights.pt"
    proc = ckptlint("strip", "--drop", "optimizer", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    assert zipfile.is_zipfile(out)  # legacy inputs are written back as zip archives
    want = load(src)
    del want["optimizer"]
    for kw in ({}, {"mmap": True}):
        got = load(out, **kw)
        assert_tree_equal(got, want)
        # views of one storage stay views of one storage
        assert (
            got["proj_t"].untyped_storage().data_ptr()
            == got["state_dict"]["0.weight"].untyped_storage().data_ptr()
        )
        assert got["tied"] is not got["proj_t"] and got["slice"].storage_offset() == 4


def test_zip_layout_is_torch_saves(tmp_path: Path) -> None:
    """Records, order and 64-byte alignment as torch.save writes them (torch's own archive for comparison)."""
    src = tmp_path / "trainer.pt"
    torch.save(trainer_checkpoint(), src)
    out = tmp_path / "copy.pt"
    write_checkpoint(src, [Entry("w", "state_dict.0.weight"), Entry("b", "state_dict.0.bias")], out)
    names = [i.filename for i in zipfile.ZipFile(out).infolist()]
    torch_names = [i.filename.replace("trainer/", "copy/") for i in zipfile.ZipFile(src).infolist()]
    assert [n for n in names if "/data/" not in n] == [n for n in torch_names if "/data/" not in n]
    assert names[4:6] == ["copy/data/0", "copy/data/1"]  # storages numbered in order, after byteorder
    raw = out.read_bytes()
    for info in zipfile.ZipFile(out).infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        name_len, extra_len = np.frombuffer(raw[info.header_offset + 26 : info.header_offset + 30], "<u2")
        assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0
    got = load(out)
    assert isinstance(got, dict) and list(got) == ["w", "b"]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("to", ["same", "safetensors", "npz", "msgpack"])
def test_every_dtype(tmp_path: Path, to: str, legacy: bool) -> None:
    torch.manual_seed(0)
    sd = {}
    for dt in DTYPES:
        base = torch.randn(3, 4) * 4
        sd[str(dt).removeprefix("torch.")] = base.to(dt) if dt != torch.bool else base > 0
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["strided"] = torch.arange(24.0).reshape(4, 6)[:, ::2]  # non-contiguous: its elements are gathered
    src = tmp_path / "all.pt"
    if legacy:  # torch.load itself fails on the newer dtypes (untyped storages) in a legacy file
        sd = {k: v for k, v in sd.items() if k not in ("uint16", "float8_e4m3fn", "float8_e5m2")}
    torch.save(sd, src, _use_new_zipfile_serialization=not legacy)
    unsupported = {
        "safetensors": set(),
        "npz": {"float8_e4m3fn", "float8_e5m2"},
        "msgpack": {"float8_e4m3fn", "float8_e5m2"},
        "same": set(),
    }[to]
    keep = {k: v for k, v in sd.items() if k not in unsupported}
    plan = [Entry(f"m.{k}", k) for k in keep]
    out = tmp_path / f"out.{ {'same': 'pt'}.get(to, to) }"
    write_checkpoint(src, plan, out, to)
    want = load(src)
    if to == "same":
        got = load(out)
        assert list(got) == [f"m.{k}" for k in keep]
        for k in keep:
            same(got[f"m.{k}"], want[k])
        return
    got = _read_numpy(out, to)
    for k in keep:
        ref = want[k].contiguous()
        arr = got[f"m.{k}"]
        assert tuple(arr.shape) == tuple(ref.shape), k
        assert arr.tobytes() == ref.reshape(-1).view(torch.uint8).numpy().tobytes(), k


def _raw(t) -> np.ndarray:
    """A tensor as numpy of its own shape and bytes (numpy has no bfloat16 or float8: they become raw V2/V1)."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().view(f"V{t.element_size()}").reshape(t.shape)


def _read_numpy(path: Path, fmt: str) -> dict[str, np.ndarray]:
    """OUT read by the format's own library."""
    if fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:  # pt: numpy has no bfloat16 / float8
            return {k: _raw(f.get_tensor(k)) for k in f.keys()}  # noqa: SIM118
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    from flax import serialization

    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}/{k}" if prefix else k
            if isinstance(v, dict):
                walk(v, key)
            else:
                flat[key] = np.asarray(v)

    walk(serialization.msgpack_restore(path.read_bytes()), "")
    return {k.replace("/", "."): v for k, v in flat.items()}


@pytest.mark.parametrize("to", ["same", "safetensors"])
def test_tar_format_input(tmp_path: Path, to: str) -> None:
    """A tar-format torch file (torch < 0.1.10), read back by torch.load's own tar path; written as a zip."""
    import malicious_samples as ms

    src = tmp_path / "old.pt"
    src.write_bytes(
        ms.tar_checkpoint(
            ms.tar_members({"w": ((2, 3), [float(i) for i in range(6)]), "b": ((3,), [1.0, 2.0, 3.0])})
        )
    )
    # weights_only refuses the tar format; this file is the test's own benign sample
    want = torch.load(src, weights_only=False)
    out = tmp_path / "new.pt"
    proc = ckptlint("strip", "--keep", "w", "--to", to, str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    if to == "safetensors":
        from safetensors.torch import load_file

        got = load_file(str(out))
    else:
        assert zipfile.is_zipfile(out)
        got = load(out)
    assert list(got) == ["w"]
    same(got["w"], want["w"])


def test_renamed_and_transformed_torch_output(tmp_path: Path) -> None:
    """Entries with operations: new storages, values equal to torch's own transpose / reshape."""
    torch.manual_seed(0)
    sd = {"proj": torch.randn(3, 5), "pos": torch.randn(6, 4).to(torch.bfloat16)}
    src = tmp_path / "in.pt"
    torch.save(sd, src)
    out = tmp_path / "out.pt"
    plan = WritePlan(
        [
            Entry("proj_t", "proj", (Transpose(),)),
            Entry("pos_embed", "pos", (Reshape((1, 6, 4)),)),
            Entry("p", "proj"),
        ]
    )
    result = write_checkpoint(src, plan, out)
    assert result.format == "torch"
    got = load(out, mmap=True)
    same(got["proj_t"], sd["proj"].t().contiguous())
    same(got["pos_embed"], sd["pos"].reshape(1, 6, 4))
    same(got["p"], sd["proj"])


def test_safetensors_to_torch(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sd = {"a.weight": torch.randn(4, 3), "a.bias": torch.randn(4).half(), "n": torch.arange(5)}
    src = tmp_path / "in.safetensors"
    save_file(sd, str(src))
    out = tmp_path / "out.bin"
    proc = ckptlint("strip", "--drop", "n", "--to", "torch", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    got = load(out)
    assert list(got) == ["a.weight", "a.bias"] and type(got).__name__ == "OrderedDict"
    for k, v in got.items():
        same(v, sd[k])
