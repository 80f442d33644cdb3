"""Every command and Python snippet a finding shows runs as written and does what it says (issue 12, item 2).

Findings show what to run between backticks (``ckptlint.suggest``). This test harvests every such span from the
findings on every bundled example, every corpus file (each checked without ``--arch`` and with every architecture)
and scenarios written here with the real libraries (trainer checkpoints, transposed projections, old layouts...),
then runs each one:

* ``ckptlint fix|strip … PATH OUT …`` through the CLI in a subprocess, OUT in a temporary folder (with the input's
  own name, so messages naming the file stay comparable), then re-checks OUT as the input was checked;
* ``ckptlint check PATH --arch NAME`` (check the file as the model it is) through the CLI;
* ``ckptlint explain CODE``;
* a Python snippet in a subprocess, against the object the real library loads (``torch.load``,
  ``safetensors.torch.load_file``, ``np.load``), saving ``sd`` with the same library and re-checking it.

After running, the finding must be gone (fewer findings of its code than before: a snippet applies only its own
finding's edits) and nothing else must appear (no code that was not reported before). A ``ckptlint convert … OUT``
command (issue 14) must run and write a checkpoint that reads back.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cli_support import ckptlint
from engine_support import CORPUS, hf_clip_tiny, open_clip_tiny

from ckptlint.api import check_files
from ckptlint.archs import list_archs
from ckptlint.results import FileReport

ROOT = Path(__file__).resolve().parent.parent
SPAN = re.compile(r"`([^`]+)`")


@dataclass
class Harvested:
    text: str  # what the finding shows between backticks
    path: str  # the input that was checked
    arch: str | None  # how it was checked
    code: str
    message: str
    before: Counter[str]  # how many findings of each code the input got


def harvest(cases: list[tuple[Path, list[str | None]]]) -> dict[str, Harvested]:
    """Every backticked span of every finding, once (the first finding that shows it)."""
    found: dict[str, Harvested] = {}
    for path, archs in cases:
        for arch in archs:
            report = check_files([str(path)], arch=arch).files[0]
            codes = Counter(f.code for f in report.findings)
            for f in report.findings:
                for part in (f.message, f.cause, f.fix):
                    for text in SPAN.findall(part):
                        found.setdefault(text, Harvested(text, str(path), arch, f.code, f.message, codes))
    return found


def recheck(path: Path, item: Harvested) -> FileReport:
    return check_files([str(path)], arch=item.arch).files[0]


def assert_done(item: Harvested, after: FileReport, what: str) -> None:
    assert after.error is None, f"{what}: the result is unreadable: {after.error}"
    left = Counter(f.code for f in after.findings)
    assert left[item.code] < item.before[item.code], f"{what}: {item.code} is still reported"
    new = set(left) - set(item.before)
    assert not new, (
        f"{what}: new findings {sorted(new)}: {[f.message for f in after.findings if f.code in new]}"
    )


def out_path(tmp: Path, src: str) -> Path:
    folder = tmp / "out"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / Path(src).name


def run_command(item: Harvested, tmp: Path) -> None:
    argv = shlex.split(item.text)
    assert argv[0] == "ckptlint" and len(argv) > 1, item.text
    verb = argv[1]
    if verb == "explain":
        proc = ckptlint(*argv[1:])
        assert proc.returncode == 0 and proc.stdout.startswith(argv[2]), proc.stderr
        return
    if verb == "check":
        assert item.path in argv, f"{item.text}: not the input's own path"
        proc = ckptlint(*argv[1:], "--format", "json", cwd=ROOT)
        assert proc.returncode in (0, 1), proc.stderr
        (after,) = json.loads(proc.stdout)["files"]
        codes = {f["code"] for f in after["findings"]}
        assert item.code not in codes and not codes - set(item.before), (item.text, codes)
        return
    assert verb in ("fix", "strip", "convert"), f"{item.text}: no runner for `ckptlint {verb}`"
    assert argv.count("OUT") == 1 and item.path in argv, f"{item.text}: not `… {item.path} OUT …`"
    # convert: a literal OUT (no weights suffix) is a folder, as it would be for the user typing it
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / "OUT" if verb == "convert" else out_path(tmp, item.path)
    proc = ckptlint(*[str(out) if a == "OUT" else a for a in argv[1:]], cwd=ROOT)
    assert proc.returncode in (0, 1), f"{item.text}: {proc.stderr.strip()}"
    if verb == "convert":  # another architecture: OUT is checked by convert itself; it must read back
        assert check_files([str(out)]).files[0].error is None, item.text
        return
    assert_done(item, recheck(out, item), item.text)


# The snippets run in one subprocess: each in a fresh namespace with the libraries imported, its `sd` saved with
# the library that loaded it, to the path given.
_RUNNER = """
import json, sys
import numpy as np, safetensors.torch, torch
jobs = json.load(open(sys.argv[1]))
for job in jobs:
    ns = {"np": np, "safetensors": safetensors, "torch": torch}
    try:
        exec(job["snippet"], ns)
        sd = ns["sd"]
        if job["lib"] == "torch":
            torch.save(sd, job["out"])
        elif job["lib"] == "safetensors":
            safetensors.torch.save_file(sd, job["out"])
        else:
            np.savez(job["out"], **sd)
        job["error"] = None
    except Exception as exc:
        job["error"] = f"{type(exc).__name__}: {exc}"
