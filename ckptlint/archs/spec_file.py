"""``--spec FILE``: take the expectation from a reference -- a ``ckptlint dump --format json`` of a good
checkpoint, or any checkpoint ckptlint can read.

The reference's model keys are kept as the expected model names them: when its layout is recognised, the keys under
the detected root are taken and the root is removed (a big_vision ``params/`` group, a ``module.`` / ``_orig_mod.``
wrapper, a trainer dict's ``state_dict.``), and everything else in the file (``opt/``, ``chrono/``, optimizer
state) is left out. An unrecognised layout is used as it is.
"""

from __future__ import annotations

from ckptlint.expected import Expected


def expected_from_spec(path: str) -> Expected:
    """The expected tree a reference file (dump JSON or checkpoint) describes (source="spec")."""
    from ckptlint.archs import resolve_expected
    from ckptlint.archs.detect import detect_layout
    from ckptlint.errors import CkptlintError
    from ckptlint.expected import expected_from_checkpoint
    from ckptlint.readers import read_checkpoint

    ckpt = read_checkpoint(path)
    guess = detect_layout(ckpt)
    root = guess.root if guess.name != "unknown" else ""
    if root:
        n = len(root)
        tensors = {k[n:]: v for k, v in ckpt.tensors.items() if k.startswith(root)}
        ckpt = ckpt.model_copy(update={"tensors": tensors})
    exp = expected_from_checkpoint(ckpt, source="spec")
    exp.params["inferred_from"] = f"reference {path}"
    if guess.name != "unknown":
        exp.framework = guess.framework or exp.framework
        exp.params["layout"] = guess.name
        exp.params["root_stripped"] = root
        exp.description = f"{path}: {guess.name} layout" + (f", root {root!r} removed" if root else "")
        if guess.arch:
            try:
                named = resolve_expected(guess.arch, ckpt)
            except CkptlintError:
                named = None
            if named is not None:
                exp.params["arch"] = guess.arch
                exp.params["variant"] = named.variant
                exp.towers = named.towers
                exp.preprocessing = named.preprocessing
    return exp
