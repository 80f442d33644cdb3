"""A head count transformers cannot build a model with, next to weights that have heads: one CK113, never clean.

Each case is first shown with transformers itself: ``from_pretrained`` on the edited folder raises (the config
class's own check, or the model's constructor dividing by the field, or a ``ValueError`` it raises), and the
function the finding names is the one in transformers' traceback. Then ckptlint gives exactly one error, CK113,
naming the field; and the fix it gives, applied as written, makes the folder load with transformers and ckptlint
clean. The value is the weights' when they show it, else one the model builds with (said so).

* zero: transformers divides by it (``BertSelfAttention.__init__``: ``hidden_size % num_attention_heads``,
  ``ViTAttention.__init__``: ``head_dim = hidden_size // num_attention_heads``, ``CLIPTextConfig`` /
  ``CLIPVisionConfig.validate_architecture``, ``num_key_value_groups = num_attention_heads // num_key_value_heads``);
* a count that does not divide the width (BERT, CLIP, SigLIP, Whisper raise ``ValueError``);
* a negative count: SigLIP's pooling head (``torch.nn.MultiheadAttention``) and a negative weight size refuse it;
  where -1 divides everything and transformers loads the folder (BERT, ViT), so does ckptlint;
* ``--arch`` of a hand-written family reading the same config.json (``hf-clip``, ``hf-siglip-vision``).
"""

from __future__ import annotations

import json
import re
import traceback
from pathlib import Path
from typing import Any

import pytest
from hf_tiny import check_folder as _check
from hf_tiny import clean, edited, oracle
from hf_tiny import errors as _errors

FIX = re.compile(r"^set (\S+) = (-?\d+) in config\.json \((.*)\)$")
WHERE = re.compile(r"\((\w+\.\w+) (?:checks|computes) ")


def _declared(name: str, field: str) -> Any:
    node = json.loads((clean(name) / "config.json").read_text())
    for part in field.split("."):
        node = node[part]
    return node


def _raised(cls: str, folder: Path) -> BaseException:
    """What ``cls.from_pretrained(folder)`` raises (the test fails when it loads)."""
    import transformers

    with pytest.raises(Exception) as info:
        getattr(transformers, cls).from_pretrained(folder)
    exc = info.value
    while exc.__cause__ is not None:  # huggingface_hub's validation wrapper around the config class's error
        exc = exc.__cause__
    return exc


def _function(exc: BaseException) -> str:
    """The qualified name of the innermost transformers (or torch) function in ``exc``'s traceback."""
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    ours = [
        f for f in frames if "/transformers/" in f.f_code.co_filename or "/torch/" in f.f_code.co_filename
    ]
    assert ours, traceback.format_exception(exc)
    return ours[-1].f_code.co_qualname


def _one_refusal(folder: Path, field: str, arch: str | None = None) -> Any:
    f = _check(folder, arch)
    errors = [x for x in f.findings if x.severity.value == "error"]
    assert [x.code for x in errors] == ["CK113"], _errors(f)
    (finding,) = errors
    assert finding.message.startswith("transformers refuses config.json: "), finding.message
    assert finding.cause.endswith(
        "builds the model from config.json and fails before it reads a single weight"
    )
    return finding


def _apply_fix(
    name: str, field: str, fix: str, cls: str, folder: Path, arch: str | None = None
) -> tuple[int, str]:
    """The finding's fix applied as written: transformers loads the folder (nothing missing, unexpected or resized)
    and ckptlint finds nothing wrong. Returns (the value set, why)."""
    m = FIX.match(fix)
    assert m is not None and m.group(1) == field, fix
    value = int(m.group(2))
    fixed = edited(name, folder, {field: value})
    want = oracle(fixed, cls)
    assert "error" not in want and not any(want.values()), want
    assert _errors(_check(fixed, arch)) == []
    return value, m.group(3)


