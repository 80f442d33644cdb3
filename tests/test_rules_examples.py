"""The Example of every rule's documentation is real output: each ``$ ckptlint check FILE [--arch A]`` in a
rule docstring is run again on the same file (from the corpus, or made here the way the comment next to it
says), and every finding shown must be what ckptlint reports now — so ``ckptlint explain`` can never
drift from the rules."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_support import CORPUS, hf_clip_tiny, open_clip_tiny

from ckptlint import check
from ckptlint.results import FileReport
from ckptlint.rules import all_rules

CORPUS_FILES = {
    "tiny_clippo.npz": CORPUS / "big_vision" / "tiny_clippo.npz",
    "openclip_tiny_ddp_module_prefix.pt": CORPUS / "open_clip" / "openclip_tiny_ddp_module_prefix.pt",
    "openclip_tiny_fp16.safetensors": CORPUS / "open_clip" / "openclip_tiny_fp16.safetensors",
    "hf_clip_tiny": CORPUS / "hf" / "hf_clip_tiny",
    "hf_siglip_tiny": CORPUS / "hf" / "hf_siglip_tiny",
    "timm_vit_clip_tiny.safetensors": CORPUS / "timm" / "timm_vit_clip_tiny.safetensors",
}


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo never",))


def _sharded(p: Path, stray: bool) -> None:
    hf_clip_tiny().save_pretrained(p, max_shard_size="200KB")
    shards = sorted(p.glob("model-*.safetensors"))
    if stray:
        shutil.copy(shards[0], p / f"model-{len(shards) + 1:05d}-of-{len(shards) + 1:05d}.safetensors")
    else:
        shards[-1].unlink()


def _openclip(p: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    sd = dict(open_clip_tiny().state_dict())
    edit(sd)
    torch.save(sd, p)


def _old_vit(p: Path) -> None:
    with np.load(CORPUS / "big_vision" / "tiny_vit.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["params/Transformer/pos_embedding"] = arrays.pop("params/pos_embedding")
    np.savez(p, **arrays)


def _siglip_clip_processor(p: Path) -> None:
    from transformers import CLIPImageProcessor

    shutil.copytree(CORPUS / "hf" / "hf_siglip_tiny", p)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(p)


def _remote_code(p: Path) -> None:
    """A save_pretrained folder whose config.json maps AutoModel to code shipped next to it (never imported)."""
    shutil.copytree(CORPUS / "hf" / "hf_clip_tiny", p)
    config = json.loads((p / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_tiny.TinyModel"}
    (p / "config.json").write_text(json.dumps(config))
    (p / "modeling_tiny.py").write_text("raise SystemExit('ckptlint must never import this file')\n")


def _mlp(p: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, p)


def _oc_context_length(p: Path) -> None:
    from declared_support import open_clip_folder, set_fields

    open_clip_folder(p)
    set_fields(p / "open_clip_config.json", {"model_cfg.text_cfg.context_length": 20})


def _llama(p: Path, edit: str) -> None:
    from hf_tiny import TINY, broken, save

    clean = save(TINY["llama"], p.with_name(p.name + "-clean"))
    broken(TINY["llama"], clean, edit, p)


def _added_tokens(p: Path) -> None:
    from hf_tiny import clean
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    shutil.copytree(clean("llama"), p)
    tok = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(96)}, unk_token="t0"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0")
    fast.add_tokens([f"<new{i}>" for i in range(4)])
    fast.save_pretrained(p)


def _del_ln_final(sd: dict[str, torch.Tensor]) -> None:
    del sd["ln_final.weight"], sd["ln_final.bias"]


BUILT: dict[str, Callable[[Path], None]] = {
    "truncated.safetensors": lambda p: p.write_bytes(
        (CORPUS / "open_clip" / "openclip_tiny_fp16.safetensors").read_bytes()[:100]
    ),
    "sharded": lambda p: _sharded(p, stray=False),
    "sharded_stray": lambda p: _sharded(p, stray=True),
    "openclip_no_ln_final.pt": lambda p: _openclip(p, _del_ln_final),
    "openclip_edited.pt": lambda p: _openclip(
        p, lambda sd: sd.__setitem__("ln_final.weight", torch.ones(48))
    ),
    "openclip_transposed.pt": lambda p: _openclip(
        p, lambda sd: sd.__setitem__("visual.proj", sd["visual.proj"].T.contiguous())
    ),
    "openclip_64px.pt": lambda p: torch.save(open_clip_tiny(vision_cfg={"image_size": 64}).state_dict(), p),
    "old_vit.npz": _old_vit,
    "siglip_clip_processor": _siglip_clip_processor,
    "suspicious.pt": lambda p: torch.save({"weight": torch.zeros(2, 2), "extra": _Payload()}, p),
    "remote_code": _remote_code,
    "mlp.safetensors": _mlp,
    "oc_context_length": _oc_context_length,
    "llama_kv4": lambda p: _llama(p, "kv_heads"),
    "llama_added_tokens": lambda p: _added_tokens(p),
}

SERVED = "https://host/"
_CMD = re.compile(r"^\$ ckptlint check (\S+)(?: --arch (\S+))?")
_HEAD = re.compile(r"^(CK\d{3}) (error|warning|info) +(.*)$")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def examples() -> list[tuple[str, str, str | None, list[tuple[str, str, str]]]]:
    """(rule, file, arch, [(code, message shown, fix shown)]) for every example command in the docs."""
    out = []
    for info in all_rules():
        section = info.doc.split("\nExample\n", 1)[1].split("\n\nFix\n", 1)[0]
        for block in re.split(r"\n(?=    \$ )", section):
            lines = [ln[4:] for ln in block.splitlines()]
            m = _CMD.match(lines[0])
            assert m, f"{info.code}: example without a command"
            shown: list[dict[str, str]] = []
            part = ""
            for line in lines[1:]:
                h = _HEAD.match(line)
                if h:
                    shown.append({"code": h.group(1), "message": h.group(3), "fix": ""})
                    part = "message"
                    continue
                text = line.strip()
                if not shown or not line.startswith(" " * 15) or text.startswith(("cause:", "keys:")):
                    part = ""
                elif text.startswith("fix:"):
                    part = "fix"
                    shown[-1]["fix"] = text[4:]
                elif part:
                    shown[-1][part] += " " + text
            out.append(
                (info.code, m.group(1), m.group(2), [(x["code"], x["message"], x["fix"]) for x in shown])
            )
    return out


@pytest.mark.parametrize(
    ("code", "name", "arch", "shown"), examples(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_example_is_real_output(
    code: str,
    name: str,
    arch: str | None,
    shown: list[tuple[str, str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if name.startswith(SERVED):  # a folder behind a plain web server (no listing): the corpus' folder, served
        from _range_server import RangeServer

        folder = CORPUS_FILES[name[len(SERVED) :].strip("/")]
        with RangeServer(folder.parent) as srv:
            report = check(srv.url(folder.name + "/"), arch=arch).files[0]
        _assert_shown(code, shown, report)
        return
    if name in CORPUS_FILES:
        path = CORPUS_FILES[name]
    else:
        path = tmp_path / name
        BUILT[name](path)
    monkeypatch.chdir(path.parent)  # the commands a finding suggests name the path as given: here, as shown
    report = check(path.name, arch=arch).files[0]
    if code == "CK001":
        assert report.error and report.findings[0].code == "CK001"
        section = next(r.doc for r in all_rules() if r.code == "CK001")
        assert _squash(report.error) in _squash(section)
        return
    _assert_shown(code, shown, report)


def _assert_shown(code: str, shown: list[tuple[str, str, str]], report: FileReport) -> None:
    assert code in [c for c, _, _ in shown], f"the {code} example shows no {code} finding"
    assert all(message for _, message, _ in shown)
    findings = list(report.findings)
    for want_code, message, fix in shown:
        got = next((f for f in findings if f.code == want_code), None)
        assert got is not None, (
            f"{want_code} not reported for {report.path}: {[f.code for f in report.findings]}"
        )
        findings.remove(got)
        for part in message.split("…"):
            assert _squash(part) in _squash(got.message), (want_code, got.message)
        for part in fix.split("…"):
            assert _squash(part) in _squash(got.fix), (want_code, got.fix)
