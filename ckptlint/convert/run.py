"""``ckptlint convert IN OUT --to NAME[:VARIANT]``: plan from headers, write OUT atomically in the target's native
form, check OUT against the target architecture.

OUT ending in a weights suffix is one file (safetensors, or torch for ``.bin``/``.pt``/``.pth``); otherwise a folder
with the target framework's weights file (``model.safetensors``, ``open_clip_model.safetensors``), its declaration
files (``config.json``, ``preprocessor_config.json``, ``open_clip_config.json``) and the input's tokenizer files.
Tensors are copied byte for byte when only their name changes and read by byte range when an operation changes
them; torch is never imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckptlint.convert.plan import ConversionPlan, plan_conversion
from ckptlint.errors import UsageError
from ckptlint.results import Report
from ckptlint.writers.write import WriteResult

_TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass
class ConvertResult:
    """The plan, what was written, and the check of OUT."""

    plan: ConversionPlan
    write: WriteResult
    after: Report
    carried: list[str] = field(default_factory=list)  # input sidecars copied into OUT
    declared: list[str] = field(default_factory=list)  # declaration files written

    def describe(self) -> str:
        p, w = self.plan, self.write
        d = p.direction
        keys = p.keys
        lines = [
            f"wrote {w.dst} ({p.dst}, {', '.join(w.files)}) from {w.src.path} ({p.src}): "
            f"{len(w.src.tensors)} tensors → {len(w.out.tensors)}",
            f"  table {d.label}: {d.conv.title}; {keys.renamed} renamed (bytes copied), {keys.changed} computed "
            "(transposed, reshaped, split, fused or made)",
        ]
        dropped = [*keys.dropped, *keys.outside]
        if dropped:
            lines.append(
                f"  left out: {len(dropped)} tensor(s) the target has no place for: {_few(dropped, w.src.key_sep)}"
            )
        for key, value in keys.expect:
            lines.append(f"  checked: {key} holds only {value:g} (the target has no such tensor)")
        if self.declared:
            lines.append(f"  declared: {', '.join(self.declared)}")
        for k, where in p.sources.items():
            lines.append(f"    {k} = {_value(p.params.get(k))}  ({where})")
        for k, what in p.missing.items():
            lines.append(f"    {k}: unknown ({what}); not declared")
        if self.carried:
            lines.append(f"  carried over: {', '.join(self.carried)}")
        if self.declared and p.not_carried():
            lines.append(f"  {p.not_carried()}")
        lines += [f"  note: {c}" for c in p.caveats]
        lines += [f"  {n}" for n in w.notes]
        summary = self.after.summary
        lines.append(
            f"  check of OUT as {p.dst}: {summary.errors} error(s), {summary.warnings} warning(s), {summary.infos} info"
        )
        return "\n".join(lines)


def _few(keys: list[str], sep: str) -> str:
    from ckptlint.keygroups import collapse

    return "; ".join(collapse(keys, sep, max_groups=12))


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def output_format(dst: Path) -> tuple[bool, str]:
    """(OUT is a folder, weights format)."""
    from ckptlint.writers.folder import is_file_output

    if not is_file_output(dst):
        return True, "safetensors"
    if dst.name.endswith(".safetensors"):
        return False, "safetensors"
    if dst.name.endswith(_TORCH_SUFFIXES):
        return False, "torch"
    raise UsageError(
        f"{dst}: convert writes safetensors or torch files (.safetensors, .bin, .pt), or a folder"
    )


def weights_name(framework: str, fmt: str) -> str:
    """The target framework's own name for its weights file in this format."""
    from ckptlint.archs.registry import framework as fw
    from ckptlint.writers.folder import SUFFIXES

    for name in fw(framework).files:
        if name.endswith(SUFFIXES[fmt]):
            return name
    return "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"


def convert_checkpoint(src: str, dst: str, to: str, sets: dict[str, Any] | None = None) -> ConvertResult:
    """Convert ``src`` into architecture ``to`` (``NAME[:VARIANT]``), write ``dst``, and check it."""
    from ckptlint.api import check_files
    from ckptlint.archs.spec import load_arch
    from ckptlint.readers import read_checkpoint
    from ckptlint.rewrite import check_paths
    from ckptlint.writers.plan import WritePlan
    from ckptlint.writers.write import write_checkpoint

    check_paths(src, dst)
    src_path, dst_path = Path(src), Path(dst)
    folder, fmt = output_format(dst_path)
    ckpt = read_checkpoint(src)
    if any(f.code == "CK301" for f in ckpt.findings):
        raise UsageError(f"{src}: refusing to convert a pickle that imports unsafe globals (see CK301)")
    plan = plan_conversion(ckpt, to, sets)
    if folder and plan.missing:
        raise UsageError(f"{src}: {plan.ask()}; nothing was written")
    if plan.problems:
        raise UsageError(f"{src}: {plan.problems[0]}; nothing was written")
    _check_fills(plan, src_path)
    extra: dict[str, bytes] = {}
    carried: list[str] = []
    declared: list[str] = []
    if folder:
        rendered = plan.rendered()
        extra.update(rendered)
        declared = list(rendered)
        base = src_path if src_path.is_dir() else src_path.parent
        for sc in ckpt.sidecars:
            if sc.kind == "tokenizer" and sc.name not in extra and (base / sc.name).is_file():
                extra[sc.name] = (base / sc.name).read_bytes()
                carried.append(sc.name)
    spec = load_arch(plan.dst)
    wplan = WritePlan(
        plan.keys.entries,
        metadata={"format": "pt"} if fmt == "safetensors" else None,
        extra_files=extra,
        copy_sidecars=False,
        weights_name=weights_name(spec.framework, fmt) if folder else None,
    )
    written = write_checkpoint(src, wplan, dst, fmt, ckpt=ckpt, folder=folder)
    if not folder and plan.missing:
        written.notes.append(f"OUT is one file: {plan.ask()} (give a folder OUT to declare them)")
    target = plan.dst + (f":{plan.variant}" if plan.variant else "")
    after = check_files([dst], arch=target)
    return ConvertResult(plan, written, after, carried, declared)


def _check_fills(plan: ConversionPlan, src: Path) -> None:
    """A tensor the target has no place for, dropped only when it holds nothing but the value the other way
    makes (timm's zero CLIP head bias): otherwise converting would change the model's outputs."""
    if not plan.keys.expect:
        return
    from ckptlint.writers.sources import open_source

    source = open_source(src, plan.ckpt)
    for key, value in plan.keys.expect:
        arr = source.array(key)
        if arr.size and not bool((arr == value).all()):
            raise UsageError(
                f"{src}: {key} is not all {value:g} and {plan.dst} has no such tensor: converting would change the "
                "model's outputs; nothing was written"
            )
