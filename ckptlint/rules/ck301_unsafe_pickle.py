"""CK301 — pickle imports a global outside the safe set

What it does
    Reports what a loader would run from the file, as the readers recorded it while parsing every pickle the
    way ``pickle.load``, ``torch.load(weights_only=False)``, ``np.load(allow_pickle=True)`` and ``joblib.load``
    parse it (CPython's own unpicklers, with inert stubs in place of every global): a ``GLOBAL`` /
    ``STACK_GLOBAL`` / ``INST`` target that is not one of the few globals real checkpoints need (torch
    tensor/storage rebuilders and dtypes, ``collections.OrderedDict``, numpy array reconstruction, a few data
    builtins); a global of that set used in a way that runs code (called with keyword arguments, planted as an
    object's ``__setstate__`` or ``append``, a nested payload that does not verify); a construct ckptlint
    cannot judge (it fails closed); a TorchScript archive. ckptlint never imports or calls any of them.

Why is this bad?
    Unpickling calls such globals: ``torch.load(weights_only=False)``, ``pickle.load`` or
    ``np.load(allow_pickle=True)`` on this file would run code chosen by whoever wrote it (``os.system``,
    ``builtins.exec``, ``subprocess.Popen``…). ``torch.load``'s default ``weights_only=True`` refuses it, but
    many loaders and older torch versions do not.

Example
    $ ckptlint check suspicious.pt    # a dict holding an object that reduces to os.system
    CK301 error    pickle imports posix.system, a dangerous global (runs system commands), in
                   suspicious/data.pkl at offset 182
                   cause: Unpickling this file imports posix.system and calls it: loading the file runs code
                   on your machine.
                   fix: Do not load this file with pickle.load, torch.load(weights_only=False) or
                   np.load(allow_pickle=True). If you trust its source, load it with
                   torch.load(weights_only=True) (which refuses unknown globals) and re-save the tensors as
                   safetensors; otherwise discard the file.

Fix
    Do not load the file with an unrestricted unpickler. Get the weights as safetensors from a source you
    trust, or — if you wrote the file yourself and the global is harmless — re-save only the state_dict
    (``torch.save(model.state_dict(), …)`` or ``safetensors.torch.save_file``).

Links
    https://pytorch.org/docs/stable/generated/torch.load.html (weights_only),
    https://huggingface.co/docs/hub/security-pickle
"""

from __future__ import annotations

from typing import Any

from ckptlint.facts import GlobalUse, SecurityFacts, TorchScript, Unverifiable
from ckptlint.findings import Finding
from ckptlint.readers.pickle_globals import danger_of
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule

MAX_GLOBAL_FINDINGS = 32  # distinct globals reported one by one; the rest in one summary finding
MAX_LISTED = 20

FIX = (
    "Do not load this file with pickle.load, torch.load(weights_only=False) or np.load(allow_pickle=True). "
    "If you trust its source, load it with torch.load(weights_only=True) (which refuses unknown globals) and "
    "re-save the tensors as safetensors; otherwise discard the file."
)


class _Text(Message):
    """A CK301 finding whose three texts are computed (they depend on the fact's kind)."""

    code = "CK301"
    message = "{message}"
    cause = "{cause}"
    fix = "{fix}"


def _finding(message: str, cause: str, details: dict[str, Any], file: str | None, fix: str = FIX) -> _Text:
    if file is not None:
        message = f"{file}: {message}"
        details = {**details, "file": file}
    return _Text(details=details, message=message, cause=cause, fix=fix)


def _where(use: GlobalUse) -> str:
    at = f" at offset {use.offsets[0]}" if use.offsets else ""
    more = use.count - 1
    return f"in {use.member}{at}" + (f" (and {more} more place{'s' if more > 1 else ''})" if more > 0 else "")


