"""Generate the built-in transformers families (tier a) from transformers itself.

    python scripts/gen_hf_families.py                 # rewrite every rules/archs/hf-*.toml listed in hf_families
    python scripts/gen_hf_families.py llama bert      # only these model types
    python scripts/gen_hf_families.py --check         # exit 1 when a generated file differs from what it would be

For each config class of a family (``scripts/hf_families.py``) every model class is built on torch's meta device
(no weights) at several random small configurations. ``scripts/hf_fit.py`` turns the ``state_dict()`` keys into
templates with a block index ``{i}``, each dimension into an expression of the config fields, and each key only some
configurations have into a condition. What ``from_pretrained`` does around the state_dict — the base-model prefix,
tied weights, ignore patterns, non-persistent buffers, the key conversions of transformers 5 (legacy names, fused
MoE experts) and the config checks that make transformers refuse a config — is recorded too
(``ckptlint.declared.hf_introspect``), and so is what else makes transformers refuse a configuration: a division by
a field that is zero, a field that is no multiple of another, a negative one (``scripts/hf_refusals.py``, each found
by building the class with that field so). The result is verified against transformers at other configurations by
``tests/test_hf_families.py`` (run it after generating).
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]

import tvshim  # noqa: E402,F401  (transformers imports torchvision: see tests/tvshim.py)
from hf_families import FAMILIES, Family, Group, env_of, make_config, param_name, sample_values  # noqa: E402
from hf_fit import FitError, fit, fit_condition, templates  # noqa: E402
from hf_refusals import refusals  # noqa: E402

from ckptlint.archs.expr import evaluate  # noqa: E402
from ckptlint.declared.hf_introspect import build_meta, introspect, model_class  # noqa: E402

OUT = ROOT / "rules" / "archs"
N_SAMPLES = 24
SEED = 11
MAX_TRIES = 400
# candidate config checks: (expression, fields, message, a violating edit of the knob values)
CHECKS = [
    (
        "hidden_size % num_attention_heads == 0",
        ["hidden_size", "num_attention_heads"],
        "hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_attention_heads})",
        lambda v: {**v, "hidden_size": v["num_attention_heads"] * 8 + 1},
    ),
    (
        "layer_types_len == num_hidden_layers",
        ["num_hidden_layers", "layer_types_len"],
        "num_hidden_layers ({num_hidden_layers}) must equal the number of layer_types ({layer_types_len})",
        lambda v: {**v, "layer_types": ["full_attention"] * (v["num_hidden_layers"] + 1)},
    ),
]


def log(*args: Any) -> None:
    print(*args, file=sys.stderr)


# ---- sampling ------------------------------------------------------------------------------------------------------
def samples(
    group: Group, classes: list[str], seed: int, n: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``n`` random configurations where transformers builds the config: (knob values, class -> facts)."""
    rng = random.Random(seed)
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    tries = 0
    while len(out) < n and tries < MAX_TRIES:
        tries += 1
        values = sample_values(group, rng)
        try:
            config = make_config(group, values)
        except Exception:  # an invalid combination (hidden_size not a multiple of heads...): draw again
            continue
        facts = {}
        for name in classes:
            try:
                facts[name] = introspect(build_meta(model_class(name), config))
            except Exception as exc:
                facts[name] = None
                log(f"  {name}: cannot build at {values}: {type(exc).__name__}: {exc}")
        out.append((values, facts))
    if len(out) < n:
        raise SystemExit(f"{group.config}: only {len(out)} valid configurations in {MAX_TRIES} tries")
    return out


