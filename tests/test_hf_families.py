"""The generated transformers families (``rules/archs/hf-*.toml``, tier a) are what transformers builds.

Every class of every generated family is built by transformers on the meta device at configurations the
generator never saw (other seeds), its config saved the way ``save_pretrained`` writes ``config.json`` (only the
fields that differ from the defaults) and read back by ckptlint; the expected tree must be exactly the model's
``state_dict()`` (keys, shapes, non-float dtypes), and the loading plan exactly the model's base-model prefix,
tied weights, ignore patterns and key conversions.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from hf_families import FAMILIES, Group, config_kwargs, param_name, sample_values  # noqa: E402

from ckptlint.archs.registry import registry  # noqa: E402
from ckptlint.archs.spec import load_arch  # noqa: E402
from ckptlint.declared import hf  # noqa: E402
from ckptlint.declared.hf_introspect import build_meta, introspect, model_class  # noqa: E402

SEEDS = (1001, 2002, 3003)


def _generated() -> list[tuple[str, Group, str]]:
    out = []
    archs = registry().archs
    for key, fam in FAMILIES.items():
        for group in fam.groups:
            for name in group.classes:
                if name in archs:
                    out.append((key, group, name))
    return out


CASES = _generated()


def _configs(group: Group, seed: int, n: int = 2) -> list[object]:
    import transformers

    rng = random.Random(seed)
    cls = getattr(transformers, group.config)
    out = []
    for _ in range(200):
        values = sample_values(group, rng)
        if len(out) % 2:  # every other configuration leaves some fields out: their defaults are tested too
            values = {k: v for k, v in values.items() if rng.random() < 0.6}
        try:
            out.append(cls(**config_kwargs(values, group.fixed)))
        except Exception:
            continue
        if len(out) == n:
            break
    return out


def test_every_family_is_generated() -> None:
    """Each family of the generator has its file, written by the generator (not by hand)."""
    files = {f.name: f for f in registry().families}
    for fam in FAMILIES.values():
        assert fam.file in files, fam.file
        head = files[fam.file].head.family
        assert head.generated_by and head.generated_by.startswith("scripts/gen_hf_families.py")
    assert len(CASES) >= 40


@pytest.mark.parametrize(("family", "group", "name"), CASES, ids=[c[2] for c in CASES])
def test_generated_class_equals_transformers(family: str, group: Group, name: str) -> None:
    spec = load_arch(name)
    checked = 0
    for seed in SEEDS:
        for config in _configs(group, seed):
            try:
                model = build_meta(model_class(name), config)
            except Exception:  # the generator skipped such configurations too
                continue
            facts = introspect(model)
            for use_diff in (True, False):
                content = json.loads(config.to_json_string(use_diff=use_diff))
                content.setdefault("model_type", type(config).model_type)
                exp = hf.from_spec(spec, None, "config.json", content, "declared")
                got = {k: (list(t.shape), t.dtype) for k, t in exp.tensors.items()}
                want = {k: (shape, dtype) for k, (shape, dtype) in facts["tensors"].items()}
                assert list(got) == list(want), f"{name}: keys differ at {content}"
                for k, (shape, dtype) in want.items():
                    assert got[k][0] == shape, f"{name}.{k}: {got[k][0]} != {shape} at {content}"
                    if dtype not in ("float32",):
                        assert got[k][1] == dtype, f"{name}.{k}: dtype {got[k][1]} != {dtype}"
                load = exp.load
                assert load["base_prefix"] == facts["base_prefix"]
                assert load["tied"] == facts["tied"], f"{name}: tied at {content}"
                assert load["ignore_missing"] == facts["ignore_missing"]
                assert load["ignore_unexpected"] == facts["ignore_unexpected"] + facts["extra_unexpected"]
                assert load["transforms"] == facts["transforms"]
                assert exp.params["declared"]["refused"] == []
            checked += 1
    assert checked >= 3, f"{name}: built at only {checked} configurations"


def _refusing(exc: BaseException) -> tuple[str, BaseException]:
    """The innermost transformers (or torch) function of what transformers raised, and the exception itself (the
    cause under huggingface_hub's validation wrapper)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    tb, where = exc.__traceback__, ""
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "/transformers/" in name or "/torch/" in name:
            where = tb.tb_frame.f_code.co_qualname
        tb = tb.tb_next
    return where, exc


def _edits(group: Group, spec: object, values: dict) -> list[dict]:
    """Configurations transformers may refuse, from the family's own data: each divisor 0 and -1, each checked
    numerator one more than a multiple of its divisor (a divided one may then give a zero head_dim, which only
    the weights' shapes contradict)."""
    knobs = {param_name(k): k for k in group.ints}
    out = []
    checks = [str(c.expr) for c in spec.hf.checks if c.where]
    for expr in [*checks, *(str(d.expr) for d in spec.hf.divides)]:
        for num, den in re.findall(r"(\w+) (?://|%) (\w+)", expr):
            if den in knobs:
                out += [{**values, knobs[den]: 0}, {**values, knobs[den]: -1}]
            if den in knobs and num in knobs and expr in checks:
                d = max(values[knobs[den]], 2)
                out.append({**values, knobs[den]: d, knobs[num]: 8 * d + 1})
    return out


@pytest.mark.parametrize(("family", "group", "name"), CASES, ids=[c[2] for c in CASES])
def test_generated_refusals_are_transformers(family: str, group: Group, name: str) -> None:
    """What the family says transformers refuses (``checks``, ``divides``), at configurations the generator never
    saw: ckptlint refuses exactly when transformers fails to build the config or the model, and names the function
    transformers fails in (with its message, for a ValueError)."""
    import transformers

    spec = load_arch(name)
    rng = random.Random(4004)
    cfg_cls = getattr(transformers, group.config)
    tried = 0
    for _ in range(40):
        values = sample_values(group, rng)
        try:
            cfg_cls(**config_kwargs(values, group.fixed))
        except Exception:
            continue
        for edit in _edits(group, spec, values):
            content = {**config_kwargs(edit, group.fixed), "model_type": cfg_cls.model_type}
            refused = hf.from_spec(spec, None, "config.json", content, "declared").params["declared"][
                "refused"
            ]
            try:
                build_meta(model_class(name), cfg_cls(**config_kwargs(edit, group.fixed)))
                raised = None
            except Exception as exc:
                raised = exc
            assert bool(refused) == (raised is not None), f"{name} at {edit}: {refused} / {raised!r}"
            tried += 1
            if raised is None:
                continue
            where, exc = _refusing(raised)
            message = refused[0]["message"]
            named = re.search(r"\((\w+\.\w+) (?:checks|computes) |^(\w+\.\w+) raises ", message)
            if named is not None:  # the function transformers fails in, and how
                assert where == (named.group(1) or named.group(2)), (message, where)
                if named.group(2):
                    assert message == f"{where} raises {type(exc).__name__}: {exc}", (message, str(exc))
                else:
                    assert isinstance(exc, ZeroDivisionError) and "ZeroDivisionError" in message
    assert tried or not _edits(group, spec, sample_values(group, rng)), f"{name}: nothing tried"
