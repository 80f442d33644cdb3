"""transformers' declaration: a ``config.json`` with ``model_type``, as ``from_pretrained(DIR)`` reads it.

``architectures[0]`` is the declared class (without it, the model type's base class, as ``AutoModel`` loads it).
A class of a built-in family (``rules/archs/hf-*.toml``, generated from transformers: tier a) is expanded from the
family data with the config's fields (``ckptlint.declared.hf_config``), header-only and without torch; any other
class is built by transformers on the meta device when it is installed (tier b, ``ckptlint.declared.hf_live``);
with neither, nothing is compared and the run says why (``Unchecked``, reported by CK004). The expectation carries
the loading plan (``Expected.load``: base-model prefix, tied weights, ignores, conversions), so that its raw diff is
``from_pretrained``'s loading report (``ckptlint.declared.hf_load``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from ckptlint.archs import detect
from ckptlint.archs import registry as reg
from ckptlint.archs.detect import run_probes
from ckptlint.archs.expr import SpecError, compile_expr, evaluate
from ckptlint.archs.spec import MAX_REPEAT, ArchSpec, RepeatTooLarge, build_tree, load_arch
from ckptlint.checkpoint import Checkpoint, Sidecar
from ckptlint.declared import hf_config
from ckptlint.declared.hf_config import FLOATS, declared_dtype, file_dtype
from ckptlint.declared.hf_load import load, plan
from ckptlint.errors import CkptlintError, UsageError
from ckptlint.expected import Expected, ExpectedTensor, Unchecked

Source = Literal["declared", "flag"]

KIND = "hf-config"
FRAMEWORK = "hf"
LIBRARY = "transformers"
LOADER = "transformers' from_pretrained({folder})"
DEFAULTS = "transformers' default"
MISMATCH = (
    "from_pretrained raises a size mismatch for {keys} (with ignore_mismatched_sizes=True it re-initialises "
    "them randomly)"
)
MISSING = (
    "{n} weights of the model are not in the file ({keys}): from_pretrained initialises them randomly and only "
    "lists them as MISSING in its load report"
)
UNEXPECTED = "{n} tensors of the file are dropped (UNEXPECTED: {keys})"
REPAIR = "correct {fields} in {file} so that the config is consistent with itself and with the weights"
INSTALL = "pip install 'ckptlint[hf]' (transformers and torch), then check again"
MAX_CLAMPED = 4  # block counts past MAX_REPEAT built as the file holds them (each one a separate repeat)
# transformers' own weight file names: a config.json declares these, not open_clip's or timm's files next to them
HF_WEIGHTS = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$")


def hf_sidecar(ckpt: Checkpoint | None) -> tuple[str, dict[str, Any]] | None:
    """The transformers config next to the weights (name, content), when it declares a model type and the weights
    are the ones transformers would load (an open_clip file in a hub folder is not what config.json describes)."""
    if not _transformers_weights(ckpt):
        return None
    side = ckpt.sidecar(KIND) if ckpt is not None else None
    if side is None or not isinstance(side.content, dict):
        return None
    if not isinstance(side.content.get("model_type"), str):
        return None
    return side.name, side.content


def _transformers_weights(ckpt: Checkpoint | None) -> bool:
    """Whether ``ckpt`` is what transformers loads next to a config.json (not open_clip's file in a hub folder)."""
    if ckpt is None or ckpt.format == "open_clip-dir":
        return False
    return ckpt.format == "hf-dir" or bool(HF_WEIGHTS.match(ckpt.path.replace("\\", "/").rsplit("/", 1)[-1]))


# ---- the adapter's interface (ckptlint.declared.lookup) --------------------------------------------------------
def expected(ckpt: Checkpoint, sidecar: Sidecar) -> Expected | Unchecked | None:
    """The class ``config.json`` declares, built from its fields; None when it does not declare these weights."""
    if sidecar.error is not None and sidecar.name == "config.json" and _transformers_weights(ckpt):
        return unreadable(sidecar.name, sidecar.error)
    found = hf_sidecar(ckpt)
    if found is None or found[0] != sidecar.name:
        return None
    file, content = found
    name = declared_class(content)
    if name is None:
        return unchecked(file, content)
    return build(ckpt, file, content, name, "declared")


def rebuild(ckpt: Checkpoint, info: dict[str, Any], overrides: dict[str, Any]) -> Expected | None:
    """The model of ``info`` (``params["declared"]``) built again from the same config with ``overrides``."""
    if info.get("tier") == "transformers":
        from ckptlint.declared import hf_live

        return hf_live.rebuild(ckpt, info, overrides)
    spec = builtin(info["class"])
    if spec is None:
        return None
    found = hf_sidecar(ckpt)
    file = info.get("file")
    content = found[1] if found is not None and found[0] == file else {"model_type": info.get("model_type")}
    try:
        return from_spec(spec, ckpt, file, content, "declared", {**info.get("overrides", {}), **overrides})
    except UsageError:
        return None


# ---- building ------------------------------------------------------------------------------------------------
def declared_class(content: dict[str, Any]) -> str | None:
    """``architectures[0]``, else the base class of ``model_type`` (built in, else transformers' AutoModel)."""
    archs = content.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str) and archs[0]:
        return archs[0]
    model_type = content["model_type"]
    for fam in reg.registry().families:
        for rule in fam.head.detect:
            if rule.layout is None and model_type in rule.config and rule.arch in reg.registry().archs:
                return rule.arch
    from ckptlint.declared import hf_live

    return hf_live.base_class(model_type) if hf_live.available() else None


