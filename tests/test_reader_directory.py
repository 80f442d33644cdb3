"""Folders (HF save_pretrained, open_clip hub folders, sharded checkpoints) and sidecar configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tvshim  # noqa: F401  - before transformers/open_clip/timm (torchvision's CPU op registration)
from safetensors import safe_open

from ckptlint.dtypes import SAFETENSORS
from ckptlint.engine import fact_findings, run
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers import read_checkpoint
from ckptlint.readers.directory import pick_weights
from ckptlint.readers.sidecars import attach_sidecars

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "vocab_size": 100,
    "max_position_embeddings": 16,
}
VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


def state_dict_view(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


def safe_open_view(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    with safe_open(str(path), framework="np") as f:
        return {
            k: (tuple(f.get_slice(k).get_shape()), SAFETENSORS[f.get_slice(k).get_dtype()])
            for k in f.keys()  # noqa: SIM118 - safe_open is not a dict
        }


def our_view(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (t.shape, t.dtype) for k, t in read_checkpoint(path).tensors.items()}


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        ["a photo of a cat", "a photo of a dog"] * 10,
        trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<s>", "</s>"]),
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture(scope="module")
def hf_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    clip_cfg = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)
    return {
        "clip": transformers.CLIPModel(clip_cfg),
        "clip_vision": transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION)),
        "siglip": transformers.SiglipModel(transformers.SiglipConfig(text_config=TEXT, vision_config=VISION)),
    }


@pytest.fixture(scope="module")
def hf_dirs(
    hf_models: dict[str, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, model in hf_models.items():
        out[name] = root / name
        model.save_pretrained(out[name])
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(out["clip"])
    tiny_tokenizer().save_pretrained(out["clip"])
    out["sharded"] = root / "sharded"
    hf_models["clip"].save_pretrained(out["sharded"], max_shard_size="100KB")
    return out


@pytest.mark.parametrize("name", ["clip", "clip_vision", "siglip"])
def test_hf_folders_equal_the_model_and_safe_open(
    hf_dirs: dict[str, Path], hf_models: dict[str, torch.nn.Module], name: str
) -> None:
    folder = hf_dirs[name]
    ckpt = read_checkpoint(folder)
    assert ckpt.format == "hf-dir"
    assert (
        our_view(folder) == safe_open_view(folder / "model.safetensors") == state_dict_view(hf_models[name])
    )
    assert ckpt.metadata["weights_file"] == "model.safetensors"
    assert ckpt.metadata["format"] == "pt"  # the safetensors __metadata__ save_pretrained writes
    config = ckpt.sidecar("hf-config")
    assert config is not None and config.content == json.loads((folder / "config.json").read_text())
    assert ckpt.files == [str(folder / "model.safetensors")]


def test_hf_sidecars(hf_dirs: dict[str, Path]) -> None:
    ckpt = read_checkpoint(hf_dirs["clip"])
    kinds = {s.name: s.kind for s in ckpt.sidecars}
    written = {p.name for p in hf_dirs["clip"].iterdir()} - {"model.safetensors"}
    assert set(kinds) == written
    assert kinds["config.json"] == "hf-config" and kinds["preprocessor_config.json"] == "hf-preprocessor"
    assert kinds["tokenizer.json"] == kinds["tokenizer_config.json"] == "tokenizer"
    pre = ckpt.sidecar("hf-preprocessor")
    assert pre is not None and pre.content["crop_size"] == {"height": 32, "width": 32}


def test_sharded_folder_and_index_equal_the_model(hf_dirs: dict[str, Path], hf_models: dict) -> None:
    folder = hf_dirs["sharded"]
    index = folder / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    assert len(shards) >= 2
    expected = state_dict_view(hf_models["clip"])
    union: dict = {}
    for shard in shards:
        union.update(safe_open_view(folder / shard))
    for path in (folder, index):
        ckpt = read_checkpoint(path)
        assert our_view(path) == union == expected
        assert fact_findings(ckpt) == []
        assert ckpt.files == [str(index)] + [str(folder / s) for s in shards]
        assert {k: t.storage for k, t in ckpt.tensors.items()} == weight_map
    assert read_checkpoint(index).format == "safetensors-sharded"
    assert read_checkpoint(folder).format == "hf-dir"
    assert read_checkpoint(folder).metadata["weights_file"] == "model.safetensors.index.json"
    assert (
        read_checkpoint(index).metadata["total_size"]
        == json.loads(index.read_text())["metadata"]["total_size"]
    )


@pytest.fixture
def sharded_copy(hf_dirs: dict[str, Path], tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(hf_dirs["sharded"], out)
    return out


def test_missing_shard_is_recorded_and_is_ck002(sharded_copy: Path) -> None:
    index = sharded_copy / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"]
    gone = sorted(set(weight_map.values()))[-1]
    (sharded_copy / gone).unlink()
    ckpt = read_checkpoint(sharded_copy)
    assert ckpt.findings == []  # the reader records facts; the rules judge them
    assert ckpt.shards is not None and ckpt.shards.missing_shards == [gone]
    assert ckpt.shards.lost_tensors == sorted(k for k, s in weight_map.items() if s == gone)
    assert set(ckpt.tensors) == {k for k, s in weight_map.items() if s != gone}
    (finding,) = [f for f in run(ckpt, None).findings if f.code != "CK004"]  # no model given: CK004 says so
    assert finding.code == "CK002" and finding.severity.value == "error"
    assert "incomplete" in finding.message and gone in finding.message
    assert finding.keys == ckpt.shards.lost_tensors


def test_index_pointing_at_the_wrong_shard_is_ck003(sharded_copy: Path) -> None:
    index = sharded_copy / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    shards = sorted(set(doc["weight_map"].values()))
    moved = next(k for k, s in doc["weight_map"].items() if s == shards[0])
    doc["weight_map"][moved] = shards[1]
    index.write_text(json.dumps(doc))
    ckpt = read_checkpoint(index)
    assert ckpt.shards is not None and list(ckpt.shards.misplaced) == [moved]
    # an index has no preprocessing, and no model is given (CK004)
    (finding,) = [f for f in run(ckpt, None).findings if f.code not in ("CK107", "CK004")]
    assert finding.code == "CK003" and finding.severity.value == "warning" and finding.keys == [moved]
    assert finding.details["tensors"][moved] == {"index": shards[1], "found_in": [shards[0]]}
    assert moved in ckpt.tensors


def test_tensor_missing_from_index_and_stale_shard_are_ck003(sharded_copy: Path) -> None:
    index = sharded_copy / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    dropped = sorted(doc["weight_map"])[0]
    del doc["weight_map"][dropped]
    index.write_text(json.dumps(doc))
    first = sorted(set(doc["weight_map"].values()))[0]
    shutil.copy(
        sharded_copy / first, sharded_copy / "model-00001-of-00005.safetensors"
    )  # an older save's shard
    ckpt = read_checkpoint(sharded_copy)
    findings = [f for f in run(ckpt, None).findings if f.code not in ("CK107", "CK004")]
    codes = sorted((f.code, tuple(f.keys)) for f in findings)
    assert codes == [("CK003", ()), ("CK003", (dropped,))]
    stale = next(f for f in findings if not f.keys)
    assert stale.details["unreferenced_shards"] == ["model-00001-of-00005.safetensors"]
    assert "model-00001-of-00005.safetensors" not in ckpt.metadata.get("other_weight_files", [])


def test_corrupt_shard_is_unreadable_naming_the_shard(sharded_copy: Path) -> None:
    shard = sorted(sharded_copy.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(UnreadableCheckpoint, match=shard.name):
        read_checkpoint(sharded_copy / "model.safetensors.index.json")


@pytest.mark.parametrize(
    "index",
    [
        {"weight_map": {"a": "../outside.safetensors"}},
        {"weight_map": {"a": 3}},
        {"weight_map": {"a": "/abs/x.safetensors"}},
    ],
)
def test_bad_index_is_unreadable(tmp_path: Path, index: dict) -> None:
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    with pytest.raises(UnreadableCheckpoint, match="corrupt shard index"):
        read_checkpoint(path)


def test_torch_bin_shards(tmp_path: Path) -> None:
    """``pytorch_model.bin.index.json`` with torch.save shards (huggingface_hub writes them)."""
    pytest.importorskip("ckptlint.readers.torch_zip", reason="torch zip reader not written yet")
    from huggingface_hub import save_torch_state_dict

    torch.manual_seed(0)
    state = {f"layer{i}.weight": torch.randn(32, 32) for i in range(4)} | {"head.bias": torch.zeros(3).half()}
    save_torch_state_dict(state, str(tmp_path), safe_serialization=False, max_shard_size="8KB")
    index = tmp_path / "pytorch_model.bin.index.json"
    ckpt = read_checkpoint(index)
    assert ckpt.format == "torch-sharded" and fact_findings(ckpt) == []
    assert our_view(index) == {
        k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()
    }
    assert read_checkpoint(tmp_path).metadata["weights_file"] == "pytorch_model.bin.index.json"


# -- open_clip ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_clip_dir(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    open_clip = pytest.importorskip("open_clip")
    from open_clip.push_to_hf_hub import save_for_hf

    cfg_file = corpus / "open_clip" / "ckptlint-tiny-ViT.json"
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(0)
    model = open_clip.create_model(cfg_file.stem)
    out = tmp_path_factory.mktemp("oc") / "hub"
    save_for_hf(
        model, tiny_tokenizer(), json.loads(cfg_file.read_text()), str(out), safe_serialization="both"
    )
    return out, state_dict_view(model)


def test_open_clip_folder_picks_what_open_clip_picks(open_clip_dir: tuple[Path, dict]) -> None:
    from open_clip.factory import _find_checkpoint_in_dir

    folder, expected = open_clip_dir
    ckpt = read_checkpoint(folder)
    assert ckpt.format == "open_clip-dir"
    assert ckpt.metadata["weights_file"] == Path(_find_checkpoint_in_dir(folder)).name
    assert ckpt.metadata["other_weight_files"] == ["open_clip_pytorch_model.bin"]
    assert our_view(folder) == expected
    oc = ckpt.sidecar("open_clip-config")
    assert oc is not None and set(oc.content) == {"model_cfg", "preprocess_cfg"}
    assert oc.content == json.loads((folder / "open_clip_config.json").read_text())


def test_open_clip_folder_with_hf_weights_too(
    open_clip_dir: tuple[Path, dict], hf_dirs: dict, tmp_path: Path
) -> None:
    """An open_clip hub folder that also carries HF weights: open_clip's file is read, the HF one is listed."""
    from open_clip.factory import _find_checkpoint_in_dir

    folder = tmp_path / "both"
    shutil.copytree(open_clip_dir[0], folder)
    (folder / "open_clip_model.safetensors").unlink()
    shutil.copy(hf_dirs["clip"] / "model.safetensors", folder / "model.safetensors")
    shutil.copy(hf_dirs["clip"] / "config.json", folder / "config.json")
    chosen, others = pick_weights(sorted(p.name for p in folder.iterdir()), open_clip=True)
    assert chosen == Path(_find_checkpoint_in_dir(folder)).name == "open_clip_pytorch_model.bin"
    assert others == ["model.safetensors"]