def defaults(group: Group, ints: list[str]) -> dict[str, Any]:
    """Each knob's value when the config omits it: a constant, or an expression of the other knobs."""
    out: dict[str, Any] = {}
    rng = random.Random(SEED + 1)
    for path in [*group.ints, *group.bools, *group.strings]:
        declared = _field_default(group, path)
        if declared is not None:  # a plain default: no other field changes it
            out[path] = declared
            continue
        rows: list[tuple[dict[str, Any], Any]] = []
        tries = 0
        while len(rows) < 8 and tries < MAX_TRIES:
            tries += 1
            values = sample_values(group, rng)
            values.pop(path)
            try:
                config = make_config(group, values)
            except Exception:
                continue
            rows.append((env_of(group, values), _resolved(config, path)))
        if not rows:
            raise SystemExit(f"{group.config}.{path}: no valid configuration without it")
        ys = {json.dumps(y) for _, y in rows}
        if len(ys) == 1:
            out[path] = rows[0][1]
            continue
        others = [i for i in ints if i != param_name(path)]
        out[path] = fit([(env, y) for env, y in rows], others).text
    return out


def _model_defaults(
    group: Group, name: str, fitted: dict[str, Any], dflt: dict[str, Any], ints: list[str]
) -> None:
    """Fields a config leaves None and the model derives (Mixtral's head_dim = hidden_size // heads): the default is
    read back from the model built without them, through the class's own probes."""
    from ckptlint.archs.detect import run_probes
    from ckptlint.archs.schema import Probe

    all_probes = probes(fitted["templates"], [param_name(k) for k in group.ints])
    rng = random.Random(SEED + 3)
    for path in group.ints:
        p = param_name(path)
        if dflt.get(path) is not None or p not in all_probes:
            continue
        rows = []
        for _ in range(MAX_TRIES):
            if len(rows) >= 8:
                break
            values = sample_values(group, rng)
            values.pop(path)
            try:
                facts = introspect(build_meta(model_class(name), make_config(group, values)))
            except Exception:
                continue
            from ckptlint.checkpoint import tensor_info

            tensors = {k: tensor_info(shape, dt) for k, (shape, dt) in facts["tensors"].items()}
            env = env_of(group, values)
            found, observed, _ = run_probes({p: [Probe(**x) for x in all_probes[p]]}, tensors, "", env)
            if p in observed:
                rows.append((env, found[p]))
        if len(rows) < 4:
            raise SystemExit(f"{group.config}.{path}: the model's own default cannot be read back")
        others = [i for i in ints if i != p]
        dflt[path] = fit(rows, others).text if len({y for _, y in rows}) > 1 else rows[0][1]
        log(f"  {path}: None in the config, {dflt[path]} in the model")


def _field_default(group: Group, path: str) -> Any:
    """The dataclass default of a config field (None when it is None: __post_init__ derives it)."""
    import dataclasses

    import transformers

    if path == "num_labels":
        return 2
    cls = getattr(transformers, group.config)
    *subs, leaf = path.split(".")
    if subs:
        cls = cls.sub_configs[subs[0]]
    for f in dataclasses.fields(cls):
        if f.name == leaf:
            value = f.default if f.default is not dataclasses.MISSING else None
            return value if isinstance(value, (int, float, str, bool)) else None
    return None


def _resolved(config: Any, path: str) -> Any:
    node = config
    for part in path.split("."):
        node = len(node.id2label) if part == "num_labels" else getattr(node, part)
    return node