# ---- zero ------------------------------------------------------------------------------------------------------
# (tiny model, field, class from_pretrained builds, whether the weights show the field: ViT's attention is
# heads * (width // heads) wide, 32 for any divisor of 32)
ZERO = [
    ("bert", "num_attention_heads", "BertForSequenceClassification", False),
    ("vit", "num_attention_heads", "ViTForImageClassification", False),
    ("clip", "text_config.num_attention_heads", "CLIPModel", False),
    ("clip", "vision_config.num_attention_heads", "CLIPModel", False),
    ("siglip", "text_config.num_attention_heads", "SiglipModel", False),
    ("siglip", "vision_config.num_attention_heads", "SiglipModel", False),
    ("dinov2", "num_attention_heads", "Dinov2Model", False),
    ("whisper", "encoder_attention_heads", "WhisperForConditionalGeneration", False),
    ("whisper", "decoder_attention_heads", "WhisperForConditionalGeneration", False),
    ("llama", "num_key_value_heads", "LlamaForCausalLM", True),
    ("qwen3", "num_attention_heads", "Qwen3ForCausalLM", True),
    ("phi3", "num_attention_heads", "Phi3ForCausalLM", True),
    ("mixtral", "num_attention_heads", "MixtralForCausalLM", True),
]


@pytest.mark.parametrize(("name", "field", "cls", "shown"), ZERO, ids=[f"{n}-{f}" for n, f, _, _ in ZERO])
def test_zero_heads_is_one_refusal_and_the_fix_loads(
    name: str, field: str, cls: str, shown: bool, tmp_path: Path
) -> None:
    folder = edited(name, tmp_path / name, {field: 0})
    exc = _raised(cls, folder)
    assert isinstance(exc, ZeroDivisionError), repr(exc)
    finding = _one_refusal(folder, field)
    assert f"{field} = 0: " in finding.message and "divides by" in finding.message
    assert "ZeroDivisionError" in finding.message
    where = WHERE.search(finding.message)
    if where is not None:  # the function transformers divides in, as its traceback names it
        assert where.group(1) == _function(exc), finding.message
    value, why = _apply_fix(name, field, finding.fix, cls, tmp_path / "fixed")
    if shown:  # the weights tell the field: their value
        assert value == _declared(name, field), finding.fix
    else:  # any value that builds: said so
        assert why.endswith("if the weights were trained with another value, set that one"), finding.fix


def test_the_known_cases_name_transformers_function(tmp_path: Path) -> None:
    """The reviewed reports, word for word where it matters: BERT's check, ViT's head_dim, CLIP's config classes."""
    cases = {
        (
            "bert",
            "num_attention_heads",
        ): "building the model divides by it (BertSelfAttention.__init__ checks "
        "hidden_size % num_attention_heads == 0: ZeroDivisionError)",
        ("vit", "num_attention_heads"): "building the model divides by it (ViTAttention.__init__ computes "
        "head_dim = hidden_size // num_attention_heads: ZeroDivisionError)",
        ("clip", "text_config.num_attention_heads"): "its config class divides by it (CLIPTextConfig."
        "validate_architecture checks text_config.hidden_size % text_config.num_attention_heads == 0: "
        "ZeroDivisionError)",
        (
            "llama",
            "num_key_value_heads",
        ): "building the model divides by it (LlamaAttention.__init__ computes "
        "num_key_value_groups = num_attention_heads // num_key_value_heads: ZeroDivisionError)",
    }
    for (name, field), said in cases.items():
        folder = edited(name, tmp_path / f"{name}-{field}", {field: 0})
        assert _one_refusal(folder, field).message.startswith(
            f"transformers refuses config.json: {field} = 0: {said}"
        )


# ---- a count that does not divide the width -----------------------------------------------------------------
NOT_A_DIVISOR = [
    ("bert", "num_attention_heads", "BertForSequenceClassification"),
    ("clip", "text_config.num_attention_heads", "CLIPModel"),
    ("clip", "vision_config.num_attention_heads", "CLIPModel"),
    ("siglip", "vision_config.num_attention_heads", "SiglipModel"),
    ("whisper", "decoder_attention_heads", "WhisperForConditionalGeneration"),
]


