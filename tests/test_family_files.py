"""The family files (rules/archs/*.toml): one grammar, one registry, and a family added from a temporary folder.

Registry-wide tests are parametrised by what the registry holds (no hand-kept lists). The add-a-family tests take the
worked example of rules/README.md, point ckptlint at it with $CKPTLINT_FAMILY_PATH, and check it end to end against
the torch model it describes: its state_dict() is the expected tree and load_state_dict(strict=False) the raw diff.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_support import ckptlint, one_error_line
from safetensors.torch import save_file
from torch import nn

from ckptlint.archs import list_archs, register_family_file, resolve_expected
from ckptlint.archs import registry as reg
from ckptlint.archs.build import build, validate
from ckptlint.archs.detect import detect_layout, infer, recognise
from ckptlint.archs.expr import SpecError
from ckptlint.archs.parsed_cache import build_cache, cache_path, render
from ckptlint.archs.pattern import PatternError, pattern
from ckptlint.archs.schema import FamilyFile, WrapperFile
from ckptlint.archs.spec import build_tree, load_arch, variant_names, variant_params
from ckptlint.checkpoint import Checkpoint, tensor_info
from ckptlint.errors import CkptlintError
from ckptlint.ruledata import load_toml, parsed

README = Path(__file__).resolve().parent.parent / "rules" / "README.md"
BUILTIN = sorted(reg.builtin_dir().glob("*.toml"))
ARCHS = sorted(reg.registry().archs)
CONVERSIONS = [c.name for c in reg.conversions()]


def as_checkpoint(tensors: dict[str, Any], key_sep: str = ".") -> Checkpoint:
    return Checkpoint(
        path="<memory>",
        format="safetensors",
        key_sep=key_sep,
        tensors={k: tensor_info(t.shape, t.dtype) for k, t in tensors.items()},
    )


# ---- the grammar -----------------------------------------------------------------------------------------------
def test_pattern_grammar() -> None:
    p = pattern("visual.transformer.resblocks.{i}.attn.in_proj_{p:weight|bias}")
    assert p.match("visual.transformer.resblocks.11.attn.in_proj_bias") == {"i": "11", "p": "bias"}
    assert p.match("visual.transformer.resblocks.x.attn.in_proj_bias") is None
    assert p.match("visual.transformer.resblocks.1.attn.in_proj_scale") is None
    assert p.fill(i=3, p="weight") == "visual.transformer.resblocks.3.attn.in_proj_weight"
    assert pattern("visual.trunk.**").matches("visual.trunk.blocks.0.norm1.weight")
    assert pattern("**/img/embedding/kernel").matches("params/img/embedding/kernel")
    assert pattern("ln_*.weight").matches("ln_1.weight") and not pattern("ln_*.weight").matches("ln.1.weight")
    keys = ["module.blocks.2.attn.qkv.weight", "module.blocks.0.attn.qkv.weight"]
    assert pattern("blocks.{i}.attn.qkv.weight").first(keys, set(keys), "module.") == keys[1]  # block 0 first
    assert pattern("blocks.{i}.attn.qkv.weight").first(keys[:1], set(keys[:1]), "module.") == keys[0]
    for bad in ("a.{b", "a.}b", "{1x}.w", "{i}.{i}", "a***", "{p:a|}"):
        with pytest.raises(PatternError):
            pattern(bad)


# ---- every built-in file ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", BUILTIN, ids=lambda p: p.name)
def test_builtin_file_validates_whole_and_its_lazy_cut_parses_alike(path: Path) -> None:
    """A run builds the bundled files without validating them: pydantic's objects must be the very same."""
    text = path.read_text()
    whole = tomllib.loads(text)
    validated = validate(FamilyFile, whole)
    built = build(FamilyFile, whole)
    assert built == validated and repr(built) == repr(validated)  # repr: 1 and 1.0 compare equal
    index, archs = reg.split_archs(text)
    merged = tomllib.loads(index)
    assert "archs" not in merged
    merged["archs"] = {name: tomllib.loads(chunk)["archs"][name] for name, chunk in archs.items()}
    assert merged == whole