@pytest.mark.parametrize(
    "names",
    [
        ["open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin"],
        ["pytorch_model.bin", "model.pth"],
        ["b.bin", "a.pth", "z.safetensors"],
        ["b.bin", "a.pth"],
        ["open_clip_pytorch_model.pth", "open_clip_pytorch_model.safetensors"],
        ["epoch_1.pt", "weights.pth", "training_args.bin"],
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
        ],
    ],
)
def test_pick_weights_matches_open_clip(tmp_path: Path, names: list[str]) -> None:
    pytest.importorskip("open_clip")
    from open_clip.factory import _find_checkpoint_in_dir

    for n in names:
        (tmp_path / n).touch()
    theirs = _find_checkpoint_in_dir(tmp_path)
    chosen, others = pick_weights(sorted(names), open_clip=True)
    assert chosen == (Path(theirs).name if theirs else chosen)
    assert chosen not in others


# -- timm, corpus, single files, errors -------------------------------------------------------------------------


def test_timm_hub_folder(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    from timm.models._hub import save_for_hf

    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=3)
    save_for_hf(model, str(tmp_path), safe_serialization=True)
    ckpt = read_checkpoint(tmp_path)
    assert our_view(tmp_path) == state_dict_view(model)
    kinds = {s.name: s.kind for s in ckpt.sidecars}
    assert kinds == {"config.json": "timm-config"}
    assert ckpt.sidecar("timm-config").content["architecture"] == "vit_tiny_patch16_224"


