"""The table adapters' shared half: a declaration read through an architecture's ``[archs.NAME.config]`` table (the
parameters the library's loader builds the model with, where each one comes from, the model it names), and the
expectation it builds.

The table (``rules/README.md``) says which field sets which parameter and the library's default when the field is
absent; a table adapter (``ckptlint.declared.open_clip``, ``ckptlint.declared.timm``) first turns the file into the
document the loader effectively reads (timm merges ``model_args`` over ``pretrained_cfg``...) and finishes what the
table cannot say. ``declared(adapter, sidecar)`` reads it (cached per sidecar), ``expected`` / ``rebuild`` build
the expectation, with ``params["declared"]`` (``info``) for CK113. Nothing here reads files or looks at tensors.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from ckptlint.archs import registry
from ckptlint.archs.expr import SpecError, compile_expr, evaluate
from ckptlint.archs.spec import ArchSpec, expected_for, load_arch, match_variant, variant_params
from ckptlint.errors import UsageError
from ckptlint.expected import Expected, Unchecked
from ckptlint.record import field, record, replace

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint, Sidecar

CUSTOM = "custom"
_MEMO: dict[int, tuple[Sidecar, Declaration | Unbuilt]] = {}
_MEMO_SIZE = 8


class NotBuildable(Exception):
    """The declaration asks for something the architecture's tree cannot express (the message says what)."""


@record(frozen=True)
class Declaration:
    """What a config next to the weights declares, as parameters of one architecture."""

    file: str  # the sidecar's name: open_clip_config.json, config.json
    kind: str  # Sidecar.kind
    arch: str  # the architecture (family file) that builds it: open_clip, timm-vit
    name: str  # the model it declares: a variant name (ViT-B-16), timm's architecture, else the arch
    variant: str  # the named variant its parameters are, else "custom"
    params: dict[str, Any]  # every parameter of the tree
    fields: dict[str, str]  # parameter -> the field that sets it, as the file spells it (model_cfg.embed_dim)
    given: frozenset[str]  # parameters whose field the file sets (the others are the library's defaults)
    # derived param -> the params its expression reads
    derived: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # one phrase for reports: "open_clip CLIP", "open_clip CustomTextCLIP with a SigLIP loss"
    what: str = ""
    # param -> what the loader does when the weights contradict it
    notes: dict[str, str] = field(default_factory=dict)
    # params whose field is not their value (a timm trunk's width comes from its name)
    opaque: frozenset[str] = frozenset()


