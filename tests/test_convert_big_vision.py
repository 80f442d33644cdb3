"""``ckptlint convert`` from big_vision: SigLIP two towers (npz) → transformers ``SiglipModel`` and → open_clip
SigLIP (timm image trunk); big_vision ViT and CLIPPO's ``img`` → timm ViT; a headless big_vision ViT →
``SiglipVisionModel``.

The source model is big_vision's computation: ``tests/bv_replica.py`` (checked against big_vision's own files by
``test_engine_oracle_big_vision.py``), whose SigLIP file is shown here to be exactly what open_clip's big_vision
converter reads (every key, nothing missing). OUT is loaded by the target library and must compute the replica's
embeddings and logits on fixed inputs to 1e-5; and it must equal, tensor by tensor, what the libraries' own
converters make of the same npz (open_clip's ``load_big_vision_weights``, timm's ``load_pretrained``).
transformers' ``convert_siglip_to_hf.py`` is not shipped in its wheel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bv_replica as bv
import convert_support as cs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from cli_support import ckptlint, one_error_line
from flax.traverse_util import flatten_dict

from ckptlint.convert.run import convert_checkpoint


@pytest.fixture(scope="session")
def siglip_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cs.write_siglip_npz(tmp_path_factory.mktemp("bv") / "siglip_tiny.npz")


@pytest.fixture(scope="session")
def siglip_ref(siglip_npz: Path) -> dict[str, torch.Tensor]:
    return cs.siglip_reference(siglip_npz)


@pytest.fixture(scope="session")
def tiny_trunk() -> str:
    return cs.tiny_siglip_trunk()


def test_the_siglip_file_is_what_open_clips_big_vision_converter_reads(
    siglip_npz: Path, tiny_trunk: str
) -> None:
    """open_clip's load_big_vision_weights reads every tensor of the file and finds every key it asks for."""
    import open_clip
    from open_clip import convert

    cfg = {
        "embed_dim": 64, "init_logit_bias": -10,
        "vision_cfg": {"image_size": 32, "timm_model_name": tiny_trunk, "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 2,
                     "mlp_ratio": 2.0, "no_causal_mask": True, "proj_bias": True, "pool_type": "last"},
    }  # fmt: skip
    model = open_clip.CustomTextCLIP(**cfg)
    read: set[str] = set()
    real_load = np.load

    class Recording(dict):  # records the keys the converter asks for
        def __getitem__(self, key: str) -> Any:
            read.add(key)
            return super().__getitem__(key)

    def load(path: Any, *a: Any, **kw: Any) -> Recording:
        with real_load(path, *a, **kw) as z:
            return Recording({k: z[k] for k in z.files})

    convert.np.load, saved = load, convert.np.load
    try:
        convert.load_big_vision_weights(model, str(siglip_npz))
    finally:
        convert.np.load = saved
    with np.load(siglip_npz) as z:
        assert read >= set(z.files) - {k for k in z.files if "/opt/" in k}
        assert read <= set(z.files)