def test_parsed_rules_cache_is_fresh_and_reads_as_the_toml() -> None:
    """A run reads rules/parsed.jsonl instead of parsing TOML: it must hold exactly what the TOML files say."""
    root = Path(reg.rules_dir())
    assert cache_path(root).read_text(encoding="utf-8") == render(build_cache(root)), (
        "rules/parsed.jsonl is stale: run python scripts/gen_rules_cache.py"
    )
    for path in BUILTIN:
        data = path.read_bytes()
        entry = parsed(f"archs/{path.name}", data)
        assert entry is not None and parsed(f"archs/{path.name}", data + b"\n") is None  # edits are noticed
        whole = tomllib.loads(data.decode())
        merged = {**entry["index"], "archs": {k: json.loads(v) for k, v in entry["archs"].items()}}
        assert merged == whole and repr(build(FamilyFile, merged)) == repr(build(FamilyFile, whole))
    for name in ("wrappers.toml", "preprocessing.toml", "training_state.toml"):
        data = (root / name).read_bytes()
        assert parsed(name, data)["data"] == tomllib.loads(data.decode()) == load_toml(name)


@pytest.fixture
def rules_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the package's rule data that ckptlint reads instead (edit it, then ask the registry)."""
    import shutil

    from ckptlint import ruledata

    rules = tmp_path / "rules"
    shutil.copytree(reg.rules_dir(), rules)
    monkeypatch.setattr(ruledata, "_PKG", tmp_path / "pkg")
    monkeypatch.setattr(reg, "rules_dir", lambda: rules)
    caches = (ruledata.rules_dir, ruledata._entries, ruledata.read_rules)
    for fn in caches:
        fn.cache_clear()
    reg.reset()
    yield rules
    for fn in caches:
        fn.cache_clear()
    reg.reset()


def test_an_edited_bundled_file_is_read_from_its_toml(rules_copy: Path) -> None:
    """A family file changed after the cache was written is parsed from its TOML and validated (slower, never stale,
    a mistake in it is the one-line schema error)."""
    rules = rules_copy
    path = rules / "archs" / "timm-vit.toml"
    path.write_text(path.read_text().replace('title = "', 'title = "Edited: ', 1))
    families = {f.name: f for f in reg.registry().families}
    assert families["timm-vit"].head.family.title.startswith("Edited: ")
    assert not families["timm-vit"].bundled and families["open_clip"].bundled  # the edited one is validated
    broken = path.read_text().replace("variant_keys = [", "varient_keys = [", 1)
    path.write_text(broken)
    reg.reset()
    with pytest.raises(CkptlintError, match=r"timm-vit\.toml: .*varient_keys: Extra inputs"):
        reg.registry()
    path.write_text(broken.replace("varient_keys = [", "variant_keys = [", 1))
    wrappers = rules / "wrappers.toml"
    wrappers.write_text(wrappers.read_text().replace('side = "file"', 'side = "flie"', 1))
    reg.reset()
    with pytest.raises(CkptlintError, match=r"wrappers\.toml: wrapper\.\d+\.side: Input should be"):
        reg.wrappers()


@pytest.mark.parametrize("damage", ["line_out_of_range", "line_edited", "head_not_json"])
def test_a_damaged_rules_cache_is_never_trusted(damage: str, rules_copy: Path) -> None:
    """rules/parsed.jsonl damaged: an entry that points nowhere, or to a line that is not the one it was written
    with, is ignored (the TOML is read and validated); an unreadable first line means no cache at all."""
    cache = rules_copy / "parsed.jsonl"
    head, *tables = cache.read_text(encoding="utf-8").split("\n")
    entries = json.loads(head)
    timm_refs = entries["files"]["archs/timm-vit.toml"]["archs"]
    if damage == "line_out_of_range":
        timm_refs["timm-vit"][0] = len(tables) + 5
        head = json.dumps(entries)
    elif damage == "line_edited":
        tables[timm_refs["timm-vit"][0]] = "{"
    else:
        head = head[:-10]
    cache.write_text("\n".join([head, *tables]), encoding="utf-8")
    families = {f.name: f for f in reg.registry().families}
    assert not families["timm-vit"].bundled  # read from its TOML and validated
    assert families["open_clip"].bundled is (damage != "head_not_json")
    arch = families["timm-vit"].arch("timm-vit", reg.registry())
    toml = tomllib.loads((rules_copy / "archs" / "timm-vit.toml").read_text())
    assert arch == validate(type(arch), toml["archs"]["timm-vit"])