json.dump(jobs, open(sys.argv[2], "w"))
"""


def _loaded_file(snippet: str) -> tuple[str, str]:
    m = re.match(r"sd = (torch\.load|safetensors\.torch\.load_file|dict\(np\.load)\((['\"])(.+?)\2", snippet)
    assert m, f"a snippet must start from the library's own loader: {snippet}"
    lib = {"torch.load": "torch", "safetensors.torch.load_file": "safetensors"}.get(m.group(1), "numpy")
    return lib, m.group(3)


def run_snippets(items: list[Harvested], tmp: Path) -> list[str]:
    jobs, outs = [], []
    for n, item in enumerate(items):
        lib, loaded = _loaded_file(item.text)
        src = Path(item.path)
        base = tmp / f"snippet{n}"
        base.mkdir()
        if src.is_dir():  # a folder's weights file: the result replaces it in a copy of the folder
            shutil.copytree(src, base / src.name)
            target, out = base / src.name, base / src.name / Path(loaded).name
        else:
            target = out = base / src.name
        jobs.append({"snippet": item.text, "lib": lib, "out": str(out)})
        outs.append(target)
    spec = tmp / "jobs.json"
    spec.write_text(json.dumps(jobs))
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(spec), str(tmp / "done.json")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    failures = []
    for item, job, target in zip(items, json.loads((tmp / "done.json").read_text()), outs, strict=True):
        try:
            assert job["error"] is None, f"{item.text}: {job['error']}"
            assert_done(item, recheck(target, item), item.text)
        except AssertionError as exc:
            failures.append(str(exc))
    return failures


def _command_failure(job: tuple[Harvested, Path]) -> str | None:
    try:
        run_command(*job)
    except AssertionError as exc:
        return str(exc)
    return None


def run_all(found: dict[str, Harvested], tmp: Path) -> None:
    failures: list[str] = []
    commands, snippets = [], []
    for n, item in enumerate(found.values()):
        if item.text.startswith("ckptlint "):
            commands.append((item, tmp / f"cmd{n}"))
        elif item.text.startswith("sd = "):
            snippets.append(item)
        else:
            failures.append(
                f"{item.code} shows `{item.text}`: neither a ckptlint command nor a Python snippet"
            )
    with ThreadPoolExecutor(max_workers=2) as pool:  # each command is its own ckptlint process
        failures += [f for f in pool.map(_command_failure, commands) if f]
    if snippets:
        failures += run_snippets(snippets, tmp)
    assert not failures, "\n".join(failures)


def all_archs() -> list[str | None]:
    return [None, *(a.name for a in list_archs())]


# ---- the bundled examples and the corpus, against every architecture --------------------------------------------
def test_examples_and_corpus(tmp_path: Path) -> None:
    paths = [p for p in sorted((ROOT / "examples").iterdir()) if p.suffix != ".py"]
    paths += [p for p in sorted(CORPUS.glob("*/*")) if p.suffix != ".json"]
    found = harvest([(p, all_archs()) for p in paths])
    kinds = {t.split()[0] if not t.startswith("ckptlint") else " ".join(t.split()[:2]) for t in found}
    assert {"ckptlint fix", "ckptlint strip", "ckptlint check", "ckptlint explain", "sd"} <= kinds
    run_all(found, tmp_path)


# ---- scenarios written with the real libraries ------------------------------------------------------------------
def _adam_state(model: torch.nn.Module) -> dict[str, object]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = [p for p in model.parameters() if p.requires_grad][:3]
    sum(p.sum() for p in params).backward()
    opt.step()
    return opt.state_dict()


def _trainer_model_state(p: Path) -> None:
    """A trainer loop's own naming: {model_state, optimizer_state, epoch} (not state_dict / optimizer)."""
    model = open_clip_tiny()
    torch.save({"model_state": model.state_dict(), "optimizer_state": _adam_state(model), "epoch": 3}, p)


