"""``ckptlint diff``, ``strip`` and ``fix`` on real checkpoints; ground truth from the libraries that wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_support import ckptlint, one_error_line

ROOT = Path(__file__).resolve().parent.parent


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:  # trusted: files this test wrote or the read-only corpus
        return {k: z[k] for k in z.files}


# --- strip -------------------------------------------------------------------------------------------------


def test_strip_keep_params_npz_copies_members_exactly(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "big_vision" / "tiny_clippo.npz"
    out = tmp_path / "params.npz"
    before = src.read_bytes()
    proc = ckptlint("strip", "--keep", "params", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout
    assert src.read_bytes() == before  # the input is never touched
    original = npz_arrays(src)
    stripped = npz_arrays(out)
    assert set(stripped) == {k for k in original if k.startswith("params/")}
    for k, v in stripped.items():  # bf16-as-V2 and every other dtype come through byte for byte
        assert v.dtype == original[k].dtype and v.shape == original[k].shape
        assert v.tobytes() == original[k].tobytes()


def test_strip_drop_equals_keep(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "big_vision" / "tiny_clippo.npz"
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert ckptlint("strip", "--keep", "params", str(src), str(a)).returncode == 0
    assert ckptlint("strip", "--drop", "opt,chrono", str(src), str(b)).returncode == 0
    assert npz_arrays(a).keys() == npz_arrays(b).keys()


def test_strip_to_safetensors_from_npz(corpus: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    src = corpus / "big_vision" / "tiny_clippo.npz"
    out = tmp_path / "params.safetensors"
    proc = ckptlint("strip", "--keep", "params", "--to", "safetensors", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    original = npz_arrays(src)
    with safe_open(str(out), framework="np") as f:
        keys = set(f.keys())
        assert keys == {k for k in original if k.startswith("params/")}
        for k in keys:
            got = f.get_tensor(k)
            want = np.ascontiguousarray(original[k])
            assert got.shape == want.shape and got.tobytes() == want.tobytes()


def test_strip_safetensors_keeps_metadata_and_bytes(tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {
        "model.w": torch.randn(3, 4, generator=g),
        "model.b": torch.randn(4, generator=g).to(torch.bfloat16),
        "ema.w": torch.randn(3, 4, generator=g),
    }
    src = tmp_path / "full.safetensors"
    save_file(tensors, str(src), metadata={"format": "pt", "note": "x"})
    out = tmp_path / "model.safetensors"
    assert ckptlint("strip", "--drop", "ema", str(src), str(out)).returncode == 0
    with safe_open(str(out), framework="pt") as f:
        assert set(f.keys()) == {"model.w", "model.b"}
        assert f.metadata() == {"format": "pt", "note": "x"}
        for k in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            assert torch.equal(f.get_tensor(k), tensors[k])


def test_strip_torch_trainer_checkpoint(tmp_path: Path) -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    src = tmp_path / "trainer.pt"
    torch.save({"epoch": 3, "state_dict": model.state_dict(), "optimizer": opt.state_dict()}, src)
    out = tmp_path / "weights.pt"
    proc = ckptlint("strip", "--drop", "optimizer", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    got = torch.load(out, weights_only=True)
    assert set(got) == {"epoch", "state_dict"} and got["epoch"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(got["state_dict"][k], v)
    st = tmp_path / "weights.safetensors"
    assert ckptlint("strip", "--keep", "state_dict", "--to", "safetensors", str(src), str(st)).returncode == 0
    from safetensors.torch import load_file

    flat = load_file(str(st))
    assert set(flat) == {f"state_dict.{k}" for k in model.state_dict()}


def test_strip_flax_msgpack(tmp_path: Path) -> None:
    import jax
    import jax.numpy as jnp
    from flax import serialization

    state = {
        "params": {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros((2,), jnp.bfloat16)}},
        "opt": {"mu": {"dense": {"kernel": jnp.ones((3, 2))}}, "count": jnp.array(7)},
        "step": 12,
    }
    src = tmp_path / "state.msgpack"
    src.write_bytes(serialization.to_bytes(state))
    out = tmp_path / "params.msgpack"
    proc = ckptlint("strip", "--keep", "params", str(src), str(out))
    assert proc.returncode == 0, proc.stderr
    restored = serialization.msgpack_restore(out.read_bytes())
    assert set(restored) == {"params"}
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
        restored["params"],
        state["params"],
    )
    assert restored["params"]["dense"]["bias"].dtype == jnp.bfloat16


def test_strip_refuses_to_overwrite_input_and_bad_groups(corpus: Path, tmp_path: Path) -> None:
    src = tmp_path / "c.npz"
    src.write_bytes((corpus / "big_vision" / "tiny_clippo.npz").read_bytes())
    before = src.read_bytes()
    assert "overwrite the input" in one_error_line(ckptlint("strip", "--keep", "params", str(src), str(src)))
    link = tmp_path / "same.npz"
    link.symlink_to(src)
    assert "overwrite the input" in one_error_line(ckptlint("strip", "--keep", "params", str(src), str(link)))
    assert "no top-level group 'weights'" in one_error_line(
        ckptlint("strip", "--keep", "weights", str(src), str(tmp_path / "o.npz"))
    )
    one_error_line(ckptlint("strip", str(src), str(tmp_path / "o.npz")))  # neither --keep nor --drop
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "same.npz"]  # no temp files left behind


# --- diff --------------------------------------------------------------------------------------------------


def test_diff_clippo_vs_bare_vit_is_one_prefix_rename(corpus: Path) -> None:
    a = corpus / "big_vision" / "tiny_clippo.npz"
    b = corpus / "big_vision" / "tiny_vit_bare.npz"
    proc = ckptlint("diff", str(a), str(b), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    arrays_a, arrays_b = npz_arrays(a), npz_arrays(b)
    # ground truth: the bare ViT is exactly the CLIPPO file's params/img subtree
    assert {k.removeprefix("params/img/") for k in arrays_a if k.startswith("params/img/")} == set(arrays_b)
    assert [(r["a_prefix"], r["b_prefix"], r["count"]) for r in doc["renames"]] == [
        ("params/img/", "", len(arrays_b))
    ]
    assert doc["shape_changes"] == [] and doc["dtype_changes"] == [] and doc["only_b"] == []
    assert set(doc["only_a"]) == {k for k in arrays_a if not k.startswith("params/img/")}
    text = ckptlint("diff", str(a), str(b))
    assert text.returncode == 1
    assert text.stdout.count("renamed ") == 1 and "params/img/… → (no prefix)…" in text.stdout


def test_diff_identical_exit_0(corpus: Path) -> None:
    a = corpus / "big_vision" / "tiny_vit.npz"
    proc = ckptlint("diff", str(a), str(a))
    assert proc.returncode == 0, proc.stderr
    assert "identical" in proc.stdout


def test_diff_shape_and_dtype_changes(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    a = {"pos_embedding": np.zeros((1, 16, 8), np.float32), "w": np.zeros((8, 8), np.float32)}
    b = {"pos_embedding": np.zeros((1, 25, 8), np.float32), "w": np.zeros((8, 8), np.float16)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    proc = ckptlint(
        "diff", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--format", "json"
    )
    doc = json.loads(proc.stdout)
    assert doc["shape_changes"] == [
        {"a": "pos_embedding", "b": "pos_embedding", "a_shape": [1, 16, 8], "b_shape": [1, 25, 8]}
    ]
    assert doc["dtype_changes"] == [{"a": "w", "b": "w", "a_dtype": "float32", "b_dtype": "float16"}]
    assert not doc["renames"] and proc.returncode == 1


def test_diff_unreadable_is_one_line(tmp_path: Path, corpus: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    one_error_line(ckptlint("diff", str(corpus / "big_vision" / "tiny_vit.npz"), str(bad)))


def test_diff_module_prefix_is_one_rename(corpus: Path) -> None:
    import torch

    plain = corpus / "open_clip" / "openclip_tiny.pt"
    ddp = corpus / "open_clip" / "openclip_tiny_ddp_module_prefix.pt"
    sd = torch.load(plain, weights_only=True)
    sd_ddp = torch.load(ddp, weights_only=True)
    assert {f"module.{k}" for k in sd} == set(sd_ddp)  # ground truth: DDP only added the prefix
    doc = json.loads(ckptlint("diff", str(plain), str(ddp), "--format", "json").stdout)
    assert [(r["a_prefix"], r["b_prefix"], r["count"]) for r in doc["renames"]] == [("", "module.", len(sd))]
    assert {(p["a"], p["b"]) for p in doc["renamed"]} == {(k, f"module.{k}") for k in sd}
    assert not (doc["only_a"] or doc["only_b"] or doc["shape_changes"] or doc["dtype_changes"])


def test_diff_open_clip_to_timm_follows_timms_own_converter(corpus: Path) -> None:
    """The known mapping names exactly the pairs timm's ``_convert_openai_clip`` produces."""
    import torch
    import tvshim  # noqa: F401
    from timm.models.vision_transformer import _convert_openai_clip

    a = corpus / "open_clip" / "openclip_tiny.pt"
    b = corpus / "timm" / "timm_vit_clip_tiny.safetensors"
    sd = torch.load(a, weights_only=True)
    truth = set()
    for k, v in sd.items():
        out = _convert_openai_clip({k: v}, None)
        truth |= {(k, new) for new in out if new != "head.bias"}
    doc = json.loads(ckptlint("diff", str(a), str(b), "--format", "json").stdout)
    assert doc["mapping"]["name"] == "open_clip-timm" and not doc["mapping"]["reverse"]
    assert {(p["a"], p["b"]) for p in doc["renamed"]} == truth
    assert set(doc["only_b"]) == {"head.bias"}  # the converter makes it up (zeros)
    assert set(doc["only_a"]) == {k for k in sd if not k.startswith("visual.")}  # timm has no text tower
    assert doc["shape_changes"] == []  # transposes/unsqueezes are part of the known mapping
    text = ckptlint("diff", str(a), str(b)).stdout
    assert text.count("mapping ") == 1 and "renamed visual" not in text