def builtin(name: str) -> ArchSpec | None:
    """The built-in (tier a) architecture of the transformers class ``name``, if a family declares one."""
    if name not in reg.registry().archs:
        return None
    spec = load_arch(name)
    return spec if spec.hf is not None and spec.config is not None else None


def build(
    ckpt: Checkpoint | None, file: str, content: dict[str, Any], name: str, source: Source
) -> Expected | Unchecked:
    spec = builtin(name)
    if spec is not None and hf_config.select(spec.config, content) is not None:
        return from_spec(spec, ckpt, file, content, source)
    from ckptlint.declared import hf_live

    if hf_live.cached(content, name) or hf_live.available():
        return hf_live.expected(ckpt, file, content, name, source)
    return unchecked(file, content)


def unchecked(file: str, content: dict[str, Any]) -> Unchecked:
    """No built-in family and no transformers: CK004 says so, with the install that gives the check."""
    model_type = content.get("model_type")
    return Unchecked(
        reason=f"{file} declares model_type {model_type}; install ckptlint[hf] to check it against its architecture",
        fix=INSTALL,
        declared_by=file,
    )


def unreadable(file: str, error: str) -> Unchecked:
    """A config.json transformers cannot read: ``from_pretrained`` fails on it before building anything (an
    ``OSError`` "is not a valid JSON file", or a ``TypeError`` / ``ValueError`` for JSON that is no object)."""
    return Unchecked(
        reason=f"{file} cannot be read: {error}",
        declared_by=file,
        refused=f"{error}, so from_pretrained cannot read it",
        fix=f"rewrite {file} as one JSON object (config.save_pretrained(FOLDER) of the model's config writes it)",
    )


def from_spec(
    spec: ArchSpec,
    ckpt: Checkpoint | None,
    file: str | None,
    content: dict[str, Any],
    source: Source,
    overrides: dict[str, Any] | None = None,
) -> Expected:
    """``spec`` expanded for the fields of ``content`` (and ``overrides``): the tree and the loading plan."""
    assert spec.config is not None and spec.hf is not None
    try:
        dp = hf_config.read(spec.config, content, overrides)
    except SpecError as exc:
        raise UsageError(f"{file or spec.name}: {exc}") from None
    params = {**spec.params, **dp.values}
    refused = _refusals(spec, params, dp)
    if dp.zero:
        tree, towers, notes = {}, {}, {}
    else:
        tree, towers, notes = _tree(spec, ckpt, params, dp.fields, refused)
    dtype = declared_dtype(content) or file_dtype(ckpt)
    tensors = {
        k: ExpectedTensor(shape=shape, dtype=dtype if d in FLOATS and dtype else d)
        for k, (shape, d) in tree.items()
    }
    info = {
        "file": file,
        "kind": KIND,
        "class": spec.name,
        "what": spec.name,
        "model_type": dp.model_type,
        "tier": "builtin",
        "base": dp.base,
        "fields": dp.fields,
        "given": sorted(dp.explicit),
        "counted": dp.counted,
        "overrides": dict(overrides or {}),
        "refused": refused,
        "notes": notes,
        "modalities": list(spec.hf.modalities),
    }
    return Expected(
        arch=spec.name,
        variant=None,
        source=source,
        framework="hf",
        key_sep=".",
        tensors=tensors,
        params={**params, "declared": info},
        towers=towers,
        description=f"transformers {dp.model_type}" if dp.model_type else spec.title,
        declared_by=file if source == "declared" else None,
        declared_name=spec.name,
        load=plan(spec.hf, params),
    )


