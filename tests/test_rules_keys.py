"""Key helpers: collapsing long key lists for display (one syntax), and the one rename finder."""

from __future__ import annotations

from ckptlint.keygroups import collapse, fold_numbers
from ckptlint.renames import find_prefix_renames


def test_collapse_folds_block_numbers_and_sibling_leaves() -> None:
    keys = [f"Transformer/encoderblock_{i}/LayerNorm_0/{p}" for i in range(12) for p in ("bias", "scale")]
    assert collapse(keys, "/") == ["Transformer/encoderblock_{0..11}/LayerNorm_0/{bias,scale} (24 keys)"]


def test_collapse_never_exceeds_the_limit_and_keeps_single_keys_whole() -> None:
    keys = [f"g{i}.sub.{j}.w" for i in range(30) for j in range(3)] + ["token_embedding.weight"]
    lines = collapse(keys, ".", max_groups=5)
    assert len(lines) <= 5
    assert sum(
        int(x.rsplit("(", 1)[1].split()[0]) if "(" in x else 1 for x in lines if not x.startswith("…")
    ) + sum(int(x.split()[1]) for x in lines if x.startswith("…")) == len(keys)
    assert collapse(["token_embedding.weight"], ".") == ["token_embedding.weight"]


def test_collapse_non_contiguous_numbers() -> None:
    assert collapse([f"blocks.{i}.attn.qkv.weight" for i in (0, 1, 3)], ".") == [
        "blocks.{0..1,3}.attn.qkv.weight (3 keys)"
    ]


def test_fold_numbers_is_the_same_syntax_without_merging() -> None:
    keys = [
        f"transformer.resblocks.{i}.ln_{j}.{p}" for i in range(2) for j in (1, 2) for p in ("weight", "bias")
    ]
    assert fold_numbers(keys) == [
        "transformer.resblocks.{0..1}.ln_{1..2}.weight",
        "transformer.resblocks.{0..1}.ln_{1..2}.bias",
    ]
    assert fold_numbers(["mlp.fc1.weight", "mlp.fc2.weight"]) == [
        "mlp.fc1.weight",
        "mlp.fc2.weight",
    ]  # layers


def test_collapse_cuts_at_separators_never_inside_a_range() -> None:
    keys = [f"enc.blocks.{i}.{m}.{j}.w" for i in range(12) for m in "abcdefghij" for j in range(2)]
    lines = collapse(keys, ".", max_groups=4)
    assert lines == ["enc.blocks.{0..11}.… (240 keys)"]


def test_collapse_keeps_a_key_apart_from_the_group_it_names() -> None:
    assert collapse(["a", "a.x", "a.y"], ".") == ["a", "a.{x,y} (2 keys)"]


def _renames(a: list[str], b: list[str], sep: str = ".") -> list[tuple[str, str, int]]:
    found = find_prefix_renames(
        {tuple(k.split(sep)): None for k in a}, {tuple(k.split(sep)): None for k in b}
    )
    return [(sep.join(pa), sep.join(pb), len(pairs)) for pa, pb, pairs in found]


def test_find_rename_strip_add_and_replace() -> None:
    model = ["visual.conv1.weight", "visual.proj", "ln_final.weight", "ln_final.bias"]
    assert _renames([f"module.{k}" for k in model], model) == [("module", "", 4)]
    assert _renames(["embedding/kernel", "head/bias"], ["img/embedding/kernel", "img/head/bias"], "/") == [
        ("", "img", 2)
    ]
    assert _renames(["model.enc.a.w", "model.enc.b.w"], ["encoder.a.w", "encoder.b.w"]) == [
        ("model.enc", "encoder", 2)
    ]


def test_find_rename_needs_two_keys_of_evidence() -> None:
    assert _renames(["extra.head.weight", "x.y"], ["visual.ln.weight", "z.w"]) == []
