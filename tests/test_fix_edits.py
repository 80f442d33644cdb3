"""A fix is data: findings carry their mechanical fix as ``edits`` (JSON, SARIF), ``ckptlint fix`` applies exactly
those, so check and fix can never disagree. The edit kinds are docs/CONTRACT.md's "Edits" table."""

from __future__ import annotations

import json
from pathlib import Path

import contract
import pytest
import torch
from cli_support import ckptlint
from engine_support import CORPUS, open_clip_tiny

from ckptlint.edits import DropGroups, DropKeys, RenameKeys, RenamePrefix, TakeSubtree, key_plan

OC = CORPUS / "open_clip"


def test_edit_kinds_in_the_schema_are_the_contracts() -> None:
    schema = json.loads(ckptlint("schema").stdout)
    mapping = schema["$defs"]["Finding"]["properties"]["edits"]["items"]["discriminator"]["mapping"]
    kinds = contract.edit_kinds()
    assert set(mapping) == set(kinds)
    for kind, ref in mapping.items():
        props = schema["$defs"][ref.rsplit("/", 1)[1]]["properties"]
        assert set(props) == {"kind", *kinds[kind]}


def test_all_edits_apply_to_the_original_keys_as_the_contract_says() -> None:
    plan = key_plan(
        [
            RenamePrefix(old="module.", new=""),
            RenamePrefix(old="module.visual.", new="vision."),
            RenameKeys(renames={"module.visual.proj": "proj"}),
            DropKeys(keys=["module.x"]),
            DropGroups(groups=["optimizer"], sep="."),
        ]
    )
    assert plan("module.x") is None  # a drop wins over any rename
    assert plan("optimizer.state.0") is None and plan("optimizer") is None
    assert plan("optimizers.lr") == "optimizers.lr"  # a group is whole components
    assert plan("module.visual.proj") == "proj"  # an exact rename wins over prefixes
    assert plan("module.visual.conv1.weight") == "vision.conv1.weight"  # the longest prefix wins
    assert plan("module.ln_final.bias") == "ln_final.bias"
    assert plan("epoch") == "epoch"  # no edit: the key stays
    subtree = key_plan([TakeSubtree(prefix="params/img/", into="params/")])
    assert subtree("params/img/embedding/kernel") == "params/embedding/kernel"
    assert subtree("params/t") is None and subtree("opt/0") is None  # everything outside the subtree goes


def _check(*args: str) -> dict:
    proc = ckptlint("check", *args, "--format", "json", "--fail-on", "never")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["files"][0]


def _dump_keys(path: Path) -> set[str]:
    return set(json.loads(ckptlint("dump", str(path), "--format", "json").stdout)["tensors"])


def _follow(edits: list[dict], keys: set[str]) -> dict[str, str | None]:
    """What the contract says the edits do to each key (written from the contract's text, not from the code)."""
    out: dict[str, str | None] = {}
    for key in keys:
        drops = any(
            (e["kind"] == "drop_keys" and key in e["keys"])
            or (
                e["kind"] == "drop_groups"
                and any(key == g or key.startswith(g + e["sep"]) for g in e["groups"])
            )
            or (e["kind"] == "take_subtree" and not key.startswith(e["prefix"]))
            for e in edits
        )
        exact = [e["renames"][key] for e in edits if e["kind"] == "rename_keys" and key in e["renames"]]
        prefixes = [
            (e.get("old", e.get("prefix")), e.get("new", e.get("into")))
            for e in edits
            if e["kind"] in ("rename_prefix", "take_subtree")
            and key.startswith(e.get("old", e.get("prefix")))
        ]
        if drops:
            out[key] = None
        elif exact:
            out[key] = exact[0]
        elif prefixes:
            old, new = max(prefixes, key=lambda p: len(p[0]))
            out[key] = new + key[len(old) :]
        else:
            out[key] = key
    return out


