"""The rule registry: fixed codes and severities (docs/CONTRACT.md), docs that are the rule modules' docstrings."""

from __future__ import annotations

import importlib
import inspect

import contract
import pytest

from ckptlint.engine import CheckConfig
from ckptlint.errors import UsageError
from ckptlint.findings import Severity
from ckptlint.rules import (
    Message,
    Rule,
    Stage,
    all_rules,
    builtin_modules,
    explain,
    get_rule,
    rules_in,
    run_order,
)

# Codes the contract fixes for issues still in progress; each leaves this set when its rule is registered.
NOT_YET_REGISTERED: set[str] = set()


def test_contract_codes_and_default_severities() -> None:
    registered = {r.code: r.severity.value for r in all_rules()}
    fixed = contract.rule_severities()
    assert {c: s for c, s in fixed.items() if c not in NOT_YET_REGISTERED} == {
        c: s for c, s in registered.items() if c in fixed
    }
    assert not NOT_YET_REGISTERED & set(registered), "registered now: remove it from NOT_YET_REGISTERED"
    assert [r.code for r in all_rules()] == sorted(registered)
    assert all(r.summary and "\n" not in r.summary for r in all_rules())


@pytest.mark.parametrize("module", builtin_modules())
def test_explain_is_the_module_docstring(module: str) -> None:
    mod = importlib.import_module(module)
    code = module.rsplit(".", 1)[1][:5].upper()
    doc = inspect.cleandoc(mod.__doc__)
    assert explain(code) == doc
    assert doc.splitlines()[0].startswith(f"{code} — ")
    for part in ("What it does", "Why is this bad?", "Example", "Fix"):
        assert f"\n{part}\n" in doc, f"{code} lacks the section {part!r}"
    assert (
        doc.index("What it does")
        < doc.index("Why is this bad?")
        < doc.index("Example")
        < doc.index("\nFix\n")
    )


@pytest.mark.parametrize("module", builtin_modules())
def test_one_rule_per_file_named_after_the_file(module: str) -> None:
    """ckNNN_what_it_finds.py declares exactly the rule CKNNN, in a class named WhatItFindsRule."""
    (cls,) = rules_in(importlib.import_module(module))
    stem = module.rsplit(".", 1)[1]
    assert cls.code == stem[:5].upper()
    assert cls.__name__ == "".join(w.capitalize() for w in stem[6:].split("_")) + "Rule"


def test_every_rule_declares_its_stage_and_rank() -> None:
    for r in all_rules():
        assert isinstance(r.stage, Stage) and isinstance(r.rank, int) and r.needs in ("none", "any", "user")
        assert issubclass(r, Rule) and get_rule(r.code) is r
    order = run_order()
    # every rule but the API's CK001 runs, stage by stage: facts first, the catch-alls last
    assert {r.code for r in order} == {r.code for r in all_rules()} - {"CK001"}
    assert [r.stage for r in order] == sorted(r.stage for r in order)
    # CK004 last but the catch-alls: with an inferred model, what no explainer took is "not checked", not an error
    assert {r.code for r in order if r.stage is Stage.LEFTOVERS} == {"CK004", "CK100", "CK101", "CK102"}
    assert {r.code for r in order if r.stage is Stage.FACTS} == {"CK002", "CK003", "CK005", "CK301", "CK302"}


def test_explain_is_case_insensitive_and_refuses_unknown_codes() -> None:
    assert explain("ck103") == explain("CK103")
    with pytest.raises(UsageError, match="CK999"):
        explain("CK999")
    assert get_rule(" ck201 ").severity is Severity.WARNING


def test_message_templates() -> None:
    class Demo(Message):
        code = "CK101"
        message = "unexpected keys: {n} keys ({what})"
        cause = "because {why}"
        fix = "do {{this}} with {n}"

    f = Demo(keys=[f"k{i}" for i in range(40)], details={"x": 1}, n=40, what="a/b", why="c").finding(
        "warning"
    )
    assert (f.code, f.severity, f.message, f.cause, f.fix) == (
        "CK101", Severity.WARNING, "unexpected keys: 40 keys (a/b)", "because c", "do {this} with 40",
    )  # fmt: skip
    assert len(f.keys) == 20 and f.details == {"x": 1}


@pytest.mark.parametrize(
    ("select", "ignore", "code", "enabled"),
    [
        (None, None, "CK103", True),
        ("CK1", None, "CK103", True),
        ("CK1", None, "CK201", False),
        (["CK201", "CK3"], None, "CK301", True),
        (None, "CK107", "CK107", False),
        (None, "ck10", "CK103", False),
        ("ALL", "CK2", "CK201", False),
        ("CK103", "CK103", "CK103", False),
    ],
)
def test_select_and_ignore_by_prefix(select: object, ignore: object, code: str, enabled: bool) -> None:
    assert CheckConfig.of(select, ignore).enabled(code) is enabled  # type: ignore[arg-type]
