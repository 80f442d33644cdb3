"""Key helpers: collapsing long key lists for display, and finding the one prefix change behind many keys."""

from __future__ import annotations

from ckptlint.rules._keys import boundary_prefixes, collapse
from ckptlint.rules.ck103_prefix import Rename, find_rename


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
        "blocks.{0,1,3}.attn.qkv.weight (3 keys)"
    ]


def test_boundary_prefixes() -> None:
    assert boundary_prefixes("a.b.c", ".") == ["a.", "a.b."]
    assert boundary_prefixes("params/img/t", "/") == ["params/", "params/img/"]


def test_find_rename_strip_add_and_replace() -> None:
    model = ["visual.conv1.weight", "visual.proj", "ln_final.weight", "ln_final.bias"]
    assert find_rename(model, [f"module.{k}" for k in model], ".") == (Rename("module.", ""), 4)
    assert find_rename(
        [f"img/{k}" for k in ("embedding/kernel", "head/bias")], ["embedding/kernel", "head/bias"], "/"
    ) == (
        Rename("", "img/"),
        2,
    )
    got = find_rename(["encoder.a.w", "encoder.b.w"], ["model.enc.a.w", "model.enc.b.w"], ".")
    assert got == (Rename("model.enc.", "encoder."), 2)


def test_find_rename_ignores_shared_leaf_names() -> None:
    assert find_rename(["visual.ln.weight"], ["extra.head.weight"], ".") is None