def _global(use: GlobalUse) -> _Text:
    danger = danger_of(use.name)
    if use.why:
        message = f"pickle uses {use.name} in a way that runs code ({use.why}), {_where(use)}"
        cause = (
            f"{use.name} is harmless only where checkpoints use it; used like this an unpickler runs code "
            "with arguments chosen by the file."
        )
    elif danger:
        message = f"pickle imports {use.name}, a dangerous global ({danger}), {_where(use)}"
        cause = f"Unpickling this file imports {use.name} and calls it: loading the file runs code on your machine."
    else:
        message = (
            f"pickle imports {use.name}, which is outside the safe set of checkpoint globals, {_where(use)}"
        )
        cause = (
            f"Unpickling this file imports {use.name}. Only tensor, array and plain-data globals are known to be "
            "harmless; importing or calling any other global can run arbitrary code."
        )
    details = {
        "global": use.name,
        "member": use.member,
        "opcode": use.opcode,
        "offsets": list(use.offsets),
        "count": use.count,
        "dangerous": danger is not None,
        "danger": danger,
    }
    if use.why:
        details["why"] = use.why
    return _finding(message, cause, details, use.file)


def _unverifiable(item: Unverifiable) -> _Text:
    at = f" at offset {item.offset}" if item.offset is not None else ""
    return _finding(
        f"pickle contains {item.what} in {item.member}{at}, which ckptlint cannot verify",
        f"{item.reason} An unpickler may run code here; ckptlint fails closed.",
        {"what": item.what, "member": item.member, "offsets": [] if item.offset is None else [item.offset],
         "reason": item.reason},
        item.file,
    )  # fmt: skip


def _torchscript(ts: TorchScript) -> _Text:
    count = len(ts.code_members)
    sources = [n for n in ts.code_members if n.endswith(".py")] or ts.code_members
    shown = ", ".join(sources[:3]) + (" …" if len(sources) > 3 else "")
    return _finding(
        f"TorchScript archive: {count} code member{'s' if count != 1 else ''} ({shown}) run when the file is "
        "loaded",
        "torch.jit.load compiles and runs the archive's code/ members, and torch.load hands TorchScript "
        "archives to torch.jit.load; ckptlint lists the tensors of data.pkl without running anything.",
        {
            "code_members": ts.code_members[:MAX_LISTED],
            "classes": ts.classes[:MAX_LISTED],
            "member": ts.member,
        },
        ts.file,
        fix="Load it only if you trust its source. To share weights, save model.state_dict() with safetensors "
        "instead of a TorchScript archive.",
    )


def messages_of(facts: SecurityFacts) -> list[_Text]:
    """The CK301 findings of a file's security facts: one per distinct global (capped), then the constructs
    ckptlint cannot verify, then TorchScript archives."""
    out = [_global(use) for use in facts.globals[:MAX_GLOBAL_FINDINGS]]
    rest = facts.globals[MAX_GLOBAL_FINDINGS:]
    if rest or facts.more_globals:
        names = [u.name for u in rest]
        count = len(rest) + facts.more_globals
        out.append(
            _finding(
                f"pickle imports {count} more globals outside the safe set: "
                + ", ".join(names[:10])
                + (" …" if count > 10 else ""),
                "Unpickling this file imports and calls these globals; any of them may run code.",
                {"globals": names[:200], "dangerous": [n for n in names if danger_of(n)][:200]},
                None,
            )
        )
    out.extend(_unverifiable(item) for item in facts.unverifiable)
    if facts.more_unverifiable:
        out.append(
            _finding(
                f"{facts.more_unverifiable} more constructs ckptlint cannot verify",
                "An unpickler may run code there; ckptlint fails closed.",
                {"count": facts.more_unverifiable},
                None,
            )
        )
    out.extend(_torchscript(ts) for ts in facts.torchscript)
    return out


@rule(
    "CK301",
    "error",
    "pickle imports a global outside the safe set (would run code when loaded)",
    stage=Stage.FACTS,
    order=1,
    rank=0,
)
class UnsafePickleRule(Rule):
    """From the security facts the readers recorded (and a read-back dump's own CK301 findings)."""

    needs = "none"

    def check(self, ctx: Context) -> list[Message | Finding]:  # type: ignore[override]
        carried: list[Message | Finding] = [f for f in ctx.ckpt.findings if f.code == self.code]
        return [*messages_of(ctx.ckpt.security), *carried]
