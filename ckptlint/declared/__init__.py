"""Declarations: the config next to the weights that a library builds the model from, as the expectation.

Without ``--arch``/``--model``/``--spec``, ``check`` compares the weights with the model their own declaration
asks for, exactly as the library's loader builds it — never with a model inferred from the same weights.

One adapter per kind of declaration, behind one lookup (``lookup.ADAPTERS``, by ``Sidecar.kind``):

* ``hf.py`` — a transformers ``config.json`` (``model_type``): the class it declares, from the built-in families
  generated from transformers (tier a, ``rules/archs/hf-*.toml``, read by ``hf_config.py``), else built by
  transformers on the meta device (tier b, ``hf_live.py``), else ``Unchecked``; loaded as ``from_pretrained``
  loads (``hf_load.py``);
* ``open_clip.py`` — ``open_clip_config.json`` (``model_cfg``), and ``timm.py`` — timm's ``config.json``
  (``architecture``): table adapters, read through the architecture's ``[archs.NAME.config]`` table
  (``declaration.py``).

An adapter module has ``KIND``, ``FRAMEWORK``, ``LIBRARY``, ``LOADER``, ``DEFAULTS`` and the loader's effects as
message data (``MISMATCH``, ``MISSING``, ``UNEXPECTED``, ``REPAIR``), and two functions:

    expected(ckpt, sidecar) -> Expected | Unchecked | None    the model it declares (None: not these weights')
    rebuild(ckpt, info, overrides) -> Expected | None         the same declaration with some parameters changed

Every expectation built from a declaration carries ``params["declared"]`` (``info``) — what CK113 reads to name
the config field behind each difference, whatever the kind:

    {"file": "config.json", "kind": "hf-config", "class": "LlamaForCausalLM", "what": "...",
     "tier": "table" | "builtin" | "transformers",
     "fields": {param: "the.file's.field" ("" when derived)}, "given": [params the file sets],
     "derived": {param: [the params it is computed from]}, "counted": [params that are a field's entry count],
     "opaque": [params whose field is not their value], "notes": {param: what the loader does},
     "overrides": {...}, "refused": [{"fields": [param...], "message": "..."}], "modalities": ["text", ...]}

``declared_expected(ckpt)`` is the expectation; ``expected_for_class(name, ckpt)`` is ``--arch ClassName``;
``loaded_diff`` / ``diff_entries`` are the raw diff of an expectation with a loader (``Expected.load``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ckptlint.declared.declaration import Declaration, Unbuilt
from ckptlint.declared.lookup import (
    ADAPTERS,
    declaration_of,
    declared_expected,
    declared_info,
    rebuild,
)

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint, TensorInfo
    from ckptlint.declared.hf_load import Loaded
    from ckptlint.expected import Expected
    from ckptlint.rules._context import Context, RawDiff

__all__ = [
    "ADAPTERS",
    "Declaration",
    "Unbuilt",
    "declaration_of",
    "declared_expected",
    "declared_info",
    "diff_entries",
    "expected_for_class",
    "loaded",
    "loaded_diff",
    "rebuild",
]


def expected_for_class(name: str, ckpt: Checkpoint | None) -> Expected | None:
    """``--arch NAME`` when NAME is a transformers model class (built from the folder's config.json), else None."""
    from ckptlint.declared.hf_class import for_class

    return for_class(name, ckpt)


def loaded(ckpt: Checkpoint, expected: Expected) -> Loaded:
    """What the declared library's loader makes of ``ckpt`` for ``expected`` (``Expected.load`` says how)."""
    from ckptlint.declared.hf_load import load

    shapes = {k: tuple(t.shape) for k, t in expected.tensors.items()}
    return load(ckpt.tensors, shapes, expected.load)


def loaded_diff(
    ckpt: Checkpoint, expected: Expected
) -> tuple[dict[str, TensorInfo], RawDiff, dict[str, list[str]]]:
    """The engine's key view, raw diff and view key -> the checkpoint keys it came from, for an expectation with a
    loader: exactly its loading report."""
    from ckptlint.rules._context import RawDiff

    result = loaded(ckpt, expected)
    dtype = [
        (k, expected.tensors[k].dtype, t.dtype)
        for k, t in result.view.items()
        if k in expected.tensors and expected.tensors[k].dtype != t.dtype
    ]
    raw = RawDiff(
        missing=result.missing,
        unexpected=result.unexpected,
        shape_mismatch=result.mismatched,
        dtype_mismatch=dtype,
    )
    return result.view, raw, result.origin


def diff_entries(ctx: Context, expected: Expected) -> set[tuple[str, str]]:
    """The raw diff of ``expected`` against the run's checkpoint as (kind, key) pairs, kind ``missing`` /
    ``unexpected`` / ``shape``: its loader's report, else ``load_state_dict``'s on the run's key view."""
    if expected.load:
        result = loaded(ctx.ckpt, expected)
        missing, unexpected, shapes = result.missing, result.unexpected, [k for k, _, _ in result.mismatched]
    else:
        from ckptlint.rules._context import torch_shape_equal
        from ckptlint.views import expected_view

        exp, view = expected_view(expected), ctx.view
        missing = [k for k in exp if k not in view]
        unexpected = [k for k in view if k not in exp]
        shapes = [k for k, e in exp.items() if k in view and not torch_shape_equal(e.shape, view[k].shape)]
    return (
        {("missing", k) for k in missing}
        | {("unexpected", k) for k in unexpected}
        | {("shape", k) for k in shapes}
    )
