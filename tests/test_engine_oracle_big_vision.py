"""Oracle tests for the rule engine, big_vision (flax) checkpoints.

Files: the real tiny big_vision checkpoints of the corpus (tiny_vit.npz, tiny_vit_bare.npz, tiny_clippo.npz,
written by big_vision's own save_checkpoint) and old layouts built from them exactly as
big_vision_layouts.md §4 describes. Expectations: a flax re-creation of big_vision's ViT / CLIPPO one_tower
(``bv_replica``) whose parameter tree is first checked against the real files. The raw diff must equal the key
sets big_vision's ``merge_params`` compares (params view vs model tree), and a wrapper-nesting finding must
name the very parameter flax's ``ScopeParamNotFoundError`` names when the model is applied to the file's
params.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import bv_replica
import flax.errors
import numpy as np
import pytest
from engine_support import CORPUS, check, read_checkpoint, structural, top
from flax.traverse_util import unflatten_dict

from ckptlint.expected import Expected, ExpectedTensor, expected_from_checkpoint
from ckptlint.views import params_view

BV = CORPUS / "big_vision"
_SCOPE = re.compile(r'Could not find parameter named "([^"]+)" in scope "([^"]*)"')


def expected_from_flax(model: Any, *inputs: Any, arch: str, towers: dict[str, list[str]]) -> Expected:
    return Expected(
        arch=arch,
        variant="tiny",
        source="model",
        framework="big_vision",
        key_sep="/",
        tensors={
            k: ExpectedTensor(shape=s, dtype=d)
            for k, (s, d) in bv_replica.param_shapes(model, *inputs).items()
        },
        towers=towers,
    )


@pytest.fixture(scope="module")
def vit() -> Any:
    return bv_replica.ViT(**bv_replica.TINY)


@pytest.fixture(scope="module")
def one_tower() -> Any:
    return bv_replica.OneTower(bv_replica.TINY)


@pytest.fixture(scope="module")
def vit_expected(vit: Any) -> Expected:
    return expected_from_flax(vit, bv_replica.image(), arch="bv-vit", towers={"vision": [""]})


@pytest.fixture(scope="module")
def clippo_expected(one_tower: Any) -> Expected:
    x = bv_replica.image()
    return expected_from_flax(one_tower, x, x, arch="clippo", towers={"vision": ["img/"]})


def npz_params(path: Path) -> dict[str, np.ndarray]:
    """big_vision's load_params on a trusted test file: the ``params`` group (or the bare tree), as arrays."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return params_view(arrays)[0]


def merge_params_sets(
    params: dict[str, Any], expected: Expected
) -> tuple[set[str], set[str], dict[str, Any]]:
    """What big_vision's merge_params (key sets) and the first apply (shapes) report for the pair."""
    exp = {k: t.shape for k, t in expected.tensors.items()}
    missing = set(exp) - set(params)
    unexpected = set(params) - set(exp)
    shapes = {k: (exp[k], tuple(v.shape)) for k, v in params.items() if k in exp and tuple(v.shape) != exp[k]}
    return missing, unexpected, shapes


def assert_diff_matches_flax(report: Any, params: dict[str, Any], expected: Expected) -> None:
    missing, unexpected, shapes = merge_params_sets(params, expected)
    assert set(report.diff.missing) == missing
    assert set(report.diff.unexpected) == unexpected
    assert {m.key: (tuple(m.expected), tuple(m.actual)) for m in report.diff.shape_mismatch} == shapes


def flax_scope_error(model: Any, params: dict[str, Any], *inputs: Any) -> str:
    """Apply the model to the params as stored and return the parameter flax cannot find, as /scope/name."""
    with pytest.raises(flax.errors.ScopeParamNotFoundError) as info:
        model.apply({"params": unflatten_dict(params, sep="/")}, *inputs)
    m = _SCOPE.search(str(info.value))
    assert m is not None
    return f"{m.group(2).rstrip('/')}/{m.group(1)}"


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)  # what big_vision's save_checkpoint does (uncompressed np.savez)
    return path


# ---- the replica is big_vision -----------------------------------------------------------------------------
def test_replica_trees_equal_the_real_big_vision_files(
    vit_expected: Expected, clippo_expected: Expected
) -> None:
    vit_file = npz_params(BV / "tiny_vit.npz")
    assert {k: t.shape for k, t in vit_expected.tensors.items()} == {k: v.shape for k, v in vit_file.items()}
    clippo_file = npz_params(BV / "tiny_clippo.npz")
    assert {k: t.shape for k, t in clippo_expected.tensors.items()} == {
        k: v.shape for k, v in clippo_file.items()
    }