@pytest.mark.parametrize("damage", ["line_missing", "lines_swapped"])
def test_a_rules_cache_whose_table_lines_moved_is_never_trusted(damage: str, rules_copy: Path) -> None:
    """rules/parsed.jsonl with a table line lost or two lines swapped (a bad merge, a hand edit): the first line
    still matches every TOML, but no architecture may be built from another architecture's table. Each arch is
    what its TOML validates to, or the run refuses the cache with a one-line error naming it."""
    cache = rules_copy / "parsed.jsonl"
    head, *tables = cache.read_text(encoding="utf-8").split("\n")
    if damage == "line_missing":  # every table line after the first moves up by one
        del tables[0]
    else:
        tables[0], tables[1] = tables[1], tables[0]
    cache.write_text("\n".join([head, *tables]), encoding="utf-8")
    registry = reg.registry()
    for fam in registry.families:
        toml = tomllib.loads(fam.path.read_text(encoding="utf-8")).get("archs", {})
        for name in sorted(toml):
            try:
                arch = fam.arch(name, registry)
            except SpecError as exc:
                assert "parsed.jsonl" in str(exc)
                continue
            assert arch == validate(type(arch), toml[name]), f"{fam.name}: {name} built from another table"


def test_bundled_wrappers_build_as_they_validate() -> None:
    raw = tomllib.loads((reg.rules_dir() / "wrappers.toml").read_text())
    validated = validate(WrapperFile, raw)
    assert build(WrapperFile, raw) == validated and repr(build(WrapperFile, raw)) == repr(validated)


def test_registry_validates_every_architecture() -> None:
    reg.registry().validate_all()
    assert {a.name for a in list_archs()} == set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_variant_builds(arch: str) -> None:
    spec = load_arch(arch)
    names = variant_names(spec)
    assert spec.default_variant in names
    for name in names:
        params = variant_params(spec, name)
        assert params is not None, name
        assert build_tree(spec, {**spec.params, **params}).tensors, name


# transformers classes of the generated families are declared by their config.json, not detected from keys
# (tests/test_hf_families.py checks them)
DETECTED_ARCHS = [a for a in ARCHS if load_arch(a).hf is None]


@pytest.mark.parametrize("arch", DETECTED_ARCHS)
def test_default_tree_is_detected_and_inferred_as_itself(arch: str) -> None:
    """A file holding exactly an architecture's default tree is recognised as that architecture and variant."""
    default = resolve_expected(f"{arch}:{load_arch(arch).default_variant}", None)
    ckpt = as_checkpoint(default.tensors, default.key_sep)
    guess = detect_layout(ckpt)
    assert (guess.arch, guess.root, guess.framework) == (arch, "", load_arch(arch).framework)
    inferred = resolve_expected(arch, ckpt)
    assert inferred.tensors == default.tensors
    spec = load_arch(arch)
    named = variant_params(spec, inferred.variant or "") or {}
    assert all(default.params[k] == v for k, v in named.items() if k in spec.variant_keys)
    assert {f.tower for f in infer(spec, ckpt).found} == set(default.towers)


# Source trees every conversion is planned over (full size, headers only): together they use every row.
CONVERSION_SOURCES = {
    "open_clip-hf-vision": ["open_clip:ViT-B-16"],
    "open_clip-hf": ["open_clip:ViT-B-16"],
    "open_clip-timm": ["open_clip:ViT-B-16"],
    "bv-vit-timm": ["bv-vit:B/16,pool=map,num_classes=10", "bv-vit:B/16,pool=tok"],
    "clippo-timm": ["clippo:B/16", "clippo:B/16,pool=tok"],
    "bv-vit-hf-siglip-vision": ["bv-vit:B/16,pool=map"],
    "bv-siglip-hf": ["bv-siglip:B/16"],
    "bv-siglip-open_clip": ["bv-siglip:B/16"],
}
NEEDS = {"heads": 12, "text_heads": 8, "act": "quick_gelu"}  # what an open_clip state_dict alone cannot tell


