"""Which declaration sits next to the weights, and what the table declarations (open_clip, timm) declare.

Kept apart from ``ckptlint.declared.lookup`` (which holds every adapter, transformers' included): the detector
imports this module to read a declaration's parameters, and the transformers adapter imports the detector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ckptlint.declared import open_clip, timm
from ckptlint.declared.declaration import Declaration, Unbuilt, declared

if TYPE_CHECKING:
    from ckptlint.archs.spec import ArchSpec
    from ckptlint.checkpoint import Checkpoint, Sidecar

HF, OPEN_CLIP, TIMM = "hf-config", "open_clip-config", "timm-config"  # each adapter's KIND
KINDS = (HF, OPEN_CLIP, TIMM)
# adapters that read their file through the architectures' [archs.NAME.config] tables (ckptlint.declared.declaration)
TABLES = {OPEN_CLIP: open_clip, TIMM: timm}
# the declaration a folder's weights go with: an open_clip folder's weights are open_clip's
_FIRST = {"open_clip-dir": OPEN_CLIP}


def declarations(ckpt: Checkpoint) -> list[Sidecar]:
    """The sidecars an adapter reads, the folder's own kind first."""
    first = _FIRST.get(ckpt.format)
    return sorted((s for s in ckpt.sidecars if s.kind in KINDS), key=lambda s: s.kind != first)


def declaration_of(ckpt: Checkpoint) -> Declaration | Unbuilt | None:
    """What the table declaration next to the weights declares (for an open_clip folder, ``open_clip_config.json``);
    None without one."""
    ours = [s for s in declarations(ckpt) if s.kind in TABLES]
    return declared(TABLES[ours[0].kind], ours[0]) if ours else None


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
