"""Whether ``--arch`` asks for another model than the checkpoint's own declaration (CK114).

A declaration contradicts the request when, in the same framework, the requested architecture's config table does
not build the declared model (transformers ``config.json`` ``model_type siglip`` and ``--arch hf-clip``), or builds
it with other parameters than the request's (``open_clip_config.json`` declares a SigLIP model and ``--arch
open_clip:ViT-B-16``). Across frameworks it is CK104's story (the file is in another framework's layout). A
transformers task class requested on a folder whose config.json declares its base model (``--arch BertForMaskedLM``,
``architectures: [BertModel]``) is legal for transformers — ``from_pretrained`` initialises the head anew — but the
weights hold no head: the request, not the config, is what the missing keys follow from (``requested_head``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ckptlint.archs import registry
from ckptlint.archs.spec import ArchSpec, load_arch
from ckptlint.declared.declaration import Declaration
from ckptlint.declared.lookup import ADAPTERS, declaration_of
from ckptlint.record import record

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint, Sidecar
    from ckptlint.declared.contradict import BaseUnderTask
    from ckptlint.expected import Expected
    from ckptlint.rules._context import Context

MAX_FIELDS = 6


@record(frozen=True)
class Conflict:
    """The request, the declaration it contradicts, and how."""

    file: str
    requested: str  # "hf-clip", "open_clip:ViT-B-16"
    requested_title: str  # "transformers CLIPModel"
    declared: str  # "model_type siglip (hf-siglip: transformers SiglipModel)"
    declared_arch: str | None  # the architecture that builds the declared model, when one does
    differences: dict[str, list[Any]]  # param -> [requested, declared] (same architecture, other parameters)


def conflict(ckpt: Checkpoint, expected: Expected, request: str) -> Conflict | None:
    """How the ``--arch`` expectation contradicts the checkpoint's declaration, or None."""
    if expected.source != "flag":
        return None
    if expected.arch not in registry.registry().archs:  # a transformers class built by transformers (tier b)
        return _hf_live(ckpt, expected, request)
    spec = load_arch(expected.arch)
    for sidecar in ckpt.sidecars:
        adapter = ADAPTERS.get(sidecar.kind)
        if adapter is None or spec.framework != adapter.FRAMEWORK or not isinstance(sidecar.content, dict):
            continue
        if sidecar.kind == "hf-config":
            return _hf(sidecar, spec, request)
        decl = declaration_of(ckpt)
        if isinstance(decl, Declaration) and decl.file == sidecar.name:
            return _declared(decl, spec, expected, request)
    return None


@record(frozen=True)
class RequestedHead:
    """``--arch TaskClass`` on the weights of the base model the config declares: the head is not in them."""

    file: str
    requested: str  # the requested class (BertForMaskedLM)
    declared: str  # the class config.json declares (BertModel)
    found: BaseUnderTask  # the head's keys (missing) and the base model's own extras (dropped)


def declared_hf_class(ckpt: Checkpoint, file: str | None) -> str | None:
    """The transformers class the config.json ``file`` next to the weights declares (``architectures[0]``, else
    its model type's base class)."""
    side = next((s for s in ckpt.sidecars if s.name == file and s.kind == "hf-config"), None)
    content = side.content if side is not None else None
    if not isinstance(content, dict) or not isinstance(content.get("model_type"), str):
        return None
    # the hf adapter is imported only when a config.json is there (start-up time)
    from ckptlint.declared.hf import declared_class

    return declared_class(content)


def requested_head(ctx: Context, expected: Expected) -> RequestedHead | None:
    """The request's task head missing from weights that are the declared base model (its keys consumed)."""
    info = expected.params.get("declared")
    if expected.source != "flag" or not isinstance(info, dict) or info.get("kind") != "hf-config":
        return None
    declared = declared_hf_class(ctx.ckpt, info.get("file"))
    if declared is None or declared == expected.arch:
        return None
    # the contradiction finder is imported only when a declaration is there (start-up time)
    from ckptlint.declared.contradict import base_under_task

    found = base_under_task(ctx, expected)
    return RequestedHead(info["file"], expected.arch, declared, found) if found is not None else None


def _hf(sidecar: Sidecar, spec: ArchSpec, request: str) -> Conflict | None:
    content = sidecar.content or {}
    model_type = content.get("model_type")
    if not isinstance(model_type, str):
        return None
    conf = spec.config
    if conf is not None and conf.kind == "hf-config" and (model_type in conf.match or "*" in conf.match):
        return None
    # name the declared model as the request named its own: a transformers class, or a family's architecture
    # (hf-siglip); the class the config declares when only a generated family describes the model type
    declared_arch = None if spec.hf is not None else _hf_arch(model_type)
    if declared_arch is None or load_arch(declared_arch).hf is not None:
        declared_arch = _hf_class(content) or declared_arch
    declared = f"model_type {model_type}"
    if declared_arch is not None:
        title = load_arch(declared_arch).title
        declared += f" ({declared_arch})" if title.endswith(declared_arch) else f" ({declared_arch}: {title})"
    return Conflict(sidecar.name, request, spec.title, declared, declared_arch, {})


def _hf_class(content: dict[str, Any]) -> str | None:
    """The class the config declares, when a built-in family describes it."""
    # the hf adapter is imported only when a config.json is there (start-up time)
    from ckptlint.declared.hf import declared_class

    name = declared_class(content)
    return name if name is not None and name in registry.registry().archs else None


def _hf_live(ckpt: Checkpoint, expected: Expected, request: str) -> Conflict | None:
    """A class transformers built from the folder's config.json whose own model type is another one."""
    sidecar = ckpt.sidecar("hf-config")
    content = sidecar.content if sidecar is not None else None
    built = expected.load.get("model_type")
    if sidecar is None or not isinstance(content, dict) or not built or content.get("model_type") == built:
        return None
    from ckptlint.declared.hf import declared_class

    name = declared_class(content)
    declared = f"model_type {content.get('model_type')}" + (f" ({name})" if name else "")
    return Conflict(sidecar.name, request, f"transformers {expected.arch}", declared, name, {})


def _hf_arch(model_type: str) -> str | None:
    """The architecture whose config table builds ``model_type`` at the top level (siglip -> hf-siglip)."""
    reg = registry.registry()
    for fam in reg.families:
        for rule in fam.head.detect:
            if model_type in rule.config:
                spec = load_arch(rule.arch)
                if spec.config is not None and spec.config.match.get(model_type) == "":
                    return rule.arch
    return None


def _declared(decl: Declaration, spec: ArchSpec, expected: Expected, request: str) -> Conflict | None:
    declared = decl.what or decl.name
    if decl.variant != "custom" and decl.name not in declared:
        declared = f"{decl.name} ({declared})"
    if decl.arch != spec.name:
        title = load_arch(decl.arch).title
        return Conflict(decl.file, request, spec.title, f"{declared} ({decl.arch}: {title})", decl.arch, {})
    differences = {
        k: [expected.params.get(k), decl.params[k]]
        for k in spec.variant_keys
        if k in decl.params and expected.params.get(k) != decl.params[k]
    }
    if not differences:
        return None
    return Conflict(decl.file, request, spec.title, declared, decl.arch, differences)


def shown(differences: dict[str, list[Any]]) -> str:
    """``width 768 (declared 64), patch 16 (declared 8)``."""
    items = list(differences.items())
    text = ", ".join(f"{k.replace('_', ' ')} {r} (declared {d})" for k, (r, d) in items[:MAX_FIELDS])
    return text + (f" … (+{len(items) - MAX_FIELDS})" if len(items) > MAX_FIELDS else "")
