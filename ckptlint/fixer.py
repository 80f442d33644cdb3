"""``ckptlint fix IN OUT --arch ...``: apply the fixes that are mechanical, write OUT, re-check it.

Mechanical means a change of names or of which tensors are in the file, never of values:

* strip or swap a key prefix (``module.`` from DDP, ``_orig_mod.`` from torch.compile, a trainer's
  ``state_dict.``) and take a subtree (``params/img/`` of a CLIPPO one_tower file for a plain ViT): found by
  matching the checkpoint's keys to the expected ones by name suffix and shape, as ``ckptlint diff`` does;
* drop what the expected model does not load and a finding accounts for: training state (``opt/``, ``chrono/``,
  an optimizer), the rest of a wrapper around the subtree taken, non-persistent buffers.

Keys that only an unexplained-unexpected finding (CK101) covers are kept, so OUT's re-check still shows them;
shape and dtype problems are left alone. The input is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ckptlint.checkpoint import Checkpoint
from ckptlint.diffing import find_prefix_renames
from ckptlint.errors import UsageError
from ckptlint.expected import Expected
from ckptlint.report.model import Report
from ckptlint.rewrite import RewriteResult, check_paths, rewrite

KEEP_CODES = frozenset({"CK101"})  # unexplained: not ours to drop


@dataclass
class FixResult:
    """Before/after reports and what was changed."""

    before: Report
    after: Report
    rewrite: RewriteResult
    renames: list[tuple[str, str, int]] = field(default_factory=list)  # (from prefix, to prefix, key count)
    taken: str = ""  # the prefix the expected model's loader takes off (big_vision ``params/``)

    def describe(self) -> str:
        """What changed, in a few lines."""
        r = self.rewrite
        lines = [f"wrote {r.dst} ({r.out.format}) from {r.src.path}:"]
        for a, b, n in self.renames:
            lines.append(f"  renamed {a or '(no prefix)'}… → {b or '(no prefix)'}…  ({n} keys)")
        if r.dropped:
            from ckptlint.report.keygroups import collapse_keys

            few = len(r.dropped) <= 8
            groups = collapse_keys(
                r.dropped if few else sorted({_group(k, r.src.key_sep, self.taken) for k in r.dropped})
            )
            lines.append(
                f"  dropped {len(r.dropped)} tensors not loaded by the model: {', '.join(groups[:8])}"
            )
        if not self.renames and not r.dropped:
            lines.append("  nothing mechanical to change; OUT is a copy")
        lines += [f"  {n}" for n in r.notes]
        before = {(f.code) for fr in self.before.files for f in fr.findings}
        after = {(f.code) for fr in self.after.files for f in fr.findings}
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


def _split(key: str, sep: str) -> tuple[str, ...]:
    return tuple(key.split(sep))


def fix_checkpoint(
    src: str,
    dst: str,
    *,
    arch: str | None = None,
    model: str | None = None,
    spec: str | None = None,
    to_format: str = "same",
) -> FixResult:
    """Write ``dst`` = ``src`` with its mechanical problems fixed, and the reports before and after."""
    from ckptlint.api import check
    from ckptlint.engine import expected_view, is_flax, weight_view
    from ckptlint.readers import read_checkpoint

    check_paths(src, dst)
    before = check([src], arch=arch, model=model, spec=spec)
    if before.files[0].error:
        raise UsageError(f"{src}: {before.files[0].error}")
    ckpt = read_checkpoint(src)
    expected = _expectation(ckpt, arch=arch, model=model, spec=spec)
    flax = is_flax(expected, ckpt)
    view, taken = weight_view(ckpt, flax)
    exp = expected_view(expected)
    sep = "/" if flax else "."
    keep_anyway = {k for fd in before.files[0].findings if fd.code in KEEP_CODES for k in fd.keys}

    # view key -> expected key: same name, else through the prefix rewrites that explain the most keys
    mapping: dict[str, str] = {k: k for k in view if k in exp}
    view_sig = {_split(k, sep): (tuple(t.shape), t.dtype) for k, t in view.items() if k not in exp}
    exp_sig = {_split(k, sep): (tuple(t.shape), t.dtype) for k, t in exp.items() if k not in view}
    # a params-only file in another format needs no params/ wrapper (and readers other than npz do not take it off)
    out_prefix = "" if to_format != "same" and to_format != ckpt.format else taken
    renames = []
    for pa, pb, pairs in find_prefix_renames(view_sig, exp_sig):
        for a, b in pairs:
            mapping[sep.join(a)] = sep.join(b)
        renames.append(
            (
                taken + sep.join(pa) + (sep if pa else ""),
                out_prefix + sep.join(pb) + (sep if pb else ""),
                len(pairs),
            )
        )

    file_map: dict[str, str | None] = {}
    for key in ckpt.tensors:
        vkey = key[len(taken) :] if key.startswith(taken) else None
        if vkey is not None and vkey in mapping:
            file_map[key] = out_prefix + mapping[vkey]
        elif key in keep_anyway or (vkey is not None and vkey in keep_anyway):
            file_map[key] = key
        else:
            file_map[key] = None
    result = rewrite(src, dst, lambda k: file_map.get(k), to_format=to_format)
    after = check([dst], arch=arch, model=model, spec=spec)
    return FixResult(before=before, after=after, rewrite=result, renames=renames, taken=taken)


def _expectation(ckpt: Checkpoint, *, arch: str | None, model: str | None, spec: str | None) -> Expected:
    """The same expectation ``ckptlint check`` uses for these options."""
    if arch is not None:
        from ckptlint.archs import resolve_expected

        return resolve_expected(arch, ckpt)
    if model is not None:
        from ckptlint.archs.live import expected_from_factory

        return expected_from_factory(model)
    if spec is not None:
        from ckptlint.archs.spec_file import expected_from_spec

        return expected_from_spec(spec)
    raise UsageError("give exactly one of --arch, --model, --spec")
