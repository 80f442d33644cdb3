"""``ckptlint rules`` and ``ckptlint archs`` tables."""

from __future__ import annotations

import json


def render_rules(fmt: str) -> str:
    """Every rule: code, default severity, summary (text table or JSON list)."""
    from ckptlint.rules import all_rules

    rows = [{"code": r.code, "severity": r.severity.value, "summary": r.summary} for r in all_rules()]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    from tabulate import tabulate

    return tabulate([list(r.values()) for r in rows], headers=["code", "severity", "summary"]) + "\n"


def arch_rows() -> list[dict[str, object]]:
    """name, title, description, source, default variant and every named variant of each architecture."""
    from ckptlint.archs.spec import arch_names, load_arch, variant_names

    rows: list[dict[str, object]] = []
    for name in arch_names():
        spec = load_arch(name)
        row: dict[str, object] = {
            "name": spec.name,
            "title": spec.title,
            "description": spec.description,
            "source": spec.source,
            "framework": spec.framework,
            "default_variant": spec.default_variant,
            "variants": variant_names(spec),
        }
        if spec.variants.scheme == "size_patch":
            row["sizes"] = list(spec.sizes)
            row["patches"] = list(spec.variants.patches)
        rows.append(row)
    return rows


def _variants_text(row: dict[str, object]) -> str:
    names = list(row["variants"])  # type: ignore[call-overload]
    if "sizes" in row:
        sizes, patches = ", ".join(row["sizes"]), ", ".join(str(p) for p in row["patches"])  # type: ignore[call-overload]
        return (
            f"SIZE/PATCH, SIZE one of {sizes}; PATCH {patches} (or any other), e.g. {row['default_variant']}"
        )
    return ", ".join(names) if names else f"{row['default_variant']} (inferred from shapes)"


def render_archs(fmt: str) -> str:
    """Every architecture name, all its variants and where it comes from (text or JSON list)."""
    import textwrap

    rows = arch_rows()
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    width = max(len(str(r["name"])) for r in rows) + 2
    pad = " " * width
    out = []
    for r in rows:
        n = len(r["variants"])  # type: ignore[arg-type]
        lines = textwrap.wrap(
            str(r["description"]), 110, initial_indent=f"{r['name']!s:<{width}}", subsequent_indent=pad
        )
        lines += textwrap.wrap(f"source: {r['source']}", 110, initial_indent=pad, subsequent_indent=pad)
        head = f"variants ({n} named, default {r['default_variant']}, or custom; parameters: ckptlint archs {r['name']}): "
        lines += textwrap.wrap(
            head + _variants_text(r),
            110,
            initial_indent=pad,
            subsequent_indent=pad + "  ",
            break_on_hyphens=False,
        )
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def arch_detail(name: str) -> dict[str, object]:
    """One architecture in full: its defaults, the parameters that name a variant, and every named variant with
    the parameters it sets (timm tags and per-variant preprocessing too)."""
    from ckptlint.archs.spec import load_arch, variant_names, variant_params

    spec = load_arch(name)  # an unknown name: UsageError with the close matches
    variants = []
    for v in variant_names(spec):
        params = variant_params(spec, v) or {}
        entry: dict[str, object] = {"name": v, "params": params}
        declared = spec.variants.names.get(v)
        if declared is not None and declared.tags:
            entry["tags"] = declared.tags
        if declared is not None and declared.preprocessing:
            entry["preprocessing"] = declared.preprocessing
        variants.append(entry)
    return {
        "name": spec.name,
        "title": spec.title,
        "description": spec.description,
        "source": spec.source,
        "framework": spec.framework,
        "default_variant": spec.default_variant,
        "variant_keys": list(spec.variant_keys),
        "defaults": dict(spec.params),
        "variants": variants,
    }


_COLUMNS = (
    "width",
    "depth",
    "heads",
    "mlp_dim",
    "patch",
    "image_size",
    "text_width",
    "text_depth",
    "embed_dim",
    "context_length",
    "vocab_size",
)


def render_arch(name: str, fmt: str) -> str:
    """``ckptlint archs NAME``: every variant of one architecture with its parameters (text table or JSON)."""
    detail = arch_detail(name)
    if fmt == "json":
        return json.dumps(detail, indent=2) + "\n"
    from tabulate import tabulate

    variants = list(detail["variants"])  # type: ignore[call-overload]
    defaults = dict(detail["defaults"])  # type: ignore[call-overload]
    # columns: the geometry some variant sets; what else a variant sets differently from the defaults is "also"
    shown = [k for k in _COLUMNS if any(k in v["params"] for v in variants)]
    table = []
    for v in variants:
        params = v["params"]
        extra = {k: x for k, x in params.items() if k not in shown and defaults.get(k) != x}
        if v.get("tags"):
            extra["tags"] = ", ".join(v["tags"])
        also = " ".join(f"{k}={x}" for k, x in extra.items())
        table.append([v["name"], *(params.get(k, "") for k in shown), also])
    head = [
        f"{detail['name']}: {detail['description']}",
        f"source: {detail['source']}",
        f"default variant: {detail['default_variant']} (without a variant, ckptlint reads it from the shapes; "
        f"custom takes them as they are; override any parameter: --arch {detail['name']}:VARIANT,param=value)",
        "defaults: " + ", ".join(f"{k}={v}" for k, v in detail["defaults"].items()),  # type: ignore[attr-defined]
        "",
    ]
    headers = ["variant", *(k.replace("_", " ") for k in shown), "also (differs from the defaults)"]
    body = tabulate(table, headers=headers, maxcolwidths=[None] * (len(shown) + 1) + [40])
    return "\n".join(head) + body + "\n"