def test_diff_open_clip_vs_hf_clip_explains_every_key(corpus: Path) -> None:
    """open_clip's CLIP and transformers' CLIPModel key sets, as the libraries wrote them, map onto each other."""
    import torch
    from safetensors import safe_open

    a = corpus / "open_clip" / "openclip_tiny.pt"
    b = corpus / "hf" / "hf_clip_tiny"
    sd = torch.load(a, weights_only=True)
    with safe_open(str(b / "model.safetensors"), framework="pt") as f:
        hf = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    for x, y, reverse in ((a, b, False), (b, a, True)):
        doc = json.loads(ckptlint("diff", str(x), str(y), "--format", "json").stdout)
        assert doc["mapping"]["name"] == "open_clip-hf" and doc["mapping"]["reverse"] is reverse
        assert doc["only_a"] == [] and doc["only_b"] == [] and doc["shape_changes"] == []
    doc = json.loads(ckptlint("diff", str(a), str(b), "--format", "json").stdout)
    by_a: dict[str, list[str]] = {}
    for p in doc["renamed"]:
        by_a.setdefault(p["a"], []).append(p["b"])
    assert set(by_a) | {k for k in sd if k in hf} == set(sd)
    for ka, kbs in by_a.items():  # every pair holds the same numbers of elements (split: along dim 0)
        shapes = [list(hf[kb]) for kb in kbs]
        assert (
            sum(s[0] if s else 1 for s in shapes)
            * (int(torch.tensor(shapes[0][1:]).prod()) if len(shapes[0]) > 1 else 1)
            == sd[ka].numel()
        ), (ka, kbs)