def _tree(
    spec: ArchSpec,
    ckpt: Checkpoint | None,
    params: dict[str, Any],
    fields: dict[str, str],
    refused: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The tree of ``params`` (tensors, towers) and what the loader does that the tree leaves out (param -> note).

    A block count past what ckptlint expands (``num_hidden_layers: 1000000000``) is built with one block more than
    the file holds: those are the first keys from_pretrained would report missing, and CK113 names the field (the
    note says what the rest would be). A config that cannot be expanded otherwise is refused (``refused``)."""
    shape_params = dict(params)
    notes: dict[str, str] = {}
    for _ in range(MAX_CLAMPED + 1):
        try:
            built = build_tree(spec, shape_params)
            return built.tensors, built.towers, notes
        except RepeatTooLarge as exc:
            value = exc.value
            # the config's field behind the count (a module's ``depth`` is the architecture's ``text_depth``)
            src = str(exc.src)
            named = (
                [src]
                if fields.get(src)
                else [p for p, v in shape_params.items() if v == value and fields.get(p)]
            )
            named = [p for p in named if p not in notes]
            held, name = None, named[0] if named else str(exc.src)
            for p in named:
                held = _held(spec, ckpt, shape_params, p)
                if held is not None and held < MAX_REPEAT:
                    name = p
                    break
            field = fields.get(name)
            if held is None or held >= MAX_REPEAT:
                refused.append({
                    "fields": [name] if field else [],
                    "message": f"{field or name} = {value} blocks, more than ckptlint expands ({MAX_REPEAT}); "
                    "from_pretrained would build every one of them",
                })  # fmt: skip
                return {}, {}, notes
            shape_params[name] = held + 1
            notes[name] = (
                f"from_pretrained would build all {value:,} blocks ({field} = {value}), if memory allowed: every "
                f"block past the file's {held} is missing and initialised randomly ({value - held:,} blocks); the "
                f"raw diff lists the missing keys of block {held} only"
            )
        except CkptlintError as exc:  # the config cannot be expanded: transformers refuses it too
            if "ZeroDivisionError" in str(exc) and any(
                params.get(f) == 0 for r in refused for f in r["fields"]
            ):
                return {}, {}, notes  # a shape divides by a zero field: the refusal above says why
            negative = [  # a negative size (num_attention_heads = -1): the fields that can fix it
                p for p, v in params.items() if fields.get(p) and type(v) is int and v < 0
            ]
            refused.append({"fields": negative, "message": str(exc)})
            return {}, {}, notes
    return {}, {}, notes


def _held(spec: ArchSpec, ckpt: Checkpoint | None, params: dict[str, Any], name: str) -> int | None:
    """How many blocks of the repeat ``name`` the file holds, as the family's probes count them on the keys
    from_pretrained reads; None when no probe tells."""
    if ckpt is None or spec.hf is None:
        return None
    probes = spec.infer.probes.get(name)
    found: Any = None
    if probes:
        try:
            big = {
                k: 0 for k, v in params.items() if isinstance(v, int) and v > MAX_REPEAT
            }  # only keys count
            empty = build_tree(spec, {**params, **big, name: 0})
        except CkptlintError:
            return None
        shapes = {k: tuple(shape) for k, (shape, _) in empty.tensors.items()}
        view = load(ckpt.tensors, shapes, plan(spec.hf, params)).view
        env = {k: v for k, v in params.items() if k != name and not isinstance(v, dict)}
        values, seen, _ = run_probes({name: probes}, view, "", env)
        found = values.get(name) if name in seen else None
    else:  # a tower module's probe (CLIP's text_depth): the detector reads it from the keys alone
        found = detect.infer(spec, ckpt.model_copy(update={"sidecars": []})).observed.get(name)
    return found if isinstance(found, int) and not isinstance(found, bool) and found >= 0 else None


def _zeros(params: list[str], fields: dict[str, str]) -> str:
    return " and ".join(f"{fields.get(p) or p} = 0" for p in params)


def _refusals(spec: ArchSpec, params: dict[str, Any], dp: hf_config.DeclaredParams) -> list[dict[str, Any]]:
    """Why transformers refuses this config, in the order it meets them: the config class's checks and divisions,
    then the model's (``[archs.NAME.hf]`` ``checks`` and ``divides``), then a derived default that divides by zero.
    A field is named once: by the first of them that fails on it."""
    assert spec.hf is not None
    fields = dp.fields
    found: list[tuple[bool, list[str], str]] = []  # (when the model is built, fields, message)
    for check in spec.hf.checks:
        zeros: list[str] = []
        try:
            if evaluate(check.expr, params):
                continue
        except SpecError as exc:
            zeros = _zero_params(check.expr, params, exc)
        shown = _shown(str(check.expr), fields)
        if not zeros:
            found.append((check.build, list(check.fields), _format(check.message, params)))
        elif not check.where:  # the generic candidates: the config class's own check
            why = f"its config class's check ({shown}) divides by zero (ZeroDivisionError)"
            found.append((False, zeros, f"{_zeros(zeros, fields)}: {why}"))
        else:
            found.append(
                (check.build, zeros, _division(zeros, fields, check.build, f"{check.where} checks {shown}"))
            )
    for div in spec.hf.divides:
        try:
            evaluate(div.expr, params)
            continue
        except SpecError as exc:
            zeros = _zero_params(div.expr, params, exc)
        if zeros:
            what = (
                f"{div.where} computes {div.name + ' = ' if div.name else ''}{_shown(str(div.expr), fields)}"
            )
            found.append((div.build, zeros, _division(zeros, fields, div.build, what)))
    for name, (src, zeros) in dp.zero.items():  # a default the model computes when it is built
        found.append((True, zeros, _division(zeros, fields, True, f"{name} = {src}")))
    refused: list[dict[str, Any]] = []
    named: set[str] = set()
    for _, names, message in sorted(found, key=lambda f: f[0]):  # stable: the config class's first
        if names and named & set(names):
            continue
        named |= set(names)
        refused.append({"fields": names, "message": message})
    return refused


def _zero_params(expr: Any, params: dict[str, Any], exc: SpecError) -> list[str]:
    """The parameters ``expr`` divides by that are zero, when evaluating it divided by zero (else [])."""
    if "ZeroDivisionError" not in str(exc) or not isinstance(expr, str):
        return []
    names = compile_expr(expr).co_names
    return [n for n in names if params.get(n) == 0 and not isinstance(params.get(n), bool)]


def _division(zeros: list[str], fields: dict[str, str], build: bool, what: str) -> str:
    """``num_attention_heads = 0: building the model divides by it (WHAT: ZeroDivisionError)``."""
    who = "building the model divides by it" if build else "its config class divides by it"
    return f"{_zeros(zeros, fields)}: {who} ({what}: ZeroDivisionError)"


def _shown(expr: str, fields: dict[str, str]) -> str:
    """``expr`` with each parameter named by its config field (``text_config.hidden_size``)."""
    return re.sub(r"\b[A-Za-z_]\w*\b", lambda m: fields.get(m.group(0)) or m.group(0), expr)


def _format(message: str, params: dict[str, Any]) -> str:
    try:
        return message.format(**params)
    except (KeyError, IndexError, ValueError):
        return message
