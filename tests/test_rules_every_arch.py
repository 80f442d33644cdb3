"""Every architecture name of CONTRACT.md through the engine: a checkpoint laid out exactly as the
architecture's expected tree passes, and the same tree under a DataParallel prefix (torch) or one_tower nesting
(big_vision) gives CK103 — built header-only from ``resolve_expected`` (no weights are allocated, so default-size
variants such as ViT-B/16 cost nothing)."""

from __future__ import annotations

import pytest
from cli_support import CONTRACT_ARCHS

from ckptlint.archs import list_archs, resolve_expected
from ckptlint.checkpoint import Checkpoint, tensor_info
from ckptlint.engine import CheckConfig, run


def _checkpoint(arch: str, wrap: str) -> tuple[Checkpoint, object]:
    expected = resolve_expected(arch, None)
    flax = expected.key_sep == "/"
    root = "params/" + wrap if flax else wrap
    tensors = {root + k: tensor_info(t.shape, t.dtype) for k, t in expected.tensors.items()}
    fmt = "npz" if flax else "safetensors"
    ckpt = Checkpoint(path=f"{arch}.{fmt}", format=fmt, key_sep=expected.key_sep, tensors=tensors)
    return ckpt, expected


def test_contract_archs_are_listed() -> None:
    assert set(CONTRACT_ARCHS) <= {a.name for a in list_archs()}


@pytest.mark.parametrize("arch", CONTRACT_ARCHS)
def test_own_tree_passes(arch: str) -> None:
    ckpt, expected = _checkpoint(arch, "")
    report = run(ckpt, expected, CheckConfig(ignore=("CK107",)))
    assert report.findings == [], [(f.code, f.message) for f in report.findings]
    assert report.diff is not None and report.diff.missing == report.diff.unexpected == []


@pytest.mark.parametrize("arch", CONTRACT_ARCHS)
def test_wrapped_tree_is_a_prefix_problem(arch: str) -> None:
    expected = resolve_expected(arch, None)
    wrap = "img/" if expected.key_sep == "/" else "module."
    ckpt, expected = _checkpoint(arch, wrap)
    report = run(ckpt, expected, CheckConfig(ignore=("CK107",)))
    assert report.findings[0].code == "CK103", [(f.code, f.message) for f in report.findings]
    assert report.findings[0].details["from"] == wrap
    assert not {"CK100", "CK101", "CK102"} & {f.code for f in report.findings}