@pytest.mark.parametrize("name", ["hf_clip_tiny", "hf_clipvision_tiny", "hf_siglip_tiny"])
def test_corpus_hf_folders(corpus: Path, name: str) -> None:
    folder = corpus / "hf" / name
    ckpt = read_checkpoint(folder)
    assert ckpt.format == "hf-dir"
    assert our_view(folder) == safe_open_view(folder / "model.safetensors")
    expected_sidecars = {p.name for p in folder.iterdir() if p.suffix == ".json"}
    assert {s.name for s in ckpt.sidecars} == expected_sidecars
    assert (
        ckpt.sidecar("hf-config").content["model_type"]
        == json.loads((folder / "config.json").read_text())["model_type"]
    )


def test_corpus_bin_folders(corpus: Path) -> None:
    pytest.importorskip("ckptlint.readers.torch_zip", reason="torch zip reader not written yet")
    for name in ("hf_clip_tiny_bin", "hf_clip_tiny_old_position_ids"):
        folder = corpus / "hf" / name
        ckpt = read_checkpoint(folder)
        assert ckpt.format == "hf-dir" and ckpt.metadata["weights_file"] == "pytorch_model.bin"
        sd = torch.load(folder / "pytorch_model.bin", weights_only=True, map_location="cpu")
        assert our_view(folder) == {
            k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()
        }


