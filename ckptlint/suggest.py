"""What a finding tells the user to run: ``ckptlint`` commands and Python snippets, built from the real input.

Every command and snippet a finding shows sits between backticks and runs as written (``tests/test_suggestions.py``
harvests them from the findings on every example, corpus file and scenario, runs them and re-checks the result):

* a command names the input path as it was given, shell-quoted, then a literal ``OUT`` for the file or folder to
  write, then the options that rebuild the same expectation (``--arch NAME``, ``--model``, ``--spec``; none when
  the architecture was inferred, as ``check`` did);
* a Python snippet starts from the object the format's own loader returns (``torch.load(PATH,
  weights_only=True)``, ``safetensors.torch.load_file(PATH)``, ``dict(np.load(PATH))``), applies exactly the edits
  of the finding (``ckptlint.edits``) and leaves the state dict to load or save in ``sd``.

A remote input (``hf://``, ``s3://``...) gets no command: ``fix`` and ``strip`` write next to a local input only.
"""

from __future__ import annotations

import difflib
import posixpath
import shlex
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ckptlint.edits import DropGroups, DropKeys, Edit, RenameKeys, RenamePrefix, TakeSubtree, Transpose

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint
    from ckptlint.expected import Expected

OUT = "OUT"  # the placeholder for the output path, literally
REQUESTED = "requested_as"  # Expected.params entry: the options that asked for this expectation
MAX_SNIPPET = 240  # a longer one-liner helps nobody: the command says it better

_TORCH = ("torch-zip", "torch-legacy", "torch-tar")


def code(text: str) -> str:
    """``text`` as shown: between backticks (what the harvesting test and a reader take as runnable)."""
    return f"`{text}`"


def local(ckpt: Checkpoint) -> bool:
    """Whether ``fix``/``strip`` can rewrite this input (a local path, not a URL)."""
    head, sep, _ = ckpt.path.partition("://")
    return not sep or head == "file"


def requested(expected: Expected | None) -> list[str]:
    """The command-line options that rebuild ``expected`` (empty when it was inferred from the file)."""
    if expected is None:
        return []
    args = expected.params.get(REQUESTED)
    return [str(a) for a in args] if isinstance(args, list) else []


def command(name: str, ckpt: Checkpoint, *options: str, out: bool = True) -> str:
    """``ckptlint NAME [OPTIONS] PATH [OUT]`` with the path shell-quoted (options go before the path for strip)."""
    parts = ["ckptlint", name, *options, ckpt.path] + ([OUT] if out else [])
    return " ".join(shlex.quote(p) for p in parts)


def fix_command(ckpt: Checkpoint, expected: Expected | None) -> str | None:
    """``ckptlint fix PATH OUT [--arch ...]``: applies every edit ``check`` reports with this expectation."""
    if not local(ckpt):
        return None
    args = ["ckptlint", "fix", ckpt.path, OUT, *requested(expected)]
    return " ".join(shlex.quote(p) for p in args)


def folder_of(ckpt: Checkpoint) -> str:
    """The folder holding the checkpoint (the checkpoint itself when it is a folder)."""
    path = ckpt.path
    return path if ckpt.format.endswith("-dir") else posixpath.dirname(path) or "."


def loader_call(template: str, ckpt: Checkpoint) -> str:
    """A declaration adapter's ``LOADER`` with the real folder: ``{folder}`` and ``{local_dir}`` (``'local-dir:…'``)."""
    folder = folder_of(ckpt)
    return template.format(folder=repr(folder), local_dir=repr(f"local-dir:{folder}"))


def check_command(ckpt: Checkpoint, *options: str) -> str:
    """``ckptlint check PATH OPTIONS``."""
    return " ".join(shlex.quote(p) for p in ["ckptlint", "check", ckpt.path, *options])


# ---- Python -----------------------------------------------------------------------------------------------------
def load_expression(ckpt: Checkpoint) -> str | None:
    """How the format's own library loads this input as a dict of tensors, or None (sharded, flax msgpack...)."""
    fmt, path = ckpt.format, ckpt.path
    if fmt in ("hf-dir", "open_clip-dir"):
        inner = ckpt.metadata.get("weights_file")
        if not isinstance(inner, str) or len(ckpt.files) != 1:
            return None
        path = ckpt.files[0]
        fmt = "safetensors" if inner.endswith(".safetensors") else "torch-zip"
    if not local(ckpt):
        return None
    if fmt in _TORCH:
        return f"torch.load({path!r}, weights_only=True)"
    if fmt == "safetensors":
        return f"safetensors.torch.load_file({path!r})"
    if fmt == "npz":
        return f"dict(np.load({path!r}))"
    return None


def _group_of(ckpt: Checkpoint, key: str) -> str | None:
    """The top-level container (a trainer dict's ``state_dict``) a torch key lies in, if any."""
    for g in ckpt.groups:
        if key.startswith(g + "."):
            return g
    return None


def snippet(ckpt: Checkpoint, edits: Sequence[Edit]) -> str | None:
    """A Python one-liner that applies ``edits`` to the loaded input and leaves the result in ``sd``; None when
    there is none worth showing (no loader for the format, nested containers, too long)."""
    load = load_expression(ckpt)
    if load is None or not edits:
        return None
    torch_like = ckpt.format not in ("npz",) and ckpt.key_sep == "."
    steps: list[str] = []
    start = load
    for edit in edits:
        step = _step(ckpt, edit, torch_like)
        if step is None:
            return None
        if isinstance(step, tuple):  # the edit picks a container of the loaded object: it becomes the start
            if steps or start != load:
                return None
            start, step = load + step[0], step[1]
            if not step:
                continue
        steps.append(step)
    text = "; ".join([f"sd = {start}", *steps])
    return text if len(text) <= MAX_SNIPPET else None