@pytest.mark.parametrize(
    ("name", "field", "cls"), NOT_A_DIVISOR, ids=[f"{n}-{f}" for n, f, _ in NOT_A_DIVISOR]
)
def test_heads_that_do_not_divide_the_width_is_transformers_valueerror(
    name: str, field: str, cls: str, tmp_path: Path
) -> None:
    folder = edited(name, tmp_path / name, {field: 3})  # the tiny models are 32 wide
    exc = _raised(cls, folder)
    assert isinstance(exc, ValueError), repr(exc)
    finding = _one_refusal(folder, field)
    # transformers' own message, with the function that raises it
    assert finding.message.endswith(f"{_function(exc)} raises ValueError: {exc}"), finding.message
    value, _ = _apply_fix(name, field, finding.fix, cls, tmp_path / "fixed")
    assert 32 % value == 0


# ---- negative ----------------------------------------------------------------------------------------------------
def test_negative_heads_refused_by_siglips_pooling_head(tmp_path: Path) -> None:
    field = "vision_config.num_attention_heads"
    folder = edited("siglip", tmp_path / "siglip", {field: -1})
    exc = _raised("SiglipModel", folder)
    assert isinstance(exc, ValueError) and _function(exc) == "MultiheadAttention.__init__", repr(exc)
    finding = _one_refusal(folder, field)
    assert (
        finding.message
        == f"transformers refuses config.json: MultiheadAttention.__init__ raises ValueError: {exc}"
    )
    _apply_fix("siglip", field, finding.fix, "SiglipModel", tmp_path / "fixed")


def test_negative_heads_give_a_negative_weight_size(tmp_path: Path) -> None:
    folder = edited("llama", tmp_path / "llama", {"num_attention_heads": -1})
    exc = _raised("LlamaForCausalLM", folder)
    assert isinstance(exc, RuntimeError) and "negative dimension" in str(exc)
    finding = _one_refusal(folder, "num_attention_heads")
    assert "a bad dimension -16" in finding.message
    assert (
        "the weights hold num_attention_heads = 4 (model.layers.0.self_attn.q_proj.weight [64, 64])"
        in finding.message
    )
    value, why = _apply_fix(
        "llama", "num_attention_heads", finding.fix, "LlamaForCausalLM", tmp_path / "fixed"
    )
    assert (value, why) == (4, "what the weights hold")


@pytest.mark.parametrize(
    ("name", "cls"), [("bert", "BertForSequenceClassification"), ("vit", "ViTForImageClassification")]
)
def test_minus_one_head_divides_everything_and_loads(name: str, cls: str, tmp_path: Path) -> None:
    folder = edited(name, tmp_path / name, {"num_attention_heads": -1})
    want = oracle(folder, cls)  # transformers builds it (-32-wide heads, 32 in all) and loads every weight
    assert "error" not in want and not any(want.values()), want
    assert _errors(_check(folder)) == []


# ---- --arch of a hand-written family ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "arch", "cls", "whole"),
    [
        ("clip", "hf-clip", "CLIPModel", "CLIPModel"),
        ("siglip", "hf-siglip-vision", "SiglipVisionModel", "SiglipModel"),
    ],
)
def test_arch_of_a_handwritten_family_reports_the_refusal(
    name: str, arch: str, cls: str, whole: str, tmp_path: Path
) -> None:
    field = "vision_config.num_attention_heads"
    folder = edited(name, tmp_path / name, {field: 0})
    assert isinstance(_raised(cls, folder), ZeroDivisionError)
    finding = _one_refusal(folder, field, arch)
    assert finding.message == _one_refusal(folder, field).message  # as without --arch
    _apply_fix(
        name, field, finding.fix, whole, tmp_path / "fixed", arch
    )  # the whole model loads: nothing left over
