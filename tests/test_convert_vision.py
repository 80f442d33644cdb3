"""``ckptlint convert``: the open_clip / OpenAI image tower into transformers ``CLIPVisionModel`` (no projection, no
text keys left behind) and into timm ``vit_*_clip_*``, proven by the image features the targets compute, and
against timm's own converter (``checkpoint_filter_fn`` → ``_convert_openai_clip``) value by value.

The way back is not offered: open_clip builds a text tower in every model, so an image tower alone is no
open_clip checkpoint (``ckptlint convert --list`` says so, and so does the error).
"""

from __future__ import annotations

from pathlib import Path

import convert_support as cs
import pytest
import torch
from cli_support import ckptlint, one_error_line

from ckptlint.convert.run import ConvertResult, convert_checkpoint
from ckptlint.readers import read_checkpoint


@pytest.fixture(scope="session")
def oc_gelu(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A tiny GELU open_clip CLIP with open_clip's default preprocessing, as a hub folder."""
    folder = tmp_path_factory.mktemp("ocg") / "src"
    model, _ = cs.open_clip_folder(folder, quick_gelu=False)
    return folder, model


@pytest.fixture(scope="session")
def to_vision(
    oc_gelu: tuple[Path, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> ConvertResult:
    return convert_checkpoint(str(oc_gelu[0]), str(tmp_path_factory.mktemp("v") / "out"), "hf-clip-vision")


def test_open_clip_to_clip_vision_model_computes_the_same(
    oc_gelu: tuple[Path, torch.nn.Module], to_vision: ConvertResult
) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    _, oc = oc_gelu
    hf, info = CLIPVisionModel.from_pretrained(to_vision.write.dst, output_loading_info=True)
    assert not any(info.values()), info
    x = cs.image()
    with torch.no_grad():
        pooled = hf.eval()(pixel_values=x).pooler_output  # CLIPVisionModel has no projection: open_clip's is
        cs.close(oc.encode_image(x), pooled @ oc.visual.proj)  # applied by hand to compare embeddings
    # exactly CLIPVisionModel's keys: no text tower, projection or logit scale left behind
    own = set(CLIPVisionModel(CLIPVisionConfig.from_pretrained(to_vision.write.dst)).state_dict())
    assert set(read_checkpoint(to_vision.write.dst).tensors) == own
    assert CLIPVisionConfig.from_pretrained(to_vision.write.dst).hidden_act == "gelu"
    assert cs.errors(Path(to_vision.write.dst), "hf-clip-vision") == []


def test_open_clip_to_timm_computes_the_same_as_timms_own_converter(
    oc_gelu: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    import timm
    from safetensors.torch import load_file
    from timm.models.vision_transformer import checkpoint_filter_fn

    folder, oc = oc_gelu
    out = tmp_path / "timm"
    result = convert_checkpoint(str(folder), str(out), "timm-vit")
    assert result.after.summary.errors == 0
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = cs.image()
    with torch.no_grad():
        cs.close(oc.encode_image(x), model(x))
    # timm's own conversion of the same state_dict, into the same model: the same tensors, bit for bit
    theirs = checkpoint_filter_fn(dict(oc.state_dict()), model)
    cs.same_tensors(load_file(str(out / "model.safetensors")), theirs)


def test_openai_layout_file_to_timm(cs_openai: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    """OpenAI's release layout (open_clip keys plus input_resolution, context_length, vocab_size): a bare file,
    so heads and the activation come from --set; the extras are left out."""
    import timm
    from safetensors.torch import load_file
    from timm.models.vision_transformer import _convert_openai_clip

    path, oc = cs_openai
    sets = ["--set", "heads=2", "--set", "act=quick_gelu"]
    proc = ckptlint("convert", str(path), str(tmp_path / "timm"), "--to", "timm-vit", *sets)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "input_resolution" in proc.stdout  # named among what is left out
    sd = torch.load(path, weights_only=True)
    model = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    x = cs.image()
    with torch.no_grad():
        cs.close(oc.encode_image(x), model(x))
    cs.same_tensors(load_file(str(tmp_path / "timm" / "model.safetensors")), _convert_openai_clip(sd, model))


@pytest.fixture
def cs_openai(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny QuickGELU CLIP state_dict in OpenAI's release layout (open_clip's ``build_model_from_openai_state_dict``
    pops the three extras before loading; it cannot be used here: it guesses heads = width // 64, 0 at this size)."""
    import open_clip

    torch.manual_seed(3)
    model = open_clip.CLIP(**cs.engine_support.TINY_OPEN_CLIP_CFG, quick_gelu=True).eval()
    sd = dict(model.state_dict())
    sd.update(
        input_resolution=torch.tensor(32), context_length=torch.tensor(16), vocab_size=torch.tensor(100)
    )
    path = tmp_path / "openai_tiny.pt"
    torch.save(sd, path)
    return path, model


def test_vision_only_into_open_clip_is_refused_with_the_reason(corpus: Path, tmp_path: Path) -> None:
    for src in (corpus / "hf" / "hf_clipvision_tiny", corpus / "timm" / "timm_vit_clip_tiny.safetensors"):
        err = one_error_line(ckptlint("convert", str(src), str(tmp_path / "oc"), "--to", "open_clip"))
        assert "builds a text tower in every model" in err
        assert not (tmp_path / "oc").exists()


def test_timm_head_bias_must_be_zero_to_go_back(tmp_path: Path) -> None:
    """Going back over a made tensor (timm's zero head bias) checks its values: a trained bias is not lost."""
    from ckptlint.archs.registry import conversions
    from ckptlint.convert.tables import direction, plan_keys

    conv = next(c for c in conversions() if c.name == "open_clip-timm")
    back = direction(conv, True)
    assert back.problem is not None and "text tower" in back.problem
    rows = [r for r in back.rows if r.expect is not None]
    assert len(rows) == 1 and rows[0].ins[0].text == "head.bias" and rows[0].expect == 0.0
    ckpt = read_checkpoint(cs.CORPUS / "timm" / "timm_vit_clip_tiny.safetensors")
    plan = plan_keys(back, ckpt, "", {})
    assert plan.expect == [("head.bias", 0.0)] and "head.bias" in plan.dropped