# ---- one class -------------------------------------------------------------------------------------------------
def fit_class(name: str, group: Group, rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    ints = [param_name(k) for k in group.ints] + list(group.derived)
    bools = [param_name(b) for b in group.bools]
    strings = {param_name(k): v for k, v in group.strings.items()}
    built = [(env_of(group, v), f[name]) for v, f in rows if f.get(name) is not None]
    if len(built) < 6:
        raise FitError(f"{name}: built at only {len(built)} configurations")
    tpls = templates(
        [(env, {k: tuple(v) for k, v in facts["tensors"].items()}) for env, facts in built],
        ints,
        bools,
        strings,
    )
    first = built[0][1]
    for key in ("base_prefix", "ignore_missing", "ignore_unexpected", "extra_unexpected", "transforms"):
        if any(facts[key] != first[key] for _, facts in built):
            raise FitError(f"{name}: {key} depends on the configuration")
    tied_pairs = {(t, s) for _, facts in built for t, s in facts["tied"].items()}
    tied = []
    for target, source in sorted(tied_pairs):
        present = [facts["tied"].get(target) == source for _, facts in built]
        when = fit_condition(present, [env for env, _ in built], bools, strings)
        tied.append({"target": target, "source": source, **({"when": when} if when else {})})
    return {"templates": tpls, "tied": tied, "facts": first, "envs": [env for env, _ in built]}


def probes(tpls: list[Any], params: list[str]) -> dict[str, list[dict[str, Any]]]:
    """How to read each parameter back from the weights: count probes for block counts, then dimensions."""
    out: dict[str, list[dict[str, Any]]] = {}
    for t in tpls:
        if t.repeat and t.when is None and t.repeat not in out:
            out[t.repeat] = [{"count": f"{t.group}{t.key}"}]
    found: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for t in tpls:
        if t.when is not None:
            continue
        key = f"{t.group.replace('{i}', '0')}{t.key}" if t.group else t.key
        for d, e in enumerate(t.shape):
            for p, inv in e.inverses:
                probe = {"key": key, "dim": d} if inv == "x" else {"key": key, "dim": d, "expr": inv}
                found.setdefault(p, []).append((e.rank, probe))
    for p in params:
        if p in found and p not in out:
            out[p] = [probe for _, probe in sorted(found[p], key=lambda r: r[0])[:3]]
    return out


def checks(group: Group) -> list[dict[str, Any]]:
    """The candidate config checks transformers enforces for this config class."""
    rng = random.Random(SEED + 2)
    out = []
    for expr, fields, message, violate in CHECKS:
        names = [f for f in fields if f != "layer_types_len"]
        if not all(n in group.ints for n in names):
            continue
        refused = accepted = 0
        for _ in range(40):
            values = sample_values(group, rng)
            try:
                make_config(group, values)
            except Exception:
                continue
            accepted += 1
            try:
                make_config(group, violate(values))
            except Exception:
                refused += 1
        if accepted and refused == accepted:
            out.append({"expr": expr, "fields": fields, "message": message})
    return out


# ---- emitting ------------------------------------------------------------------------------------------------------
def toml_str(s: str) -> str:
    if "'" not in s and "\n" not in s:
        return f"'{s}'" if "\\" in s else json.dumps(s)
    return json.dumps(s)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        raise ValueError("TOML has no null")
    raise TypeError(type(v))


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _tensor(t: Any) -> str:
    shape = [int(e.text) if e.text.lstrip("-").isdigit() else e.text for e in t.shape]
    if t.dtype:
        body = {"key": t.key, "shape": shape, **({"when": t.when} if t.when else {}), "dtype": t.dtype}
        return toml_value(body)
    return toml_value([t.key, shape, *([t.when] if t.when else [])])


def tree_lines(tpls: list[Any]) -> list[str]:
    lines = ["tree = ["]
    current: str | None = None
    for t in tpls:
        if t.group != current:
            if current is not None:
                lines.append("  ] },")
            if t.group is not None:
                lines.append(f"  {{ prefix = {toml_str(t.group)}, repeat = {toml_str(t.repeat)}, tensors = [")
            current = t.group
        indent = "    " if t.group else "  "
        lines.append(f"{indent}{_tensor(t)},")
    if current is not None:
        lines.append("  ] },")
    lines.append("]")
    return lines


def arch_lines(
    fam: Family,
    group: Group,
    name: str,
    fitted: dict[str, Any],
    dflt: dict[str, Any],
    config_checks: list[dict[str, Any]],
    model_type: str,
    refused: dict[str, list[dict[str, Any]]],
) -> list[str]:
    facts = fitted["facts"]
    all_checks = config_checks + refused["checks"]
    tpls = fitted["templates"]
    used = {p for t in tpls for e in t.shape for p in _names(e.text)} | {t.repeat for t in tpls if t.repeat}
    used |= {p for t in tpls if t.when for p in _names(t.when)}
    used |= {p for entry in fitted["tied"] if "when" in entry for p in _names(entry["when"])}
    used |= {f for c in all_checks for f in c["fields"]}
    used |= {p for c in [*all_checks, *refused["divides"]] for p in _names(c["expr"])}
    for name_, src in group.derived.items():
        if name_ in used:
            used |= set(_names(src))
    knob_params = {param_name(k): k for k in [*group.ints, *group.bools, *group.strings]}
    params: dict[str, list[Any]] = {}
    for p, path in knob_params.items():
        if p in used or p in group.derived:
            params[p] = [_config_path(path, group), _default(dflt[path])]
    for p, src in group.derived.items():
        if p in used:
            params[p] = ["", src]
    if "layer_types_len" in used:
        params["layer_types_len"] = ["len(layer_types)", "num_hidden_layers"]
    for p in list(params):
        if isinstance(params[p][1], str) and params[p][1] not in knob_params and params[p][0] != "":
            for dep in _names(params[p][1]):
                if dep not in params and dep in knob_params:
                    params[dep] = [_config_path(knob_params[dep], group), _default(dflt[knob_params[dep]])]
    defaults_const = _resolve_defaults(params, set(group.strings))
    match = {model_type: "", **group.parents}
    lines = [
        f"# ---- {name} " + "-" * max(0, 100 - len(name)),
        f"[archs.{name}]",
        f"title = {toml_str('transformers ' + name)}",
        f"description = {toml_str(f'transformers {name} ({model_type}), as its config.json declares it')}",
        f"source = {toml_str(f'transformers models/{fam.module}/modeling_{fam.module}.py {name}')}",
        'default_variant = "default"',
        "variant_keys = []",
        *tree_lines(tpls),
        f"params = {toml_value(defaults_const)}",
        "variants.names.default = {}",
        "",
    ]
    pr = probes(tpls, list(params))
    if pr:
        lines.append(f"[archs.{name}.infer.probes]")
        lines += [f"{p} = {toml_value(v)}" for p, v in pr.items()]
        lines.append("")
    lines += [
        f"[archs.{name}.config]",
        'kind = "hf-config"',
        f"match = {toml_value(match)}",
        f"architectures = {toml_value([name])}",
        "",
        f"[archs.{name}.config.params]",
        *[f"{p} = {toml_value(v)}" for p, v in params.items()],
        "",
        f"[archs.{name}.hf]",
        f"model_type = {toml_str(model_type)}",
        f"base_prefix = {toml_str(facts['base_prefix'])}",
        f"tied = {toml_value(fitted['tied'])}",
        f"ignore_missing = {toml_value(facts['ignore_missing'])}",
        f"ignore_unexpected = {toml_value(facts['ignore_unexpected'] + facts['extra_unexpected'])}",
        f"nonpersistent = {toml_value(_templated(facts['nonpersistent']))}",
        "transforms = [",
        *[f"  {toml_value(t)}," for t in facts["transforms"]],
        "]",
        *_list_lines("checks", all_checks),
        *_list_lines("divides", refused["divides"]),
        f"modalities = {toml_value(group.modalities)}",
        "",
    ]
    return lines


def _list_lines(name: str, items: list[dict[str, Any]]) -> list[str]:
    """``name = [...]``, one table a line."""
    if not items:
        return [f"{name} = []"]
    return [f"{name} = [", *[f"  {toml_value(x)}," for x in items], "]"]


def _resolve_defaults(params: dict[str, list[Any]], strings: set[str]) -> dict[str, Any]:
    """Every parameter's value in the config class's default configuration (expressions evaluated)."""
    out = {p: v[1] for p, v in params.items() if not isinstance(v[1], str) or p in strings}
    pending = {p: v[1] for p, v in params.items() if p not in out}
    for _ in range(8):
        for p, src in list(pending.items()):
            try:
                out[p] = evaluate(src, out)
            except Exception:
                continue
            del pending[p]
    if pending:
        raise FitError(f"defaults of {sorted(pending)} do not resolve")
    return out


def _templated(keys: list[str]) -> list[str]:
    out: dict[str, None] = {}
    for k in keys:
        out[".".join("{i}" if p.isdigit() else p for p in k.split("."))] = None
    return list(out)


def _names(text: str) -> list[str]:
    code = compile(text, "<expr>", "eval")
    return list(code.co_names)


def _default(value: Any) -> Any:
    return value if value is not None else 0


def _config_path(path: str, group: Group) -> str:
    import transformers

    if path == "num_labels":
        return "len(id2label)|num_labels"
    cfg = getattr(transformers, group.config)
    *subs, leaf = path.split(".")
    if subs:
        cfg = cfg.sub_configs[subs[0]]
    aliases = [a for a, target in (getattr(cfg, "attribute_map", None) or {}).items() if target == leaf]
    prefix = "".join(s + "." for s in subs)
    return "|".join(prefix + p for p in [leaf, *aliases])


def generate(key: str, fam: Family) -> str:
    import transformers

    out = [
        f"# {fam.title}: transformers model classes as their config.json declares them. GENERATED by",
        "# scripts/gen_hf_families.py from transformers itself (each class built on the meta device at several small",
        "# configurations) and verified against it at other configurations (tests/test_hf_families.py). Do not edit.",
        "",
        "[family]",
        f'name = "{fam.file}"',
        'framework = "hf"',
        f"title = {toml_str(fam.title + ' (generated from transformers)')}",
        f'source = "transformers models/{fam.module}"',
        f'generated_by = "scripts/gen_hf_families.py, transformers {transformers.__version__}"',
        "",
    ]
    body: list[str] = []
    detect: list[str] = []
    skipped: list[str] = []
    for group in fam.groups:
        classes = [c for c in group.classes if model_class(c) is not None]
        skipped += [c for c in group.classes if c not in classes]
        log(f"{group.config}: sampling {len(classes)} classes")
        rows = samples(group, classes, SEED, N_SAMPLES)
        ints = [param_name(k) for k in group.ints] + list(group.derived)
        dflt = defaults(group, ints)
        config_checks = checks(group)
        model_type = getattr(transformers, group.config).model_type
        fits: dict[str, dict[str, Any]] = {}
        for name in classes:
            try:
                fits[name] = fit_class(name, group, rows)
            except FitError as exc:
                log(f"  {name}: SKIPPED: {exc}")
                skipped.append(name)
        if fits:
            first = next(iter(fits))
            _model_defaults(group, first, fits[first], dflt, ints)
        refused = refusals(group, list(fits), config_checks, SEED + 4)
        for name, fitted in fits.items():
            body += arch_lines(fam, group, name, fitted, dflt, config_checks, model_type, refused[name])
            if name == first:
                detect += ["[[detect]]", f'arch = "{name}"', f'config = ["{model_type}"]', "rank = 90", ""]
    if skipped:
        out.append(f"# not generated (not in this transformers, or not fitted): {', '.join(skipped)}")
        out.append("")
    out += [
        "# without `architectures`, a config.json's model_type is loaded as its base model class (AutoModel)",
        *detect,
        *body,
    ]
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="model types (default: all)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a file would change")
    args = ap.parse_args()
    keys = args.only or list(FAMILIES)
    stale = []
    for key in keys:
        fam = FAMILIES[key]
        text = generate(key, fam)
        path = OUT / f"{fam.file}.toml"
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            log(f"wrote {path.relative_to(ROOT)}")
    if not args.check:  # the parsed copy a run reads (ckptlint.archs.parsed_cache)
        from ckptlint.archs.parsed_cache import build_cache, cache_path, render

        cache_path(ROOT / "rules").write_text(render(build_cache(ROOT / "rules")), encoding="utf-8")
        log("wrote rules/parsed.jsonl")
    if stale:
        log("stale: " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    importlib.invalidate_caches()
    raise SystemExit(main())