def test_siglip_to_transformers_computes_big_visions_outputs(
    siglip_npz: Path, siglip_ref: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    from transformers import SiglipModel

    out = tmp_path / "hf"
    result = convert_checkpoint(str(siglip_npz), str(out), "hf-siglip")
    assert result.after.summary.errors == 0
    hf, info = SiglipModel.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    x, t = cs.image(), cs.tokens(100, 16)
    with torch.no_grad():
        hf.eval()
        cs.close(getattr(o := hf.get_image_features(pixel_values=x), "pooler_output", o), siglip_ref["zimg"])
        cs.close(getattr(o := hf.get_text_features(input_ids=t), "pooler_output", o), siglip_ref["ztxt"])
        cs.close(hf.logit_scale, siglip_ref["t"])
        cs.close(hf.logit_bias, siglip_ref["b"])
        cs.close(hf(input_ids=t, pixel_values=x).logits_per_text, siglip_ref["logits"], atol=1e-4)
    err = one_error_line(
        ckptlint("convert", str(siglip_npz), str(tmp_path / "x"), "--to", "hf-siglip", "--set", "heads=4")
    )
    assert "the weights say heads = 2" in err  # the kernels show the heads: --set cannot contradict them
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vision_config"]["hidden_act"] == cfg["text_config"]["hidden_act"] == "gelu_pytorch_tanh"


def test_siglip_to_open_clip_computes_big_visions_outputs_and_equals_open_clips_converter(
    siglip_npz: Path, siglip_ref: dict[str, torch.Tensor], tiny_trunk: str, tmp_path: Path
) -> None:
    import open_clip
    from open_clip.convert import load_big_vision_weights
    from safetensors.torch import load_file

    out = tmp_path / "oc"
    err = one_error_line(ckptlint("convert", str(siglip_npz), str(out), "--to", "open_clip"))
    assert "timm_model_name" in err  # no timm model has this tiny tower: asked for, never guessed
    result = convert_checkpoint(str(siglip_npz), str(out), "open_clip", {"timm_model_name": tiny_trunk})
    assert result.after.summary.errors == 0
    oc = open_clip.create_model(f"local-dir:{out}").eval()
    x, t = cs.image(), cs.tokens(100, 16)
    with torch.no_grad():
        cs.close(oc.encode_image(x), siglip_ref["zimg"])
        cs.close(oc.encode_text(t), siglip_ref["ztxt"])
        cs.close(oc.logit_scale, siglip_ref["t"][0])
        cs.close(oc.logit_bias, siglip_ref["b"][0])
    theirs = open_clip.create_model(f"local-dir:{out}", load_weights=False)
    load_big_vision_weights(theirs, str(siglip_npz))
    cs.same_tensors(load_file(str(out / "open_clip_model.safetensors")), theirs.state_dict())


@pytest.mark.parametrize(("name", "root"), [("tiny_vit.npz", "params/"), ("tiny_clippo.npz", "params/img/")])
def test_big_vision_vit_to_timm_computes_the_same_as_timms_loader(
    name: str, root: str, corpus: Path, tmp_path: Path
) -> None:
    """big_vision ViT / CLIPPO's img (the corpus files written by big_vision) → timm ViT."""
    import timm
    from safetensors.torch import load_file

    src = corpus / "big_vision" / name
    out = tmp_path / "timm"
    result = convert_checkpoint(str(src), str(out), "timm-vit")
    assert result.after.summary.errors == 0
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = cs.image()
    want = bv.ViT(**bv.TINY).apply({"params": cs.bv_params(src, root)}, cs.nhwc(x))
    with torch.no_grad():
        cs.close(model(x), cs.to_torch(want))
    theirs = timm.create_model(f"local-dir:{out}", pretrained=False)
    theirs.load_pretrained(str(src))  # timm's own big_vision reader (_load_weights)
    cs.same_tensors(load_file(str(out / "model.safetensors")), theirs.state_dict())
    if name == "tiny_clippo.npz":  # the temperature and the training state are left out, and said so
        described = result.describe()
        assert "params/t" in described and "opt/" in described


def test_headless_big_vision_vit_to_siglip_vision_model(tmp_path: Path, corpus: Path) -> None:
    from transformers import SiglipVisionModel

    model = bv.ViT(**{**bv.TINY, "num_classes": 0})
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)))["params"]
    src = tmp_path / "vit_bare.npz"
    np.savez(src, **{k: np.asarray(v) for k, v in flatten_dict(params, sep="/").items()})
    out = tmp_path / "hf"
    assert convert_checkpoint(str(src), str(out), "hf-siglip-vision").after.summary.errors == 0
    x = cs.image()
    with torch.no_grad():
        got = SiglipVisionModel.from_pretrained(out).eval()(pixel_values=x).pooler_output
    cs.close(got, cs.to_torch(model.apply({"params": params}, cs.nhwc(x))))
    # a ViT with a classifier head has no place in SiglipVisionModel: refused, naming the head
    err = one_error_line(ckptlint("convert", str(corpus / "big_vision" / "tiny_vit.npz"), str(tmp_path / "x"),
                                  "--to", "hf-siglip-vision"))  # fmt: skip
    assert "does not map" in err and "params/head/kernel" in err


def test_stacked_blocks_of_a_scan_checkpoint(tiny_trunk: str, tmp_path: Path) -> None:
    """big_vision's scan=True saves each tower's blocks stacked (encoderblock/ with a leading axis of depth), as its
    SigLIP releases are: each block is read from its slice; the same outputs, the same tensors as open_clip's
    converter (which reads both layouts)."""
    import open_clip
    from open_clip.convert import load_big_vision_weights
    from safetensors.torch import load_file
    from transformers import SiglipModel

    npz = cs.write_siglip_npz(tmp_path / "siglip_scan.npz", scan=True)
    with np.load(npz) as z:
        assert "params/img/Transformer/encoderblock/LayerNorm_0/scale" in z.files
    ref = cs.siglip_reference(npz, scan=True)
    convert_checkpoint(str(npz), str(tmp_path / "hf"), "hf-siglip")
    hf = SiglipModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        cs.close(
            getattr(o := hf.get_image_features(pixel_values=cs.image()), "pooler_output", o), ref["zimg"]
        )
        cs.close(
            getattr(o := hf.get_text_features(input_ids=cs.tokens(100, 16)), "pooler_output", o), ref["ztxt"]
        )
    out = tmp_path / "oc"
    convert_checkpoint(str(npz), str(out), "open_clip", {"timm_model_name": tiny_trunk})
    theirs = open_clip.create_model(f"local-dir:{out}", load_weights=False)
    load_big_vision_weights(theirs, str(npz))
    cs.same_tensors(load_file(str(out / "open_clip_model.safetensors")), theirs.state_dict())
