"""Which declaration a checkpoint carries, and the adapter that reads it: one adapter per kind of declaration.

    ADAPTERS                           Sidecar.kind -> adapter module (imported when first asked for)
    declared_expected(ckpt)            the model the declaration next to the weights builds (Expected), why it
                                       cannot be built (Unchecked), or None without one
    declaration_of(ckpt)               a table adapter's reading of it (Declaration | Unbuilt | None)
    declared_info(ckpt, expected)      ``params["declared"]`` of an expectation built from the declaration
    rebuild(ckpt, info, overrides)     that declaration's model with some parameters changed (CK113)

What the detector needs (``declared_params``, ``declaration_of``) is in ``ckptlint.declared.tables``: the
transformers adapter imports the detector, so the detector must not import this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ckptlint.archs.spec import load_arch
from ckptlint.declared.declaration import Declaration
from ckptlint.declared.declaration import info as table_info
from ckptlint.declared.tables import HF, KINDS, OPEN_CLIP, TIMM, declaration_of, declarations

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint
    from ckptlint.expected import Expected, Unchecked


class _Adapters(Mapping[str, ModuleType]):
    """Sidecar kind -> adapter module, imported on first use (the transformers one only with a config.json)."""

    def __getitem__(self, kind: str) -> ModuleType:
        if kind == HF:
            from ckptlint.declared import hf

            return hf
        if kind == OPEN_CLIP:
            from ckptlint.declared import open_clip

            return open_clip
        if kind == TIMM:
            from ckptlint.declared import timm

            return timm
        raise KeyError(kind)

    def __iter__(self) -> Iterator[str]:
        return iter(KINDS)

    def __len__(self) -> int:
        return len(KINDS)


ADAPTERS: Mapping[str, ModuleType] = _Adapters()


def declared_expected(ckpt: Checkpoint) -> Expected | Unchecked | None:
    """The expectation the checkpoint's own declaration gives (source ``declared``); ``Unchecked`` when there is a
    declaration that cannot be built (CK004 says why; CK113 when the library refuses it); None without one."""
    for sidecar in declarations(ckpt):
        found = ADAPTERS[sidecar.kind].expected(ckpt, sidecar)
        if found is not None:
            return found
    return None


def declared_info(ckpt: Checkpoint, expected: Expected) -> dict[str, Any] | None:
    """``params["declared"]`` (the format ``ckptlint.declared`` documents) when ``expected`` is the model the
    declaration next to the weights builds: declared, ``--arch ClassName`` read from it, or ``--arch NAME`` whose
    parameters are the declaration's; else None."""
    info = expected.params.get("declared")
    if isinstance(info, dict):
        return info if info.get("file") else None  # --arch ClassName without a config: built from the weights
    decl = declaration_of(ckpt)
    if isinstance(decl, Declaration) and _built_from(expected, decl):
        return table_info(decl)
    return _refused_class(ckpt, expected)


def _refused_class(ckpt: Checkpoint, expected: Expected) -> dict[str, Any] | None:
    """``--arch NAME`` of a family that reads its parameters from a transformers config.json (``hf-clip``): when
    transformers refuses that config.json for the class the table builds (its ``architectures``), that class's
    declaration, whose refusals CK113 reports; else None."""
    conf = load_arch(expected.arch).config if expected.source == "flag" and _known(expected.arch) else None
    side = ckpt.sidecar(HF) if conf is not None and conf.kind == HF and conf.architectures else None
    if conf is None or side is None or not isinstance(side.content, dict):
        return None
    from ckptlint.declared import hf, hf_config

    spec = hf.builtin(conf.architectures[0])
    if spec is None or spec.config is None or hf_config.select(spec.config, side.content) is None:
        return None
    built = hf.from_spec(spec, ckpt, side.name, side.content, "flag")
    info = built.params["declared"]
    return info if info["refused"] else None


def _known(arch: str) -> bool:
    from ckptlint.archs.registry import registry

    return arch in registry().archs


def _built_from(expected: Expected, decl: Declaration) -> bool:
    if expected.arch != decl.arch:
        return False
    keys = load_arch(decl.arch).variant_keys
    return all(expected.params.get(k) == decl.params[k] for k in keys if k in decl.params)


def adapter_of(info: dict[str, Any]) -> ModuleType:
    """The adapter that read the declaration of ``info``."""
    return ADAPTERS[info["kind"]]


def rebuild(ckpt: Checkpoint, info: dict[str, Any], overrides: dict[str, Any]) -> Expected | None:
    """The model ``info``'s declaration builds with ``overrides`` (parameter -> value); None when it cannot be."""
    return adapter_of(info).rebuild(ckpt, info, overrides)
