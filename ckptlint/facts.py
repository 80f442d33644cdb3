"""Security facts a reader records about a file, for the rules to judge.

Readers only say what they saw: a global that a loader would import (and how it would be used), a construct they
could not judge, a TorchScript archive, model code a folder ships. The CK301/CK302 rule files turn these facts
into findings; readers know nothing of codes, severities or wording. Every list is bounded: a hostile file
cannot make the report large.
"""

from __future__ import annotations

from ckptlint.record import field, record

MAX_DISTINCT = 256  # distinct globals / unverifiable constructs kept per file; more are counted
MAX_OFFSETS = 16
MAX_TEXT = 300


def one_line(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with control characters escaped and its length bounded: names come from untrusted files and
    messages must stay on one line."""
    if text.isprintable() and len(text) <= limit:
        return text
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")


@record
class GlobalUse:
    """A global a loader would import from the file, and what about it is unsafe.

    ``why`` is empty for a global outside the safe set; for a global of the safe set used in a way that runs
    code (called with keyword arguments, planted as ``__setstate__``...) it says how.
    """

    name: str  # module.qualname as the loader resolves it (Python 2 names mapped, torch's renames applied)
    member: str  # the pickle: a zip member, the file's name, or a nested payload's label
    opcode: str  # GLOBAL, STACK_GLOBAL, INST, EXT1...
    why: str = ""
    file: str | None = None  # the file inside a folder, relative to it
    offsets: list[int] = field(default_factory=list)  # opcode offsets in ``member``
    count: int = 0


@record
class Unverifiable:
    """Something a loader may run that ckptlint cannot judge (it fails closed on it)."""

    what: str
    member: str
    offset: int | None
    reason: str
    file: str | None = None


@record
class TorchScript:
    """A TorchScript archive: ``torch.load`` hands it to ``torch.jit.load``, which runs its code members."""

    member: str  # the main pickle member
    code_members: list[str]
    classes: list[str]  # ``__torch__.*`` classes its pickles name
    file: str | None = None


@record
class RemoteCode:
    """Model code a folder ships: ``from_pretrained(..., trust_remote_code=True)`` imports and runs it."""

    config: str | None  # the config file whose ``auto_map`` names the code (None: only ``*.py`` files)
    auto_map: dict[str, str]  # auto class -> "module.Class" or "repo--module.Class"
    code_files: list[str]  # the folder's ``*.py`` files, relative paths
    missing: list[str]  # modules ``auto_map`` names that are not in the folder (fetched from elsewhere)


@record
class SecurityFacts:
    """What one file (or folder) holds that a loader could run."""

    globals: list[GlobalUse] = field(default_factory=list)
    unverifiable: list[Unverifiable] = field(default_factory=list)
    torchscript: list[TorchScript] = field(default_factory=list)
    remote_code: list[RemoteCode] = field(default_factory=list)
    more_globals: int = 0  # distinct unsafe globals beyond MAX_DISTINCT, not kept
    more_unverifiable: int = 0

    def __bool__(self) -> bool:
        return bool(self.globals or self.unverifiable or self.torchscript or self.remote_code)

    @property
    def unsafe(self) -> bool:
        """Whether a loader would run code chosen by the file (anything but shipped model code)."""
        return bool(self.globals or self.unverifiable or self.torchscript or self.more_globals)

    def _use(self, name: str, member: str, opcode: str, why: str, file: str | None) -> GlobalUse | None:
        for use in self.globals:
            if use.name == name and use.why == why and use.file == file:
                return use
        if len(self.globals) >= MAX_DISTINCT:
            self.more_globals += 1
            return None
        use = GlobalUse(name, member, opcode, why, file)
        self.globals.append(use)
        return use

    def add_global(
        self,
        name: str,
        member: str,
        offset: int | None,
        opcode: str,
        why: str = "",
        file: str | None = None,
        count: int = 1,
    ) -> None:
        """Record a use of ``name``; uses of the same global for the same reason are merged."""
        use = self._use(one_line(name, 200), one_line(member), opcode, one_line(why), file)
        if use is None:
            return
        use.count += count
        if offset is not None and len(use.offsets) < MAX_OFFSETS and offset not in use.offsets:
            use.offsets.append(offset)

    def add_unverifiable(
        self, what: str, member: str, offset: int | None, reason: str, file: str | None = None
    ) -> None:
        """Record a construct that cannot be judged (fails closed as CK301)."""
        item = Unverifiable(one_line(what), one_line(member), offset, one_line(reason, 500), file)
        if item in self.unverifiable:
            return
        if len(self.unverifiable) >= MAX_DISTINCT:
            self.more_unverifiable += 1
            return
        self.unverifiable.append(item)

    def merge(self, other: SecurityFacts, file: str | None = None) -> None:
        """Add ``other``'s facts; ``file`` names the inner file they come from (kept when they name one)."""
        for use in other.globals:
            where = use.file if use.file is not None else file
            mine = self._use(use.name, use.member, use.opcode, use.why, where)
            if mine is not None:
                mine.count += use.count
                for offset in use.offsets:
                    if len(mine.offsets) < MAX_OFFSETS and offset not in mine.offsets:
                        mine.offsets.append(offset)
        for item in other.unverifiable:
            where = item.file if item.file is not None else file
            self.add_unverifiable(item.what, item.member, item.offset, item.reason, where)
        for ts in other.torchscript:
            if ts.file is None and file is not None:
                ts = TorchScript(ts.member, ts.code_members, ts.classes, file)
            if ts not in self.torchscript:
                self.torchscript.append(ts)
        for rc in other.remote_code:
            if rc not in self.remote_code:
                self.remote_code.append(rc)
        self.more_globals += other.more_globals
        self.more_unverifiable += other.more_unverifiable

    def names(self, limit: int = 5) -> str:
        """A short text naming what was found so far (for one-line error messages)."""
        names = [g.name for g in self.globals] + [u.what for u in self.unverifiable]
        if not names:
            return ""
        more = len(names) - limit + self.more_globals
        return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")