CASES = [
    ("open_clip/openclip_tiny_ddp_module_prefix.pt", "open_clip", {"CK103": ["rename_prefix"]}),
    ("open_clip/openclip_tiny_compile_orig_mod_prefix.pt", "open_clip", {"CK103": ["rename_prefix"]}),
    (
        "open_clip/openclip_tiny_trainer_ckpt.pt",
        "open_clip",
        {"CK103": ["rename_prefix"], "CK201": ["drop_groups"]},
    ),
    ("big_vision/tiny_clippo.npz", "bv-vit", {"CK103": ["take_subtree"], "CK201": ["drop_groups"]}),
    ("hf/hf_clip_tiny_old_position_ids/pytorch_model.bin", "hf-clip", {"CK111": ["drop_keys"]}),
    ("hf/hf_clip_tiny/model.safetensors", "open_clip", {"CK104": ["convert"]}),  # a conversion table exists
    ("timm/timm_vit_clip_tiny.safetensors", "open_clip", {}),  # vision only: open_clip cannot load it
]


@pytest.mark.parametrize(("name", "arch", "kinds"), CASES)
def test_fix_applies_exactly_the_edits_check_reports(
    name: str, arch: str, kinds: dict[str, list[str]], tmp_path: Path
) -> None:
    src = CORPUS / name
    before = _check(str(src), "--arch", arch)
    carried = {f["code"]: [e["kind"] for e in f["edits"]] for f in before["findings"] if f["edits"]}
    assert carried == kinds
    edits = [e for f in before["findings"] for e in f["edits"]]
    out = tmp_path / src.name
    proc = ckptlint("fix", str(src), str(out), "--arch", arch)
    assert proc.returncode in (0, 1), proc.stderr
    if any(e["kind"] == "convert" for e in edits):  # the whole checkpoint in the expected model's names
        want = set(open_clip_tiny().state_dict())
    else:
        want = {v for v in _follow(edits, _dump_keys(src)).values() if v is not None}
    assert _dump_keys(out) == want
    if not edits:
        assert "nothing mechanical to change" in proc.stdout
    after = {f["code"] for f in _check(str(out), "--arch", arch)["findings"]}
    assert not after & set(kinds)  # what the edits fix is no longer reported


def test_sarif_carries_the_same_edits_as_json() -> None:
    src = str(OC / "openclip_tiny_ddp_module_prefix.pt")
    edits = {f["code"]: f["edits"] for f in _check(src, "--arch", "open_clip")["findings"]}
    assert edits["CK103"] == [{"kind": "rename_prefix", "old": "module.", "new": ""}]  # DDP's own prefix
    sarif = json.loads(ckptlint("check", src, "--arch", "open_clip", "--format", "sarif").stdout)
    results = sarif["runs"][0]["results"]
    assert {r["ruleId"]: r["properties"].get("edits", []) for r in results} == edits


def test_a_transpose_is_reported_and_not_applied(tmp_path: Path) -> None:
    """CK109's edit changes values: ``fix`` names it as not applied and leaves the tensor as it is."""
    sd = dict(open_clip_tiny().state_dict())
    sd["visual.proj"] = sd["visual.proj"].T.contiguous()
    src = tmp_path / "transposed.pt"
    torch.save(sd, src)
    arch = "open_clip:custom,embed_dim=32"
    (ck109,) = [f for f in _check(str(src), "--arch", arch)["findings"] if f["code"] == "CK109"]
    assert ck109["edits"] == [{"kind": "transpose", "keys": ["visual.proj"]}]
    out = tmp_path / "out.pt"
    proc = ckptlint("fix", str(src), str(out), "--arch", arch)
    assert "not applied (CK109, changes values): transpose visual.proj" in proc.stdout
    assert torch.equal(torch.load(out, weights_only=True)["visual.proj"], sd["visual.proj"])
    assert "CK109" in proc.stdout.split("still reported:", 1)[1]
