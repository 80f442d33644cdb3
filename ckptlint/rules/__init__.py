"""The rule registry: every CK code with its default severity, one-line summary and documentation.

Modelled on bandit's plugins and pyflakes' messages:

* one rule, one file (``ckNNN_name.py``); the module docstring IS the rule's documentation
  (code and title, What it does / Why is this bad? / Example / Fix / links) and ``explain(code)`` returns it;
* ``@rule(code, severity, summary)`` registers the rule class of that file;
* the rule decides WHEN (its ``check(ctx)``), a ``Message`` subclass says WHAT (templates filled with the
  finding's arguments), reporters say HOW.

Importing this package is cheap; the rule modules are imported on first use of the registry.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ckptlint.errors import UsageError
from ckptlint.findings import Finding, Severity
from ckptlint.rules._keys import trim

# Every rule module, in code order. A new rule is one new file plus one line here.
RULE_MODULES: tuple[str, ...] = (
    "ck001_unreadable",
    "ck002_shard_missing",
    "ck003_shard_index",
    "ck100_missing",
    "ck101_unexpected",
    "ck102_shape_mismatch",
    "ck103_prefix",
    "ck104_framework",
    "ck105_tower_absent",
    "ck106_dtype",
    "ck107_preprocessing_absent",
    "ck108_preprocessing_wrong",
    "ck109_transposed",
    "ck110_posemb_resized",
    "ck111_old_layout",
    "ck112_variant",
    "ck201_training_state",
    "ck301_unsafe_pickle",
    "ck302_remote_code",
)


@dataclass(frozen=True)
class RuleInfo:
    """What ``ckptlint rules`` lists and ``ckptlint explain`` prints."""

    code: str
    severity: Severity
    summary: str
    doc: str
    cls: type


_REGISTRY: dict[str, RuleInfo] = {}
_loaded = False

R = TypeVar("R", bound=type)


def rule(code: str, severity: str | Severity, summary: str) -> Callable[[R], R]:
    """Class decorator: register the rule ``code``; its module's docstring becomes its documentation."""

    def register(cls: R) -> R:
        doc = inspect.cleandoc(sys.modules[cls.__module__].__doc__ or "")
        if not doc.startswith(code):
            raise ValueError(f"{cls.__module__}: the module docstring must start with the rule code {code}")
        sev = Severity(severity)
        cls.code = code  # type: ignore[attr-defined]
        cls.severity = sev  # type: ignore[attr-defined]
        cls.summary = summary  # type: ignore[attr-defined]
        _REGISTRY[code] = RuleInfo(code=code, severity=sev, summary=summary, doc=doc, cls=cls)
        return cls

    return register


def _load() -> None:
    global _loaded
    if not _loaded:
        for name in RULE_MODULES:
            importlib.import_module(f"ckptlint.rules.{name}")
        _loaded = True


def all_rules() -> list[RuleInfo]:
    """Every registered rule, sorted by code (what ``ckptlint rules`` lists)."""
    _load()
    return [_REGISTRY[c] for c in sorted(_REGISTRY)]


def get_rule(code: str) -> RuleInfo:
    """The rule registered for ``code`` (case-insensitive); ``UsageError`` for an unknown code."""
    _load()
    info = _REGISTRY.get(code.strip().upper())
    if info is None:
        raise UsageError(f"unknown rule code {code!r} (see `ckptlint rules`)")
    return info


def explain(code: str) -> str:
    """The documentation of ``code``: exactly its rule module's docstring."""
    return get_rule(code).doc


def severity_of(code: str) -> Severity:
    """Default severity of ``code``."""
    return get_rule(code).severity


class Message:
    """One kind of finding (pyflakes style): templates for what was seen, the probable cause and the fix.

    Subclasses set ``code`` and the three templates; ``str.format`` fills them from the keyword arguments.
    ``keys`` are the evidence (trimmed to a readable number; the raw diff keeps every key) and ``details``
    the machine-readable facts (e.g. the exact rename ``{"from": "module.", "to": ""}``).
    """

    code: ClassVar[str]
    message: ClassVar[str]
    cause: ClassVar[str] = ""
    fix: ClassVar[str] = ""

    def __init__(
        self,
        *,
        keys: Iterable[str] = (),
        details: dict[str, Any] | None = None,
        order: int | None = None,
        **args: Any,
    ) -> None:
        self.keys = list(keys)
        self.details = dict(details or {})
        self.order = order  # display rank among findings of the same severity (None: the rule's position)
        self.args = args

    def finding(self) -> Finding:
        """Render as a ``Finding`` with the rule's default severity."""
        return Finding(
            code=self.code,
            severity=severity_of(self.code),
            message=self.message.format(**self.args),
            cause=self.cause.format(**self.args),
            fix=self.fix.format(**self.args),
            keys=trim(self.keys),
            details=self.details,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.code} {self.args!r}>"


class Rule:
    """Base of every rule: ``check`` inspects the engine's context and returns its messages.

    Explainers consume the raw-diff entries they account for (``ctx.consume_*``) so that later rules and the
    CK100/CK101/CK102 catch-alls only see what is still unexplained.
    """

    code: ClassVar[str]
    severity: ClassVar[Severity]
    summary: ClassVar[str]
    needs: ClassVar[str] = (
        "none"  # "none": always; "any": with any expectation; "user": only with --arch/--model/--spec
    )

    def check(self, ctx: Any) -> list[Message] | list[Finding]:  # ctx: ckptlint.rules._context.Context
        raise NotImplementedError


__all__ = ["Message", "Rule", "RuleInfo", "all_rules", "explain", "get_rule", "rule", "severity_of"]
