"""``ckptlint convert`` never needs torch for safetensors / npz inputs and outputs: the CLI runs in a process where
``import torch`` (jax, flax, transformers, open_clip, timm) fails, and OUT is then loaded by the target library in
this process and must compute what the source computes."""

from __future__ import annotations

from pathlib import Path

import convert_support as cs
import pytest
import torch
from test_strip_fix_without_torch import ckptlint_without_torch


def _feat(out: object) -> torch.Tensor:
    return getattr(out, "pooler_output", out)  # type: ignore[return-value]


def test_open_clip_hub_folder_to_hf_and_back_without_torch(tmp_path: Path) -> None:
    import open_clip
    from transformers import CLIPModel

    oc, _ = cs.open_clip_folder(tmp_path / "oc", quick_gelu=True)
    proc = ckptlint_without_torch("convert", str(tmp_path / "oc"), str(tmp_path / "hf"), "--to", "hf-clip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hf = CLIPModel.from_pretrained(tmp_path / "hf").eval()
    proc = ckptlint_without_torch(
        "convert", str(tmp_path / "hf"), str(tmp_path / "back"), "--to", "open_clip"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    back = open_clip.create_model(f"local-dir:{tmp_path / 'back'}").eval()
    x, t = cs.image(), cs.tokens(100, 16)
    with torch.no_grad():
        for model in (hf, back):
            img = _feat(model.get_image_features(pixel_values=x)) if model is hf else model.encode_image(x)
            txt = _feat(model.get_text_features(input_ids=t)) if model is hf else model.encode_text(t)
            cs.close(oc.encode_image(x), img)
            cs.close(oc.encode_text(t), txt)


@pytest.mark.parametrize("to", ["hf-clip-vision", "timm-vit"])
def test_open_clip_vision_tower_without_torch(to: str, tmp_path: Path) -> None:
    """open_clip → CLIPVisionModel and → timm, torch blocked; the image tower computes the same."""
    oc, _ = cs.open_clip_folder(tmp_path / "oc", quick_gelu=False)
    out = tmp_path / "out"
    proc = ckptlint_without_torch("convert", str(tmp_path / "oc"), str(out), "--to", to)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    x = cs.image()
    with torch.no_grad():
        want = oc.encode_image(x)
        if to == "timm-vit":
            import timm

            got = timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x)
        else:
            from transformers import CLIPVisionModel

            pooled = CLIPVisionModel.from_pretrained(out).eval()(pixel_values=x).pooler_output
            got = pooled @ oc.visual.proj
        cs.close(want, got)


def test_big_vision_npz_to_transformers_and_timm_without_torch(corpus: Path, tmp_path: Path) -> None:
    """big_vision SigLIP npz → SiglipModel and CLIPPO npz → timm, torch blocked; outputs are big_vision's."""
    import timm
    from safetensors.torch import load_file
    from transformers import SiglipModel

    npz = cs.write_siglip_npz(tmp_path / "siglip.npz")
    proc = ckptlint_without_torch("convert", str(npz), str(tmp_path / "hf"), "--to", "hf-siglip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ref = cs.siglip_reference(npz)
    hf = SiglipModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        cs.close(_feat(hf.get_image_features(pixel_values=cs.image())), ref["zimg"])
        cs.close(_feat(hf.get_text_features(input_ids=cs.tokens(100, 16))), ref["ztxt"])
    clippo = corpus / "big_vision" / "tiny_clippo.npz"
    proc = ckptlint_without_torch("convert", str(clippo), str(tmp_path / "timm"), "--to", "timm-vit")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    theirs = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=False)
    theirs.load_pretrained(str(clippo))  # timm's own reader of big_vision files
    cs.same_tensors(load_file(str(tmp_path / "timm" / "model.safetensors")), theirs.state_dict())


def test_flax_msgpack_input_without_torch(corpus: Path, tmp_path: Path) -> None:
    """The same big_vision ViT params saved by flax.serialization (msgpack) convert, torch blocked, into the tensors
    timm's own reader makes of the npz."""
    import flax.serialization
    import numpy as np
    import timm
    from flax.traverse_util import unflatten_dict
    from safetensors.torch import load_file

    npz = corpus / "big_vision" / "tiny_vit.npz"
    with np.load(npz) as z:
        tree = unflatten_dict({tuple(k.split("/")): z[k] for k in z.files})
    src = tmp_path / "tiny_vit.msgpack"
    src.write_bytes(flax.serialization.to_bytes(tree))
    proc = ckptlint_without_torch("convert", str(src), str(tmp_path / "timm"), "--to", "timm-vit")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    theirs = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=False)
    theirs.load_pretrained(str(npz))
    cs.same_tensors(load_file(str(tmp_path / "timm" / "model.safetensors")), theirs.state_dict())
