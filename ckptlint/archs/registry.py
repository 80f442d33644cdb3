"""Every architecture family ckptlint knows: the family files, loaded, checked and indexed.

Built-in families are ``rules/archs/*.toml``; more come from ``$CKPTLINT_FAMILY_PATH`` (files or folders of
``*.toml``, separated by ``os.pathsep``) and from ``register_family_file(path)``. Such a file is validated whole when
loaded with the pydantic schema of ``ckptlint.archs.schema`` (an error names the file and the field), then the
registry checks what crosses files: unique names, module references, the layouts and architectures detect rules
name, profiles, conversions.

Start-up cost: a built-in file whose bytes are those ``rules/parsed.jsonl`` was made from is the file the test suite
validated (``Registry.validate_all``, ``tests/test_family_files.py``): it is read from that JSON and *built*, not
validated (``ckptlint.archs.build``): its head (family, frameworks, layouts, detect rules) when loaded, each other
index table when a run first reads it (``Family.part``), each ``[archs.NAME]`` table when NAME is first needed. An
edited built-in file is validated whole, as any other.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ckptlint.archs.build import InvalidTable, build_field, validate
from ckptlint.archs.build import build as build_bundled
from ckptlint.archs.expr import SpecError
from ckptlint.archs.pattern import PatternSet
from ckptlint.archs.schema import (
    Arch,
    Conversion,
    Declaration,
    Detect,
    FamilyFile,
    FamilyHead,
    FamilyIndex,
    Framework,
    Group,
    KeyClasses,
    Layout,
    Module,
    ShapeProbe,
    WrapperFile,
)
from ckptlint.record import field, record
from ckptlint.ruledata import parse_toml, parsed, read_rules, rules_dir

ENV_PATH = "CKPTLINT_FAMILY_PATH"
MAX_ERRORS = 3
_ARCH_HEADER = re.compile(r"\[\[?archs\.([A-Za-z0-9_-]+)(?:\.[A-Za-z0-9_.-]+)?\]\]?[ \t]*(?:#.*)?\n?")
_HEADER = re.compile(r"\[\[?[A-Za-z0-9_.\"' -]+\]\]?[ \t]*(?:#.*)?\n?")
_registered: list[Path] = []
T = TypeVar("T")
_current: list[Registry] = []


@record
class Family:
    """One loaded family file; the rest of its index and its architectures are read on first use."""

    name: str
    framework: str
    path: Path
    head: FamilyHead = field(repr=False)
    raw: dict[str, Any] = field(repr=False)  # the index, parsed
    sources: dict[str, Any] = field(repr=False)  # arch -> its table as Cached JSON, or its Arch
    validated: FamilyIndex | None = field(default=None, repr=False)
    owner: Registry | None = field(default=None, repr=False)  # the registry it is indexed in
    # a file of the package's rules/archs as the tests validated it (its bytes match rules/parsed.jsonl): built,
    # neither validated nor checked against the other files at run time (the tests do both: ``validate_all``)
    bundled: bool = False
    parts: dict[str, Any] = field(
        default_factory=dict, repr=False
    )  # a bundled file's index tables built alone

    @property
    def data(self) -> FamilyIndex:
        """Everything but the architectures: validated and checked against the other families once (a trusted
        built-in file: built, the tests did both)."""
        if self.validated is None:
            try:
                self.validated = _table(FamilyIndex, self.raw, self.bundled)
            except InvalidTable as exc:
                raise SpecError(f"{self.path}: {_errors(exc)}") from None
            if self.bundled:
                return self.validated
            try:
                _check_index(self.owner or registry(), self)
            except SpecError:
                self.validated = None
                raise
        return self.validated

    def part(self, name: str) -> Any:
        """One table of the index (``keys``, ``wrappers``, ``modules``...): a bundled file's is built alone (a run
        needs few of them: building the whole index of every family costs more than the rest of a check)."""
        if not self.bundled or self.validated is not None:
            return getattr(self.data, name)
        if name not in self.parts:
            self.parts[name] = build_field(FamilyIndex, name, self.raw)
        return self.parts[name]

    def arch(self, name: str, reg: Registry) -> Arch:
        """The declaration of ``name`` (parsed, and validated unless trusted, the first time)."""
        src = self.sources[name]
        if isinstance(src, Arch):
            return src
        if isinstance(src, Cached):
            try:
                src = json.loads(src.text)
            except ValueError as exc:
                raise SpecError(f"rules/parsed.jsonl: archs.{name}: damaged ({exc}); regenerate it") from None
        try:
            arch = _table(Arch, src, self.bundled)
        except InvalidTable as exc:
            raise SpecError(f"{self.path}: {_errors(exc, f'archs.{name}.')}") from None
        if not self.bundled:
            _check_arch(reg, self, name, arch)
        self.sources[name] = arch
        return arch


@record
class Registry:
    """Everything the family files declare, indexed (built once per process; see ``reset``)."""

    families: list[Family]
    archs: dict[str, Family]  # architecture name -> the family that declares it
    frameworks: dict[str, Framework]
    layouts: list[tuple[Family, Layout]]
    detect: dict[str, list[tuple[str, Detect]]]  # layout -> (arch, rule), by rank
    memo: dict[Any, Any] = field(default_factory=dict)  # derived tables, cached by their users

    def arch(self, name: str) -> tuple[Family, Arch]:
        fam = self.archs[name]
        return fam, fam.arch(name, self)

    def module(self, ref: str, family: str) -> tuple[Family, str, Module]:
        """``"name"`` (in ``family``) or ``"otherfamily:name"`` -> (family, module name, module)."""
        fam_name, _, mod = ref.rpartition(":")
        fam_name = fam_name or family
        fam = next((f for f in self.families if f.name == fam_name), None)
        if fam is None or mod not in fam.part("modules"):
            raise SpecError(f"unknown module {fam_name}:{mod}")
        return fam, mod, fam.part("modules")[mod]

    def of_framework(self, framework: str) -> Iterator[Family]:
        return (f for f in self.families if f.framework == framework)

    def validate_all(self) -> None:
        """Validate everything now (the tests do): every family's index and architectures, with pydantic and
        against the other files, the bundled files too (a run only builds those)."""
        for fam in self.families:
            if fam.bundled:
                fam.validated = validate(FamilyIndex, fam.raw)
            _check_index(self, fam)
        wholes: dict[Path, dict[str, Any]] = {}
        for name, fam in self.archs.items():
            if not fam.bundled:
                self.arch(name)
                continue
            if fam.path not in wholes:
                wholes[fam.path] = parse_toml(fam.path.read_text(encoding="utf-8"))
            arch = validate(Arch, wholes[fam.path]["archs"][name])
            _check_arch(self, fam, name, arch)
            fam.sources[name] = arch


def register_family_file(path: str | os.PathLike[str]) -> None:
    """Add a family file (or a folder of them) to the registry of this process; loaded on next use."""
    p = Path(path)
    if p not in _registered:
        _registered.append(p)
    reset()


def unregister_family_file(path: str | os.PathLike[str]) -> None:
    """Undo ``register_family_file``."""
    p = Path(path)
    if p in _registered:
        _registered.remove(p)
    reset()


def reset() -> None:
    """Forget the loaded registry (after ``register_family_file``, or when ``$CKPTLINT_FAMILY_PATH`` changed)."""
    _current.clear()


def builtin_dir() -> Path:
    return rules_dir() / "archs"


def family_files() -> list[Path]:
    """Built-in family files, then ``$CKPTLINT_FAMILY_PATH``'s, then registered ones."""
    extra = [Path(p) for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p.strip()]
    out = sorted(builtin_dir().glob("*.toml"))
    for p in [*extra, *_registered]:
        if p.is_dir():
            out += sorted(p.glob("*.toml"))
        elif p.is_file():
            out.append(p)
        else:
            raise SpecError(f"{p}: no such family file or folder (from ${ENV_PATH} or register_family_file)")
    return list(dict.fromkeys(out))


