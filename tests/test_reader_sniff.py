"""Format sniffing from bytes (never the extension) on files written by the real libraries, and dump JSON read back."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from ckptlint.checkpoint import guess_key_sep
from ckptlint.dtypes import SAFETENSORS
from ckptlint.engine import fact_findings
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers import read_checkpoint
from ckptlint.readers.sniff import sniff

torch = pytest.importorskip("torch")


def _flax_bytes(n_keys: int) -> bytes:
    from flax import serialization

    return serialization.to_bytes({f"k{i}": {"kernel": np.ones((2, 2), np.float32)} for i in range(n_keys)})


def _write_safetensors(path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"a": np.ones((2, 3), np.float32)}, str(path))


def _write_npz(path: Path) -> None:
    with path.open("wb") as fh:
        np.savez(fh, **{"params/a": np.ones(3, np.float32)})


def _write_npz_compressed(path: Path) -> None:
    with path.open("wb") as fh:
        np.savez_compressed(fh, **{"params/a": np.ones(3, np.float32)})


def _write_npy(path: Path) -> None:
    with path.open("wb") as fh:
        np.save(fh, np.ones(3, np.float32))


def _write_torch_zip(path: Path) -> None:
    torch.save({"w": torch.ones(2)}, path)


def _write_torch_legacy(path: Path) -> None:
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)


# writer, the extension that would mislead, the reader the bytes call for
WRITERS = [
    (_write_safetensors, ".bin", "safetensors"),
    (_write_npz, ".pt", "npz"),
    (_write_npz_compressed, ".safetensors", "npz"),
    (_write_npy, ".safetensors", "npy"),
    (_write_torch_zip, ".safetensors", "torch-zip"),
    (_write_torch_legacy, ".npz", "pickle"),
    (lambda p: p.write_bytes(_flax_bytes(3)), ".npz", "flax-msgpack"),  # fixmap
    (lambda p: p.write_bytes(_flax_bytes(20)), ".bin", "flax-msgpack"),  # map16
]
WRITERS += [
    (
        lambda p, proto=proto: p.write_bytes(pickle.dumps({"w": np.ones(2, np.float32)}, protocol=proto)),
        ".npz",
        "pickle",
    )
    for proto in range(6)
]


@pytest.mark.parametrize(("write", "ext", "kind"), WRITERS)
def test_sniff_ignores_the_extension(tmp_path: Path, write, ext: str, kind: str) -> None:
    path = tmp_path / f"file{ext}"
    write(path)
    assert sniff(path) == kind


def test_sniff_every_corpus_file(corpus: Path) -> None:
    expected = {".safetensors": "safetensors", ".npz": "npz", ".pt": "torch-zip", ".bin": "torch-zip"}
    files = [p for p in corpus.rglob("*") if p.suffix in expected]
    assert len(files) >= 15
    for path in files:
        assert sniff(path) == expected[path.suffix], path
    for folder in {p.parent for p in files}:
        assert sniff(folder) == "directory"


def test_sniff_indexes(tmp_path: Path) -> None:
    from huggingface_hub import save_torch_state_dict

    (tmp_path / "st").mkdir()
    (tmp_path / "pt").mkdir()
    state = {f"w{i}": torch.randn(16, 16) for i in range(3)}
    save_torch_state_dict(state, str(tmp_path / "st"), max_shard_size="2KB")
    save_torch_state_dict(state, str(tmp_path / "pt"), safe_serialization=False, max_shard_size="2KB")
    assert sniff(tmp_path / "st" / "model.safetensors.index.json") == "sharded"
    assert sniff(tmp_path / "pt" / "pytorch_model.bin.index.json") == "sharded"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"hello world, not a checkpoint at all", "not a checkpoint"),
        (b"\x00" * 64, "not a checkpoint"),
        (b'{"config": 1}', "weight_map"),
        (b"{not json", "invalid JSON"),
        (b"[" * 100_000, "invalid JSON"),  # nesting deeper than json's recursion limit
        (b"PK\x03\x04" + b"\x00" * 60, "zip"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UnreadableCheckpoint) as info:
        read_checkpoint(path)
    assert reason in info.value.reason and "\n" not in str(info.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UnreadableCheckpoint, match="no such file"):
        read_checkpoint(tmp_path / "nope.safetensors")


# -- dump JSON read back (check --spec) -------------------------------------------------------------------------


def _dump_doc(
    path: str, fmt: str, tensors: dict[str, tuple[tuple[int, ...], str]], groups: list[str]
) -> dict:
    """The dump JSON of CONTRACT.md, built from what the libraries report (not from ckptlint's readers)."""
    return {
        "schema_version": "1",
        "path": path,
        "format": fmt,
        "layout": "unknown",
        "tensors": {k: {"shape": list(s), "dtype": d} for k, (s, d) in tensors.items()},
        "groups": groups,
        "metadata": {"format": "pt"} if fmt == "safetensors" else {},
        "findings": [],
    }


def test_dump_json_of_an_npz_reads_back(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "big_vision" / "tiny_clippo.npz"
    with np.load(src) as z:
        tensors = {
            k: (z[k].shape, "bfloat16" if z[k].dtype.str.endswith("V2") else z[k].dtype.name) for k in z.files
        }
    doc = _dump_doc(str(src), "npz", tensors, ["chrono", "opt", "params"])
    out = tmp_path / "spec.json"
    out.write_text(json.dumps(doc))
    ckpt = read_checkpoint(out)
    assert ckpt.format == "dump-json" and ckpt.key_sep == "/"
    assert {k: (t.shape, t.dtype) for k, t in ckpt.tensors.items()} == tensors
    assert ckpt.groups == ["chrono", "opt", "params"]
    assert ckpt.metadata == {"dump_of": {"path": str(src), "format": "npz", "layout": "unknown"}}
    assert ckpt.num_params == sum(int(np.prod(s)) for s, _ in tensors.values())


def test_dump_json_of_safetensors_reads_back_with_findings(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "hf" / "hf_clip_tiny" / "model.safetensors"
    with safe_open(str(src), framework="np") as f:
        tensors = {
            k: (tuple(f.get_slice(k).get_shape()), SAFETENSORS[f.get_slice(k).get_dtype()])
            for k in f.keys()  # noqa: SIM118 - safe_open is not a dict
        }
    doc = _dump_doc(str(src), "safetensors", tensors, [])
    doc["findings"] = [
        {"code": "CK301", "severity": "error", "message": "m", "keys": ["a"], "details": {"x": 1}}
    ]
    out = tmp_path / "spec.json"
    out.write_text(json.dumps(doc))
    ckpt = read_checkpoint(out)
    assert ckpt.key_sep == "."
    assert {k: (t.shape, t.dtype) for k, t in ckpt.tensors.items()} == tensors
    assert [(f.code, f.severity.value, f.keys) for f in fact_findings(ckpt)] == [("CK301", "error", ["a"])]
    assert ckpt.metadata["format"] == "pt"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(schema_version="2"), "schema_version"),
        (lambda d: d["tensors"].update(x={"shape": [-1], "dtype": "float32"}), "'x'"),
        (lambda d: d["tensors"].update(x={"shape": [1]}), "'x'"),
        (lambda d: d["tensors"].update(x=[1, 2]), "'x'"),
        (lambda d: d.update(groups="params"), "groups"),
        (lambda d: d.update(metadata=[1]), "metadata"),
        (lambda d: d.update(findings=[{"code": "CK1"}]), "finding"),
    ],
)
def test_malformed_dump_json_is_unreadable(tmp_path: Path, mutate, needle: str) -> None:
    doc = _dump_doc("x", "npz", {"a/b": ((2,), "float32")}, ["a"])
    mutate(doc)
    out = tmp_path / "spec.json"
    out.write_text(json.dumps(doc))
    with pytest.raises(UnreadableCheckpoint) as info:
        read_checkpoint(out)
    assert needle in info.value.reason and "\n" not in str(info.value)


def test_guess_key_sep() -> None:
    assert guess_key_sep(["params/img/embedding/kernel", "t"]) == "/"
    assert guess_key_sep(["visual.conv1.weight", "logit_scale"]) == "."
    assert guess_key_sep(["opt/0/mu/layer.0/kernel"]) == "/"
    assert guess_key_sep([]) == "."


def test_truncated_zip_is_unreadable(corpus: Path, tmp_path: Path) -> None:
    raw = (corpus / "big_vision" / "tiny_vit.npz").read_bytes()
    for cut in (30, len(raw) // 2, len(raw) - 10):
        out = tmp_path / "cut.npz"
        out.write_bytes(raw[:cut])
        with pytest.raises(UnreadableCheckpoint):
            read_checkpoint(out)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(out)
