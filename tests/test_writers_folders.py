"""Folders in and out: HF ``save_pretrained`` folders (single file and sharded), open_clip hub folders. OUT is
loaded by the library that owns the layout (transformers ``from_pretrained``, open_clip ``local-dir:``) and
compared tensor by tensor with the library's load of IN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tvshim  # noqa: F401  (before open_clip / transformers)
from cli_support import ckptlint, one_error_line

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def same_state(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def st_dict(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def clip(corpus: Path):
    from tiny_models import tiny_models

    return tiny_models(corpus)["hf_clip"]


@pytest.fixture(scope="module")
def hf_folders(clip, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from test_reader_directory import tiny_tokenizer

    root = tmp_path_factory.mktemp("hf")
    out = {
        "single": root / "single",
        "sharded": root / "sharded",
        "sharded_bin": root / "sharded_bin",
    }
    clip.save_pretrained(out["single"])
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(out["single"])
    tiny_tokenizer().save_pretrained(out["single"])
    clip.save_pretrained(out["sharded"], max_shard_size="40KB")
    _as_torch_shards(out["sharded"], out["sharded_bin"])
    return out


def _as_torch_shards(src: Path, dst: Path) -> None:
    """The same shards as transformers < 5 wrote them (``save_pretrained(safe_serialization=False)``, gone in 5.x):
    each shard ``torch.save``d, ``pytorch_model.bin.index.json``; transformers still loads such folders."""
    index = json.loads((src / "model.safetensors.index.json").read_text())
    dst.mkdir()
    names = {
        s: s.replace("model-", "pytorch_model-").replace(".safetensors", ".bin")
        for s in index["weight_map"].values()
    }
    for shard, name in names.items():
        torch.save(st_dict(src / shard), dst / name)
    index["weight_map"] = {k: names[v] for k, v in index["weight_map"].items()}
    (dst / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    _, info = transformers.CLIPModel.from_pretrained(dst, output_loading_info=True)
    assert not any(info.values()), info


def test_fix_hf_folder_with_old_position_ids(corpus: Path, tmp_path: Path) -> None:
    """transformers < 4.31 saved position_ids: fix drops them; OUT is a folder from_pretrained loads as is."""
    from transformers import CLIPModel

    src = corpus / "hf" / "hf_clip_tiny_old_position_ids"
    out = tmp_path / "fixed"
    proc = ckptlint("fix", str(src), str(out), "--arch", "hf-clip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "pytorch_model.bin"]
    assert (out / "config.json").read_bytes() == (src / "config.json").read_bytes()
    _, info = CLIPModel.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    want = {
        k: v
        for k, v in torch.load(src / "pytorch_model.bin", weights_only=True).items()
        if not k.endswith("position_ids")
    }
    same_state(torch.load(out / "pytorch_model.bin", weights_only=True, mmap=True), want)


def test_hf_bin_folder_to_safetensors(corpus: Path, tmp_path: Path) -> None:
    from transformers import CLIPModel

    src = corpus / "hf" / "hf_clip_tiny_bin"
    out = tmp_path / "st"
    proc = ckptlint("strip", "--drop", "logit_scale", "--to", "safetensors", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}  # what transformers checks
    want = torch.load(src / "pytorch_model.bin", weights_only=True)
    del want["logit_scale"]
    same_state(st_dict(out / "model.safetensors"), want)
    _, info = CLIPModel.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == ["logit_scale"] or set(info["missing_keys"]) == {"logit_scale"}


@pytest.mark.parametrize("kind", ["sharded", "sharded_bin"])
def test_sharded_folder_strip_drops_empty_shards(
    hf_folders: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    src = hf_folders[kind]
    index_name = "model.safetensors.index.json" if kind == "sharded" else "pytorch_model.bin.index.json"
    index = json.loads((src / index_name).read_text())
    out = tmp_path / "vision"
    proc = ckptlint("strip", "--keep", "vision_model", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    new = json.loads((out / index_name).read_text())
    kept = {k: v for k, v in index["weight_map"].items() if k.startswith("vision_model.")}
    assert new["weight_map"] == kept  # same shard names, only the kept tensors
    shards = sorted(set(kept.values()))
    assert sorted(p.name for p in out.iterdir()) == sorted([index_name, "config.json", *shards])
    assert set(index["weight_map"].values()) - set(shards)  # some shards were left empty and dropped
    loaded = {}
    for shard in shards:
        part = st_dict(out / shard) if kind == "sharded" else torch.load(out / shard, weights_only=True)
        assert set(part) == {k for k, s in kept.items() if s == shard}
        loaded.update(part)
    assert new["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in loaded.values())
    from transformers import CLIPVisionModel

    full = transformers.CLIPModel.from_pretrained(src).state_dict()
    same_state(loaded, {k: v for k, v in full.items() if k in kept})
    _, info = CLIPVisionModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info


def test_sharded_bin_to_safetensors_loads_in_transformers(
    hf_folders: dict[str, Path], clip, tmp_path: Path
) -> None:
    src = hf_folders["sharded_bin"]
    out = tmp_path / "st"
    result = ckptlint("fix", str(src), str(out), "--arch", "hf-clip", "--to", "safetensors")
    assert result.returncode == 0, result.stdout + result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors.index.json" in names and not any(n.endswith(".bin") for n in names)
    assert all(n.startswith("model-") for n in names if n.endswith(".safetensors"))
    model, info = transformers.CLIPModel.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    same_state(model.state_dict(), clip.state_dict())
    single = tmp_path / "one.safetensors"  # a weights suffix: one file holding every shard's tensors
    assert (
        ckptlint("strip", "--drop", "logit_scale", str(src), str(single), "--to", "safetensors").returncode
        == 0
    )
    same_state(st_dict(single), {k: v for k, v in clip.state_dict().items() if k != "logit_scale"})


def test_hf_folder_sidecars_are_copied(hf_folders: dict[str, Path], tmp_path: Path) -> None:
    src = hf_folders["single"]
    out = tmp_path / "torch"
    proc = ckptlint("strip", "--keep", "text_model,text_projection", "--to", "torch", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    written = {p.name for p in out.iterdir()}
    assert written == ({p.name for p in src.iterdir()} - {"model.safetensors"}) | {"pytorch_model.bin"}
    for name in written - {"pytorch_model.bin"}:
        assert (out / name).read_bytes() == (src / name).read_bytes()
    want = {k: v for k, v in st_dict(src / "model.safetensors").items() if k.startswith("text_")}
    same_state(torch.load(out / "pytorch_model.bin", weights_only=True), want)


@pytest.fixture(scope="module")
def open_clip_hub(corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """An open_clip hub folder (open_clip's own save_for_hf) whose weights torch.compile left with ``_orig_mod.``
    (open_clip takes ``module.`` off by itself, not this)."""
    import open_clip
    from open_clip.push_to_hf_hub import save_for_hf
    from test_reader_directory import tiny_tokenizer

    cfg_file = corpus / "open_clip" / "ckptlint-tiny-ViT.json"
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(0)
    model = open_clip.create_model(cfg_file.stem)
    out = tmp_path_factory.mktemp("oc") / "hub"
    save_for_hf(model, tiny_tokenizer(), json.loads(cfg_file.read_text()), str(out), safe_serialization=False)
    weights = out / "open_clip_pytorch_model.bin"
    torch.save({f"_orig_mod.{k}": v for k, v in model.state_dict().items()}, weights)
    return out, model


@pytest.mark.parametrize("to", ["same", "safetensors"])
def test_fix_open_clip_hub_folder_loads_with_local_dir(open_clip_hub, tmp_path: Path, to: str) -> None:
    import open_clip

    src, model = open_clip_hub
    with pytest.raises(RuntimeError):  # the problem is real: open_clip refuses the folder as it is
        open_clip.create_model_and_transforms(f"local-dir:{src}")
    out = tmp_path / "fixed"
    proc = ckptlint("fix", str(src), str(out), "--arch", "open_clip", "--to", to)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    weights = "open_clip_pytorch_model.bin" if to == "same" else "open_clip_model.safetensors"
    assert weights in {p.name for p in out.iterdir()} and "open_clip_config.json" in {
        p.name for p in out.iterdir()
    }
    loaded, _, _ = open_clip.create_model_and_transforms(
        f"local-dir:{out}"
    )  # ground truth: open_clip loads it
    same_state(loaded.state_dict(), model.state_dict())


def test_folder_output_safety(hf_folders: dict[str, Path], tmp_path: Path) -> None:
    src = hf_folders["single"]
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    assert "inside the input folder" in one_error_line(
        ckptlint("strip", "--keep", "vision_model", str(src), str(src / "out"))
    )
    assert "inside the input folder" in one_error_line(
        ckptlint("strip", "--keep", "vision_model", str(src), str(src / "model.safetensors"))
    )
    assert "overwrite the input" in one_error_line(
        ckptlint("strip", "--keep", "vision_model", str(src), str(src))
    )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert "not empty" in one_error_line(ckptlint("strip", "--keep", "vision_model", str(src), str(busy)))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ckptlint("strip", "--keep", "vision_model", str(src), str(empty)).returncode == 0
    assert (empty / "model.safetensors").is_file()
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty"]  # no temporary folder left behind
