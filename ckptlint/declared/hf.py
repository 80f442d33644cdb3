"""transformers' declaration: a ``config.json`` with ``model_type``, as ``from_pretrained(DIR)`` reads it.

``architectures[0]`` is the declared class (without it, the model type's base class, as ``AutoModel`` loads it).
A class of a built-in family (``rules/archs/hf-*.toml``, generated from transformers: tier a) is expanded from the
family data with the config's fields (``ckptlint.declared.hf_config``), header-only and without torch; any other
class is built by transformers on the meta device when it is installed (tier b, ``ckptlint.declared.hf_live``);
with neither, nothing is compared and the run says why (``Unchecked``, reported by CK004). The expectation carries
the loading plan (``Expected.load``: base-model prefix, tied weights, ignores, conversions), so that its raw diff is
``from_pretrained``'s loading report (``ckptlint.declared.hf_load``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from ckptlint.archs import registry as reg
from ckptlint.archs.expr import SpecError, evaluate
from ckptlint.archs.spec import ArchSpec, build_tree, load_arch
from ckptlint.checkpoint import Checkpoint, Sidecar
from ckptlint.declared import hf_config
from ckptlint.declared.hf_config import FLOATS, declared_dtype, file_dtype
from ckptlint.declared.hf_load import plan
from ckptlint.errors import CkptlintError, UsageError
from ckptlint.expected import Expected, ExpectedTensor, Unchecked

Source = Literal["declared", "flag"]

KIND = "hf-config"
FRAMEWORK = "hf"
LIBRARY = "transformers"
LOADER = "transformers' from_pretrained({folder})"
DEFAULTS = "transformers' default"
MISMATCH = (
    "from_pretrained raises a size mismatch for {keys} (with ignore_mismatched_sizes=True it re-initialises "
    "them randomly)"
)
MISSING = (
    "{n} weights of the model are not in the file ({keys}): from_pretrained initialises them randomly and only "
    "lists them as MISSING in its load report"
)
UNEXPECTED = "{n} tensors of the file are dropped (UNEXPECTED: {keys})"
REPAIR = "correct {fields} in {file} so that the config is consistent with itself and with the weights"
INSTALL = "pip install 'ckptlint[hf]' (transformers and torch), then check again"
# transformers' own weight file names: a config.json declares these, not open_clip's or timm's files next to them
HF_WEIGHTS = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$")


def hf_sidecar(ckpt: Checkpoint | None) -> tuple[str, dict[str, Any]] | None:
    """The transformers config next to the weights (name, content), when it declares a model type and the weights
    are the ones transformers would load (an open_clip file in a hub folder is not what config.json describes)."""
    if ckpt is None or ckpt.format == "open_clip-dir":
        return None
    if ckpt.format != "hf-dir" and not HF_WEIGHTS.match(ckpt.path.replace("\\", "/").rsplit("/", 1)[-1]):
        return None
    side = ckpt.sidecar(KIND)
    if side is None or not isinstance(side.content, dict):
        return None
    if not isinstance(side.content.get("model_type"), str):
        return None
    return side.name, side.content


# ---- the adapter's interface (ckptlint.declared.lookup) --------------------------------------------------------
def expected(ckpt: Checkpoint, sidecar: Sidecar) -> Expected | Unchecked | None:
    """The class ``config.json`` declares, built from its fields; None when it does not declare these weights."""
    found = hf_sidecar(ckpt)
    if found is None or found[0] != sidecar.name:
        return None
    file, content = found
    name = declared_class(content)
    if name is None:
        return unchecked(file, content)
    return build(ckpt, file, content, name, "declared")


def rebuild(ckpt: Checkpoint, info: dict[str, Any], overrides: dict[str, Any]) -> Expected | None:
    """The model of ``info`` (``params["declared"]``) built again from the same config with ``overrides``."""
    if info.get("tier") == "transformers":
        from ckptlint.declared import hf_live

        return hf_live.rebuild(ckpt, info, overrides)
    spec = builtin(info["class"])
    if spec is None:
        return None
    found = hf_sidecar(ckpt)
    file = info.get("file")
    content = found[1] if found is not None and found[0] == file else {"model_type": info.get("model_type")}
    try:
        return from_spec(spec, ckpt, file, content, "declared", {**info.get("overrides", {}), **overrides})
    except UsageError:
        return None


# ---- building ------------------------------------------------------------------------------------------------
def declared_class(content: dict[str, Any]) -> str | None:
    """``architectures[0]``, else the base class of ``model_type`` (built in, else transformers' AutoModel)."""
    archs = content.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str) and archs[0]:
        return archs[0]
    model_type = content["model_type"]
    for fam in reg.registry().families:
        for rule in fam.head.detect:
            if rule.layout is None and model_type in rule.config and rule.arch in reg.registry().archs:
                return rule.arch
    from ckptlint.declared import hf_live

    return hf_live.base_class(model_type) if hf_live.available() else None


