"""``ckptlint fix IN OUT --arch ...``: apply exactly the edits the findings carry, write OUT, re-check it.

``ckptlint check`` reports a mechanical fix as data on its finding (``Finding.edits``, ``ckptlint.edits``): strip,
add or swap a key prefix (CK103: ``module.`` from DDP, ``_orig_mod.`` from torch.compile, a trainer's
``state_dict.``), take a subtree (CK103: ``params/img/`` of a CLIPPO one_tower file for a plain ViT), rename or drop
old-layout keys (CK111: pre-2022 position embeddings, transformers < 4.31 ``position_ids``), drop training state
(CK201). ``fix`` runs the same check, folds every key edit into one key map and rewrites the file through it, so
check and fix can never disagree. Keys no edit names are kept as they are; edits that change values (CK109
``transpose``) are listed as not applied. The input is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ckptlint.edits import KEY_KINDS, Convert, Edit, RenameKeys, describe, key_plan
from ckptlint.errors import UsageError
from ckptlint.keygroups import fold_numbers
from ckptlint.results import Report
from ckptlint.rewrite import RewriteResult, check_paths, rewrite


@dataclass
class FixResult:
    """Before/after reports, the edits applied (and not), and what the rewrite did."""

    before: Report
    after: Report
    rewrite: RewriteResult
    applied: list[tuple[str, Edit]] = field(default_factory=list)  # (code of the finding, edit)
    not_applied: list[tuple[str, Edit]] = field(default_factory=list)  # edits that change values
    renames: list[tuple[str, str, int]] = field(default_factory=list)  # (from prefix, to prefix, key count)
    taken: str = ""  # the prefix the expected model's loader takes off (big_vision ``params/``)

    def describe(self) -> str:
        """What changed, in a few lines."""
        r = self.rewrite
        lines = [f"wrote {r.dst} ({r.out.format}) from {r.src.path}:"]
        for a, b, n in self.renames:
            lines.append(f"  renamed {a or '(no prefix)'}… → {b or '(no prefix)'}…  ({n} keys)")
        for _, edit in self.applied:
            if isinstance(edit, RenameKeys):
                lines += [f"  renamed {a} → {b}" for a, b in edit.renames.items()]
        if r.dropped:
            few = len(r.dropped) <= 8
            groups = fold_numbers(
                r.dropped if few else sorted({_group(k, r.src.key_sep, self.taken) for k in r.dropped})
            )
            lines.append(
                f"  dropped {len(r.dropped)} tensors not loaded by the model: {', '.join(groups[:8])}"
            )
        if not r.renamed and not r.dropped:
            lines.append("  nothing mechanical to change; OUT is a copy")
        for code, edit in self.not_applied:
            lines.append(f"  not applied ({code}, changes values): {describe(edit)}")
        lines += [f"  {n}" for n in r.notes]
        before = {f.code for fr in self.before.files for f in fr.findings}
        after = {f.code for fr in self.after.files for f in fr.findings}
        fixed = sorted(before - after)
        lines.append(
            f"  fixed: {', '.join(fixed) or 'none'}; still reported: {', '.join(sorted(after)) or 'none'}"
        )
        return "\n".join(lines)


def _group(key: str, sep: str, taken: str) -> str:
    """``opt/`` for ``opt/1/0/mu/x``; inside the loaded subtree one level deeper (``params/t``, ``params/txt/``)."""
    skip = len(taken.split(sep)) - 1 if taken and key.startswith(taken) else 0
    parts = key.split(sep)
    head = sep.join(parts[: skip + 1])
    return head + (sep if len(parts) > skip + 1 else "")


def fix_checkpoint(
    src: str,
    dst: str,
    *,
    arch: str | None = None,
    model: str | None = None,
    spec: str | None = None,
    to_format: str = "same",
) -> FixResult:
    """Write ``dst`` = ``src`` with the edits of its findings applied, and the reports before and after.

    With ``to_format`` another format than the input's, the root the loader takes off (big_vision ``params/``) is
    left out of the output's names too: a params-only safetensors file has no ``params`` wrapper.
    """
    from ckptlint.api import check_checkpoint, check_files, expectation_for
    from ckptlint.readers import read_checkpoint
    from ckptlint.views import is_flax, weight_view

    if sum(x is not None for x in (arch, model, spec)) != 1:
        raise UsageError("give exactly one of --arch, --model, --spec")
    check_paths(src, dst)
    ckpt = read_checkpoint(src)
    expected = expectation_for(ckpt, arch=arch, model=model, spec=spec)
    checked = check_checkpoint(ckpt, arch=arch, expected=expected)
    before = Report(files=[checked]).summarize()
    carried = [(f.code, e) for f in checked.findings for e in f.edits]
    conversions = [(c, e) for c, e in carried if isinstance(e, Convert)]
    if conversions:
        return _fix_by_conversion(src, dst, before, carried, conversions[0])
    applied = [(c, e) for c, e in carried if e.kind in KEY_KINDS]
    plan = key_plan(e for _, e in applied)
    taken = weight_view(ckpt, is_flax(expected, ckpt))[1]
    unwrap = taken if to_format not in ("same", ckpt.format) else ""

    def keymap(key: str) -> str | None:  # also asked about non-tensor entries (a trainer dict's "epoch")
        new = plan(key)
        return new[len(unwrap) :] if new is not None and unwrap and new.startswith(unwrap) else new

    renamed_by: dict[tuple[str, str], int] = {}
    for key in ckpt.tensors:
        rule = plan.prefix_rule(key)
        if rule is not None:
            renamed_by[rule] = renamed_by.get(rule, 0) + 1
    result = rewrite(src, dst, keymap, to_format=to_format)
    after = check_files([dst], arch=arch, model=model, spec=spec)
    renames = [
        (old, new[len(unwrap) :] if unwrap and new.startswith(unwrap) else new, n)
        for (old, new), n in renamed_by.items()
    ]
    return FixResult(
        before=before,
        after=after,
        rewrite=result,
        applied=applied,
        not_applied=[(c, e) for c, e in carried if e.kind not in KEY_KINDS],
        renames=renames,
        taken=taken,
    )


def _fix_by_conversion(
    src: str, dst: str, before: Report, carried: list[tuple[str, Edit]], conversion: tuple[str, Edit]
) -> FixResult:
    """A ``convert`` edit (CK104): the whole checkpoint becomes the expected architecture's, config files included;
    the conversion leaves out wrapper prefixes and training state itself, so the other edits are part of it."""
    from ckptlint.convert.run import convert_checkpoint

    edit = conversion[1]
    assert isinstance(edit, Convert)
    result = convert_checkpoint(src, dst, edit.to)
    plan = result.plan
    rewrite = RewriteResult(
        src=result.write.src,
        out=result.write.out,
        dst=dst,
        renamed={
            e.sources[0]: e.out for e in plan.keys.entries if len(e.sources) == 1 and e.sources[0] != e.out
        },
        dropped=[*plan.keys.dropped, *plan.keys.outside],
        notes=[line.removeprefix("  ") for line in result.describe().splitlines()[1:]],
    )
    return FixResult(before=before, after=result.after, rewrite=rewrite, applied=[conversion])