def _trainer_ddp(p: Path) -> None:
    """open_clip's training loop: {epoch, name, state_dict (DDP module.), optimizer}."""
    model = open_clip_tiny()
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 2, "name": "tiny", "state_dict": sd, "optimizer": _adam_state(model)}, p)


def _flat_with_optimizer(p: Path) -> None:
    model = open_clip_tiny()
    torch.save({**model.state_dict(), "optimizer": _adam_state(model), "step": 10}, p)


def _legacy_ddp(p: Path) -> None:
    sd = {f"module.{k}": v for k, v in open_clip_tiny().state_dict().items()}
    torch.save(sd, p, _use_new_zipfile_serialization=False)


def _transposed_projections(p: Path) -> None:
    sd = dict(
        open_clip_tiny(
            vision_cfg={"width": 36, "head_width": 18}, text_cfg={"width": 20}, embed_dim=28
        ).state_dict()
    )
    for k in ("visual.proj", "text_projection"):
        sd[k] = sd[k].T.contiguous()
    torch.save(sd, p)


def _transposed_safetensors(p: Path) -> None:
    from safetensors.torch import save_file

    sd = dict(hf_clip_tiny().state_dict())
    sd["visual_projection.weight"] = sd["visual_projection.weight"].T.contiguous()
    save_file(sd, str(p))


def _bv_arrays() -> dict[str, np.ndarray]:
    with np.load(CORPUS / "big_vision" / "tiny_vit.npz") as z:
        return {k: z[k] for k in z.files}


def _bv_transposed(p: Path) -> None:
    np.savez(p, **{k: (v.T if k.endswith("/kernel") and v.ndim == 2 else v) for k, v in _bv_arrays().items()})


def _bv_old_posemb(p: Path) -> None:
    a = _bv_arrays()
    a["params/Transformer/pos_embedding"] = a.pop("params/pos_embedding")
    np.savez(p, **a)


def _bv_inlined_map_head(p: Path) -> None:
    a = _bv_arrays()
    for k in [k for k in a if k.startswith("params/MAPHead_0/")]:
        a["params/" + k[len("params/MAPHead_0/") :]] = a.pop(k)
    np.savez(p, **a)


def _bv_flax_optim(p: Path) -> None:
    a = {"opt/target/" + k[len("params/") :]: v for k, v in _bv_arrays().items()}
    a.update({k.replace("opt/target/", "opt/state/param_states/") + "/grad_ema": v for k, v in a.items()})
    a["opt/state/step"] = np.array(7, np.int32)
    np.savez(p, **a)


def _hf_clip_weights_file(p: Path) -> None:
    shutil.copy(CORPUS / "hf" / "hf_clip_tiny" / "model.safetensors", p)


SCENARIOS: dict[str, tuple[Callable[[Path], None], list[str | None]]] = {
    "trainer_model_state.pt": (_trainer_model_state, [None, "open_clip"]),
    "trainer_ddp.pt": (_trainer_ddp, [None, "open_clip"]),
    "flat_with_optimizer.pt": (_flat_with_optimizer, [None, "open_clip"]),
    "legacy_ddp.pt": (_legacy_ddp, [None, "open_clip", "open_clip:custom"]),
    "transposed_projections.pt": (_transposed_projections, ["open_clip"]),
    "transposed_projection.safetensors": (_transposed_safetensors, ["hf-clip"]),
    "bv_transposed.npz": (_bv_transposed, ["bv-vit"]),
    "bv_old_posemb.npz": (_bv_old_posemb, [None, "bv-vit", "clippo"]),
    "bv_inlined_map_head.npz": (_bv_inlined_map_head, [None, "bv-vit"]),
    "bv_flax_optim.npz": (_bv_flax_optim, [None, "bv-vit"]),
    "model.safetensors": (_hf_clip_weights_file, [None, "hf-clip-vision", "hf-clip"]),
    "vit.npz": (
        lambda p: shutil.copy(CORPUS / "big_vision" / "tiny_vit.npz", p),
        ["bv-vit:B/16", "bv-siglip"],
    ),
    "open_clip_b16.pt": (
        lambda p: shutil.copy(CORPUS / "open_clip" / "openclip_tiny.pt", p),
        ["open_clip:ViT-B-16"],
    ),
    "it's a ddp copy.pt": (
        lambda p: shutil.copy(CORPUS / "open_clip" / "openclip_tiny_ddp_module_prefix.pt", p),
        [None],
    ),
}


