"""Which declaration a checkpoint carries, read by its adapter: ``declaration_of(ckpt)`` (cached per checkpoint).

Kept apart from ``ckptlint.declared`` (which builds expectations) so that the detector may read declarations
without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ckptlint.declared import open_clip, timm
from ckptlint.declared.declaration import Declaration, NotBuildable, named, read

if TYPE_CHECKING:
    from ckptlint.archs.spec import ArchSpec
    from ckptlint.checkpoint import Checkpoint, Sidecar

ADAPTERS: dict[str, ModuleType] = {open_clip.KIND: open_clip, timm.KIND: timm}
# the declaration a folder's weights go with: an open_clip folder's weights are open_clip's
_FIRST = {"open_clip-dir": open_clip.KIND}
_MEMO: dict[int, tuple[Checkpoint, Declaration | Unbuilt | None]] = {}
_MEMO_SIZE = 8


@dataclass(frozen=True)
class Unbuilt:
    """A declaration ckptlint could not turn into a tree: ``refused`` when the library itself refuses it."""

    file: str
    kind: str
    reason: str  # "it declares a ResNet image tower (model_cfg.vision_cfg.layers [3, 4, 6, 3])"
    refused: bool = False
    loader: str = ""


def declaration_of(ckpt: Checkpoint) -> Declaration | Unbuilt | None:
    """What the declaration next to the weights declares (the first an adapter reads; for an open_clip folder,
    ``open_clip_config.json``); None without one."""
    hit = _MEMO.get(id(ckpt))
    if hit is not None and hit[0] is ckpt:
        return hit[1]
    first = _FIRST.get(ckpt.format)
    ours = sorted((s for s in ckpt.sidecars if s.kind in ADAPTERS), key=lambda s: s.kind != first)
    found = _declaration(ours[0]) if ours else None
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.clear()
    _MEMO[id(ckpt)] = (ckpt, found)
    return found


def declared_params(spec: ArchSpec, ckpt: Checkpoint) -> tuple[dict[str, Any], str] | None:
    """(parameters, "FILE (NAME)") when the checkpoint declares ``spec``'s architecture (``--arch NAME`` without a
    variant reads them, as the detector does a transformers config.json)."""
    found = declaration_of(ckpt)
    if not isinstance(found, Declaration) or found.arch != spec.name:
        return None
    return dict(found.params), found.file if found.name == found.arch else f"{found.file} ({found.name})"


def _declaration(sidecar: Sidecar) -> Declaration | Unbuilt:
    from ckptlint.archs import registry
    from ckptlint.archs.spec import load_arch

    adapter = ADAPTERS[sidecar.kind]
    file, kind = sidecar.name, sidecar.kind

    def unbuilt(reason: str, refused: bool = False) -> Unbuilt:
        return Unbuilt(file, kind, reason, refused, adapter.LOADER)

    if not isinstance(sidecar.content, dict):
        return unbuilt("it is not a JSON object ckptlint could read (or is over 1 MiB)", refused=True)
    try:
        doc, origin = adapter.document(sidecar.content)
        reg = registry.registry()
        for name in sorted(reg.archs):
            if reg.archs[name].framework != adapter.FRAMEWORK:
                continue
            spec = load_arch(name)
            decl = read(spec, kind, doc, file, origin)
            if decl is not None:
                decl = named(spec, adapter.finish(decl, doc))
                rename = getattr(adapter, "rename", None)
                return rename(decl, doc) if rename else decl
    except adapter.Refused as exc:
        return unbuilt(str(exc), refused=True)
    except NotBuildable as exc:
        return unbuilt(str(exc))
    return unbuilt("no architecture ckptlint knows is built from it")