# ---- clean files pass --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny_vit.npz", "tiny_vit_bare.npz"])
def test_clean_vit_passes(name: str, vit_expected: Expected) -> None:
    report = check(read_checkpoint(BV / name), vit_expected)
    assert structural(report) == []
    assert_diff_matches_flax(report, npz_params(BV / name), vit_expected)


def test_reference_checkpoint_as_expectation() -> None:
    """expected_from_checkpoint of a full big_vision file (params/ prefix) checks like a model's tree."""
    expected = expected_from_checkpoint(read_checkpoint(BV / "tiny_vit.npz"))
    report = check(read_checkpoint(BV / "tiny_vit_bare.npz"), expected)
    assert report.diff is not None and report.diff.missing == [] and structural(report) == []


def test_clippo_with_clippo_expectation(clippo_expected: Expected) -> None:
    report = check(read_checkpoint(BV / "tiny_clippo.npz"), clippo_expected)
    assert [f.code for f in report.findings] == ["CK201", "CK107"]
    assert_diff_matches_flax(report, npz_params(BV / "tiny_clippo.npz"), clippo_expected)
    ck201 = report.findings[0]
    assert ck201.details["optimizer_groups"] == ["opt"] and ck201.details["counter_groups"] == ["chrono"]
    total = sum(t.nbytes for t in read_checkpoint(BV / "tiny_clippo.npz").tensors.values())
    assert f"{total / ck201.details['weights_bytes']:.1f}×" in ck201.message


# ---- wrapper nesting, both ways ----------------------------------------------------------------------------
def test_clippo_into_plain_vit(vit: Any, vit_expected: Expected) -> None:
    report = check(read_checkpoint(BV / "tiny_clippo.npz"), vit_expected)
    params = npz_params(BV / "tiny_clippo.npz")
    assert_diff_matches_flax(report, params, vit_expected)
    assert top(report) == "CK103"
    f = report.findings[0]
    assert (
        f.details["from"] == "img/" and f.details["kind"] == "one_tower" and f.details["companions"] == ["t"]
    )
    assert f.details["flax_error"] == flax_scope_error(vit, params, bv_replica.image()) == "/embedding/kernel"
    assert "flax will raise ScopeParamNotFoundError for /embedding/kernel; take params['img']" in f.message
    assert "params/img/" in f.message and "one_tower" in f.fix
    assert set(structural(report)) == {"CK103", "CK201"}


def test_plain_vit_into_clippo(one_tower: Any, clippo_expected: Expected) -> None:
    report = check(read_checkpoint(BV / "tiny_vit.npz"), clippo_expected)
    params = npz_params(BV / "tiny_vit.npz")
    assert_diff_matches_flax(report, params, clippo_expected)
    assert top(report) == "CK103" and structural(report) == ["CK103"]
    f = report.findings[0]
    x = bv_replica.image()
    assert f.details["to"] == "img/" and f.details["companions"] == ["t"]
    assert f.details["flax_error"] == flax_scope_error(one_tower, params, x, x) == "/img/embedding/kernel"


# ---- old layouts (big_vision_layouts.md §4), built from the tiny ViT ---------------------------------------
def _old(kind: str) -> dict[str, np.ndarray]:
    with np.load(BV / "tiny_vit.npz") as z:
        p = {k: z[k] for k in z.files}
    pe = p.pop("params/pos_embedding")
    cls_pe = np.concatenate([np.zeros((1, 1, pe.shape[2]), pe.dtype), pe], axis=1)
    if kind == "very_old_posemb":
        p["params/Transformer/posembed_input/pos_embedding"] = pe
    elif kind == "old_posemb":
        p["params/Transformer/pos_embedding"] = pe
    elif kind == "cls_in_posemb":
        p["params/pos_embedding"] = cls_pe
    elif kind == "very_old_with_cls":  # the ViT-paper AugReg files: both fix-ups fire
        p["params/Transformer/posembed_input/pos_embedding"] = cls_pe
    elif kind == "inlined_map_head":
        p["params/pos_embedding"] = pe
        for k in [k for k in p if k.startswith("params/MAPHead_0/")]:
            p["params/" + k[len("params/MAPHead_0/") :]] = p.pop(k)
    return p


