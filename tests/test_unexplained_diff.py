"""No verdict without an explanation: every raw-diff entry of a report is accounted for by a finding.

An expectation -- given (``--arch``), declared by the checkpoint's config or inferred from its shapes -- gives a raw
diff (missing / unexpected / shape mismatch, as the framework itself reports them). Whatever the source of the
expectation, an entry of that diff must never leave the report "clean" silently. A finding accounts for an entry
when it names it (its ``keys`` are the checkpoint's keys, its ``details`` the model's names), when it is the
catch-all of that kind (CK100 missing, CK101 unexpected, CK102 shape: they count every key they take), or when it
is an error that explains the whole diff at once and therefore cannot list every key (a wrapper prefix, another
framework's layout, a tower absent, another variant, a contradicted declaration, a shard missing).

Checked over every corpus and example checkpoint against every architecture (and none), and over the same files
broken the way hand conversions break them (a kernel transposed, a tensor dropped, one added, one resized),
rewritten with the real libraries and checked without ``--arch``; and on the case the audit found, with open_clip
as the oracle: projections stored transposed, checked without ``--arch``, give CK109 as with it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_support import ckptlint
from engine_support import (
    CORPUS,
    assert_diff_matches_torch,
    open_clip_tiny,
    read_checkpoint,
    save_safetensors,
    structural,
)
from safetensors.torch import load_file, save_file

from ckptlint.api import check_checkpoint
from ckptlint.archs import list_archs
from ckptlint.results import FileReport

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors", ".npz", ".npy", ".msgpack"}
CONFIGS = ("config.json", "open_clip_config.json")
CATCH_ALL = {"missing": "CK100", "unexpected": "CK101", "shape": "CK102"}
# errors that explain the whole diff at once (their findings carry evidence, not every key)
WHOLESALE = {"CK002", "CK103", "CK104", "CK105", "CK112", "CK113", "CK114"}


def checkpoints() -> list[Path]:
    """Every checkpoint of the corpus and the examples: weight files, and folders a config makes one model."""
    found: list[Path] = []
    for root in (CORPUS, EXAMPLES):
        for p in sorted(root.rglob("*")):
            folder = p.is_dir() and any((p / c).is_file() for c in CONFIGS)
            loose = p.suffix in WEIGHT_SUFFIXES and not any((p.parent / c).is_file() for c in CONFIGS)
            if folder or loose:
                found.append(p)
    return found


def _named(report: FileReport) -> set[str]:
    """Every string a finding names: its keys, and every string or mapping key in its details."""
    out: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, str):
            out.add(v)
        elif isinstance(v, dict):
            for k, x in v.items():
                out.add(str(k))
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    for f in report.findings:
        walk(f.keys)
        walk(f.details)
    return out


def unexplained(report: FileReport) -> list[tuple[str, str]]:
    """(kind, key) of the raw-diff entries no finding accounts for."""
    diff = report.diff
    if diff is None:
        return []
    codes = {f.code for f in report.findings}
    if any(f.code in WHOLESALE and f.severity == "error" for f in report.findings):
        return []
    named = _named(report)

    def is_named(key: str) -> bool:  # the model's name, or the file's (``module.`` + key, ``params/`` + key)
        return key in named or any(s.endswith(("." + key, "/" + key)) for s in named)

    entries = [("missing", k) for k in diff.missing]
    entries += [("unexpected", k) for k in diff.unexpected]
    entries += [("shape", m.key) for m in diff.shape_mismatch]
    return [(kind, k) for kind, k in entries if CATCH_ALL[kind] not in codes and not is_named(k)]


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(p.parents[1])) for p in paths]


ARCHS = [None, *sorted(a.name for a in list_archs())]
FILES = checkpoints()


def test_the_corpus_is_all_there() -> None:
    names = {p.name for p in FILES}
    assert {"openclip_tiny.pt", "tiny_clippo.npz", "hf_clip_tiny", "openclip_hub_context_length"} <= names
    assert len(FILES) >= 20


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_every_diff_entry_is_accounted_for_against_every_arch(path: Path) -> None:
    ckpt = read_checkpoint(path)
    for arch in ARCHS:
        report = check_checkpoint(ckpt, arch=arch)
        assert unexplained(report) == [], (arch, [(f.code, f.message[:120]) for f in report.findings])


# ---- the same files broken the way hand conversions break them -------------------------------------------------
Tensors = dict[str, Any]


def _weights(path: Path) -> Path | None:
    """The one weights file of a checkpoint this test can rewrite: safetensors (file or in a folder), or npz."""
    if path.is_dir():
        files = [p for p in sorted(path.iterdir()) if p.suffix == ".safetensors"]
        return files[0] if len(files) == 1 else None
    return path if path.suffix in (".safetensors", ".npz") else None


def _load(path: Path) -> Tensors:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return dict(load_file(str(path)))


def _save(tensors: Tensors, path: Path) -> None:
    if path.suffix == ".npz":
        np.savez(path, **tensors)
    else:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def _weight_keys(t: Tensors, npz: bool) -> list[str]:
    """Model weights only (big_vision trainer files also hold ``opt/`` and ``chrono/``)."""
    keys = sorted(t)
    if npz and any(k.startswith("params/") for k in keys):
        keys = [k for k in keys if k.startswith("params/")]
    return keys


def _transposed(t: Tensors, npz: bool) -> bool:
    for k in _weight_keys(t, npz):
        if t[k].ndim == 2 and t[k].shape[0] != t[k].shape[1] and 1 not in t[k].shape:
            t[k] = t[k].T.copy() if npz else t[k].T.contiguous()
            return True
    return False


def _dropped(t: Tensors, npz: bool) -> bool:
    del t[_weight_keys(t, npz)[-1]]
    return True


def _extra(t: Tensors, npz: bool) -> bool:
    if npz:
        root = "params/" if any(k.startswith("params/") for k in t) else ""
        t[root + "extra_head/kernel"] = np.zeros((4, 3), np.float32)
    else:
        t["extra_head.weight"] = torch.zeros(3, 4)
    return True


def _resized(t: Tensors, npz: bool) -> bool:
    for k in _weight_keys(t, npz):
        if t[k].ndim == 1 and t[k].shape[0] > 2:
            t[k] = t[k][:-1].copy() if npz else t[k][:-1].contiguous()
            return True
    return False


MUTATIONS: dict[str, Callable[[Tensors, bool], bool]] = {
    "transposed": _transposed,
    "dropped": _dropped,
    "extra": _extra,
    "resized": _resized,
}
REWRITABLE = [p for p in FILES if _weights(p) is not None]


def _broken(path: Path, tmp: Path) -> Iterator[tuple[str, Path]]:
    """Each mutation of ``path``, written by the real library into ``tmp`` (folders copied with their configs)."""
    source = _weights(path)
    assert source is not None
    for name, mutate in MUTATIONS.items():
        target = tmp / name / path.name
        if path.is_dir():
            shutil.copytree(path, target)
            weights = target / source.name
        else:
            target.parent.mkdir(parents=True)
            weights = target
        tensors = _load(source)
        if not mutate(tensors, source.suffix == ".npz"):
            continue
        _save(tensors, weights)
        yield name, target


@pytest.mark.parametrize("path", REWRITABLE, ids=_ids(REWRITABLE))
def test_every_diff_entry_of_a_broken_file_is_accounted_for_without_arch(path: Path, tmp_path: Path) -> None:
    """Without --arch the expectation is declared or inferred: a broken file still gets its finding."""
    seen = 0
    for name, broken in _broken(path, tmp_path):
        report = check_checkpoint(read_checkpoint(broken))
        seen += 1
        assert unexplained(report) == [], (name, [(f.code, f.message[:120]) for f in report.findings])
    assert seen >= 3


# ---- the audit's case, with open_clip as the oracle ------------------------------------------------------------
def _transposed_projections(path: Path, **cfg: Any) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """An open_clip state_dict whose visual.proj and text_projection a hand conversion stored (out, in)."""
    model = open_clip_tiny(**cfg)
    sd = dict(model.state_dict())
    for k in ("visual.proj", "text_projection"):
        sd[k] = sd[k].T.contiguous()
    save_safetensors(sd, path)
    return model, sd


@pytest.mark.parametrize(
    "cfg",
    [{}, {"vision_cfg": {"width": 36, "head_width": 18}, "text_cfg": {"width": 20}, "embed_dim": 28}],
    ids=["square-text-projection", "both-non-square"],
)
def test_transposed_projections_without_arch_are_ck109_as_with_it(
    tmp_path: Path, cfg: dict[str, Any]
) -> None:
    path = tmp_path / "transposed.safetensors"
    model, sd = _transposed_projections(path, **cfg)
    ckpt = read_checkpoint(path)
    inferred = check_checkpoint(ckpt)
    flagged = check_checkpoint(ckpt, arch="open_clip")
    assert inferred.arch is not None and inferred.arch.source == "inferred"
    assert_diff_matches_torch(inferred, model, sd)  # torch's size-mismatch keys, not one more or less
    assert structural(inferred) == structural(flagged) == ["CK109"], [
        (f.code, f.message) for f in inferred.findings
    ]
    assert inferred.findings[0].details["keys"] == flagged.findings[0].details["keys"]
    assert [e.model_dump() for e in inferred.findings[0].edits] == [
        e.model_dump() for e in flagged.findings[0].edits
    ]


def test_transposed_projections_without_arch_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "transposed.safetensors"
    _transposed_projections(path)
    proc = ckptlint("check", str(path))
    assert proc.returncode == 1, proc.stdout
    assert "CK109" in proc.stdout and "visual.proj" in proc.stdout


# ---- the safety net: a rule that takes diff entries without a word gives them back ------------------------------
SWALLOWER = '''\
"""DEMO900 — swallows every shape mismatch and says nothing