def registry() -> Registry:
    """The registry of this process (loaded and validated on first use)."""
    if not _current:
        builtin = builtin_dir()
        _current.append(_index([_read(p, bundled=p.parent == builtin) for p in family_files()]))
    return _current[0]


def split_archs(text: str) -> tuple[str, dict[str, str]]:
    """A family file's text without its ``[archs.NAME...]`` tables, and each architecture's tables alone."""
    index: list[str] = []
    archs: dict[str, list[str]] = {}
    current = index
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            m = _ARCH_HEADER.fullmatch(line)
            if m:
                current = archs.setdefault(m.group(1), [])
            elif _HEADER.fullmatch(line):
                current = index
        current.append(line)
    return "".join(index), {name: "".join(lines) for name, lines in archs.items()}


@record(frozen=True)
class Cached:
    """An architecture's table in ``rules/parsed.jsonl``: JSON text, loaded when the architecture is first needed."""

    text: str


def parse_bundled(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A bundled family file's index (parsed) and each architecture's TOML text (parsed when needed)."""
    index_text, sources = split_archs(text)
    raw = parse_toml(index_text)
    if "archs" in raw:  # architectures declared in another form: read the file whole
        raw, sources = parse_toml(text), {}
    return raw, sources


def _read(path: Path, bundled: bool) -> Family:
    """A family file, loaded. A bundled file whose bytes are those ``rules/parsed.jsonl`` was made from (the bytes
    the test suite validated) is trusted: built, its tables when first needed. Any other file, an edited bundled
    one included, is validated whole now (pydantic, and against the other files once all are loaded)."""
    sources: dict[str, Any]
    try:
        data = path.read_bytes()
        entry = parsed(f"archs/{path.name}", data) if bundled else None
        if entry is not None:
            raw, sources = entry["index"], {k: Cached(v) for k, v in entry["archs"].items()}
        else:
            raw, sources = parse_toml(data.decode("utf-8")), {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read family file: {exc}") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise SpecError(f"{path}: invalid TOML: {exc}") from None
    trusted = entry is not None
    try:
        whole = None if trusted else _table(FamilyFile, raw, trusted)
        head = _table(FamilyHead, raw, trusted)
    except InvalidTable as exc:
        raise SpecError(f"{path}: {_errors(exc)}") from None
    if whole is not None:
        sources = dict(whole.archs)
    index = {k: v for k, v in raw.items() if k != "archs"}
    return Family(
        head.family.name, head.family.framework, path, head, index, dict(sources), whole, bundled=trusted
    )


def _table(cls: type[T], raw: Any, bundled: bool) -> T:
    """A bundled file's table built as it is (the tests validate those files), any other validated."""
    return build_bundled(cls, raw) if bundled else validate(cls, raw)


def _errors(exc: InvalidTable, prefix: str = "") -> str:
    items = [f"{prefix}{loc}: {msg}" for loc, msg in exc.errors[:MAX_ERRORS]]
    more = exc.count - MAX_ERRORS
    return "; ".join(items) + (f" (+{more} more)" if more > 0 else "")


def _bad(fam: Family, where: str, msg: str) -> SpecError:
    return SpecError(f"{fam.path}: {where}: {msg}")


def _index(families: list[Family]) -> Registry:
    seen: dict[str, Family] = {}
    archs: dict[str, Family] = {}
    frameworks: dict[str, Framework] = {}
    layouts: list[tuple[Family, Layout]] = []
    for fam in families:
        if fam.name in seen:
            raise _bad(fam, "family.name", f"{fam.name!r} is already declared by {seen[fam.name].path}")
        seen[fam.name] = fam
        for name, decl in fam.head.frameworks.items():
            if name in frameworks:
                raise _bad(fam, f"frameworks.{name}", "this framework is declared by another family file")
            frameworks[name] = decl
        for name in fam.sources:
            if name in archs:
                raise _bad(fam, f"archs.{name}", f"already declared by {archs[name].path}")
            archs[name] = fam
        for i, layout in enumerate(fam.head.layouts):
            if any(layout.name == other.name for _, other in layouts):
                raise _bad(fam, f"layouts.{i}.name", f"layout {layout.name!r} is declared twice")
            layouts.append((fam, layout))
    reg = Registry(families, archs, frameworks, layouts, {})
    for fam in families:
        fam.owner = reg
    rules: dict[str, list[tuple[str, Detect]]] = {}
    for fam in families:
        _check_head(reg, fam)
        for rule in fam.head.detect:
            if rule.layout is not None:
                rules.setdefault(rule.layout, []).append((rule.arch, rule))
    reg.detect = {k: sorted(v, key=lambda item: item[1].rank) for k, v in rules.items()}  # stable: file order
    for fam in families:
        if fam.validated is not None:  # a file read whole: check all of it now
            _check_index(reg, fam)
            for name, src in fam.sources.items():
                if isinstance(src, Arch):
                    _check_arch(reg, fam, name, src)
    return reg


def _check_head(reg: Registry, fam: Family) -> None:
    if fam.framework not in reg.frameworks:
        raise _bad(
            fam, "family.framework", f"unknown framework {fam.framework!r}; declare it in [frameworks]"
        )
    for name, decl in fam.head.frameworks.items():
        for other in [*decl.hosts, *decl.advice]:
            if other not in reg.frameworks:
                raise _bad(fam, f"frameworks.{name}", f"unknown framework {other!r}")
    layouts = {layout.name for _, layout in reg.layouts}
    for i, rule in enumerate(fam.head.detect):
        if rule.arch not in reg.archs:
            raise _bad(fam, f"detect.{i}.arch", f"unknown architecture {rule.arch!r}")
        if rule.layout is not None and rule.layout not in layouts:
            raise _bad(fam, f"detect.{i}.layout", f"unknown layout {rule.layout!r}")


def _check_index(reg: Registry, fam: Family) -> None:
    data = fam.data
    for mod_name, module in data.modules.items():
        _check_uses(reg, fam, module.tensors, f"modules.{mod_name}.tensors")
    names = {c.name for f in reg.families if f is not fam for c in f.data.conversions}
    for i, conv in enumerate(data.conversions):
        for side in (conv.from_, conv.to):
            if side not in reg.archs:
                raise _bad(fam, f"conversions.{i}", f"unknown architecture {side!r}")
        for j, inc in enumerate(conv.include):
            if inc.use not in names | {c.name for c in data.conversions[:i]}:
                raise _bad(
                    fam, f"conversions.{i}.include.{j}", f"unknown conversion {inc.use!r} (declare it first)"
                )
    for name, decl in data.declarations.items():
        for ref in [name, *(lk.arch for lk in decl.lookup.values())]:
            if ref not in reg.archs:
                raise _bad(fam, f"declarations.{name}", f"unknown architecture {ref!r}")
    profiles = {p for f in reg.families for p in f.data.preprocessing.profiles}
    keyed = {r.arch for f in reg.families for r in f.head.detect if r.all or r.any or r.none}
    for name, prof in data.preprocessing.profiles.items():
        if prof.arch is not None and prof.arch not in keyed:
            raise _bad(
                fam, f"preprocessing.profiles.{name}.arch", f"{prof.arch!r} has no detect rule on keys"
            )
    for name in data.preprocessing.recognise:
        if name not in profiles:
            raise _bad(fam, f"preprocessing.recognise.{name}", "unknown preprocessing profile")
    for i, old in enumerate(data.old_layouts):
        if old.within is not None:
            try:
                _, _, module = reg.module(old.within, fam.name)
            except SpecError as exc:
                raise _bad(fam, f"old_layouts.{i}.within", str(exc)) from None
            if module.infer is None:
                raise _bad(fam, f"old_layouts.{i}.within", f"module {old.within!r} has no infer.anchor")


def _check_arch(reg: Registry, fam: Family, name: str, arch: Arch) -> None:
    where = f"archs.{name}"
    _check_uses(reg, fam, arch.tree, f"{where}.tree")
    profiles = {p for f in reg.families for p in f.part("preprocessing").profiles}
    if arch.profile is not None and arch.profile not in profiles:
        raise _bad(fam, f"{where}.profile", f"unknown preprocessing profile {arch.profile!r}")
    if arch.loads_as is not None and arch.loads_as not in reg.archs:
        raise _bad(fam, f"{where}.loads_as", f"unknown architecture {arch.loads_as!r}")
    scheme = arch.variants.scheme
    if scheme == "table" and arch.default_variant not in arch.variants.names:
        raise _bad(fam, f"{where}.default_variant", f"{arch.default_variant!r} is not in variants.names")
    if scheme == "size_patch" and not fam.part("sizes"):
        raise _bad(fam, f"{where}.variants.scheme", "size_patch needs a [sizes] table in the family file")


def _check_uses(reg: Registry, fam: Family, entries: list[Any], where: str) -> None:
    for i, entry in enumerate(entries):
        if not isinstance(entry, Group):
            continue
        if entry.use is not None:
            try:
                reg.module(entry.use, fam.name)
            except SpecError as exc:
                raise _bad(fam, f"{where}.{i}.use", str(exc)) from None
        _check_uses(reg, fam, entry.tensors, f"{where}.{i}.tensors")


# ---- framework-level tables, merged over the families (cached on the registry) ---------------------------------
def cached(key: Any, build: Callable[[Registry], Any]) -> Any:
    """``build(registry)``, computed once per loaded registry (tables derived from the family files)."""
    reg = registry()
    if key not in reg.memo:
        reg.memo[key] = build(reg)
    return reg.memo[key]


def framework_names() -> list[str]:
    return list(registry().frameworks)


def framework(name: str) -> Framework:
    return registry().frameworks[name]


def title(name: str | None) -> str:
    """A framework's display title (the name itself when unknown)."""
    fw = registry().frameworks.get(name or "")
    return fw.title if fw is not None else (name or "unknown")


def preprocessing_note(name: str | None) -> str | None:
    """Where a framework keeps preprocessing, when it is never in its weight files (CK107's cause)."""
    fw = registry().frameworks.get(name or "")
    return fw.preprocessing_note if fw is not None else None


def advice(src: str, dst: str) -> dict[str, str] | None:
    """CK104's ``{"fix", "note"}`` for getting a ``src``-layout checkpoint into ``dst``, if known."""
    fw = registry().frameworks.get(src)
    entry = fw.advice.get(dst) if fw is not None else None
    return entry.to_dict() if entry is not None else None


def hosts(dst: str, src: str) -> bool:
    """Whether framework ``dst`` loads ``src``-layout weights natively as one of its towers."""
    fw = registry().frameworks.get(dst)
    return fw is not None and src in fw.hosts


def key_classes(framework: str) -> dict[str, PatternSet]:
    """signatures / joint / text / vision / unprefixed / *_markers of every family of ``framework``."""

    def build(reg: Registry) -> dict[str, PatternSet]:
        out: dict[str, list[str]] = {name: [] for name in KeyClasses.FIELDS}
        for fam in reg.of_framework(framework):
            for name in out:
                out[name] += getattr(fam.part("keys"), name)
        return {k: PatternSet(v) for k, v in out.items()}

    return cached(("keys", framework), build)


def shape_probes(framework: str) -> list[ShapeProbe]:
    return cached(
        ("probes", framework), lambda reg: [p for f in reg.of_framework(framework) for p in f.part("probes")]
    )


def wrappers() -> list[dict[str, Any]]:
    """CK103's wrappers: ``rules/wrappers.toml`` (every framework), then each family's (its framework)."""

    def collect(reg: Registry) -> list[dict[str, Any]]:
        raw, trusted = read_rules("wrappers.toml")  # trusted: the bytes the tests validated
        try:
            generic = _table(WrapperFile, raw, trusted).wrapper
        except InvalidTable as exc:
            raise SpecError(f"{rules_dir() / 'wrappers.toml'}: {_errors(exc)}") from None
        out = [w.to_dict() for w in generic]
        for fam in reg.families:
            out += [{**w.to_dict(), "framework": fam.framework} for w in fam.part("wrappers")]
        return out

    return cached("wrappers", collect)


def old_layouts() -> list[dict[str, Any]]:
    """CK111's old layouts, each with its ``framework`` (the family's)."""
    return cached(
        "old_layouts",
        lambda reg: [
            {**e.to_dict(by_alias=True), "framework": f.framework, "family": f.name}
            for f in reg.families
            for e in f.part("old_layouts")
        ],
    )


def profiles() -> dict[str, dict[str, Any]]:
    """Preprocessing profiles (CK107/CK108) with ``keys``: every family's recognising keys for it."""

    def build(reg: Registry) -> dict[str, dict[str, Any]]:
        out = {
            name: {**p.to_dict(exclude_none=True), "keys": []}
            for f in reg.families
            for name, p in f.part("preprocessing").profiles.items()
        }
        for f in reg.families:
            for name, keys in f.part("preprocessing").recognise.items():
                out[name]["keys"] += keys
        return out

    return cached("profiles", build)


def conversions() -> list[Conversion]:
    """Every conversion table (``[[conversions]]`` of every family), in file order."""
    return cached("conversions", lambda reg: [c for f in reg.families for c in f.part("conversions")])


def declaration(arch: str) -> Declaration | None:
    """How ``arch``'s checkpoints declare what their weights cannot tell (``[declarations.ARCH]``), if known."""
    return cached(
        "declarations", lambda reg: {a: d for f in reg.families for a, d in f.part("declarations").items()}
    ).get(arch)


def tags() -> dict[str, dict[str, Any]]:
    """Pretrained tags' preprocessing (CK108), from every family."""
    return cached(
        "tags",
        lambda reg: {
            tag: t.to_dict(exclude_none=True)
            for f in reg.families
            for tag, t in f.part("preprocessing").tags.items()
        },
    )