@pytest.mark.parametrize("name", CONVERSIONS)
def test_conversion_tables_make_the_target_tree(name: str) -> None:
    """Planned over full-size source trees, each table writes exactly the target architecture's tree for the
    parameters read back from what it writes (``convert`` checks the same before writing), and every row of its own
    is used."""
    from ckptlint.convert.plan import plan_conversion
    from ckptlint.convert.tables import direction

    conv = next(c for c in reg.conversions() if c.name == name)
    assert name in CONVERSION_SOURCES, f"add source trees for {name}"
    used: set[int] = set()
    rows = direction(conv, False).rows[: len(conv.keys)]  # its own rows (included ones: their table's test)
    for arch in CONVERSION_SOURCES[name]:
        src = resolve_expected(arch, None)
        ckpt = as_checkpoint(src.tensors, src.key_sep)
        needs = reg.declaration(conv.to).needs  # type: ignore[union-attr]
        sets = {k: v for k, v in NEEDS.items() if conv.from_ == "open_clip" and k in needs}
        plan = plan_conversion(ckpt, conv.to, sets)
        assert plan.direction.conv.name == name and not plan.direction.reverse
        assert not plan.missing and not plan.problems, (plan.missing, plan.problems)
        for i, row in enumerate(rows):
            if any(
                t.match(k) is not None for t in (*row.ins, row.like) if t is not None for k in ckpt.tensors
            ):
                used.add(i)
    unused = [(r.ins or (r.like,))[0].text for i, r in enumerate(rows) if i not in used]  # type: ignore[union-attr]
    assert not unused, f"rows no source tree uses: {unused}"


def test_clippo_fingerprint_is_one_declaration() -> None:
    keys = {"img/embedding/kernel": 0, "t": 0}
    assert recognise(keys, "clippo")
    assert not recognise({**keys, "b": 0}, "clippo")
    assert not recognise({**keys, "txt/Embed_0/embedding": 0}, "clippo")


# ---- a family from a temporary folder --------------------------------------------------------------------------
def example_family() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- example-family -->\n```toml\n(.*?)```\n<!-- /example-family -->", text, re.S)
    assert block, "rules/README.md lacks its example-family block"
    return block.group(1)


class Layer(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)