def _step(ckpt: Checkpoint, edit: Edit, torch_like: bool) -> str | tuple[str, str] | None:
    if isinstance(edit, RenamePrefix):
        group = _group_of(ckpt, edit.old) if torch_like else None
        old, new = edit.old, edit.new
        if group is not None:
            if new:  # renaming inside a container: not a one-liner
                return None
            inner = old[len(group) + 1 :]
            rest = f"sd = {{k.removeprefix({inner!r}): v for k, v in sd.items()}}" if inner else ""
            return f"[{group!r}]", rest
        if not old:
            return f"sd = {{{new!r} + k: v for k, v in sd.items()}}"
        if not new:
            return f"sd = {{k.removeprefix({old!r}): v for k, v in sd.items()}}"
        return (
            f"sd = {{({new!r} + k[{len(old)}:] if k.startswith({old!r}) else k): v for k, v in sd.items()}}"
        )
    if any(_group_of(ckpt, k) for k in _keys_of(edit)) and torch_like:
        return None  # keys inside a trainer dict's containers: the command handles them
    if isinstance(edit, TakeSubtree):
        into = f"{edit.into!r} + " if edit.into else ""
        cut = f"k.removeprefix({edit.prefix!r})"
        return f"sd = {{{into}{cut}: v for k, v in sd.items() if k.startswith({edit.prefix!r})}}"
    if isinstance(edit, RenameKeys):
        return f"sd = {{{edit.renames!r}.get(k, k): v for k, v in sd.items()}}"
    if isinstance(edit, DropKeys):
        return f"sd = {{k: v for k, v in sd.items() if k not in {tuple(edit.keys)!r}}}"
    if isinstance(edit, DropGroups):
        if any(edit.sep in g for g in edit.groups):
            return None
        return (
            f"sd = {{k: v for k, v in sd.items() if k.split({edit.sep!r})[0] not in {tuple(edit.groups)!r}}}"
        )
    if isinstance(edit, Transpose):
        tail = ".T.contiguous()" if torch_like else ".T"
        return "; ".join(f"sd[{k!r}] = sd[{k!r}]{tail}" for k in edit.keys)
    return None


def _keys_of(edit: Edit) -> list[str]:
    if isinstance(edit, (DropKeys, Transpose)):
        return list(edit.keys)
    if isinstance(edit, RenameKeys):
        return list(edit.renames)
    if isinstance(edit, TakeSubtree):
        return [edit.prefix]
    return []


def remedy(ckpt: Checkpoint, expected: Expected | None, edits: Sequence[Edit], *, python: bool = True) -> str:
    """The ``ckptlint fix PATH OUT …`` command (and the Python one-liner) for these edits, or "" when neither applies."""
    cmd = fix_command(ckpt, expected) if edits else None
    py = snippet(ckpt, edits) if python else None
    if cmd and py:
        return f"{code(cmd)} (or in Python: {code(py)})"
    if cmd:
        return code(cmd)
    return f"in Python: {code(py)}" if py else ""


def joined(text: str, how: str, sep: str = ": ") -> str:
    """``text`` followed by ``how`` when there is one."""
    return f"{text}{sep}{how}" if how else text


def fill(text: str, ckpt: Checkpoint | None, **more: Any) -> str:
    """Put the real input into a family file's text: ``{file}`` (a Python string literal of the path), ``{file_img}``
    / ``{file_txt}`` (big_vision's ``PATH:img`` subtree syntax)."""
    if ckpt is None or "{" not in text:
        return text
    path = ckpt.path
    values = {"file": repr(path), "file_img": repr(path + ":img"), "file_txt": repr(path + ":txt"), **more}
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def as_itself(ctx: Any) -> str:
    """``ckptlint check PATH --arch NAME`` (in backticks) with the architecture inferred from the file alone, when that is
    another one than the expectation (the model the file is); "" otherwise."""
    inferred = ctx.inferred()
    expected = ctx.expected
    if inferred is None or (expected is not None and inferred.arch == expected.arch):
        return ""
    return code(check_command(ctx.ckpt, "--arch", inferred.arch))


def close_matches(word: str, names: Iterable[str], n: int = 3) -> list[str]:
    """Names a mistyped ``word`` probably meant: the same name in another case first, then the closest spellings
    (case-insensitive). A suggestion for the message, never a name to use in its place."""
    names = list(dict.fromkeys(names))
    low = word.lower()
    same = [x for x in names if x.lower() == low]
    by_low: dict[str, str] = {}
    for x in names:
        by_low.setdefault(x.lower(), x)
    if same:  # only the case differs: that is the one
        return same[:1]
    return [by_low[m] for m in difflib.get_close_matches(low, list(by_low), n=n, cutoff=0.6)]


def did_you_mean(word: str, names: Iterable[str], n: int = 3) -> str:
    """``"; did you mean 'ViT-B-16'?"`` (or ``"… 'a' or 'b'?"``), or "" when nothing is close."""
    found = close_matches(word, names, n)
    if not found:
        return ""
    quoted = [repr(x) for x in found]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"; did you mean {listed}?"
