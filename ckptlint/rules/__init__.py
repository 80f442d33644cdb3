"""The rule registry: every CK code with its default severity, summary, documentation, stage and rank.

Modelled on bandit's plugins, pyflakes' messages and flake8's extensions:

* one rule, one file: a module ``ckNNN_name.py`` in this package; its docstring IS the rule's documentation
  (code and title, What it does / Why is this bad? / Example / Fix / links) and ``explain(code)`` returns it;
* ``@rule(code, severity, summary, stage=…, rank=…)`` (``ckptlint.rules.base``) declares the rule class of that
  file; there is no list to add it to: the registry discovers every ``ck*`` module of this package;
* rules from other packages are plugins: an installed distribution names its rule modules under the entry point
  group ``ckptlint.rules`` (``[project.entry-points."ckptlint.rules"] myrules = "mypkg.rules"``), and they are
  discovered the same way — listed by ``ckptlint rules``, documented by ``ckptlint explain``, run by the engine.

Importing this package is cheap; rule modules are imported on first use of the registry.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable
from functools import cache
from types import ModuleType

from ckptlint.entrypoints import may_declare
from ckptlint.errors import UsageError
from ckptlint.findings import Severity
from ckptlint.rules.base import Message, Rule, Stage, rule

ENTRY_POINT_GROUP = "ckptlint.rules"
_BUILTIN = re.compile(r"^ck\d{3}_\w+$")


def builtin_modules() -> list[str]:
    """The rule modules shipped in this package, by name (``ckptlint.rules.ck103_prefix``…).

    Listed from the package's folders as ``pkgutil.iter_modules`` does (a module file is its name and an import
    suffix), not with it: it imports ``inspect`` (~4 ms at every start, issue 13 item 5).
    """
    from importlib.machinery import all_suffixes

    suffixes = all_suffixes()
    names = set()
    for folder in __path__:
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            for suffix in suffixes:
                if entry.endswith(suffix) and _BUILTIN.match(entry[: -len(suffix)]):
                    names.add(entry[: -len(suffix)])
    return sorted(f"{__name__}.{name}" for name in names)


def rules_in(module: ModuleType) -> list[type[Rule]]:
    """The rule classes a module declares (defined in it, decorated with ``@rule``)."""
    found = []
    for value in vars(module).values():
        if not (isinstance(value, type) and issubclass(value, Rule) and value.__module__ == module.__name__):
            continue
        if "code" not in vars(value):
            raise UsageError(f"{module.__name__}.{value.__name__} is a Rule without @rule(code, …)")
        found.append(value)
    return found


def _plugin_rules() -> Iterable[tuple[str, list[type[Rule]]]]:
    if not may_declare(ENTRY_POINT_GROUP):  # start-up: importlib.metadata only when a plugin may exist
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken plugin is one clear line, never a traceback
            raise UsageError(
                f"rule plugin {ep.name} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(loaded, ModuleType):
            yield ep.value, rules_in(loaded)
        elif isinstance(loaded, type) and issubclass(loaded, Rule) and "code" in vars(loaded):
            yield ep.value, [loaded]
        else:
            raise UsageError(f"rule plugin {ep.name} ({ep.value}) is neither a rule module nor a rule class")


@cache
def _registry() -> dict[str, type[Rule]]:
    found: dict[str, type[Rule]] = {}
    sources = [(name, rules_in(importlib.import_module(name))) for name in builtin_modules()]
    for origin, classes in [*sources, *_plugin_rules()]:
        for cls in classes:
            if cls.code in found and found[cls.code] is not cls:
                raise UsageError(
                    f"rule code {cls.code} is declared twice: {found[cls.code].__module__}, {origin}"
                )
            found[cls.code] = cls
    return dict(sorted(found.items()))


def all_rules() -> list[type[Rule]]:
    """Every registered rule class, sorted by code (what ``ckptlint rules`` lists)."""
    return list(_registry().values())


def run_order() -> list[type[Rule]]:
    """The rules the engine runs, in the order it runs them: by stage, then ``order``, then code."""
    return sorted(
        (r for r in _registry().values() if r.stage is not Stage.INPUT),
        key=lambda r: (r.stage, r.order, r.code),
    )


def get_rule(code: str) -> type[Rule]:
    """The rule registered for ``code`` (case-insensitive); ``UsageError`` for an unknown code."""
    found = _registry().get(code.strip().upper())
    if found is None:
        raise UsageError(f"unknown rule code {code!r} (see `ckptlint rules`)")
    return found


def explain(code: str) -> str:
    """The documentation of ``code``: exactly its rule module's docstring."""
    return get_rule(code).doc


def severity_of(code: str) -> Severity:
    """Default severity of ``code``."""
    return get_rule(code).severity


__all__ = [
    "ENTRY_POINT_GROUP",
    "Message",
    "Rule",
    "Stage",
    "all_rules",
    "builtin_modules",
    "explain",
    "get_rule",
    "rule",
    "rules_in",
    "run_order",
    "severity_of",
]