class ToyNet(nn.Module):
    """The model rules/README.md's example family describes."""

    def __init__(self, width: int = 16, depth: int = 2, vocab: int = 50, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(Layer(width) for _ in range(depth))
        self.head = nn.Linear(width, classes)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    family = root / "families"
    family.mkdir()
    (family / "toy.toml").write_text(example_family())
    torch.manual_seed(0)
    files = {"families": family}
    models = {"small": ToyNet(), "large": ToyNet(width=32, depth=4), "shallow": ToyNet(depth=1)}
    for name, model in models.items():
        files[name] = root / f"{name}.safetensors"
        save_file(model.state_dict(), files[name])
    files["ddp"] = root / "ddp.pt"
    torch.save(nn.DataParallel(models["small"]).state_dict(), files["ddp"])
    return files


def run(toy: dict[str, Path], *args: str) -> tuple[int, Any]:
    proc = ckptlint(*args, env={reg.ENV_PATH: str(toy["families"])})
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_added_family_is_listed(toy: dict[str, Path]) -> None:
    _, rows = run(toy, "archs", "--format", "json")
    row = next(r for r in rows if r["name"] == "toy-mlp")
    assert (row["variants"], row["framework"], row["default_variant"]) == (["small", "large"], "toy", "small")
    assert "toy-mlp" not in {r["name"] for r in json.loads(ckptlint("archs", "--format", "json").stdout)}


@pytest.mark.parametrize(("name", "variant"), [("small", "small"), ("large", "large")])
def test_added_family_detected_and_variant_inferred(toy: dict[str, Path], name: str, variant: str) -> None:
    code, report = run(toy, "check", str(toy[name]), "--format", "json")
    f = report["files"][0]
    assert code == 0 and f["findings"] == []
    assert (f["layout"], f["arch"]["name"], f["arch"]["variant"], f["arch"]["source"]) == (
        "toy", "toy-mlp", variant, "inferred",
    )  # fmt: skip
    code, report = run(toy, "check", str(toy[name]), "--arch", "toy-mlp", "--format", "json")
    f = report["files"][0]
    assert code == 0 and f["arch"]["variant"] == variant and f["diff"]["missing"] == []
    assert f["arch"]["inferred_from"].startswith("embed.weight [")


def test_added_family_raw_diff_is_torchs(toy: dict[str, Path]) -> None:
    """One layer less than the variant asks for: the raw diff is load_state_dict(strict=False)'s, the cause CK112."""
    sd = ToyNet(depth=1).state_dict()
    truth = ToyNet(depth=2).load_state_dict(sd, strict=False)
    code, report = run(toy, "check", str(toy["shallow"]), "--arch", "toy-mlp:small", "--format", "json")
    f = report["files"][0]
    assert code == 1
    assert f["diff"]["missing"] == truth.missing_keys and f["diff"]["unexpected"] == truth.unexpected_keys
    assert [x["code"] for x in f["findings"]] == ["CK112"]
    assert f["findings"][0]["details"]["fields"] == {"text": {"depth": [2, 1]}}


def test_added_family_other_variant_and_wrapper(toy: dict[str, Path]) -> None:
    code, report = run(toy, "check", str(toy["small"]), "--arch", "toy-mlp:large", "--format", "json")
    assert code == 1 and [x["code"] for x in report["files"][0]["findings"]] == ["CK112"]
    code, report = run(toy, "check", str(toy["ddp"]), "--format", "json")
    f = report["files"][0]
    assert code == 1 and f["arch"]["name"] == "toy-mlp" and f["arch"]["variant"] == "small"
    assert [(x["code"], x["details"]["from"]) for x in f["findings"]] == [("CK103", "module.")]


def test_register_family_file_in_process(toy: dict[str, Path]) -> None:
    path = toy["families"] / "toy.toml"
    sd = ToyNet(width=32, depth=4).state_dict()
    ckpt = as_checkpoint({k: v for k, v in sd.items()})
    register_family_file(path)
    try:
        assert "toy-mlp" in {a.name for a in list_archs()}
        guess = detect_layout(ckpt)
        assert (guess.name, guess.arch, guess.framework) == ("toy", "toy-mlp", "toy")
        e = resolve_expected("toy-mlp", ckpt)
        assert e.variant == "large" and {k: tuple(t.shape) for k, t in e.tensors.items()} == {
            k: tuple(v.shape) for k, v in sd.items()
        }
    finally:
        reg.unregister_family_file(path)
    assert "toy-mlp" not in reg.registry().archs
    with pytest.raises(CkptlintError, match="unknown architecture 'toy-mlp'"):
        resolve_expected("toy-mlp", None)


# ---- a broken family file: one line naming the file and the field ------------------------------------------------
BROKEN = {
    "misspelt field": (
        ('variant_keys = ["width"', 'varient_keys = ["width"'),
        "archs.toy-mlp.varient_keys: Extra inputs are not permitted",
    ),
    "bad pattern": (('anchors = ["embed.weight"]', 'anchors = ["embed.{weight"]'), "layouts.0.anchors.0"),
    "bad expression": (('hidden = "4 * width"', 'hidden = "4 * width +"'), "modules.net.derive.hidden"),
    "unknown module": (('{ use = "net", tower', '{ use = "nett", tower'), "archs.toy-mlp.tree.0.use"),
    "unknown layout": (('layout = "toy"\nall', 'layout = "toys"\nall'), "detect.0.layout: unknown layout"),
    "wrong type": (
        ("width = 16, depth = 2, vocab", "width = [16], depth = 2, vocab"),
        "archs.toy-mlp.params.width",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_family_file_is_one_line_naming_file_and_field(tmp_path: Path, case: str) -> None:
    (old, new), where = BROKEN[case]
    text = example_family()
    assert old in text
    broken = tmp_path / "broken.toml"
    broken.write_text(text.replace(old, new, 1))
    line = one_error_line(ckptlint("archs", env={reg.ENV_PATH: str(broken)}))
    assert str(broken) in line and where in line, line


def test_a_key_and_its_alias_together_are_refused() -> None:
    """``with`` (the TOML name) and ``with_`` (the field) are one field: a table with both is an error, not a
    silent choice of one."""
    from ckptlint.archs.build import InvalidTable
    from ckptlint.archs.schema import Group

    with pytest.raises(InvalidTable, match="'with' and 'with_' name the same field"):
        validate(Group, {"tensors": [["a", ["n"]]], "with": {"n": 1}, "with_": {"n": 2}})
    assert validate(Group, {"tensors": [["a", ["n"]]], "with": {"n": 1}}).with_ == {"n": 1}
