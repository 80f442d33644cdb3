"""A rule is one file, from any package: a plugin distribution names its rule module under the entry point group
``ckptlint.rules`` (as flake8's extensions do), and the rule shows up everywhere a built-in one does — ``ckptlint
rules``, ``ckptlint explain``, the JSON schema, the engine (at its stage, shown at its rank) and SARIF's rule list.

The plugin here is a real installed distribution as far as ``importlib.metadata`` is concerned: a package and its
``*.dist-info`` (METADATA, entry_points.txt) on the interpreter's path, in a temporary folder.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from cli_support import ckptlint

ROOT = Path(__file__).resolve().parent.parent
CLIPPO = ROOT / "examples" / "clippo_tiny.npz"

RULE_MODULE = '''\
"""DEMO100 — one-dimensional tensors

What it does
    Counts the 1-d tensors of the weights (biases, norm scales): a plugin rule written for ckptlint's tests.

Why is this bad?
    It is not; it shows that a rule from another package is listed, documented, run and reported.

Example
    $ ckptlint check clippo_tiny.npz
    DEMO100 warning  24 one-dimensional tensors

Fix
    None needed.
"""

from ckptlint.rules.base import Message, Rule, Stage, rule


class OneDimensional(Message):
    code = "DEMO100"
    message = "{n} one-dimensional tensors"


@rule("DEMO100", "warning", "one-dimensional tensors (a plugin rule)", stage=Stage.METADATA, order=9, rank=95)
class OneDimensionalRule(Rule):
    needs = "none"

    def check(self, ctx):
        keys = [k for k, t in ctx.view.items() if len(t.shape) == 1]
        return [OneDimensional(keys=[ctx.file_key(k) for k in keys], n=len(keys))] if keys else []
'''


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("site")
    (site / "ckptlint_demo_rules").mkdir()
    (site / "ckptlint_demo_rules" / "__init__.py").write_text("")
    (site / "ckptlint_demo_rules" / "one_dimensional.py").write_text(RULE_MODULE)
    dist = site / "ckptlint_demo_rules-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ckptlint-demo-rules\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ckptlint.rules]\ndemo = ckptlint_demo_rules.one_dimensional\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def test_plugin_rule_is_listed_and_explained(plugin_env: dict[str, str]) -> None:
    rules = json.loads(ckptlint("rules", "--format", "json", env=plugin_env).stdout)
    assert {
        "code": "DEMO100",
        "severity": "warning",
        "summary": "one-dimensional tensors (a plugin rule)",
    } in rules
    assert "CK103" in {r["code"] for r in rules}
    explained = ckptlint("explain", "demo100", env=plugin_env)
    assert explained.returncode == 0
    assert explained.stdout.rstrip("\n") == textwrap.dedent(RULE_MODULE.split('"""')[1]).strip()
    assert "DEMO100" not in ckptlint("rules").stdout  # only where the plugin is installed


def test_plugin_rule_is_in_the_json_schema(plugin_env: dict[str, str]) -> None:
    schema = json.loads(ckptlint("schema", env=plugin_env).stdout)
    codes = schema["$defs"]["Finding"]["properties"]["code"]["anyOf"]
    assert {c.get("const") for c in codes} >= {"DEMO100", "CK103", "CK301"}


def test_plugin_rule_runs_at_its_stage_and_shows_at_its_rank(plugin_env: dict[str, str]) -> None:
    proc = ckptlint("check", str(CLIPPO), "--arch", "bv-vit", "--format", "json", env=plugin_env)
    (file,) = json.loads(proc.stdout)["files"]
    demo = next(f for f in file["findings"] if f["code"] == "DEMO100")
    # the weights bv-vit loads are params/img/… (CK103 takes the subtree first): their 1-d tensors, in file keys
    import numpy as np

    with np.load(CLIPPO) as z:
        one_d = {k for k in z.files if k.startswith("params/") and z[k].ndim == 1}
    assert demo["severity"] == "warning" and demo["message"] == f"{len(one_d)} one-dimensional tensors"
    assert set(demo["keys"]) <= one_d
    # warnings by rank: CK201 (90) < DEMO100 (95) < CK107 (100)
    assert [f["code"] for f in file["findings"]] == ["CK103", "CK201", "DEMO100", "CK107"]
    only = ckptlint("check", str(CLIPPO), "--select", "DEMO", "--format", "json", env=plugin_env)
    assert [f["code"] for f in json.loads(only.stdout)["files"][0]["findings"]] == ["DEMO100"]


def test_plugin_rule_is_in_sarifs_rule_list(plugin_env: dict[str, str]) -> None:
    proc = ckptlint("check", str(CLIPPO), "--arch", "bv-vit", "--format", "sarif", env=plugin_env)
    (run,) = json.loads(proc.stdout)["runs"]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert rules["DEMO100"]["shortDescription"]["text"] == "one-dimensional tensors (a plugin rule)"
    assert rules["DEMO100"]["defaultConfiguration"]["level"] == "warning"
    assert rules["DEMO100"]["help"]["text"].startswith("DEMO100 — one-dimensional tensors")
    assert any(r["ruleId"] == "DEMO100" for r in run["results"])


def test_a_broken_plugin_is_one_error_line(plugin_env: dict[str, str], tmp_path: Path) -> None:
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ckptlint.rules]\nbroken = no_such_module_for_ckptlint\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), plugin_env["PYTHONPATH"]])}
    proc = ckptlint("rules", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        "ckptlint: error: rule plugin broken (no_such_module_for_ckptlint) failed to load"
    )