def test_scenarios(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    cases = []
    for name, (build, archs) in SCENARIOS.items():
        build(src / name)
        cases.append((src / name, archs))
    found = harvest(cases)
    codes = {item.code for item in found.values()}
    assert {"CK103", "CK109", "CK111", "CK112", "CK201", "CK101"} <= codes, codes
    quoted = shlex.quote(str(src / "it's a ddp copy.pt"))
    assert any(t.startswith(f"ckptlint fix {quoted} OUT") for t in found), "a path with a space and a quote"
    run_all(found, tmp_path / "run")


def test_trainer_checkpoint_suggests_its_own_groups(tmp_path: Path) -> None:
    """{model_state, optimizer_state, epoch}: strip keeps model_state (never a made-up `weights` group), and with
    an expectation the wrapper is named a trainer dict, its Python taking ckpt['model_state']."""
    path = tmp_path / "ckpt.pt"
    _trainer_model_state(path)
    (ck201,) = [f for f in check_files([str(path)]).files[0].findings if f.code == "CK201"]
    assert f"`ckptlint strip --keep model_state {path} OUT`" in ck201.fix
    assert ck201.message.startswith("training state included: optimizer_state and epoch make the file ")
    (ck103,) = [f for f in check_files([str(path)], arch="open_clip").files[0].findings if f.code == "CK103"]
    assert "trainer checkpoint dict" in ck103.message
    assert f"`sd = torch.load({str(path)!r}, weights_only=True)['model_state']`" in ck103.fix


def test_ck110_fix_is_an_instruction_with_the_real_path(tmp_path: Path) -> None:
    """Each framework's resampling advice reads as a sentence ("resample it with …", "call the model with …") and
    names the file itself, never a placeholder."""
    from engine_support import hf_config, timm_tiny
    from safetensors.torch import save_file
    from transformers import CLIPVisionModel

    vision = hf_config("hf_clipvision_tiny")
    vision.image_size = 64
    cases = {
        "open_clip.pt": (
            lambda p: torch.save(open_clip_tiny(vision_cfg={"image_size": 64}).state_dict(), p),
            "open_clip",
        ),
        "timm.safetensors": (lambda p: save_file(timm_tiny(img_size=64).state_dict(), str(p)), "timm-vit"),
        "hf.safetensors": (
            lambda p: save_file(CLIPVisionModel(vision).state_dict(), str(p)),
            "hf-clip-vision",
        ),
    }
    fixes = {}
    for name, (build, arch) in cases.items():
        build(tmp_path / name)
        report = check_files([str(tmp_path / name)], arch=f"{arch}:custom,image_size=32").files[0]
        (ck110,) = [f for f in report.findings if f.code == "CK110"]
        fixes[name] = ck110.fix
    bv = check_files([str(CORPUS / "big_vision" / "tiny_vit.npz")], arch="bv-vit:custom,image_size=64").files[
        0
    ]
    fixes["bv"] = next(f.fix for f in bv.findings if f.code == "CK110")
    for name, fix in fixes.items():
        assert fix.startswith(("resample it with ", "call the model with ")), (name, fix)
        assert "with call" not in fix and "PATH" not in fix and "{" not in fix, (name, fix)
    assert (
        f"pretrained_cfg_overlay=dict(file={str(tmp_path / 'timm.safetensors')!r})"
        in fixes["timm.safetensors"]
    )


def test_fix_for_a_vision_model_keeps_the_vision_tower_only(tmp_path: Path) -> None:
    """A CLIPModel's model.safetensors fixed for CLIPVisionModel (``--arch hf-clip-vision``, read as
    ``CLIPVisionModel.from_pretrained`` reads it, as ``--arch CLIPVisionModel``): OUT holds the vision tower only;
    from_pretrained loads it with nothing missing or unexpected, and its re-check reports neither CK101 nor CK103."""
    from engine_support import hf_config
    from transformers import CLIPVisionModel

    src = tmp_path / "model.safetensors"
    shutil.copy(CORPUS / "hf" / "hf_clip_tiny" / "model.safetensors", src)
    outs = {}
    for arch in ("hf-clip-vision", "CLIPVisionModel"):
        folder = tmp_path / arch
        folder.mkdir()
        proc = ckptlint("fix", str(src), str(folder / "model.safetensors"), "--arch", arch)
        assert proc.returncode == 0, proc.stderr
        hf_config("hf_clip_tiny").vision_config.save_pretrained(folder)
        _, info = CLIPVisionModel.from_pretrained(folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
        codes = {f.code for f in check_files([str(folder)], arch="hf-clip-vision").files[0].findings}
        assert not codes & {"CK101", "CK103"}
        outs[arch] = (folder / "model.safetensors").read_bytes()
    assert outs["hf-clip-vision"] == outs["CLIPVisionModel"]
