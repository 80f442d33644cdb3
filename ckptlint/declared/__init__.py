"""Declarations: the config next to the weights that a library builds the model from, as the expectation.

Without ``--arch``/``--model``/``--spec``, ``check`` compares the weights with the model their own declaration
asks for, exactly as the library's loader builds it — never with a model inferred from the same weights.

    declaration_of(ckpt) -> Declaration | Unbuilt | None    what the checkpoint's config declares (lookup.py)
    declared_expected(ckpt) -> Expected | Unchecked | None  the expected tree built from it

One adapter module per kind of declaration (``open_clip.py``: ``open_clip_config.json``; ``timm.py``: timm's
``config.json``) turns the file into what the loader reads; the architecture's ``[archs.NAME.config]`` table maps
its fields to parameters (``declaration.py``). Transformers' ``config.json`` is issue 11's other half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ckptlint.declared.declaration import Declaration
from ckptlint.declared.lookup import ADAPTERS, Unbuilt, declaration_of

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint
    from ckptlint.expected import Expected, Unchecked


def declared_expected(ckpt: Checkpoint) -> Expected | Unchecked | None:
    """The expectation the checkpoint's own declaration gives; ``Unchecked`` when there is a declaration that
    cannot be built (CK004 says why, CK113 when the library refuses it); None without a declaration."""
    from ckptlint.archs.resolve import expected_for
    from ckptlint.archs.spec import load_arch
    from ckptlint.expected import Unchecked

    decl = declaration_of(ckpt)
    if decl is None:
        return None
    if isinstance(decl, Unbuilt):
        verb = "which the loader refuses" if decl.refused else "which ckptlint cannot build"
        return Unchecked(reason=f"{decl.file} declares a model {verb}: {decl.reason}", declared_by=decl.file)
    info = {"declared": decl.what or decl.name}
    return expected_for(
        load_arch(decl.arch), decl.variant, decl.params, info, "declared",
        declared_by=decl.file, declared_name=decl.name,
    )  # fmt: skip


__all__ = ["ADAPTERS", "Declaration", "Unbuilt", "declaration_of", "declared_expected"]
