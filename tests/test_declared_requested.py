"""CK114: ``--arch`` that contradicts the checkpoint's own declaration is said first, and what follows from it is
folded into it (kept in its details and in the raw diff). Folders are the corpus' transformers ``save_pretrained``
output; the open_clip case is in test_declared_open_clip.py."""

from __future__ import annotations

import json

from cli_support import ckptlint
from engine_support import CORPUS

from ckptlint import check

SIGLIP = CORPUS / "hf" / "hf_siglip_tiny"
CLIP = CORPUS / "hf" / "hf_clip_tiny"
FOLDED = {"CK100", "CK101", "CK102", "CK103", "CK104", "CK105", "CK106", "CK108", "CK109", "CK110", "CK112"}


def test_siglip_folder_checked_as_clip_is_ck114_first() -> None:
    proc = ckptlint("check", str(SIGLIP), "--arch", "hf-clip", "--format", "json")
    assert proc.returncode == 1
    (f,) = json.loads(proc.stdout)["files"]
    first = f["findings"][0]
    assert first["code"] == "CK114" and first["severity"] == "error"
    assert "--arch hf-clip asks for transformers CLIPModel" in first["message"]
    assert "config.json declares model_type siglip (hf-siglip: transformers SiglipModel)" in first["message"]
    assert "--arch hf-siglip" in first["fix"]
    assert not FOLDED & {x["code"] for x in f["findings"]}  # no follow-on root causes
    folded = {x["code"] for x in first["details"]["folded"]}
    assert folded and folded <= FOLDED
    assert f["diff"]["missing"] and f["diff"]["unexpected"]  # the raw diff is kept whole


def test_ignoring_ck114_shows_what_it_folded() -> None:
    folded = check(str(SIGLIP), arch="hf-clip").files[0].findings[0].details["folded"]
    unfolded = check(str(SIGLIP), arch="hf-clip", ignore=["CK114"]).files[0]
    assert [x["code"] for x in folded] == [x.code for x in unfolded.findings if x.code in FOLDED]


def test_requests_the_declaration_allows_are_not_ck114() -> None:
    assert "CK114" not in [x.code for x in check(str(SIGLIP), arch="hf-siglip").files[0].findings]
    # a CLIPModel config builds a CLIPVisionModel too (transformers reads vision_config)
    assert "CK114" not in [x.code for x in check(str(CLIP), arch="hf-clip-vision").files[0].findings]


def test_another_framework_is_ck104_not_ck114() -> None:
    codes = [x.code for x in check(str(CLIP), arch="open_clip").files[0].findings]
    assert "CK114" not in codes and codes[0] == "CK104"