OLD = {
    "very_old_posemb": 1,
    "old_posemb": 1,
    "cls_in_posemb": 1,
    "very_old_with_cls": 2,
    "inlined_map_head": 1,
}


@pytest.mark.parametrize("kind", list(OLD))
def test_old_layouts(kind: str, vit: Any, vit_expected: Expected, tmp_path: Path) -> None:
    path = save_npz(tmp_path / f"{kind}.npz", _old(kind))
    report = check(read_checkpoint(path), vit_expected)
    params = npz_params(path)
    assert_diff_matches_flax(report, params, vit_expected)
    assert structural(report) == ["CK111"] * OLD[kind], [(f.code, f.message) for f in report.findings]
    if kind != "cls_in_posemb":  # a k²+1 posemb is found at apply time, not by scope lookup
        scope = flax_scope_error(vit, params, bv_replica.image())
        moved = [d for f in report.findings for r in f.details.get("renames", []) for d in [r["to"]]]
        moved += [f"{f.details['under']}{k}" for f in report.findings for k in f.details.get("moved", [])]
        assert scope.lstrip("/") in moved  # the parameter flax misses is one the fix-up provides
    # the same layout is recognised without any expectation
    alone = check(read_checkpoint(path), None)
    assert [f.code for f in alone.findings if f.code == "CK111"] == ["CK111"] * OLD[kind]


# ---- resolution, variant, dtype ----------------------------------------------------------------------------
def test_resolution_change(vit_expected: Expected, tmp_path: Path) -> None:
    big = bv_replica.ViT(**bv_replica.TINY)
    expected = expected_from_flax(big, bv_replica.image(64), arch="bv-vit", towers={"vision": [""]})
    report = check(read_checkpoint(BV / "tiny_vit.npz"), expected)
    assert_diff_matches_flax(report, npz_params(BV / "tiny_vit.npz"), expected)
    assert structural(report) == ["CK110"]
    f = report.findings[0]
    assert "resample_posemb" in f.fix and f.details["image_size"] == {"checkpoint": 32, "model": 64}


def test_other_variant(tmp_path: Path) -> None:
    wide = bv_replica.ViT(**{**bv_replica.TINY, "width": 48, "num_heads": 3, "depth": 3})
    expected = expected_from_flax(wide, bv_replica.image(), arch="bv-vit", towers={"vision": [""]})
    report = check(read_checkpoint(BV / "tiny_vit.npz"), expected)
    assert_diff_matches_flax(report, npz_params(BV / "tiny_vit.npz"), expected)
    assert structural(report) == ["CK112"], [(f.code, f.message) for f in report.findings]
    fields = report.findings[0].details["fields"]["vision"]
    assert fields["width"] == [48, 32] and fields["depth"] == [3, 2] and fields["heads"] == [3, 2]


def test_bfloat16_params(vit_expected: Expected, tmp_path: Path) -> None:
    import ml_dtypes

    with np.load(BV / "tiny_vit.npz") as z:
        arrays = {k: z[k].astype(ml_dtypes.bfloat16) for k in z.files}
    path = save_npz(tmp_path / "bf16.npz", arrays)
    report = check(read_checkpoint(path), vit_expected)
    assert structural(report) == ["CK106"]
    assert report.findings[0].details == {"from": "bfloat16", "to": "float32", "count": 54}


def test_very_old_flax_optim_checkpoint(vit_expected: Expected, tmp_path: Path) -> None:
    """flax.optim files keep the weights at opt/target/ (load_params reads them there) next to the moments."""
    with np.load(BV / "tiny_vit.npz") as z:
        arrays = {"opt/target/" + k[len("params/") :]: z[k] for k in z.files}
    arrays.update(
        {k.replace("opt/target/", "opt/state/param_states/") + "/grad_ema": v for k, v in arrays.items()}
    )
    arrays["opt/state/step"] = np.array(7, np.int32)
    path = save_npz(tmp_path / "optim.npz", arrays)
    report = check(read_checkpoint(path), vit_expected)
    assert report.diff is not None and report.diff.missing == [] and report.diff.unexpected == []
    assert structural(report) == ["CK201"]
    assert report.findings[0].details["weights_group"] == "opt/target"
