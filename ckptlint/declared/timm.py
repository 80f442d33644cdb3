"""timm's declaration: a ``config.json`` with ``architecture`` (``save_for_hf`` / ``push_to_hub``), as
``timm.create_model('local-dir:DIR')`` / ``'hf-hub:REPO'`` reads it.

The loader calls ``create_model(architecture, **model_args)``, and fills what ``model_args`` does not set from the
pretrained config: ``num_classes`` (the top-level field wins over ``pretrained_cfg.num_classes``), ``in_chans`` and,
when ``pretrained_cfg.fixed_input_size``, ``img_size`` from ``pretrained_cfg.input_size`` (described from timm 1.0
``_hub._parse_model_cfg``, ``_factory`` and ``_builder._update_default_model_kwargs``). The result is the
``kwargs`` document ``[archs.timm-vit.config]`` maps to parameters; ``resolved`` holds what needs timm's own logic
(layer scale from ``init_values``, norm placement from the pool).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ckptlint.declared import declaration
from ckptlint.declared.declaration import Declaration, NotBuildable
from ckptlint.record import replace

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint, Sidecar
    from ckptlint.expected import Expected, Unchecked

KIND = "timm-config"
FRAMEWORK = "timm"
LOADER = "timm.create_model({local_dir}, pretrained=True)"
DEFAULTS = "the timm model's default"
LIBRARY = "timm"
# what the loader does with the keys a contradicted field changes (CK113's cause), and how to repair a refused file
MISMATCH = "load_state_dict raises size mismatch for {keys}"
MISSING = "{n} declared parameters are not in the weights and stay random ({keys})"
UNEXPECTED = "{n} weights are left over (unexpected keys: {keys})"
REPAIR = "repair {file} (timm's save_for_hf writes a complete one), or remove it"
_AVG_POOLS = ("avg", "avgmax", "max")


class Refused(Exception):
    """timm itself refuses the declaration (the message says why)."""


def document(content: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the effective ``{architecture, kwargs, resolved}``, ``kwargs`` path -> the file's own field)."""
    legacy = "pretrained_cfg" not in content
    pretrained = content if legacy else content["pretrained_cfg"]
    arch = content.get("architecture")
    if not isinstance(arch, str):
        raise Refused("it has no architecture (timm: KeyError: 'architecture')")
    if not isinstance(pretrained, dict):
        raise Refused("its pretrained_cfg is not a table")
    model_args = content.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise Refused("its model_args is not a table")
    kwargs = dict(model_args)
    origin = {f"kwargs.{k}": f"model_args.{k}" for k in model_args}
    # the top-level num_classes overrides pretrained_cfg's (a legacy single-table config is both)
    top = not legacy and "num_classes" in content
    num_classes = content["num_classes"] if top else pretrained.get("num_classes")
    if "num_classes" not in kwargs and isinstance(num_classes, int) and num_classes >= 0:
        kwargs["num_classes"] = num_classes
        origin["kwargs.num_classes"] = "num_classes" if top or legacy else "pretrained_cfg.num_classes"
    input_size = pretrained.get("input_size")
    fixed = pretrained.get("fixed_input_size") and not _dynamic(model_args)
    if isinstance(input_size, list) and len(input_size) == 3:
        if "in_chans" not in kwargs:
            kwargs["in_chans"] = input_size[0]
            origin["kwargs.in_chans"] = "pretrained_cfg.input_size"
        if fixed and "img_size" not in kwargs:
            kwargs["img_size"] = input_size[1:]
            origin["kwargs.img_size"] = "pretrained_cfg.input_size"
    if kwargs.get("in_chans", 3) != 3:
        raise NotBuildable(f"it declares {kwargs['in_chans']} input channels (ckptlint describes RGB models)")
    return {"architecture": arch, "kwargs": kwargs, "pretrained_num_classes": num_classes}, origin


def _dynamic(model_args: dict[str, Any]) -> bool:
    return bool(
        model_args.get("dynamic_img_size")
        or model_args.get("strict_img_size") is False
        or model_args.get("use_naflex")
    )


def finish(decl: Declaration, doc: dict[str, Any]) -> Declaration:
    """Layer scale and norm placement as timm's VisionTransformer decides them from the arguments."""
    from ckptlint.archs.spec import load_arch, variant_params

    kwargs = doc["kwargs"]
    params, fields = dict(decl.params), dict(decl.fields)
    given = set(decl.given)
    if "init_values" in kwargs:
        params["ls"] = kwargs["init_values"] is not None
        fields["ls"] = "model_args.init_values"
        given.add("ls")
    spec = load_arch(decl.arch)
    base = {**spec.params, **(variant_params(spec, doc["architecture"]) or {})}
    final = bool(kwargs.get("final_norm", base["norm"] or base["fc_norm"]))
    if kwargs.get("fc_norm") is not None:
        use_fc = bool(kwargs["fc_norm"])
    elif base["fc_norm"] == (base["global_pool"] in _AVG_POOLS):  # left to timm: the (declared) pool decides
        use_fc = params["global_pool"] in _AVG_POOLS
    else:
        use_fc = bool(base["fc_norm"])
    params["fc_norm"], params["norm"] = final and use_fc, final and not use_fc
    if params["global_pool"] not in ("", "avg", "avgmax", "max", "token", "map"):
        raise NotBuildable(f"it pools with {params['global_pool']!r} (model_args.global_pool)")
    fields = {k: v.replace("kwargs.", "model_args.", 1) for k, v in fields.items()}
    notes = {}
    if (
        isinstance(doc["pretrained_num_classes"], int)
        and doc["pretrained_num_classes"] != params["num_classes"]
    ):
        notes["num_classes"] = (
            f"timm's pretrained loader drops head.weight and head.bias when num_classes ({params['num_classes']}) "
            f"differs from pretrained_cfg.num_classes ({doc['pretrained_num_classes']}): it loads with a new, "
            "random head"
        )
    what = f"timm {doc['architecture']}"
    opaque = frozenset({"ls"})  # model_args.init_values is a value, not on/off
    return replace(
        decl, params=params, fields=fields, given=frozenset(given), what=what, notes=notes, opaque=opaque
    )


# ---- the adapter's interface (ckptlint.declared.lookup) --------------------------------------------------------
def expected(ckpt: Checkpoint, sidecar: Sidecar) -> Expected | Unchecked | None:
    """The model the file declares (read through the architectures' config tables)."""
    return declaration.expected(sys.modules[__name__], sidecar)


def rebuild(ckpt: Checkpoint, info: dict[str, Any], overrides: dict[str, Any]) -> Expected | None:
    """The model of ``info`` (``params["declared"]``) built again from the same file with ``overrides``."""
    return declaration.rebuild(sys.modules[__name__], ckpt, info, overrides)
