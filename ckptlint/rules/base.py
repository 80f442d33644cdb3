"""What a rule module needs: ``@rule``, ``Rule``, ``Message`` and ``Stage``.

A rule is one file (pyflakes' messages, bandit's plugins): its module docstring is its documentation, and

    @rule("CK201", "warning", "training state included", stage=Stage.LAYOUT, order=2, rank=90)
    class TrainingStateRule(Rule):
        needs = "none"
        def check(self, ctx): ...

declares everything else about it: code, default severity, one-line summary, when it runs (``stage``, then
``order`` inside the stage) and where its findings are shown (``rank``: among findings of the same severity,
lower first). The rule decides WHEN (``check``), a ``Message`` subclass says WHAT, reporters say HOW. The
registry (``ckptlint.rules``) finds rule classes by scanning rule modules; nothing here knows the registry.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ckptlint.edits import Edit
from ckptlint.findings import Finding, Severity
from ckptlint.rules._keys import MAX_EVIDENCE, trim

if TYPE_CHECKING:
    from ckptlint.rules._context import Context

Needs = Literal["none", "any", "user"]


class Stage(IntEnum):
    """When a rule runs; stages run in this order, and inside a stage rules run by ``order``, then by code.

    Explainers consume the diff entries they account for, so the more specific explanations run first.
    """

    INPUT = 0  # made by the API when a file cannot be read; the engine never runs these rules
    FACTS = 1  # turn what readers recorded on the Checkpoint into findings (pickle globals, shards)
    LAYOUT = 2  # how the file is laid out: old layouts, training state, wrappers and prefixes
    MODEL = 3  # which model the file holds: towers, framework, transposed kernels, variant, resized grids
    METADATA = 4  # dtypes and preprocessing
    LEFTOVERS = 5  # what no explainer accounted for: the CK100/CK101/CK102 catch-alls


class Message:
    """One kind of finding (pyflakes style): templates for what was seen, the probable cause and the fix.

    Subclasses set ``code`` and the three templates; ``str.format`` fills them from the keyword arguments.
    ``keys`` are the evidence (at most ``max_keys``; the raw diff keeps every key), ``details`` the
    machine-readable facts and ``edits`` the mechanical fix (``ckptlint.edits``). ``rank``, when set, shows this
    kind of finding at another place than its rule's rank.
    """

    code: ClassVar[str]
    message: ClassVar[str]
    cause: ClassVar[str] = ""
    fix: ClassVar[str] = ""
    rank: ClassVar[int | None] = None
    max_keys: ClassVar[int | None] = MAX_EVIDENCE  # evidence kept in the finding; None: every key

    def __init__(
        self,
        *,
        keys: Iterable[str] = (),
        details: dict[str, Any] | None = None,
        edits: Iterable[Edit] = (),
        **args: Any,
    ) -> None:
        self.keys = list(keys)
        self.details = dict(details or {})
        self.edits = list(edits)
        self.args = args

    def finding(self, severity: Severity | str) -> Finding:
        """Render as a ``Finding`` with ``severity`` (the rule's default severity).

        Every field is built here with its exact type, so the model is constructed without validation: a run
        that only prints text never builds the pydantic schema (start-up time)."""
        return Finding.model_construct(
            code=self.code,
            severity=Severity(severity),
            message=self.message.format(**self.args),
            cause=self.cause.format(**self.args),
            fix=self.fix.format(**self.args),
            keys=self.keys if self.max_keys is None else trim(self.keys, self.max_keys),
            details=self.details,
            edits=self.edits,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.code} {self.args!r}>"


class _ModuleDoc:
    """``Rule.doc``: the rule module's docstring, cleaned when read (a run that never shows it never imports
    ``inspect``: start-up time, issue 13 item 5)."""

    def __get__(self, obj: object, cls: type) -> str:
        import inspect

        return inspect.cleandoc(sys.modules[cls.__module__].__doc__ or "")


class Rule:
    """Base of every rule: ``check`` inspects the engine's context and returns its messages.

    ``needs`` says when the engine runs it: ``"none"`` always, ``"any"`` with any expectation (inferred too),
    ``"user"`` only with an expectation that was asked for or declared (``--arch``/``--model``/``--spec``, a
    config): CK112/CK114 compare with a requested model, which an inferred one is not. Explainers consume the
    raw-diff entries they account for (``ctx.consume_*``) so that later rules and the catch-alls only see what is
    still unexplained; what a rule consumes without reporting anything goes back (``Context.give_back``).
    """

    code: ClassVar[str]
    severity: ClassVar[Severity]
    summary: ClassVar[str]
    stage: ClassVar[Stage]
    order: ClassVar[int]
    rank: ClassVar[int]
    doc: ClassVar[str] = _ModuleDoc()  # type: ignore[assignment]
    needs: ClassVar[Needs] = "none"

    def check(self, ctx: Context) -> list[Message] | list[Finding]:
        raise NotImplementedError


R = TypeVar("R", bound=type[Rule])


def rule(
    code: str, severity: str | Severity, summary: str, *, stage: Stage, rank: int, order: int = 0
) -> Callable[[R], R]:
    """Class decorator: declare the rule ``code``; its module's docstring becomes its documentation.

    The registry discovers the class by scanning its module; this only checks and records the declaration.
    """

    def declare(cls: R) -> R:
        if not (sys.modules[cls.__module__].__doc__ or "").lstrip().startswith(code):  # as ``cls.doc`` will
            raise ValueError(f"{cls.__module__}: the module docstring must start with the rule code {code}")
        if "\n" in summary or not summary:
            raise ValueError(f"{cls.__module__}: the summary of {code} must be one line")
        cls.code = code
        cls.severity = Severity(severity)
        cls.summary = summary
        cls.stage = Stage(stage)
        cls.order = order
        cls.rank = rank
        return cls

    return declare


__all__ = ["Message", "Needs", "Rule", "Stage", "rule"]