def test_attach_sidecars_to_a_single_file(corpus: Path) -> None:
    weights = corpus / "hf" / "hf_clip_tiny" / "model.safetensors"
    ckpt = attach_sidecars(read_checkpoint(weights), weights.parent)
    assert sorted((s.name, s.kind) for s in ckpt.sidecars) == [
        ("config.json", "hf-config"),
        ("preprocessor_config.json", "hf-preprocessor"),
    ]
    assert attach_sidecars(ckpt, weights.parent).sidecars == ckpt.sidecars  # idempotent


def test_open_clip_model_config_next_to_a_file(corpus: Path) -> None:
    weights = corpus / "open_clip" / "openclip_tiny_fp16.safetensors"
    ckpt = attach_sidecars(read_checkpoint(weights), weights.parent)
    assert [(s.name, s.kind) for s in ckpt.sidecars] == [("ckptlint-tiny-ViT.json", "other")]
    assert ckpt.sidecars[0].content["vision_cfg"]["patch_size"] == 8


def test_unrelated_json_is_not_a_sidecar(tmp_path: Path, corpus: Path) -> None:
    shutil.copy(corpus / "timm" / "timm_vit_clip_tiny.safetensors", tmp_path / "w.safetensors")
    (tmp_path / "results.json").write_text(json.dumps({"accuracy": 0.5}))
    (tmp_path / "big.json").write_text(json.dumps({"model_type": "clip", "pad": "x" * 100_000}))
    (tmp_path / "broken.json").write_text("{not json")
    assert read_checkpoint(tmp_path).sidecars == []


def test_folder_without_weights_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UnreadableCheckpoint, match="no weights file"):
        read_checkpoint(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnreadableCheckpoint, match="no weights file"):
        read_checkpoint(empty)


def test_training_state_files_are_not_weights(tmp_path: Path, corpus: Path) -> None:
    shutil.copy(corpus / "hf" / "hf_clip_tiny" / "model.safetensors", tmp_path / "model.safetensors")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (tmp_path / name).write_bytes(b"x")
    ckpt = read_checkpoint(tmp_path)
    assert ckpt.metadata["training_state_files"] == [
        "optimizer.pt",
        "rng_state.pth",
        "scheduler.pt",
        "training_args.bin",
    ]
    assert "other_weight_files" not in ckpt.metadata