def builtin(name: str) -> ArchSpec | None:
    """The built-in (tier a) architecture of the transformers class ``name``, if a family declares one."""
    if name not in reg.registry().archs:
        return None
    spec = load_arch(name)
    return spec if spec.hf is not None and spec.config is not None else None


def build(
    ckpt: Checkpoint | None, file: str, content: dict[str, Any], name: str, source: Source
) -> Expected | Unchecked:
    spec = builtin(name)
    if spec is not None and hf_config.select(spec.config, content) is not None:
        return from_spec(spec, ckpt, file, content, source)
    from ckptlint.declared import hf_live

    if hf_live.cached(content, name) or hf_live.available():
        return hf_live.expected(ckpt, file, content, name, source)
    return unchecked(file, content)


def unchecked(file: str, content: dict[str, Any]) -> Unchecked:
    """No built-in family and no transformers: CK004 says so, with the install that gives the check."""
    model_type = content.get("model_type")
    return Unchecked(
        reason=f"{file} declares model_type {model_type}; install ckptlint[hf] to check it against its architecture",
        fix=INSTALL,
        declared_by=file,
    )


def from_spec(
    spec: ArchSpec,
    ckpt: Checkpoint | None,
    file: str | None,
    content: dict[str, Any],
    source: Source,
    overrides: dict[str, Any] | None = None,
) -> Expected:
    """``spec`` expanded for the fields of ``content`` (and ``overrides``): the tree and the loading plan."""
    assert spec.config is not None and spec.hf is not None
    try:
        dp = hf_config.read(spec.config, content, overrides)
    except SpecError as exc:
        raise UsageError(f"{file or spec.name}: {exc}") from None
    params = {**spec.params, **dp.values}
    refused = []
    for check in spec.hf.checks:
        try:
            ok = bool(evaluate(check.expr, params))
        except SpecError:
            ok = False
        if not ok:
            refused.append({"fields": list(check.fields), "message": _format(check.message, params)})
    try:
        built = build_tree(spec, params)
        tree, towers = built.tensors, built.towers
    except (
        CkptlintError
    ) as exc:  # the config cannot be expanded (a zero head count...): transformers refuses it too
        tree, towers = {}, {}
        refused.append({"fields": [], "message": str(exc)})
    dtype = declared_dtype(content) or file_dtype(ckpt)
    tensors = {
        k: ExpectedTensor(shape=shape, dtype=dtype if d in FLOATS and dtype else d)
        for k, (shape, d) in tree.items()
    }
    info = {
        "file": file,
        "kind": KIND,
        "class": spec.name,
        "what": spec.name,
        "model_type": dp.model_type,
        "tier": "builtin",
        "base": dp.base,
        "fields": dp.fields,
        "given": sorted(dp.explicit),
        "counted": dp.counted,
        "overrides": dict(overrides or {}),
        "refused": refused,
        "modalities": list(spec.hf.modalities),
    }
    return Expected(
        arch=spec.name,
        variant=None,
        source=source,
        framework="hf",
        key_sep=".",
        tensors=tensors,
        params={**params, "declared": info},
        towers=towers,
        description=f"transformers {dp.model_type}" if dp.model_type else spec.title,
        declared_by=file if source == "declared" else None,
        declared_name=spec.name,
        load=plan(spec.hf, params),
    )


def _format(message: str, params: dict[str, Any]) -> str:
    try:
        return message.format(**params)
    except (KeyError, IndexError, ValueError):
        return message
