"""The family-file format (``rules/archs/*.toml``): plain classes pydantic validates (``ckptlint.archs.build``).

Every field is documented in ``rules/README.md`` (conversion rows and declarations, used by ``ckptlint convert``,
included); key patterns follow ``ckptlint.archs.pattern``, expressions ``ckptlint.archs.expr``. Cross-file references (modules of other families, layouts, profiles, conversions) are
checked by ``ckptlint.archs.registry`` once every file is loaded.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from ckptlint.archs import pattern as _pattern
from ckptlint.archs.expr import SpecError, compile_expr
from ckptlint.archs.schema_types import After, Before, Choice, Strict
from ckptlint.record import field

Scalar = int | float | bool | str
Tower = Literal["vision", "text"]


def _check_pattern(text: str) -> str:
    return _pattern.check(text)


def _check_literal(text: str) -> str:
    if _pattern.pattern(text).kind != "literal":
        raise ValueError(f"{text!r} must be a plain key (no '*', '**' or captures)")
    return text


def _check_template(text: str) -> str:
    if text and _pattern.pattern(text).kind not in ("literal", "indexed"):
        raise ValueError(f"{text!r} must be a key template (only {{i}} captures, no wildcards)")
    return text


def _check_expr(value: Any) -> Any:
    if isinstance(value, str):
        try:
            compile_expr(value)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Pattern = Annotated[str, After(_check_pattern)]
LiteralKey = Annotated[str, After(_check_literal)]
Template = Annotated[str, After(_check_template)]
Expr = Annotated[Scalar, After(_check_expr)]
Patterns = Annotated[list[Pattern], Before(_as_list)]


# ---- tensor trees --------------------------------------------------------------------------------------------
class Tensor(Strict):
    """One parameter: ``[key, shape]``, ``[key, shape, when]`` or ``{key, shape, when, dtype}``."""

    key: LiteralKey
    shape: list[Annotated[int | str, After(_check_expr)]]
    when: Expr | None = None
    dtype: str | None = None


def _tensor_from_list(value: Any) -> Any:
    if isinstance(value, list):
        if not 2 <= len(value) <= 3:
            raise ValueError("a tensor is [key, shape] or [key, shape, when]")
        return dict(zip(("key", "shape", "when"), value, strict=False))
    return value


class Group(Strict):
    """A group of entries: a module (``use``) or inline ``tensors``, under ``prefix``."""

    ALIASES: ClassVar[dict[str, str]] = {"with": "with_"}

    use: str | None = None  # "module" (this family) or "family:module"
    tensors: list[Entry] = field(default_factory=list)
    prefix: Template = ""
    when: Expr | None = None
    repeat: Expr | None = None  # instantiate N times; {i} in the prefix is the index
    stack: Expr | None = None  # prepend a leading dimension N to every shape (flax nn.scan)
    with_: dict[str, Expr] = field(default_factory=dict)
    tower: Tower | None = None  # (arch trees only) this group is a tower
    sets: dict[str, Scalar] = field(default_factory=dict)  # parameters that finding the tower implies

    def _check(self) -> None:
        if self.use is not None and self.tensors:
            raise ValueError("a group has either `use` or `tensors`, not both")


def _entry_kind(value: Any) -> str:
    if isinstance(value, (list, Tensor)):
        return "tensor"
    if isinstance(value, dict) and "key" in value:
        return "tensor"
    return "group"


Entry = Annotated[
    Union[Tensor, Group],  # noqa: UP007 (Tensor | Group is evaluated; the file's annotations are strings)
    Choice(_entry_kind, tensor=Annotated[Tensor, Before(_tensor_from_list)], group=Group),
]


# ---- reading parameters back ----------------------------------------------------------------------------------
class Probe(Strict):
    """One way to read a parameter; tried in order until one applies."""

    key: LiteralKey | None = None  # a dimension of this tensor...
    dim: int = 0
    # ...of a 2-d tensor whose other axis is this (known) parameter: read from the other axis when the file stores
    # the matrix transposed (the other axis differs from it and this one equals it)
    across: str | None = None
    expr: Expr | None = None  # ...through expr (which sees it as x); alone: a value computed from others
    count: Template | None = None  # how many indices {i} exist, from 0
    present: LiteralKey | None = None  # value when this key exists
    absent: LiteralKey | None = None  # value when it does not
    value: Scalar | None = None
    guess: bool = False  # a convention, not evidence: never decides a variant

    def _check(self) -> None:
        kinds = [k for k in ("key", "count", "present", "absent") if getattr(self, k) is not None]
        if len(kinds) > 1:
            raise ValueError(f"a probe reads one thing; got {', '.join(kinds)}")
        if not kinds and self.expr is None and self.value is None:
            raise ValueError("a probe needs key, count, present, absent, expr or value")
        if self.count is not None and "{i}" not in self.count:
            raise ValueError("a count probe needs {i} in its key")
        if self.across is not None and self.key is None:
            raise ValueError("`across` reads a 2-d tensor: it needs `key`")


class Anchor(Strict):
    key: LiteralKey
    rank: int | None = None


class ModuleInfer(Strict):
    tower: Tower
    anchor: list[Anchor]
    probes: dict[str, list[Probe]] = field(default_factory=dict)


class Module(Strict):
    doc: str = ""
    defaults: dict[str, Expr] = field(default_factory=dict)  # set when the caller did not
    derive: dict[str, Expr] = field(default_factory=dict)  # computed, in order, on entry
    tensors: list[Entry]
    infer: ModuleInfer | None = None


# ---- recognising layouts and architectures --------------------------------------------------------------------
class Layout(Strict):
    """A layout signature: found by its anchors under any root, scored by prefixes and markers."""

    name: str
    anchors: list[LiteralKey]
    prefixes: list[Pattern]
    markers: list[Patterns] = field(default_factory=list)
    require: list[Patterns] = field(default_factory=list)
    towers: dict[Tower, list[Pattern]] = field(default_factory=dict)


class Detect(Strict):
    """When a checkpoint in ``layout`` is ``arch`` (the rules of every family for a layout are tried by ``rank``)."""

    arch: str
    layout: str | None = None
    rank: int = 50
    config: list[str] = field(default_factory=list)  # a sidecar config.json's model_type is one of these
    all: list[Pattern] = field(default_factory=list)
    any: list[Pattern] = field(default_factory=list)
    none: list[Pattern] = field(default_factory=list)


class KeyClasses(Strict):
    """How this family's keys are classified (merged with every family of the same framework)."""

    signatures: list[Pattern] = field(default_factory=list)
    joint: list[Pattern] = field(default_factory=list)
    text: list[Pattern] = field(default_factory=list)
    vision: list[Pattern] = field(default_factory=list)
    unprefixed: list[Pattern] = field(default_factory=list)
    vision_markers: list[Pattern] = field(default_factory=list)
    text_markers: list[Pattern] = field(default_factory=list)