# --- fix ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_open_clip(corpus: Path):
    """The corpus's tiny open_clip model definition, built by open_clip itself."""
    import open_clip
    import torch
    import tvshim  # noqa: F401

    cfg = json.loads((corpus / "open_clip" / "ckptlint-tiny-ViT.json").read_text())
    open_clip.factory._MODEL_CONFIGS["ckptlint-tiny-ViT"] = cfg
    torch.manual_seed(0)
    return open_clip.create_model("ckptlint-tiny-ViT")


@pytest.mark.parametrize(
    ("name", "inner"),
    [
        (
            "openclip_tiny_ddp_module_prefix.pt",
            lambda sd: {k.removeprefix("module."): v for k, v in sd.items()},
        ),
        (
            "openclip_tiny_compile_orig_mod_prefix.pt",
            lambda sd: {k.removeprefix("_orig_mod."): v for k, v in sd.items()},
        ),
        (
            "openclip_tiny_trainer_ckpt.pt",
            lambda sd: {k.removeprefix("module."): v for k, v in sd["state_dict"].items()},
        ),
    ],
)
def test_fix_wrapped_open_clip_loads_strictly(
    corpus: Path, tmp_path: Path, tiny_open_clip, name: str, inner
) -> None:
    import torch

    src = corpus / "open_clip" / name
    out = tmp_path / "fixed.pt"
    with pytest.raises(RuntimeError):  # the problem is real: open_clip refuses the file as it is
        tiny_open_clip.load_state_dict(torch.load(src, weights_only=True), strict=True)
    proc = ckptlint("fix", str(src), str(out), "--arch", "open_clip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fixed: CK" in proc.stdout and "renamed" in proc.stdout
    fixed = torch.load(out, weights_only=True)
    result = tiny_open_clip.load_state_dict(fixed, strict=True)  # ground truth: the framework accepts it
    assert not result.missing_keys and not result.unexpected_keys
    want = inner(torch.load(src, weights_only=True))
    assert set(fixed) == set(want)
    for k, v in fixed.items():
        assert torch.equal(v, want[k])


def test_fix_clippo_for_plain_vit_takes_the_img_subtree(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "big_vision" / "tiny_clippo.npz"
    before = src.read_bytes()
    out = tmp_path / "vit.npz"
    proc = ckptlint("fix", str(src), str(out), "--arch", "bv-vit")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "params/img/" not in "".join(npz_arrays(out))
    assert "CK103" in proc.stdout.split("fixed:", 1)[1].split(";", 1)[0]
    clippo, fixed = npz_arrays(src), npz_arrays(out)
    # ground truth: big_vision's own plain-ViT checkpoint of the same tiny model has exactly these keys
    assert set(fixed) == set(npz_arrays(corpus / "big_vision" / "tiny_vit.npz"))
    for k, v in fixed.items():
        assert v.tobytes() == clippo["params/img/" + k.removeprefix("params/")].tobytes()
    assert src.read_bytes() == before
    recheck = json.loads(ckptlint("check", str(out), "--arch", "bv-vit", "--format", "json").stdout)
    assert not {fd["code"] for fd in recheck["files"][0]["findings"]} & {"CK100", "CK101", "CK103"}


def test_fix_refuses_input_as_output(corpus: Path, tmp_path: Path) -> None:
    src = tmp_path / "x.pt"
    src.write_bytes((corpus / "open_clip" / "openclip_tiny_ddp_module_prefix.pt").read_bytes())
    assert "overwrite the input" in one_error_line(ckptlint("fix", str(src), str(src), "--arch", "open_clip"))
    two = ckptlint("fix", str(src), str(tmp_path / "y.pt"), "--arch", "open_clip", "--spec", str(src))
    assert "at most one of --arch, --model, --spec" in one_error_line(two)


def test_fix_without_an_expectation_uses_what_check_infers(corpus: Path, tmp_path: Path) -> None:
    """`check` without --arch infers open_clip and reports CK103 (module.); `fix` without --arch applies exactly
    that, as the command CK103 suggests."""
    src = corpus / "open_clip" / "openclip_tiny_ddp_module_prefix.pt"
    report = json.loads(ckptlint("check", str(src), "--format", "json").stdout)["files"][0]
    (ck103,) = [f for f in report["findings"] if f["code"] == "CK103"]
    assert f"`ckptlint fix {src} OUT`" in ck103["fix"]
    proc = ckptlint("fix", str(src), str(tmp_path / "y.pt"))
    assert proc.returncode == 0, proc.stderr
    assert "renamed module.… → (no prefix)…  (62 keys)" in proc.stdout and "fixed: CK103" in proc.stdout


def test_fix_drops_old_hf_position_ids(corpus: Path, tmp_path: Path) -> None:
    """transformers < 4.31 saved position_ids buffers; a strict load into today's CLIPModel refuses them."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    folder = corpus / "hf" / "hf_clip_tiny_old_position_ids"
    model = CLIPModel(CLIPConfig.from_pretrained(folder))
    sd = torch.load(folder / "pytorch_model.bin", weights_only=True)
    with pytest.raises(RuntimeError, match="position_ids"):
        model.load_state_dict(sd, strict=True)
    out = tmp_path / "pytorch_model.bin"
    proc = ckptlint("fix", str(folder / "pytorch_model.bin"), str(out), "--arch", "hf-clip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "position_ids" in proc.stdout and "CK111" in proc.stdout.split("fixed:", 1)[1].split(";", 1)[0]
    fixed = torch.load(out, weights_only=True)
    model.load_state_dict(fixed, strict=True)  # ground truth: the framework now takes it as is
    assert set(sd) - set(fixed) == {k for k in sd if k.endswith("position_ids")}


def test_diff_json_validates_against_its_schema(corpus: Path) -> None:
    import jsonschema

    schema = json.loads(ckptlint("schema", "--for", "diff").stdout)
    for a, b in (
        ("open_clip/openclip_tiny.pt", "hf/hf_clip_tiny"),
        ("big_vision/tiny_clippo.npz", "big_vision/tiny_vit.npz"),
    ):
        doc = json.loads(ckptlint("diff", str(corpus / a), str(corpus / b), "--format", "json").stdout)
        jsonschema.Draft202012Validator(schema).validate(doc)
