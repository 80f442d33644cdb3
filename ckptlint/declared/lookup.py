"""Which declaration a checkpoint carries, and the adapter that reads it: one adapter per kind of declaration.

    ADAPTERS                           Sidecar.kind -> adapter module
    declared_expected(ckpt)            the model the declaration next to the weights builds (Expected), why it
                                       cannot be built (Unchecked), or None without one
    declaration_of(ckpt)               a table adapter's reading of it (Declaration | Unbuilt | None)
    declared_params(spec, ckpt)        the parameters it gives ``spec`` (the detector's step 5: ``--arch NAME``)
    declared_info(ckpt, expected)      ``params["declared"]`` of an expectation built from the declaration
    rebuild(ckpt, info, overrides)     that declaration's model with some parameters changed (CK113)

Kept apart from the detector and ``ckptlint.archs.resolve``: the detector imports this module.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ckptlint.archs.spec import load_arch
from ckptlint.declared.declaration import Declaration, Unbuilt, declared
from ckptlint.declared.declaration import info as table_info

if TYPE_CHECKING:
    from ckptlint.archs.spec import ArchSpec
    from ckptlint.checkpoint import Checkpoint, Sidecar
    from ckptlint.expected import Expected, Unchecked

HF, OPEN_CLIP, TIMM = "hf-config", "open_clip-config", "timm-config"  # each adapter's KIND


_MODULES = {HF: "hf", OPEN_CLIP: "open_clip", TIMM: "timm"}


class _Adapters(Mapping[str, ModuleType]):
    """Sidecar kind -> adapter module, imported on first use (a file without a declaration imports none)."""

    def __getitem__(self, kind: str) -> ModuleType:
        return importlib.import_module(f"ckptlint.declared.{_MODULES[kind]}")

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


ADAPTERS: Mapping[str, ModuleType] = _Adapters()
# adapters that read their file through the architectures' [archs.NAME.config] tables (ckptlint.declared.declaration)
TABLES = (OPEN_CLIP, TIMM)
# the declaration a folder's weights go with: an open_clip folder's weights are open_clip's
_FIRST = {"open_clip-dir": OPEN_CLIP}


def declarations(ckpt: Checkpoint) -> list[Sidecar]:
    """The sidecars an adapter reads, the folder's own kind first."""
    first = _FIRST.get(ckpt.format)
    return sorted((s for s in ckpt.sidecars if s.kind in ADAPTERS), key=lambda s: s.kind != first)


def declared_expected(ckpt: Checkpoint) -> Expected | Unchecked | None:
    """The expectation the checkpoint's own declaration gives (source ``declared``); ``Unchecked`` when there is a
    declaration that cannot be built (CK004 says why; CK113 when the library refuses it); None without one."""
    for sidecar in declarations(ckpt):
        found = ADAPTERS[sidecar.kind].expected(ckpt, sidecar)
        if found is not None:
            return found
    return None


def declaration_of(ckpt: Checkpoint) -> Declaration | Unbuilt | None:
    """What the table declaration next to the weights declares (for an open_clip folder, ``open_clip_config.json``);
    None without one."""
    ours = [s for s in declarations(ckpt) if s.kind in TABLES]
    return declared(ADAPTERS[ours[0].kind], ours[0]) if ours else None


def declared_params(spec: ArchSpec, ckpt: Checkpoint) -> tuple[dict[str, Any], str] | None:
    """(parameters, "FILE (...)") when the checkpoint declares ``spec``'s architecture (``--arch NAME`` without a
    variant reads them)."""
    conf = spec.config
    if conf is None:
        return None
    if conf.kind == HF:
        from ckptlint.declared import hf_config

        sidecar = ckpt.sidecar(HF)
        content = sidecar.content if sidecar is not None else None
        if sidecar is None or not isinstance(content, dict) or hf_config.select(conf, content) is None:
            return None
        return hf_config.read(conf, content).values, f"{sidecar.name} ({conf.select} {content[conf.select]})"
    found = declaration_of(ckpt)
    if not isinstance(found, Declaration) or found.arch != spec.name:
        return None
    return dict(found.params), found.file if found.name == found.arch else f"{found.file} ({found.name})"


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
    return None


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
