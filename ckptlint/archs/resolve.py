"""Turn (arch name, variant or checkpoint, overrides) into an ``Expected``."""

from __future__ import annotations

from typing import Any, Literal

from ckptlint.archs.detect import Inference, infer
from ckptlint.archs.expr import SpecError
from ckptlint.archs.spec import (
    ArchSpec,
    expected_for,
    load_arch,
    match_variant,
    unknown_variant,
    variant_params,
)
from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UsageError
from ckptlint.expected import Expected

CUSTOM = "custom"


def resolve(
    name: str,
    variant: str | None,
    overrides: dict[str, Any],
    ckpt: Checkpoint | None,
    source: Literal["flag", "inferred"],
) -> Expected:
    spec = load_arch(name)
    _check_overrides(spec, overrides)
    info: dict[str, Any] = {}
    if variant is not None and variant != CUSTOM:
        fixed = variant_params(spec, variant)
        if fixed is None:
            raise unknown_variant(spec, variant)
        params = {**spec.params, **fixed}
        info["variant_given"] = True  # nothing was inferred: the report names no evidence
    else:
        variant, params, info = _from_checkpoint(spec, ckpt)
    if overrides:
        params.update(overrides)
        info["overrides"] = dict(overrides)
        if variant != CUSTOM and variant is not None:
            fixed = variant_params(spec, variant) or {}
            changed = [
                k
                for k, v in overrides.items()
                if k in spec.variant_keys and {**spec.params, **fixed}.get(k) != v
            ]
            if changed:
                variant = CUSTOM
    expected = expected_for(spec, variant, params, info, source)
    if spec.loads_as is not None:
        expected.load = _loader_plan(spec, params)
    return expected


def _loader_plan(spec: ArchSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The loading plan of the transformers class ``spec`` stands for (``loads_as``): ``--arch hf-clip-vision``
    reads a folder as ``CLIPVisionModel.from_pretrained`` does (a CLIPModel's ``vision_model.`` taken, the rest
    unexpected), exactly as ``--arch CLIPVisionModel``."""
    from ckptlint.declared.hf_load import plan

    target = load_arch(str(spec.loads_as))
    if target.hf is None:
        raise SpecError(f"{spec.name}: loads_as {spec.loads_as!r} is no transformers class (no [hf] table)")
    return plan(target.hf, params)


def _from_checkpoint(spec: ArchSpec, ckpt: Checkpoint | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    default = variant_params(spec, spec.default_variant) or {}
    if ckpt is None:
        params = {**spec.params, **default}
        return (
            spec.default_variant,
            params,
            {"inferred_from": f"default variant {spec.default_variant} (no checkpoint)"},
        )
    found = infer(spec, ckpt)
    if not found.observed:
        params = {**spec.params, **default}
        why = f"default variant {spec.default_variant}: no {spec.name} tower found in the checkpoint"
        return spec.default_variant, params, {"inferred_from": why}
    match = match_variant(spec, found.observed)
    # what the checkpoint does not show (a tower it lacks...) stays as in the default variant
    params = {**spec.params, **default, **found.guessed, **match.params, **found.observed}
    info = _describe(found, ckpt)
    if match.name is None:
        if match.nearest:
            info["nearest_variant"] = match.nearest
            info["variant_diff"] = match.diff
        return CUSTOM, params, info
    return match.name, params, info


def _describe(found: Inference, ckpt: Checkpoint) -> dict[str, Any]:
    info: dict[str, Any] = {"inferred_from": found.summary(ckpt)}
    info["root"] = found.root
    info["found"] = {f.tower: f.prefix for f in found.found}
    foreign = {f.tower: f.module for f in found.found if not f.native}
    if foreign:
        info["foreign"] = foreign
    info["evidence"] = dict(found.evidence)
    return info


def _check_overrides(spec: ArchSpec, overrides: dict[str, Any]) -> None:
    unknown = sorted(set(overrides) - spec.namespace)
    if unknown:
        known = ", ".join(sorted(spec.namespace))
        raise UsageError(f"unknown parameter(s) {', '.join(unknown)} for {spec.name}; known: {known}")
