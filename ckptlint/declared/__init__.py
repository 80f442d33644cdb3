"""The declaration next to the weights as the expectation: the model the checkpoint's own config says it is.

Public API (imported by ``ckptlint.api`` and the engine; never imports torch or transformers at import time):

    declared_expectation(ckpt) -> Expected | Unchecked | None    # no --arch: config.json decides
    expected_for_class(name, ckpt) -> Expected | None             # --arch LlamaForCausalLM (a transformers class)
    loaded_diff(ckpt, expected) -> (view, RawDiff)                # the declared library's loader (from_pretrained)
    rebuild(ckpt, expected, overrides) -> Expected                # the same declaration with some fields changed
    diff_entries(ckpt, expected) -> [(kind, key)]                 # its raw diff: missing / unexpected / shape

An expectation built from a declaration carries ``params["declared"]`` — what CK113 reads to name the config field
behind each difference, for any declaration kind:

    {"file": "config.json", "class": "LlamaForCausalLM", "tier": "builtin" | "transformers",
     "fields": {param: "config.field" ("" when derived)}, "explicit": {param: value the file states},
     "overrides": {...}, "refused": [{"fields": [param...], "message": "..."}]}

``rebuild`` re-reads the same file with some parameters changed (a family spec's ``[archs.NAME.config]``, or
transformers for tier b), so that CK113 can try "what if num_key_value_heads were 2" against the weights.

A transformers ``config.json`` is built from the built-in families generated from transformers (tier a, no torch
needed: ``rules/archs/hf-*.toml``), else by transformers itself on the meta device when it is installed (tier b,
``ckptlint.declared.hf_live``), else not at all (``Unchecked``: CK004 says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint, TensorInfo
    from ckptlint.declared.hf_load import Loaded
    from ckptlint.expected import Expected, Unchecked
    from ckptlint.rules._context import RawDiff

__all__ = ["declared_expectation", "diff_entries", "expected_for_class", "loaded", "loaded_diff", "rebuild"]


def declared_expectation(ckpt: Checkpoint) -> Expected | Unchecked | None:
    """The model ``ckpt``'s own declaration builds (source ``declared``); ``Unchecked`` when it declares one that
    cannot be built here; None when there is no declaration this module reads."""
    from ckptlint.declared import hf

    return hf.declared(ckpt)


def expected_for_class(name: str, ckpt: Checkpoint | None) -> Expected | None:
    """``--arch NAME`` when NAME is a transformers model class (built from the folder's config.json), else None."""
    from ckptlint.declared import hf

    return hf.for_class(name, ckpt)


def rebuild(ckpt: Checkpoint, expected: Expected, overrides: dict[str, Any]) -> Expected | None:
    """``expected`` rebuilt from the same declaration with ``overrides`` (parameter -> value); None when the
    expectation is not one this module built."""
    from ckptlint.declared import hf

    return hf.rebuild(ckpt, expected, overrides)


def loaded(ckpt: Checkpoint, expected: Expected) -> Loaded:
    """What the declared library's loader makes of ``ckpt`` for ``expected`` (``Expected.load`` says how)."""
    from ckptlint.declared.hf_load import load

    shapes = {k: tuple(t.shape) for k, t in expected.tensors.items()}
    return load(ckpt.tensors, shapes, expected.load)


def loaded_diff(ckpt: Checkpoint, expected: Expected) -> tuple[dict[str, TensorInfo], RawDiff]:
    """The engine's key view and raw diff for an expectation with a loader: exactly its loading report."""
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
    return result.view, raw


def diff_entries(ckpt: Checkpoint, expected: Expected) -> list[tuple[str, str]]:
    """The raw diff of ``expected`` as (kind, key) pairs: with its loader, else a plain state_dict comparison."""
    if expected.load:
        result = loaded(ckpt, expected)
        missing, unexpected, shapes = result.missing, result.unexpected, [k for k, _, _ in result.mismatched]
    else:
        from ckptlint.rules._context import torch_shape_equal

        exp = expected.tensors
        missing = [k for k in exp if k not in ckpt.tensors]
        unexpected = [k for k in ckpt.tensors if k not in exp]
        shapes = [
            k
            for k, e in exp.items()
            if k in ckpt.tensors and not torch_shape_equal(e.shape, ckpt.tensors[k].shape)
        ]
    return (
        [("missing", k) for k in missing]
        + [("unexpected", k) for k in unexpected]
        + [("shape", k) for k in shapes]
    )
