"""Configuration: ``[tool.ckptlint]`` in the nearest ``pyproject.toml``, or a ``ckptlint.toml``.

```toml
[tool.ckptlint]                 # in ckptlint.toml: the same keys at top level
select = ["CK1", "CK201"]       # codes or prefixes to report (default: all)
ignore = ["CK107"]              # codes or prefixes to drop
fail-on = "warning"             # error | warning | info | never
arch = "clippo"                 # default expectation for every checkpoint
format = "text"                 # text | json | sarif | markdown | github

[tool.ckptlint.per-path]        # glob (relative to the config file) -> overrides for matching checkpoints
"weights/vit/*.npz" = { arch = "bv-vit", ignore = ["CK201"] }
```

The search starts in the current directory and walks up; in each directory ``ckptlint.toml`` wins over a
``pyproject.toml`` that has a ``[tool.ckptlint]`` table. Command-line flags win over the file. Unknown keys,
codes, formats or architectures are a ``UsageError`` (exit 2).
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

from ckptlint.errors import UsageError
from ckptlint.record import field, record

FORMATS = ("text", "json", "sarif", "markdown", "github", "jsonl")
FAIL_ON = ("error", "warning", "info", "never")
TOP_KEYS = frozenset({"select", "ignore", "fail-on", "arch", "format", "per-path"})
PER_PATH_KEYS = frozenset({"arch", "ignore"})


@record(frozen=True)
class PathOverride:
    """Settings for checkpoints whose path matches ``pattern`` (a glob relative to the config's folder)."""

    pattern: str
    regex: re.Pattern[str]
    arch: str | None = None
    ignore: tuple[str, ...] = ()


@record
class Config:
    """Effective settings; ``source`` is the file they came from (None: defaults only)."""

    source: Path | None = None
    select: list[str] | None = None
    ignore: list[str] | None = None
    fail_on: str = "error"
    arch: str | None = None
    format: str = "text"
    per_path: list[PathOverride] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def for_path(self, path: str) -> tuple[str | None, list[str]]:
        """``(arch, extra ignores)`` that the per-path overrides give ``path`` (later overrides win for arch)."""
        arch: str | None = None
        extra: list[str] = []
        rel = _relative(path, self.root)
        for ov in self.per_path:
            if rel is not None and ov.regex.fullmatch(rel):
                arch = ov.arch or arch
                extra.extend(ov.ignore)
        return arch, extra


def _relative(path: str, root: Path) -> str | None:
    if "://" in path:
        return None
    try:
        return Path(os.path.abspath(path)).relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """gitignore-like: ``*`` within a name, ``**`` across folders, ``?`` one character; no ``/`` → any folder."""
    pat = pattern.strip().removeprefix("./")
    anchored = "/" in pat.rstrip("/")
    out: list[str] = []
    i = 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pat.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pat[i + 1 : end].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    body = "".join(out).rstrip("/")
    regex = body if anchored else f"(?:.*/)?{body}"
    return re.compile(regex + "(?:/.*)?")


@cache
def known_codes() -> frozenset[str]:
    """Every registered rule code."""
    from ckptlint.rules import all_rules

    return frozenset(r.code for r in all_rules())


def validate_codes(codes: list[str], where: str) -> list[str]:
    """Upper-case ``codes`` and check each is a rule code or a prefix of one (``CK1``, ``CK``)."""
    out = []
    known = known_codes()
    for raw in codes:
        if not isinstance(raw, str) or not raw.strip():
            raise UsageError(f"{where}: rule codes must be non-empty strings, got {raw!r}")
        code = raw.strip().upper()
        if code != "ALL" and not any(k.startswith(code) for k in known):
            raise UsageError(f"{where}: unknown rule code {raw!r} (see `ckptlint rules`)")
        out.append(code)
    return out


def validate_arch(arch: str, where: str) -> str:
    """Check the NAME of ``NAME[:VARIANT]`` is a known architecture."""
    if not isinstance(arch, str) or not arch.strip():
        raise UsageError(f"{where}: arch must be a non-empty string, got {arch!r}")
    from ckptlint.archs.spec import arch_names, known_archs
    from ckptlint.suggest import did_you_mean

    names = sorted(arch_names())
    name = arch.split(":", 1)[0]
    if name not in names:
        from ckptlint.declared.hf_class import CLASS_NAME

        if ":" not in arch and CLASS_NAME.match(
            name
        ):  # any transformers class: built by transformers (tier b)
            return arch
        hint = did_you_mean(name, names)
        raise UsageError(f"{where}: unknown architecture {name!r}{hint} (known: {known_archs()})")
    return arch


def find_config(start: Path | None = None) -> Path | None:
    """The nearest ``ckptlint.toml`` or ``pyproject.toml`` with ``[tool.ckptlint]``, from ``start`` upwards."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        own = folder / "ckptlint.toml"
        if own.is_file():
            return own
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            data = _read_bytes(pyproject)
            if _may_name_ckptlint(data) and "ckptlint" in _parse_toml(pyproject, data).get("tool", {}):
                return pyproject
    return None


def _may_name_ckptlint(data: bytes) -> bool:
    """Whether a pyproject.toml's bytes can hold a ``tool.ckptlint`` table: they name ``ckptlint``, or have escapes
    a quoted key could spell it with (``\\x`` too: TOML 1.1, which a later ``tomllib`` may read). Most projects'
    pyproject.toml does neither: it is not parsed (``tomllib`` costs ~3 ms of start-up), and a broken one that is
    not ours is not our error."""
    return b"ckptlint" in data or any(escape in data for escape in (b"\\u", b"\\U", b"\\x"))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    return _parse_toml(path, _read_bytes(path))


def _parse_toml(path: Path, data: bytes) -> dict[str, Any]:
    """``data`` (the bytes of ``path``) parsed as ``tomllib.load`` parses a file."""
    import tomllib  # imported when a settings file exists (start-up time)

    try:
        return tomllib.loads(data.decode())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None


def _str_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise UsageError(f"{where}: expected a list of rule codes, got {type(value).__name__}")
    return validate_codes(value, where)


def load_config(path: Path | None) -> Config:
    """Parse and validate the config at ``path`` (None → defaults)."""
    if path is None:
        return Config()
    doc = _read_toml(path)
    table = doc.get("tool", {}).get("ckptlint") if path.name == "pyproject.toml" else doc
    if table is None:
        return Config(source=path)
    name = f"{path}" + (" [tool.ckptlint]" if path.name == "pyproject.toml" else "")
    if not isinstance(table, dict):
        raise UsageError(f"{name}: expected a table")
    unknown = sorted(set(table) - TOP_KEYS)
    if unknown:
        raise UsageError(f"{name}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
    cfg = Config(source=path)
    if "select" in table:
        cfg.select = _str_list(table["select"], f"{name} select")
    if "ignore" in table:
        cfg.ignore = _str_list(table["ignore"], f"{name} ignore")
    if "fail-on" in table:
        if table["fail-on"] not in FAIL_ON:
            raise UsageError(f"{name}: fail-on must be one of {', '.join(FAIL_ON)}, got {table['fail-on']!r}")
        cfg.fail_on = table["fail-on"]
    if "format" in table:
        if table["format"] not in FORMATS:
            raise UsageError(f"{name}: format must be one of {', '.join(FORMATS)}, got {table['format']!r}")
        cfg.format = table["format"]
    if "arch" in table:
        cfg.arch = validate_arch(table["arch"], f"{name} arch")
    per_path = table.get("per-path", {})
    if not isinstance(per_path, dict):
        raise UsageError(f"{name}: per-path must be a table of glob = {{arch = ..., ignore = [...]}}")
    for pattern, settings in per_path.items():
        where = f"{name} per-path {pattern!r}"
        if not isinstance(settings, dict):
            raise UsageError(f'{where}: expected a table such as {{ arch = "bv-vit", ignore = ["CK201"] }}')
        bad = sorted(set(settings) - PER_PATH_KEYS)
        if bad:
            raise UsageError(f"{where}: unknown key {bad[0]!r} (known: arch, ignore)")
        cfg.per_path.append(
            PathOverride(
                pattern=pattern,
                regex=glob_to_regex(pattern),
                arch=validate_arch(settings["arch"], f"{where} arch") if "arch" in settings else None,
                ignore=tuple(_str_list(settings.get("ignore", []), f"{where} ignore")),
            )
        )
    return cfg
