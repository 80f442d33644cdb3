"""The one key-pattern grammar of the family files (``rules/archs/*.toml``), documented in ``rules/README.md``.

A pattern names checkpoint keys, in the framework's own key names:

    literal text          matches itself                     ``visual.conv1.weight``
    ``*``                 any run of characters inside one key component (no ``.`` or ``/``)
    ``**``                any run of characters, separators included (may be empty)   ``visual.trunk.**``
    ``{name}``            a block index (one or more digits), captured as ``name``      ``blocks.{i}.attn.qkv.weight``
    ``{name:a|b}``        one of the listed words, captured as ``name``                 ``in_proj_{p:weight|bias}``

A pattern without ``*``/``**`` is also a template: ``fill(i=3)`` gives ``blocks.3.attn.qkv.weight``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from functools import cache

from ckptlint.record import record

_TOKEN = re.compile(r"\*\*|\*|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PatternError(ValueError):
    """A key pattern that does not follow the grammar."""


@record(frozen=True)
class KeyPattern:
    """A parsed key pattern (see the module docstring for the grammar)."""

    text: str
    source: (
        str  # the regular expression it stands for (compiled on first use: most patterns are literal keys)
    )
    names: tuple[str, ...]  # captures, in order
    head: str  # the literal text before the first wildcard or capture
    kind: str  # literal | prefix (``head**``) | indexed (only ``{i}`` captures) | general

    @property
    def regex(self) -> re.Pattern[str]:
        return _compiled(self.source)

    def match(self, key: str) -> dict[str, str] | None:
        """The captures when ``key`` matches the whole pattern, else None."""
        if self.kind == "literal":
            return {} if key == self.text else None
        if self.kind == "prefix":
            return {} if key.startswith(self.head) else None
        m = self.regex.fullmatch(key)
        return None if m is None else m.groupdict()

    def matches(self, key: str) -> bool:
        return self.match(key) is not None

    def fill(self, **values: object) -> str:
        """The key this template names for ``values`` (every capture given; no wildcards allowed)."""
        if "*" in self.text:
            raise PatternError(f"pattern {self.text!r} has wildcards: it names no single key")

        def one(m: re.Match[str]) -> str:
            name = m.group(1).split(":", 1)[0]
            if name not in values:
                raise PatternError(f"pattern {self.text!r} needs a value for {{{name}}}")
            return str(values[name])

        return _TOKEN.sub(one, self.text)

    def first(self, keys: Iterable[str], keyset: Collection[str], root: str = "") -> str | None:
        """The first of ``keys`` that is ``root`` + a key matching the pattern (index 0 is tried first)."""
        if self.kind == "literal":
            key = root + self.text
            return key if key in keyset else None
        if self.kind == "indexed":
            key = root + self.fill(**dict.fromkeys(self.names, 0))
            if key in keyset:
                return key
        start = root + self.head
        n = len(root)
        for key in keys:
            if key.startswith(start) and self.match(key[n:]) is not None:
                return key
        return None


@cache
def pattern(text: str) -> KeyPattern:
    """Compile ``text``; ``PatternError`` names what is wrong with it."""
    if not isinstance(text, str) or not text:
        raise PatternError("a key pattern must be a non-empty string")
    parts: list[str] = []
    names: list[str] = []
    head: str | None = None
    wild = False
    captures_only_index = True
    pos = 0
    for m in _TOKEN.finditer(text):
        parts.append(re.escape(text[pos : m.start()]))
        if head is None:
            head = text[: m.start()]
        token = m.group(0)
        if token in ("{", "}"):
            raise PatternError(f"unbalanced brace in {text!r}")
        if token == "**":
            parts.append(".*")
            wild = True
        elif token == "*":
            if m.start() > 0 and text[m.start() - 1] == "*":
                raise PatternError(
                    f"'***' in {text!r}: write '**' (any characters) or '*' (within a component)"
                )
            parts.append(r"[^./]*")
            wild = True
        else:
            name, colon, alts = m.group(1).partition(":")
            if not _NAME.fullmatch(name):
                raise PatternError(f"bad capture {token!r} in {text!r}: expected {{name}} or {{name:a|b}}")
            if name in names:
                raise PatternError(f"capture {{{name}}} appears twice in {text!r}")
            names.append(name)
            if colon:
                words = alts.split("|")
                if not all(words):
                    raise PatternError(f"empty alternative in {token!r} of {text!r}")
                parts.append(f"(?P<{name}>" + "|".join(re.escape(w) for w in words) + ")")
                captures_only_index = False
            else:
                parts.append(rf"(?P<{name}>\d+)")
        pos = m.end()
    parts.append(re.escape(text[pos:]))
    if head is None:
        kind = "literal"
        head = text
    elif text == head + "**":
        kind = "prefix"
    elif not wild and captures_only_index:
        kind = "indexed"
    else:
        kind = "general"
    return KeyPattern(text, "".join(parts), tuple(names), head, kind)


@cache
def _compiled(source: str) -> re.Pattern[str]:
    return re.compile(source)


def check(text: str) -> str:
    """Pydantic validator: ``text`` if it is a valid pattern (raises ``PatternError``, a ``ValueError``)."""
    pattern(text)
    return text


class PatternSet:
    """Several patterns matched at once: exact keys by set lookup, ``head**`` by prefix, the rest by regex."""

    def __init__(self, texts: Iterable[str]) -> None:
        compiled = [pattern(t) for t in texts]
        self.exact = frozenset(p.text for p in compiled if p.kind == "literal")
        self.prefixes = tuple(p.head for p in compiled if p.kind == "prefix")
        self.others = tuple(p for p in compiled if p.kind not in ("literal", "prefix"))

    def matches(self, key: str) -> bool:
        if key in self.exact or key.startswith(self.prefixes):
            return True
        return any(p.match(key) is not None for p in self.others)


@cache
def pattern_set(texts: tuple[str, ...]) -> PatternSet:
    return PatternSet(texts)


def matches(key: str, texts: Iterable[str]) -> bool:
    """Whether ``key`` matches one of the patterns ``texts``."""
    return pattern_set(tuple(texts)).matches(key)
