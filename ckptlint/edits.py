"""Fixes as data: the machine-readable edits a finding carries and ``ckptlint fix`` applies.

Like ruff's fixes, an edit says exactly what to change, so ``check`` (which reports it) and ``fix`` (which applies
it) can never disagree. The set of kinds is closed; ``kind`` tells them apart (a pydantic discriminated union, and
a ``oneOf`` with a discriminator in the JSON schema; plain dataclasses, validated only when read back):

* ``rename_prefix`` — every key starting with ``old`` is renamed ``new`` + the rest (strip: ``new=""``; add:
  ``old=""``; swap: both set);
* ``rename_keys`` — exact renames, ``{old key: new key}``;
* ``take_subtree`` — keep only the keys under ``prefix``, renamed ``into`` + the rest; every other key is dropped;
* ``drop_keys`` — drop these exact keys;
* ``drop_groups`` — drop every key that is a group or lies under it (``group + sep``): ``opt`` drops ``opt/1/0``;
* ``transpose`` — swap the two axes of these 2-d tensors (a change of values, not of names);
* ``convert`` — convert the whole checkpoint into architecture ``to`` with the family files' conversion table
  ``table`` (``ckptlint convert IN OUT --to TO``): renames, splits and fuses, transposes and reshapes, and the
  target's config files.

Every edit names the checkpoint's own keys, as ``ckptlint dump`` lists them, and all edits of a report apply to
those original keys at once, never to the result of another edit: a key that any drop matches (or that lies
outside a ``take_subtree``) is dropped; otherwise an exact rename wins over prefix renames, and among prefix
renames (``rename_prefix`` and ``take_subtree``) the longest prefix wins. Keys no edit matches keep their name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, ClassVar, Literal

from ckptlint.model import Model, Tagged
from ckptlint.record import field, record

_FORBID: dict[str, Any] = {"extra": "forbid"}  # pydantic's config: an unknown field is an error


@record(kw_only=True)
class RenamePrefix(Model):
    """Rename every key that starts with ``old`` to ``new`` + the rest of the key."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID
    kind: Literal["rename_prefix"] = "rename_prefix"
    old: str
    new: str


@record(kw_only=True)
class RenameKeys(Model):
    """Rename single keys: ``{old key: new key}``."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID
    kind: Literal["rename_keys"] = "rename_keys"
    renames: dict[str, str]


@record(kw_only=True)
class TakeSubtree(Model):
    """Keep only the keys under ``prefix``, renamed ``into`` + the rest; drop every other key."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID
    kind: Literal["take_subtree"] = "take_subtree"
    prefix: str
    into: str = ""


@record(kw_only=True)
class DropKeys(Model):
    """Drop these exact keys."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID
    kind: Literal["drop_keys"] = "drop_keys"
    keys: list[str]


@record(kw_only=True)
class DropGroups(Model):
    """Drop every key that equals one of ``groups`` or starts with it followed by ``sep``."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID
    kind: Literal["drop_groups"] = "drop_groups"
    groups: list[str]
    sep: str


@record(kw_only=True)
class Transpose(Model):
    """Swap the two axes of these 2-d tensors (their names stay)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID
    kind: Literal["transpose"] = "transpose"
    keys: list[str]


@record(kw_only=True)
class Convert(Model):
    """Convert the checkpoint into architecture ``to`` (``NAME[:VARIANT]``) with the conversion table ``table``."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID
    kind: Literal["convert"] = "convert"
    table: str
    to: str


Edit = Annotated[
    RenamePrefix | RenameKeys | TakeSubtree | DropKeys | DropGroups | Transpose | Convert,
    Tagged("kind"),
]
# kinds that change only names or which tensors are kept: what the writer behind ``ckptlint fix`` can apply today
KEY_KINDS = frozenset({"rename_prefix", "rename_keys", "take_subtree", "drop_keys", "drop_groups"})


@record
class KeyPlan:
    """All key edits of a report folded into one function ``key -> new key | None`` (None: dropped)."""

    exact: dict[str, str] = field(default_factory=dict)
    prefixes: list[tuple[str, str]] = field(default_factory=list)  # (old, new), longest ``old`` first
    dropped: set[str] = field(default_factory=set)
    groups: list[tuple[str, str]] = field(default_factory=list)  # (group, sep)
    subtrees: list[str] = field(default_factory=list)  # a key outside every one of them is dropped

    def __call__(self, key: str) -> str | None:
        return self._resolve(key)[0]

    def prefix_rule(self, key: str) -> tuple[str, str] | None:
        """The ``(old, new)`` prefix rename that names ``key`` in the output, if one does."""
        return self._resolve(key)[1]

    def _resolve(self, key: str) -> tuple[str | None, tuple[str, str] | None]:
        if key in self.dropped or any(key == g or key.startswith(g + sep) for g, sep in self.groups):
            return None, None
        if self.subtrees and not any(key.startswith(p) for p in self.subtrees):
            return None, None
        if key in self.exact:
            return self.exact[key], None
        for old, new in self.prefixes:
            if key.startswith(old):
                return new + key[len(old) :], (old, new)
        return key, None


def key_plan(edits: Iterable[Edit]) -> KeyPlan:
    """One ``KeyPlan`` for every key edit in ``edits`` (``transpose`` edits are not key edits and are skipped)."""
    plan = KeyPlan()
    for e in edits:
        if isinstance(e, RenamePrefix):
            plan.prefixes.append((e.old, e.new))
        elif isinstance(e, RenameKeys):
            plan.exact.update(e.renames)
        elif isinstance(e, TakeSubtree):
            plan.prefixes.append((e.prefix, e.into))
            plan.subtrees.append(e.prefix)
        elif isinstance(e, DropKeys):
            plan.dropped.update(e.keys)
        elif isinstance(e, DropGroups):
            plan.groups += [(g, e.sep) for g in e.groups]
    plan.prefixes.sort(key=lambda p: -len(p[0]))
    return plan


def describe(edit: Edit, limit: int = 3) -> str:
    """One line for a person: ``rename_prefix module. → (none)``."""

    def keys(items: Sequence[str]) -> str:
        more = f" … (+{len(items) - limit})" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    if isinstance(edit, RenamePrefix):
        return f"rename_prefix {edit.old or '(none)'} → {edit.new or '(none)'}"
    if isinstance(edit, RenameKeys):
        return "rename_keys " + keys([f"{a} → {b}" for a, b in edit.renames.items()])
    if isinstance(edit, TakeSubtree):
        return f"take_subtree {edit.prefix} → {edit.into or '(root)'}"
    if isinstance(edit, DropGroups):
        return "drop_groups " + keys(edit.groups)
    if isinstance(edit, Convert):
        return f"convert to {edit.to} ({edit.table})"
    return f"{edit.kind} " + keys(edit.keys)