What it does
    Consumes every shape mismatch of the raw diff and reports nothing: a plugin rule written for ckptlint's tests.

Why is this bad?
    It is the bug the engine guards against.

Example
    $ ckptlint check transposed.safetensors
    (nothing)

Fix
    None.
"""

from ckptlint.rules.base import Rule, Stage, rule


@rule("DEMO900", "warning", "swallows shape mismatches (a plugin rule)", stage=Stage.LAYOUT, order=0, rank=1)
class SwallowRule(Rule):
    needs = "any"

    def check(self, ctx):
        ctx.consume_shape(list(ctx.shape))
        return []
'''


def test_entries_a_rule_consumes_without_a_finding_still_reach_the_catch_alls(tmp_path: Path) -> None:
    """A plugin rule (a real installed distribution) that consumes every shape mismatch and reports nothing:
    the mismatch is still reported (here as CK109), the exit code still 1."""
    site = tmp_path / "site"
    (site / "ckptlint_swallow").mkdir(parents=True)
    (site / "ckptlint_swallow" / "__init__.py").write_text("")
    (site / "ckptlint_swallow" / "swallow.py").write_text(SWALLOWER)
    dist = site / "ckptlint_swallow-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ckptlint-swallow\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ckptlint.rules]\nswallow = ckptlint_swallow.swallow\n")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}
    path = tmp_path / "transposed.safetensors"
    _transposed_projections(path)
    assert "DEMO900" in ckptlint("rules", env=env).stdout  # the swallower is installed and runs first
    for arch in ([], ["--arch", "open_clip"]):
        proc = ckptlint("check", str(path), *arch, "--format", "json", env=env)
        (file,) = json.loads(proc.stdout)["files"]
        assert proc.returncode == 1, file["findings"]
        assert [f["code"] for f in file["findings"] if f["code"] != "CK107"] == ["CK109"]
        assert unexplained(FileReport.model_validate(file)) == []
