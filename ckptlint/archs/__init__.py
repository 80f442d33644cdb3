"""Model definitions as expected trees: ``--arch NAME[:VARIANT]`` and architecture inference.

Every architecture belongs to a family file, ``rules/archs/FAMILY.toml`` (format: ``rules/README.md``), which holds
everything about the family: tensor trees and variants, layouts, framework mappings and conversions, probes,
preprocessing. This package never imports torch, jax or numpy (``ckptlint.archs.live`` imports them inside the
function that builds a live model).

Public API:
    list_archs() -> list[ArchSummary]
    resolve_expected(arch, ckpt) -> Expected          # --arch NAME or NAME:VARIANT[,param=value...]
    infer_expected(ckpt) -> Expected | None            # no --arch: detect the layout, then arch and variant
    register_family_file(path)                         # one more family file (or folder); also $CKPTLINT_FAMILY_PATH
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ckptlint.errors import UsageError
from ckptlint.record import field, record

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint
    from ckptlint.expected import Expected

__all__ = ["ArchSummary", "infer_expected", "list_archs", "register_family_file", "resolve_expected"]


@record(frozen=True)
class ArchSummary:
    """What ``ckptlint archs`` prints for one architecture."""

    name: str
    description: str
    source: str
    variants: list[str] = field(default_factory=list)
    framework: str = ""
    default_variant: str = ""


def list_archs() -> list[ArchSummary]:
    """Every architecture name, its named variants and where its definition comes from."""
    from ckptlint.archs.spec import arch_names, load_arch, variant_names

    out = []
    for name in arch_names():
        spec = load_arch(name)
        out.append(
            ArchSummary(
                name=spec.name,
                description=spec.description,
                source=spec.source,
                variants=variant_names(spec),
                framework=spec.framework,
                default_variant=spec.default_variant,
            )
        )
    return out


def resolve_expected(arch: str, ckpt: Checkpoint | None) -> Expected:
    """The expected tree for ``--arch NAME[:VARIANT][,param=value...]``.

    Without a variant (or with ``custom``) the parametrisation is read from ``ckpt`` -- wherever its towers sit and
    in whatever layout -- and reported as the named variant it matches, else ``custom``; with nothing to read, the
    default variant is used and ``params["inferred_from"]`` says so. ``param=value`` overrides come last.
    """
    from ckptlint.archs.resolve import resolve

    name, variant, overrides = parse_arch_arg(arch)
    return resolve(name, variant, overrides, ckpt, source="flag")


def infer_expected(ckpt: Checkpoint) -> Expected | None:
    """Without ``--arch``: detect the layout, then the architecture and its variant; None when unknown."""
    from ckptlint.archs.detect import detect_layout
    from ckptlint.archs.resolve import resolve

    guess = detect_layout(ckpt)
    if guess.name == "unknown" or not guess.arch:
        return None
    return resolve(guess.arch, None, {}, ckpt, source="inferred")


def register_family_file(path: str | os.PathLike[str]) -> None:
    """Add a family file (or a folder of ``*.toml`` family files) for the rest of this process.

    It is validated, with everything else, the next time an architecture is needed; errors name the file and the
    field. ``$CKPTLINT_FAMILY_PATH`` (paths separated by ``os.pathsep``) does the same for the CLI.
    """
    from ckptlint.archs import registry

    registry.register_family_file(path)


def parse_arch_arg(arch: str) -> tuple[str, str | None, dict[str, Any]]:
    """``"bv-siglip:B/16,vocab_size=256000"`` -> ("bv-siglip", "B/16", {"vocab_size": 256000})."""
    from ckptlint.archs.expr import parse_literal

    name, _, rest = arch.strip().partition(":")
    if not name:
        raise UsageError(f"--arch {arch!r}: expected NAME or NAME:VARIANT")
    variant: str | None = None
    overrides: dict[str, Any] = {}
    for i, part in enumerate(p.strip() for p in rest.split(",") if p.strip()):
        key, eq, value = part.partition("=")
        if eq and key.strip().isidentifier():
            overrides[key.strip()] = parse_literal(value)
        elif i == 0:
            variant = part
        else:
            raise UsageError(f"--arch {arch!r}: {part!r} is not PARAM=VALUE")
    return name, variant, overrides