def get(doc: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a JSON document (None when absent); numeric parts index lists."""
    node = doc
    for part in path.split(".") if path else []:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def accepts(spec: ArchSpec, kind: str, doc: dict[str, Any]) -> str | None:
    """The path prefix ``spec``'s config table reads ``doc`` under, when it describes ``spec``; else None."""
    conf = spec.config
    if conf is None or conf.kind != kind:
        return None
    if not conf.select:
        return conf.match[""]
    selected = get(doc, conf.select)
    if not isinstance(selected, str):
        return None
    return conf.match.get(selected, conf.match.get("*"))


def read(
    spec: ArchSpec, kind: str, doc: dict[str, Any], file: str, origin: dict[str, str] | None = None
) -> Declaration | None:
    """``doc`` (the effective declaration) as ``spec``'s parameters; None when its table does not describe it.

    ``origin`` names the file's own field behind a path of ``doc`` when the adapter moved it (timm's
    ``kwargs.img_size`` comes from ``pretrained_cfg.input_size``). ``NotBuildable`` when it describes ``spec`` but
    names a variant the family does not know or a value the tree cannot take (a non-square image size...).
    The declaration is named (``named``) once its adapter has finished it.
    """
    origin = origin or {}
    base = accepts(spec, kind, doc)
    conf = spec.config
    if base is None or conf is None:
        return None
    defaults = dict(spec.params)
    named: str | None = None
    if conf.variant:
        named = get(doc, conf.variant)
        fixed = variant_params(spec, named) if isinstance(named, str) else None
        if fixed is None:
            raise NotBuildable(f"{conf.variant} {named!r} is no {spec.name} model ckptlint knows")
        defaults.update(fixed)
    values: dict[str, Any] = {}
    fields: dict[str, str] = {}
    given: set[str] = set()
    for param, (path, default) in conf.params.items():
        fields[param] = origin.get(base + path, base + path)
        raw = get(doc, base + path)
        try:
            values[param] = (
                evaluate(default, {**defaults, **values}) if raw is None else _scalar(raw, base + path)
            )
        except SpecError as exc:
            raise NotBuildable(str(exc)) from None
        if raw is not None:
            given.add(param)
    params = {**defaults, **values}
    derived: dict[str, tuple[str, ...]] = {}
    for param, src in conf.derive.items():
        try:
            params[param] = evaluate(src, params)
        except SpecError as exc:
            raise NotBuildable(str(exc)) from None
        if isinstance(src, str):
            derived[param] = tuple(n for n in compile_expr(src).co_names if n in params)
    return Declaration(
        file, kind, spec.name, named or spec.name, CUSTOM, params, fields, frozenset(given), derived
    )


def _scalar(value: Any, path: str) -> Any:
    """A field's value as a parameter: a list of equal numbers ([224, 224]) is that number."""
    if isinstance(value, list):
        if value and all(v == value[0] for v in value) and isinstance(value[0], (int, float)):
            return value[0]
        raise NotBuildable(f"{path} = {value} (only square sizes are described)")
    if isinstance(value, dict):
        raise NotBuildable(f"{path} is a table, not a value")
    return value


def named(spec: ArchSpec, decl: Declaration) -> Declaration:
    """``decl`` with its variant: the named variant its parameters are (when the file names one: that one), else
    ``custom``; a declaration that names no model is named after that variant."""
    identity = {k: decl.params[k] for k in spec.variant_keys if k in decl.params}
    if decl.name != spec.name:  # the file names the model (timm's architecture)
        fixed = {**spec.params, **(variant_params(spec, decl.name) or {})}
        same = all(fixed.get(k) == v for k, v in identity.items() if k in fixed)
        return replace(decl, variant=decl.name if same else CUSTOM)
    found = match_variant(spec, identity).name
    return replace(decl, name=found or spec.name, variant=found or CUSTOM)


@record(frozen=True)
class Unbuilt:
    """A declaration ckptlint could not turn into a tree: ``refused`` when the library itself refuses it."""

    file: str
    kind: str
    reason: str  # "it declares a ResNet image tower (model_cfg.vision_cfg.layers [3, 4, 6, 3])"
    refused: bool = False
    loader: str = ""


# ---- a table adapter's declaration and expectation -------------------------------------------------------------
def declared(adapter: ModuleType, sidecar: Sidecar) -> Declaration | Unbuilt:
    """``sidecar`` read by the table ``adapter`` through the first architecture of its framework whose table
    describes it (cached per sidecar)."""
    hit = _MEMO.get(id(sidecar))
    if hit is not None and hit[0] is sidecar:
        return hit[1]
    found = _read(adapter, sidecar)
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.clear()
    _MEMO[id(sidecar)] = (sidecar, found)
    return found


def _read(adapter: ModuleType, sidecar: Sidecar) -> Declaration | Unbuilt:
    file, kind = sidecar.name, sidecar.kind

    def unbuilt(reason: str, refused: bool = False) -> Unbuilt:
        return Unbuilt(file, kind, reason, refused, adapter.LOADER)

    if sidecar.error is not None:  # the library's json.load fails on it too (or finds no object in it)
        return unbuilt(sidecar.error, refused=True)
    if not isinstance(sidecar.content, dict):
        return unbuilt("it is over 1 MiB, more than ckptlint reads of a declaration")
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


def expected(
    adapter: ModuleType, sidecar: Sidecar, source: Literal["declared", "flag"] = "declared"
) -> Expected | Unchecked:
    """The expectation ``sidecar`` declares; ``Unchecked`` (CK004 says why; CK113 when refused) when it cannot be
    built."""
    decl = declared(adapter, sidecar)
    if isinstance(decl, Unbuilt):
        verb = "which the loader refuses" if decl.refused else "which ckptlint cannot build"
        return Unchecked(
            reason=f"{decl.file} declares a model {verb}: {decl.reason}",
            declared_by=decl.file,
            refused=decl.reason if decl.refused else None,
        )
    return build(decl, source)


def build(
    decl: Declaration, source: Literal["declared", "flag"], overrides: dict[str, Any] | None = None
) -> Expected:
    """The model ``decl`` declares (with ``overrides``: some parameters as given, the derived ones computed again
    from them), with ``params["declared"]``."""
    spec = load_arch(decl.arch)
    params, variant = dict(decl.params), decl.variant
    if overrides:
        params = corrected(spec, decl, overrides)
        variant = CUSTOM
    return expected_for(
        spec, variant, params, {"declared": info(decl, overrides)}, source,
        declared_by=decl.file if source == "declared" else None, declared_name=decl.name,
    )  # fmt: skip


def rebuild(
    adapter: ModuleType, ckpt: Checkpoint, info: dict[str, Any], overrides: dict[str, Any]
) -> Expected | None:
    """The model of ``info``'s declaration (``params["declared"]``) built again with ``overrides``; None when that
    cannot be built."""
    sidecar = next((s for s in ckpt.sidecars if s.name == info["file"] and s.kind == adapter.KIND), None)
    decl = declared(adapter, sidecar) if sidecar is not None else None
    if not isinstance(decl, Declaration):
        return None
    try:
        return build(decl, "declared", overrides)
    except (UsageError, SpecError):
        return None


def corrected(spec: ArchSpec, decl: Declaration, overrides: dict[str, Any]) -> dict[str, Any]:
    """The declaration's parameters with ``overrides``; the derived ones not overridden computed again."""
    params = {**decl.params, **overrides}
    conf = spec.config
    for name, src in (conf.derive if conf else {}).items():
        if name not in overrides and name in decl.derived:
            params[name] = evaluate(src, params)
    return params


def info(decl: Declaration, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``params["declared"]`` of a table declaration (the format ``ckptlint.declared`` documents)."""
    return {
        "file": decl.file,
        "kind": decl.kind,
        "class": decl.name,
        "what": decl.what or decl.name,
        "tier": "table",
        "fields": {p: decl.fields.get(p, "") for p in [*decl.fields, *decl.derived]},
        "given": sorted(decl.given),
        "derived": {k: list(v) for k, v in decl.derived.items()},
        "notes": dict(decl.notes),
        "opaque": sorted(decl.opaque),
        "overrides": dict(overrides or {}),
        "refused": [],
    }
