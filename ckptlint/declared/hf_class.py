"""``--arch ClassName``: a transformers model class (``--arch LlamaForCausalLM``), built from the folder's
``config.json`` when it has one, else from what the weights show (the family's probes)."""

from __future__ import annotations

import re
from typing import Any

from ckptlint.archs import registry as reg
from ckptlint.archs.detect import run_probes
from ckptlint.archs.spec import ArchSpec
from ckptlint.checkpoint import Checkpoint
from ckptlint.declared import hf_config
from ckptlint.declared.hf import INSTALL, builtin, from_spec, hf_sidecar
from ckptlint.declared.hf_load import load
from ckptlint.errors import UsageError
from ckptlint.expected import Expected, Unchecked
from ckptlint.suggest import did_you_mean

# what a transformers model class name looks like (``--arch LlamaForCausalLM``)
CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]*(Model|LMHeadModel|For[A-Z][A-Za-z0-9_]*)$")


def for_class(name: str, ckpt: Checkpoint | None) -> Expected | None:
    """``--arch NAME`` for a transformers class: built from the folder's config.json when it has one; None when
    NAME is no transformers class name."""
    spec = builtin(name)
    found = hf_sidecar(ckpt)
    if spec is not None:
        assert spec.config is not None
        if found is not None and hf_config.select(spec.config, found[1]) is not None:
            return from_spec(spec, ckpt, found[0], found[1], "flag")
        content = {"model_type": next(iter(spec.config.match))}
        return from_spec(spec, ckpt, None, content, "flag", _probed(spec, ckpt, content))
    if not CLASS_NAME.match(name) or name in reg.registry().archs:
        return None
    from ckptlint.declared import hf_live

    hint = did_you_mean(name, reg.registry().archs)  # a misspelt built-in class (LlamaForCausalLm)
    if not hf_live.available():
        raise UsageError(
            f"--arch {name}: no built-in family describes this transformers class{hint}; {INSTALL}"
        )
    if found is None:
        raise UsageError(
            f"--arch {name}: a class outside the built-in families is built from a config.json next to the "
            f"weights; there is none{hint}"
        )
    result = hf_live.expected(ckpt, found[0], found[1], name, "flag")
    if isinstance(result, Unchecked):
        raise UsageError(f"--arch {name}: {result.reason}{hint}")
    return result


def _probed(spec: ArchSpec, ckpt: Checkpoint | None, content: dict[str, Any]) -> dict[str, Any]:
    """Without a config: the parameters the weights show (probes, on the keys as from_pretrained renames them:
    ``text_model.`` dropped for CLIPTextModel), the rest the config class's defaults."""
    if ckpt is None or not spec.infer.probes:
        return {}
    default = from_spec(spec, None, None, content, "flag")
    shapes = {k: tuple(t.shape) for k, t in default.tensors.items()}
    view = load(ckpt.tensors, shapes, default.load).view
    seed = dict(spec.params)
    values: dict[str, Any] = {}
    for _ in range(2):  # a probe may need another's value (num_attention_heads = rows // head_dim)
        for name, alternatives in spec.infer.probes.items():
            found, observed, _ = run_probes({name: alternatives}, view, "", {**seed, **values})
            value = found.get(name)
            # a size the weights cannot split (heads × head_dim) may read back as 0 from a default: keep that
            if name in observed and (isinstance(value, bool) or (isinstance(value, int) and value > 0)):
                values[name] = value
    return _divisors(spec, seed, values)


def _divisors(spec: ArchSpec, seed: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A count transformers divides a width by that the weights do not show (ViT's num_attention_heads: its
    attention is heads * (width // heads) wide): the divisor of the width nearest its default."""
    assert spec.hf is not None and spec.config is not None
    exprs = [str(c.expr) for c in spec.hf.checks] + [str(d.expr) for d in spec.hf.divides]
    for num, den in re.findall(r"(\w+) (?://|%) (\w+)", " ".join(exprs)):
        width, count = values.get(num, seed.get(num)), values.get(den, seed.get(den))
        if den in values or not (type(width) is int and type(count) is int and width > 0 and count > 0):
            continue
        if width % count:  # count - k before count + k: the loop ends by 1 at the latest
            near = (d for k in range(count) for d in (count - k, count + k) if d > 0 and width % d == 0)
            values[den] = next(near, 1)
    return values
