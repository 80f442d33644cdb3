"""CK113 — weights contradict the model their own config declares

What it does
    When the expectation is the model a checkpoint's own declaration describes (a transformers ``config.json``,
    also through ``--arch ClassName``), finds the config field each difference comes from and reports one finding
    per field: the field, what the config says, what the weights hold (the tensor whose shape shows it) and both
    fixes. It tries, field by field, what the weights show (a probe of the family file, the observed size of a
    mismatched dimension, the number of blocks present, the other value of a flag), rebuilds the declared model
    with that one change and keeps the change that explains the most differences without adding any. The same
    pass reports a config transformers refuses outright (``num_hidden_layers`` ≠ ``len(layer_types)``), a key
    conversion transformers would fail on (its ``conversion_errors``, which ``output_loading_info`` leaves out),
    and base-model weights under a task-model config whose head is neither in the file nor tied.

Why is this bad?
    ``from_pretrained`` builds the model from ``config.json``, then loads the weights into it. A config that no
    longer fits — a layer count edited by hand, a vocabulary resized without the embeddings, ``num_key_value_heads``
    of another variant — raises a size-mismatch error, or worse, loads: missing layers are re-initialised randomly
    and listed only in a log line, and the model produces garbage.

Example
    $ ckptlint check llama_kv4    # a tiny LlamaForCausalLM folder, config.json edited to num_key_value_heads = 4
    CK113 error    config.json says num_key_value_heads = 4, but the weights hold 2:
                   model.layers.0.self_attn.k_proj.weight is [32, 64]; LlamaForCausalLM with num_key_value_heads =
                   4 expects [64, 64]
                   cause: from_pretrained raises a size mismatch for 4 weights (it re-initialises them randomly
                   with ignore_mismatched_sizes=True)
                   fix: set num_key_value_heads to 2 in config.json (the weights' value), or use weights saved for
                   num_key_value_heads = 4

Fix
    Make the declaration and the weights agree: edit the config field to what the weights hold (when the
    config was edited or copied from another variant), or publish the weights of the model the config declares.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ckptlint.declared import diff_entries, loaded, rebuild
from ckptlint.expected import Expected
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule

MAX_ROUNDS = 8
MAX_CANDIDATES = 6
_NUM = re.compile(r"\.(\d+)\.")

Entry = tuple[str, str]  # ("missing" | "unexpected" | "shape", key)


class FieldContradicts(Message):
    code = "CK113"
    message = "{file} says {field} = {declared}, but the weights {hold}: {evidence}"
    cause = "{cause}"
    fix = "set {field} to {observed} in {file} (the weights' value), or use weights saved for {field} = {declared}"


class ConfigRefused(Message):
    code = "CK113"
    message = "transformers refuses {file}: {reason}"
    cause = "the config contradicts itself, so from_pretrained raises before it reads a single weight"
    fix = "correct {fields} in {file} so that the config is consistent with itself and with the weights"


class ConversionFails(Message):
    code = "CK113"
    message = "transformers cannot convert the weights for {key}: {error}"
    cause = (
        "from_pretrained converts these checkpoint tensors into the model's layout on load ({ops}); the conversion "
        'fails, so it raises RuntimeError ("We encountered some issues during automatic conversion of the '
        'weights") after its load report — output_loading_info never comes back'
    )
    fix = "repair or re-export the tensors it reads ({sources}) so that they have matching shapes"


class BaseWeightsUnderTask(Message):
    code = "CK113"
    message = (
        "{file} declares architectures [{cls}], but the weights are its base model only: {head} {verb} missing "
        "and not tied"
    )
    cause = (
        "the file holds the base model's weights (under no {base}. prefix, which from_pretrained adds); the task "
        "head is not in it, so from_pretrained initialises it randomly{dropped}"
    )
    fix = (
        "declare the base model (architectures: [{base_class}], or load with AutoModel), or add the trained head's "
        "weights to the checkpoint"
    )


@rule(
    "CK113",
    "error",
    "weights contradict the model their own config declares (names the config field and the evidence)",
    stage=Stage.LAYOUT,
    order=0,
    rank=15,
)
class DeclaredRule(Rule):
    needs = "user"

    def check(self, ctx: Context) -> list[Message]:
        exp = ctx.expected
        info = exp.params.get("declared") if exp is not None else None
        if exp is None or not isinstance(info, dict):
            return []
        file = info.get("file") or "the config"
        out: list[Message] = []
        refused_fields: set[str] = set()
        for r in info.get("refused", []):
            refused_fields |= set(r.get("fields", []))
            fields = ", ".join(info["fields"].get(f) or f for f in r.get("fields", [])) or "the fields named"
            out.append(ConfigRefused(details={"refused": r}, file=file, reason=r["message"], fields=fields))
        if not exp.tensors and info.get("refused"):  # nothing could be built: everything else follows from it
            keys = list(ctx.missing) + list(ctx.unexpected) + list(ctx.shape)
            ctx.consume_missing(list(ctx.missing))
            ctx.consume_unexpected(list(ctx.unexpected))
            ctx.consume_shape(list(ctx.shape))
            out[-1].keys = keys
            return out
        if exp.load:
            out += _conversions(ctx, exp)
            out += _base_under_task(ctx, exp, info, file)
        out += _fields(ctx, exp, info, file, refused_fields, out)
        return out


# ---- conversions and base weights ----------------------------------------------------------------------------
def _conversions(ctx: Context, exp: Expected) -> list[Message]:
    result = loaded(ctx.ckpt, exp)
    out: list[Message] = []
    convs = {tuple(t["sources"]): t for t in exp.load.get("transforms", []) if t["kind"] == "convert"}
    for key, error in result.conversion_errors.items():
        conv = next((c for c in convs.values() if any(key.endswith(t) for t in c["targets"])), None)
        sources = ", ".join(conv["sources"]) if conv else "its sources"
        ops = ", ".join(str(o["op"]) for o in conv.get("ops", [])) if conv else "a conversion"
        first_line = error.splitlines()[0]
        ctx.consume_missing([key])
        out.append(
            ConversionFails(
                keys=[key], details={"error": error}, key=key, error=first_line, ops=ops, sources=sources
            )
        )
    return out


def _base_under_task(ctx: Context, exp: Expected, info: dict[str, Any], file: str) -> list[Message]:
    base = exp.load.get("base_prefix") or ""
    if not base or not ctx.missing or ctx.shape:
        return []
    result = loaded(ctx.ckpt, exp)
    under = [k for k in result.origin if k.startswith(base + ".") and k in exp.tensors]
    if not under or any(o.startswith(base + ".") for k in under for o in result.origin[k]):
        return []  # the file's keys carry the prefix themselves: a task model's file, not a base model's
    head = [k for k in ctx.missing if not k.startswith(base + ".")]
    if not head or len(head) < len(ctx.missing):
        return []
    ctx.consume_missing(head)
    extras = ctx.consume_unexpected(
        list(ctx.unexpected)
    )  # the base model's own extras (a pooler) are dropped
    cls = info.get("class") or exp.arch
    base_class = re.sub(r"(For[A-Z]\w*|LMHeadModel)$", "Model", cls)
    shown = ", ".join(head[:3]) + (f" (+{len(head) - 3})" if len(head) > 3 else "")
    return [
        BaseWeightsUnderTask(
            keys=head + extras,
            details={"base_prefix": base, "head": head, "unused": extras},
            file=file,
            cls=cls,
            head=shown,
            verb="is" if len(head) == 1 else "are",
            base=base,
            base_class=base_class,
            dropped=f", and drops what the task model has no place for ({_some(extras)})" if extras else "",
        )
    ]


# ---- one field at a time -------------------------------------------------------------------------------------
def _entries(ctx: Context) -> set[Entry]:
    return (
        {("missing", k) for k in ctx.missing}
        | {("unexpected", k) for k in ctx.unexpected}
        | {("shape", k) for k in ctx.shape}
    )


def _fields(
    ctx: Context, exp: Expected, info: dict[str, Any], file: str, refused: set[str], found: list[Message]
) -> list[Message]:
    fields: dict[str, str] = info.get("fields", {})
    params = [p for p, f in fields.items() if f and _scalar(exp.params.get(p))]
    out: list[Message] = []
    chosen: dict[str, Any] = {}
    current = exp
    open_entries = _entries(ctx)
    for _ in range(MAX_ROUNDS):
        if not open_entries:
            break
        best: tuple[int, str, Any, Expected, set[Entry]] | None = None
        for p in params:
            if p in chosen:
                continue
            for value in _candidates(ctx, current, p)[:MAX_CANDIDATES]:
                trial = rebuild(ctx.ckpt, exp, {**chosen, p: value})
                if trial is None:
                    continue
                after = {e for e in diff_entries(ctx.ckpt, trial)}
                resolved = open_entries - after
                new = after - _all_entries(ctx, current)
                score = len(resolved) - 2 * len(new)
                if resolved and score > 0 and (best is None or score > best[0]):
                    best = (score, p, value, trial, resolved)
        if best is None:
            break
        _, p, value, trial, resolved = best
        out.append(_finding(ctx, current, trial, info, file, p, value, resolved, p in refused, found))
        chosen[p] = value
        current = trial
        open_entries -= resolved
    return out


def _all_entries(ctx: Context, exp: Expected) -> set[Entry]:
    return set(diff_entries(ctx.ckpt, exp))


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, bool)) and not isinstance(value, float)


def _candidates(ctx: Context, exp: Expected, p: str) -> list[Any]:
    """Values of ``p`` the weights suggest: probes, mismatched sizes, block counts, the other flag value."""
    v0 = exp.params.get(p)
    if isinstance(v0, bool):
        return [not v0]
    out: list[int] = []
    out += _probe_values(ctx, exp, p)
    for issue in ctx.shape.values():
        for e, a in zip(issue.expected, issue.actual, strict=False):
            if e == a or v0 in (0, None):
                continue
            if e == v0:
                out.append(a)
            elif e > v0 and e % v0 == 0 and a % (e // v0) == 0:
                out.append(a // (e // v0))
    out += _counts(ctx, exp, v0)
    seen: list[Any] = []
    for v in out:
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v != v0 and v not in seen:
            seen.append(v)
    return seen


def _probe_values(ctx: Context, exp: Expected, p: str) -> list[int]:
    from ckptlint.archs import registry as reg
    from ckptlint.archs.detect import run_probes
    from ckptlint.archs.spec import load_arch

    if exp.arch not in reg.registry().archs:
        return []
    probes = load_arch(exp.arch).infer.probes.get(p)
    if not probes:
        return []
    env = {k: v for k, v in exp.params.items() if k != p and not isinstance(v, dict)}
    out = []
    for probe in probes:
        values, observed, _ = run_probes({p: [probe]}, ctx.view, "", env)
        if p in observed and isinstance(values[p], int):
            out.append(values[p])
    return out


def _counts(ctx: Context, exp: Expected, v0: Any) -> list[int]:
    """Block counts: a list whose model count is the declared value while the file holds another number."""

    def counts(keys: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in keys:
            for m in _NUM.finditer(key):
                head = key[: m.start()]
                out[head] = max(out.get(head, 0), int(m.group(1)) + 1)
        return out

    model, file = counts(exp.tensors), counts(ctx.view)
    return [file[h] for h, n in model.items() if n == v0 and h in file and file[h] != v0]


def _finding(
    ctx: Context,
    before: Expected,
    after: Expected,
    info: dict[str, Any],
    file: str,
    p: str,
    value: Any,
    resolved: set[Entry],
    refused: bool,
    found: list[Message],
) -> Message:
    declared = before.params.get(p)
    field = info["fields"].get(p) or p
    counted = p in info.get("counted", [])
    kinds = {kind for kind, _ in resolved}
    shape_keys = sorted(k for kind, k in resolved if kind == "shape")
    missing = sorted(k for kind, k in resolved if kind == "missing")
    unexpected = sorted(k for kind, k in resolved if kind == "unexpected")
    ctx.consume_shape(shape_keys)
    ctx.consume_missing(missing)
    ctx.consume_unexpected(unexpected)
    cls = info.get("class") or before.arch
    if shape_keys:
        key = shape_keys[0]
        actual = list(ctx.view[key].shape) if key in ctx.view else "?"
        expected = list(before.tensors[key].shape)
        evidence = f"{key} is {actual}; {cls} with {field} = {_show(declared)} expects {expected}"
    elif missing:
        evidence = f"{cls} with {field} = {_show(declared)} expects {_some(missing)}, which the weights lack"
    else:
        evidence = (
            f"the weights also hold {_some(unexpected)}, which {cls} with {field} = {_show(declared)} has no "
            "place for"
        )
    parts = []
    if shape_keys:
        parts.append(
            f"from_pretrained raises a size mismatch for {len(shape_keys)} weight{'s' if len(shape_keys) != 1 else ''} "
            "(it re-initialises them randomly with ignore_mismatched_sizes=True)"
        )
    if missing:
        parts.append(
            f"{len(missing)} weight{'s' if len(missing) != 1 else ''} of the model {'are' if len(missing) != 1 else 'is'} "
            "not in the file: from_pretrained initialises them randomly and only lists them as MISSING in its load report"
        )
    if unexpected:
        parts.append(
            f"{len(unexpected)} tensor{'s' if len(unexpected) != 1 else ''} of the file are dropped (UNEXPECTED)"
        )
    cause = "; ".join(parts)
    if refused:
        cause += "; transformers also refuses the config as it stands (see above)"
    observed = _show(value)
    if counted:  # num_labels is the number of id2label entries
        declared_text, observed = f"{len_text(declared)}", f"{len_text(value)}"
    else:
        declared_text = _show(declared)
    if isinstance(value, bool) and value and kinds == {"missing"} and field.endswith("tie_word_embeddings"):
        evidence = (
            f"the file has no {_some(missing)}: it was saved tied (transformers writes a tied weight once), and "
            f"{cls} with {field} = false needs its own"
        )
    return FieldContradicts(
        keys=shape_keys + missing + unexpected,
        details={"field": field, "param": p, "declared": declared, "observed": value, "file": file},
        file=file,
        field=field,
        declared=declared_text,
        observed=observed,
        hold=f"fit {field} = {observed}" if isinstance(value, bool) else f"hold {observed}",
        evidence=evidence,
        cause=cause,
    )


def len_text(n: Any) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _some(keys: list[str]) -> str:
    """A few keys for a message: ``model.layers.2.* (9 weights)`` when they share a block, else the first three."""
    from ckptlint.keygroups import fold_numbers

    if len(keys) > 3:
        parts = [k.split(".") for k in keys]
        common = []
        for tokens in zip(*parts, strict=False):
            if len(set(tokens)) != 1:
                break
            common.append(tokens[0])
        if len(common) >= 2:
            return f"{'.'.join(common)}.* ({len(keys)} weights)"
    folded = fold_numbers(keys)
    return ", ".join(folded[:3]) + (f" (+{len(folded) - 3} more)" if len(folded) > 3 else "")