DIMS = {"patch", "width", "channels", "heads", "head_dim", "mlp", "vocab", "embed_dim", "pos_rows", "context_length", "depth", "_"}  # fmt: skip


class ShapeProbe(Strict):
    """Which keys carry structural numbers (CK108/CK109/CK110/CK112); ``{i}`` counts blocks."""

    tower: Literal["vision", "text", "unprefixed"]
    key: Patterns
    dims: list[str] = field(default_factory=list)
    resample: str | None = None
    auto: str | None = None

    def _check(self) -> None:
        bad = [d for d in self.dims if d not in DIMS]
        if bad:
            raise ValueError(f"unknown dims {bad}; known: {', '.join(sorted(DIMS))}")


# ---- architectures --------------------------------------------------------------------------------------------
class VariantEntry(Strict):
    """A named variant: parameter values, plus per-tag overrides and the preprocessing it was trained with."""

    tags: dict[str, dict[str, Scalar]] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Scalar] = field(default_factory=dict)  # every other key of the table

    @classmethod
    def _prepare(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        own = {k: raw[k] for k in ("tags", "preprocessing") if k in raw}
        return {**own, "params": {k: v for k, v in raw.items() if k not in own}}


class Variants(Strict):
    scheme: Literal["table", "size_patch"] = "table"
    names: dict[str, VariantEntry] = field(default_factory=dict)
    patches: list[int] = field(default_factory=list)  # size_patch: SIZE/PATCH over the family's [sizes]
    text_prefix: str | None = None
    text_size: dict[str, str] = field(default_factory=dict)
    derive: dict[str, Expr] = field(default_factory=dict)


class ConfigMap(Strict):
    """How a declaration next to the weights (HF config.json...) fixes the parameters; it decides over shapes.

    ``params`` are read in order: a missing field takes its default, a value or an expression of the parameters
    read before it (else of the named variant's and the architecture's defaults); ``derive`` then computes, in
    order, the parameters the library computes from them (``mlp_dim = "int(width * mlp_ratio)"``).
    """

    kind: Literal["hf-config", "open_clip-config", "timm-config"] = "hf-config"  # Sidecar.kind
    # the declaration field whose value picks an entry of `match`; "" for none (every declaration of this kind)
    select: str = "model_type"
    match: dict[
        str, str
    ]  # value ("*": any) -> path prefix of `params` ("vision_config." for a CLIPModel config)
    params: dict[str, tuple[str, Expr]]  # param -> (dotted path, default: a value or an expression)
    derive: dict[str, Expr] = field(default_factory=dict)  # param -> expression, computed after `params`
    variant: str | None = (
        None  # field naming a variant whose parameters are the defaults (timm: architecture)
    )
    architectures: list[str] = field(default_factory=list)  # declared class names this arch builds

    def _check(self) -> None:
        if not self.select and set(self.match) != {""}:
            raise ValueError('without `select`, `match` has exactly one entry, "" (the path prefix)')


# ---- DECL-HF (issue 11): how transformers' from_pretrained loads a checkpoint into a class ----------------------
class HfTied(Strict):
    """A tied weight: ``target`` takes ``source``'s tensor when ``when`` holds (``tie_word_embeddings``)."""

    target: str
    source: str
    when: Expr | None = None


class HfTransform(Strict):
    """One of transformers' load-time key conversions (``conversion_mapping``), as transformers compiles it."""

    ALIASES: ClassVar[dict[str, str]] = {"class": "class_"}

    kind: Literal["rename", "convert", "unsupported"]
    regex: str  # the compiled source alternation (named groups g0, g1...)
    sources: list[str]
    targets: list[str]
    scope: str | None = None  # scope_prefix: only keys under it (or under base + it) are matched
    base: str | None = None  # base_model_prefix
    ops: list[dict[str, Scalar]] = field(default_factory=list)  # convert: MergeModulelist, Concatenate...
    class_: str | None = None  # unsupported: transformers' class name


class HfCheck(Strict):
    """A check of transformers' config class (or, ``build``, of the model's constructor): the config is refused when
    ``expr`` is false, or divides by zero."""

    expr: Expr
    fields: list[str]  # the parameters it reads (named in the finding)
    message: str  # str.format with the parameters
    where: str = ""  # transformers' function that checks ("BertSelfAttention.__init__"); "": the config class
    build: bool = False  # checked when the model is built, not when the config is read


class HfDivision(Strict):
    """A division transformers does when it reads the config (or, ``build``, builds the model): the config is
    refused when ``expr`` divides by zero."""

    expr: Expr  # "hidden_size // num_attention_heads"
    where: str  # transformers' function that divides ("ViTAttention.__init__")
    name: str = ""  # what it computes ("head_dim"); "" when the value is not assigned
    build: bool = True


class HfLoad(Strict):
    """What ``from_pretrained`` does around the state_dict for this class (``rules/README.md``, "hf")."""

    model_type: str
    base_prefix: str = ""
    tied: list[HfTied] = field(default_factory=list)
    ignore_missing: list[str] = field(default_factory=list)  # regular expressions, searched
    ignore_unexpected: list[str] = field(default_factory=list)
    nonpersistent: list[str] = field(default_factory=list)  # buffers not in state_dict (templates)
    transforms: list[HfTransform] = field(default_factory=list)
    checks: list[HfCheck] = field(default_factory=list)
    divides: list[HfDivision] = field(default_factory=list)
    modalities: list[Literal["text", "vision", "audio"]] = field(
        default_factory=list
    )  # what the model takes in


class PreprocessingEntry(Strict):
    when: Expr | None = None
    values: dict[str, Any]


class ArchInfer(Strict):
    probes: dict[str, list[Probe]] = field(default_factory=dict)


class Arch(Strict):
    title: str
    description: str
    source: str
    default_variant: str
    variant_keys: list[str]
    tree: list[Entry]
    params: dict[str, Scalar] = field(default_factory=dict)
    variants: Variants = field(default_factory=Variants)
    infer: ArchInfer = field(default_factory=ArchInfer)
    config: ConfigMap | None = None
    preprocessing: list[PreprocessingEntry] = field(default_factory=list)
    profile: str | None = None  # a preprocessing profile (CK107/CK108) this architecture was trained with
    order: list[Pattern] = field(default_factory=list)  # torch state_dict order across hoisted modules
    dtype: str = "float32"
    hf: HfLoad | None = None  # DECL-HF: a transformers class (generated families, scripts/gen_hf_families.py)
    # the transformers class (an architecture with ``hf``) whose from_pretrained this architecture stands for: the
    # raw diff is that loader's report (base-model prefix, key conversions), as for ``--arch CLASS``
    loads_as: str | None = None


# ---- framework-level knowledge --------------------------------------------------------------------------------
class Advice(Strict):
    fix: str
    note: str


class Framework(Strict):
    title: str
    sep: Literal[".", "/"]
    aliases: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # frameworks whose layout it loads natively as a tower
    files: list[str] = field(default_factory=list)  # its native weight file names
    preprocessing_note: str | None = None
    advice: dict[str, Advice] = field(default_factory=dict)  # CK104: this framework's file into another


class OldLayout(Strict):
    """A layout older code wrote that the framework's loader still fixes up (CK111)."""

    ALIASES: ClassVar[dict[str, str]] = {"from": "from_"}

    kind: Literal["rename", "split_cls", "move_under", "drop"]
    title: str
    loader: str
    fix: str
    within: str | None = None  # module whose anchors locate the roots the keys are relative to
    from_: LiteralKey | None = None
    to: LiteralKey | None = None
    key: LiteralKey | None = None
    marker: LiteralKey | None = None
    group: list[Pattern] = field(default_factory=list)
    under: str | None = None
    keys: list[Pattern] = field(default_factory=list)

    def _check(self) -> None:
        need = {
            "rename": ("within", "from_", "to"),
            "split_cls": ("within", "key"),
            "move_under": ("within", "marker", "group", "under"),
            "drop": ("keys",),
        }[self.kind]
        lacking = [n.rstrip("_") for n in need if not getattr(self, n)]
        if lacking:
            raise ValueError(f"kind {self.kind!r} needs {', '.join(lacking)}")


class Wrapper(Strict):
    """A prefix a wrapper adds to every key (CK103)."""

    prefix: str
    side: Literal["file", "model"]
    name: str
    cause: str
    step: str
    loader: str
    framework: str | None = None  # "any" in rules/wrappers.toml; a family's own framework otherwise
    fix: str | None = None
    kind: str | None = None  # big_vision scope nesting (one_tower, two_towers...)
    companions: list[Pattern] = field(default_factory=list)
    requires: Pattern | None = None


class Profile(Strict):
    """Preprocessing a whole model family was trained with (CK107/CK108), recognised from the weights."""

    title: str
    mean: list[float]
    std: list[float]
    resize_mode: str | None = None
    interpolation: str | None = None
    source: str
    cause: str
    fix: str
    arch: str | None = None  # recognised when the keys are this architecture's (its detect rules' conditions)


class Tag(Strict):
    """Preprocessing of one pretrained tag ("open_clip:ViT-B-16/openai", "timm:NAME.TAG", "hf:REPO")."""

    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None
    resize_mode: str | None = None
    image_size: int | None = None
    quick_gelu: bool | None = None


class FamilyPreprocessing(Strict):
    profiles: dict[str, Profile] = field(default_factory=dict)
    recognise: dict[str, list[Pattern]] = field(default_factory=dict)  # profile -> keys that show it
    tags: dict[str, Tag] = field(default_factory=dict)


# ---- conversions (``ckptlint convert``, ``diff``, CK104) and declarations ----------------------------------------
ConvOp = Literal["rename", "transpose", "reshape", "split"]


class KeyRule(Strict):
    """One row: ``from`` -> ``to`` through ``op`` (a list: applied in order; reversed and inverted going back)."""

    ALIASES: ClassVar[dict[str, str]] = {"from": "from_"}

    from_: Pattern | list[Pattern] | None = None
    to: Pattern | list[Pattern]
    op: ConvOp | list[ConvOp] = "rename"
    dim: int = 0  # the axis of the fused tensor (the side with one key) a split or fuse runs along
    axes: list[int] | None = None  # transpose: output axis j is input axis axes[j] (default: reverse them)
    shape: Expr | None = (
        None  # reshape: the output shape, an expression of the input shape `x` (and parameters)
    )
    back: Expr | None = None  # reshape going back (`to` -> `from`); without it the row reads one way only
    fill: float | None = None  # `to` made from nothing: this value everywhere...
    like: Pattern | None = None  # ...shaped by `shape` from this `from` key's shape (x)

    @property
    def froms(self) -> list[str]:
        return [] if self.from_ is None else self.from_ if isinstance(self.from_, list) else [self.from_]

    @property
    def tos(self) -> list[str]:
        return self.to if isinstance(self.to, list) else [self.to]

    @property
    def ops(self) -> list[str]:
        ops = self.op if isinstance(self.op, list) else [self.op]
        return [o for o in ops if o not in ("rename", "split")]

    def _check(self) -> None:
        if self.fill is not None:
            if self.from_ is not None or isinstance(self.to, list) or self.like is None or self.shape is None:
                raise ValueError("a fill row has `to` (one key), `fill`, `like` and `shape`, and no `from`")
            return
        if self.from_ is None:
            raise ValueError("a row needs `from` (or `fill`)")
        if isinstance(self.from_, list) and isinstance(self.to, list):
            raise ValueError("`from` and `to` cannot both be lists")
        if self.op == "split" and not isinstance(self.to, list):
            raise ValueError("op = 'split' needs a list `to`")
        if "reshape" in self.ops and self.shape is None:
            raise ValueError("a reshape needs `shape` (and `back` to read the row the other way)")
        if self.axes is not None and (
            "transpose" not in self.ops or sorted(self.axes) != list(range(len(self.axes)))
        ):
            raise ValueError("`axes` is a permutation, for a transpose")


class Unstack(Strict):
    """Blocks saved stacked (flax ``nn.scan``): every key under ``stacked`` has a leading axis of one slice per
    block, and reads as the key ``each`` (``{i}`` the block) + the rest."""

    stacked: str
    each: Template

    def _check(self) -> None:
        if "{i}" not in self.each:
            raise ValueError("`each` needs {i}")


class Include(Strict):
    """Reuse another conversion's rows (and drops) with prefixes added on each side."""

    ALIASES: ClassVar[dict[str, str]] = {"from": "from_"}

    use: str
    from_: str = ""
    to: str = ""


class Conversion(Strict):
    """A key table between two architectures, used by ``convert``, ``diff`` and CK104, both directions."""

    ALIASES: ClassVar[dict[str, str]] = {"from": "from_"}

    name: str
    title: str
    from_: str  # architecture names
    to: str
    keys: list[KeyRule] = field(default_factory=list)
    include: list[Include] = field(default_factory=list)
    drop: list[Pattern] = field(default_factory=list)  # keys of `from` it leaves behind on purpose
    drop_back: list[Pattern] = field(default_factory=list)  # keys of `to` left behind going back
    unstack: list[Unstack] = field(default_factory=list)  # blocks of `from` that may be saved stacked
    one_way: str | None = None  # why it does not read back (the library cannot load the result)

    def _check(self) -> None:
        if not self.keys and not self.include:
            raise ValueError("a conversion needs `keys` or `include`")


class DeclFile(Strict):
    """One declaration file: written from the parameters when converting into the architecture, read back when
    converting out of it."""

    name: str  # the file name next to the weights (config.json, open_clip_config.json...)
    kind: str  # the sidecar kind ckptlint reads it as (hf-config, hf-preprocessor, open_clip-config, timm-config)
    when: Expr | None = None  # written only when this holds
    template: dict[str, Any] = field(default_factory=dict)  # constant content
    fields: dict[str, Expr] = field(default_factory=dict)  # dotted path -> expression (None: left out)
    read: dict[str, Expr] = field(default_factory=dict)  # parameter -> expression of cfg(path, default)


class Lookup(Strict):
    """A parameter whose value is the name of another architecture's variant with the same parameters."""

    arch: str
    keys: list[str]


class Declaration(Strict):
    """What an architecture's checkpoint declares next to its weights, and what its weights cannot tell."""

    needs: dict[str, str] = field(default_factory=dict)  # parameter -> what it is (asked for when unknown)
    only: dict[str, Expr] = field(default_factory=dict)  # need -> the condition under which it is one
    assume: dict[str, Expr] = field(default_factory=dict)  # what the library fixes when nothing is declared
    files: list[DeclFile] = field(default_factory=list)
    require: dict[str, str] = field(
        default_factory=dict
    )  # expression -> why nothing is written when it is false
    caveat: dict[str, str] = field(default_factory=dict)  # expression -> a note for the user when it is false
    lookup: dict[str, Lookup] = field(default_factory=dict)  # parameter -> a named variant of another arch


class FamilyMeta(Strict):
    name: str
    framework: str  # whose key names every pattern of the file uses
    title: str
    source: str = ""
    generated_by: str | None = None  # the script (and library version) that wrote a generated family file


class FamilyHead(Strict):
    """What layout detection needs from every family, validated when the file is loaded."""

    __pydantic_config__: ClassVar[dict[str, str]] = {
        "extra": "ignore"
    }  # the head of a whole file: the rest is validated later

    family: FamilyMeta
    frameworks: dict[str, Framework] = field(default_factory=dict)
    layouts: list[Layout] = field(default_factory=list)
    detect: list[Detect] = field(default_factory=list)


class FamilyIndex(Strict):
    """A family file without its ``[archs.*]`` tables (validated when a run first needs more than the head)."""

    family: FamilyMeta
    frameworks: dict[str, Framework] = field(default_factory=dict)
    keys: KeyClasses = field(default_factory=KeyClasses)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    modules: dict[str, Module] = field(default_factory=dict)
    layouts: list[Layout] = field(default_factory=list)
    probes: list[ShapeProbe] = field(default_factory=list)
    detect: list[Detect] = field(default_factory=list)
    old_layouts: list[OldLayout] = field(default_factory=list)
    wrappers: list[Wrapper] = field(default_factory=list)
    preprocessing: FamilyPreprocessing = field(default_factory=FamilyPreprocessing)
    conversions: list[Conversion] = field(default_factory=list)
    declarations: dict[str, Declaration] = field(default_factory=dict)  # architecture -> its declaration


class FamilyFile(FamilyIndex):
    """A whole family file (``rules/README.md``)."""

    archs: dict[str, Arch] = field(default_factory=dict)


class WrapperFile(Strict):
    """``rules/wrappers.toml``: wrappers of every framework (DDP, torch.compile, trainer dicts...)."""

    wrapper: list[Wrapper]
