"""Every malicious sample (tests/malicious_samples.py) is flagged and never executed, and no loader ever runs.

- Positive controls: a copy of each live sample, aimed at another file, is loaded by the real loader
  (pickle.load / torch.load(weights_only=False) / np.load(allow_pickle=True)) in a subprocess; its file appears,
  so the payload is real.
- Each sample is then read by ckptlint through the Python API (``check`` and the dump reader) and through the
  CLI (``check`` and ``dump``, as subprocesses): CK301 naming the global, or CK001 (exit 2) naming it when the
  stream is broken after it; the canary file never appears.
- In a subprocess with audit hooks and the loaders replaced by traps, ``check`` and ``dump`` of every sample
  resolve no global (no ``pickle.find_class`` audit event: every find_class is ckptlint's stub), call no loader,
  run no process, and import no module the samples name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import malicious_samples as ms
import pytest
from cli_support import ckptlint, one_error_line

from ckptlint.api import check_files as check  # paths as given: a folder is read as one checkpoint
from ckptlint.api import failure_findings
from ckptlint.engine import fact_findings
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers import read_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
NAMES = sorted(ms.SAMPLES)
LIVE = sorted(n for n, s in ms.SAMPLES.items() if s.loader)

# what the issue lists as well-known dangerous: CK301 must say so for these
DANGEROUS_MODULES = {
    *[
        "os",
        "posix",
        "nt",
        "subprocess",
        "runpy",
        "pty",
        "importlib",
        "pickle",
        "_pickle",
        "marshal",
        "types",
        "ctypes",
        "webbrowser",
        "socket",
        "pip",
    ],
}
DANGEROUS_BUILTINS = {f"builtins.{n}" for n in ["eval", "exec", "compile", "getattr", "__import__", "open"]}


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    """Every sample, written once, each aimed at ``<canaries>/<name>``."""
    root = tmp_path_factory.mktemp("malicious")
    canaries = root / "canaries"
    canaries.mkdir()
    return ms.write_all(root / "samples", canaries), canaries


@pytest.fixture(scope="session")
def fired(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Names of the samples whose payload ran when the real loader read a copy of them."""
    root = tmp_path_factory.mktemp("controls")
    targets = root / "fired"
    targets.mkdir()
    paths = ms.write_all(root / "samples", targets, LIVE)
    jobs = [(str(paths[n]), ms.SAMPLES[n].loader) for n in LIVE]
    subprocess.run(
        [sys.executable, "-c", ms.FIRE_SCRIPT, json.dumps(jobs)],
        cwd=root,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return {p.name for p in targets.iterdir()}


def assert_flagged(name: str, findings: list, error: str | None) -> None:
    """CK301 naming every expected global, or an unreadable file (CK001) whose reason names them."""
    expected = ms.SAMPLES[name].globals
    codes = {f.code if hasattr(f, "code") else f["code"] for f in findings} | ({"CK001"} if error else set())
    assert codes & {"CK301", "CK001"}, f"{name}: not flagged ({codes}, error={error})"
    details = [f.details if hasattr(f, "details") else f["details"] for f in findings]
    named = {d.get("global") for d in details}
    text = (error or "") + " ".join(f.message if hasattr(f, "message") else f["message"] for f in findings)
    for global_ in expected:
        assert global_ in named or (error and global_ in text), f"{name}: {global_} not named: {text[:300]}"
    for d in details:
        g = d.get("global")
        if g in expected and (g.split(".", 1)[0] in DANGEROUS_MODULES or g in DANGEROUS_BUILTINS):
            assert d["dangerous"] is True, f"{name}: {g} not marked dangerous"


def test_positive_controls_fire(fired: set[str]) -> None:
    """The live samples really run code under the loader they target (else the canary proves nothing)."""
    assert set(LIVE) - fired == set()


@pytest.mark.parametrize("name", NAMES)
def test_api_check_and_dump_flag_without_running(samples: tuple[dict[str, Path], Path], name: str) -> None:
    paths, canaries = samples
    report = check(str(paths[name]))
    (file,) = report.files
    assert_flagged(name, file.findings, file.error)
    try:
        ckpt = read_checkpoint(paths[name])  # what ``dump`` prints
    except UnreadableCheckpoint as exc:
        assert file.error == exc.reason
        # what the reader saw before failing (unsafe globals) is reported next to CK001, not only in the reason
        reported = {(f.code, f.details.get("global")) for f in file.findings}
        assert {(f.code, f.details.get("global")) for f in failure_findings(exc)} <= reported
    else:
        assert_flagged(name, fact_findings(ckpt), None)
    assert not (canaries / name).exists()


def test_cli_check_flags_every_sample_without_running(samples: tuple[dict[str, Path], Path]) -> None:
    paths, canaries = samples
    result = ckptlint("check", "--format", "json", *(str(paths[n]) for n in NAMES))
    assert result.returncode in (1, 2), result.stderr[-500:]
    assert "Traceback" not in result.stderr
    files = json.loads(result.stdout)["files"]
    assert len(files) == len(NAMES)
    for name, file in zip(NAMES, files, strict=True):
        assert_flagged(name, file["findings"], file["error"])
    assert sorted(p.name for p in canaries.iterdir()) == []


def test_cli_dump_flags_every_sample_without_running(samples: tuple[dict[str, Path], Path]) -> None:
    """``ckptlint dump`` of each sample as its own process: findings in the JSON, or exit 2 with one line."""
    paths, canaries = samples
    for name in NAMES:
        result = ckptlint("dump", "--format", "json", str(paths[name]))
        if result.returncode == 2:
            error = one_error_line(result)
            findings: list = []
        else:
            assert result.returncode in (0, 1), (name, result.stderr[-300:])
            error, findings = None, json.loads(result.stdout)["findings"]
        assert_flagged(name, findings, error)
        assert not (canaries / name).exists(), name


def test_cli_text_dump_names_the_global(samples: tuple[dict[str, Path], Path]) -> None:
    paths, _ = samples
    for name in ("proto0_os_system", "zip_renamed_upper_case", "npz_member_without_npy_suffix"):
        result = ckptlint("dump", str(paths[name]))
        out = result.stdout + result.stderr
        assert "CK301" in out and next(iter(ms.SAMPLES[name].globals)) in out


# --------------------------------------------------------------------------------------------------------------
# no loader, no unpickler, no import of a name from the file: audit hooks and traps in a subprocess
# --------------------------------------------------------------------------------------------------------------

TRAP_SCRIPT = r"""
import importlib, json, sys
paths, warmup, mode = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
events = []
WATCH = {"pickle.find_class", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
         "subprocess.Popen", "ctypes.dlopen", "ctypes.dlsym", "webbrowser.open", "socket.connect",
         "shutil.copyfile", "cpython.run_command"}

def hook(event, args):
    if event in WATCH:
        events.append(event)
    elif event == "open" and args and isinstance(args[0], str) and "canaries" in args[0]:
        events.append("open " + args[0])

sys.addaudithook(hook)
import pickle, _pickle, numpy

def trap(name):
    def called(*args, **kwargs):
        events.append(name)
        raise RuntimeError(name + " called")
    return called

for module in (pickle, _pickle):  # ckptlint subclasses the unpicklers; it must never call them plainly
    for attr in ("load", "loads"):
        setattr(module, attr, trap(module.__name__ + "." + attr))
real_np_load = numpy.load
def np_load(*args, allow_pickle=False, **kwargs):
    if allow_pickle:
        events.append("numpy.load(allow_pickle=True)")
    return real_np_load(*args, allow_pickle=allow_pickle, **kwargs)
numpy.load = np_load
events.clear()  # importing numpy loads libraries through ctypes: that is the harness, not ckptlint

from ckptlint.api import check_files as check  # paths as given: a folder is read as one checkpoint
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers import read_checkpoint

def run(path):
    check(path)
    try:
        read_checkpoint(path)
    except UnreadableCheckpoint:
        pass

for path in warmup:  # ckptlint's own lazy imports happen here
    run(path)
before = set(sys.modules)
for path in paths:
    run(path)
if mode == "control-unpickle":  # proves the harness sees a loader call
    try:
        pickle.loads(b"N.")
    except RuntimeError:
        pass
if mode == "control-import":  # proves the harness sees an import
    importlib.import_module("pty")
print(json.dumps({"events": events, "new_modules": sorted(set(sys.modules) - before)}))
"""


def _watched_modules() -> set[str]:
    """Top-level modules of every global the samples use (and torch, which ckptlint never imports)."""
    mods = {"torch", "transformers", "accelerate", "pickle", "_pickle", "dill", "joblib"}
    for sample in ms.SAMPLES.values():
        for g in sample.globals:
            mods.add(g.split(".", 1)[0])
    return mods


def _run_traps(paths: list[str], warmup: list[str], mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", TRAP_SCRIPT, json.dumps(paths), json.dumps(warmup), mode],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-1000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def warmup(corpus: Path) -> list[str]:
    """One benign file of each format, so that ckptlint's own lazy imports happen before the samples."""
    return [
        str(corpus / "hf" / "hf_clip_tiny"),
        str(corpus / "hf" / "hf_clip_tiny_bin"),
        str(corpus / "big_vision" / "tiny_clippo.npz"),
        str(corpus / "open_clip" / "openclip_tiny_trainer_ckpt.pt"),
    ]


def test_no_loader_unpickler_process_or_import_runs(
    samples: tuple[dict[str, Path], Path], warmup: list[str]
) -> None:
    paths, canaries = samples
    out = _run_traps([str(paths[n]) for n in NAMES], warmup, "plain")
    assert out["events"] == []
    new = {m.split(".", 1)[0] for m in out["new_modules"]}
    assert new & _watched_modules() == set(), sorted(new)
    assert list(canaries.iterdir()) == []


@pytest.mark.parametrize(
    ("mode", "seen"), [("control-unpickle", "events"), ("control-import", "new_modules")]
)
def test_trap_harness_detects_violations(
    samples: tuple[dict[str, Path], Path], warmup: list[str], mode: str, seen: str
) -> None:
    """The harness above is not vacuous: a loader call or an import of a sample's module is reported."""
    paths, _ = samples
    out = _run_traps([str(paths["proto0_os_system"])], warmup, mode)
    assert out[seen], out


def test_polyglots_are_valid_files_of_their_other_format(samples: tuple[dict[str, Path], Path]) -> None:
    """The polyglot samples are what a safetensors / flax reader accepts: only their pickle side is malicious."""
    from flax import serialization
    from safetensors import safe_open

    paths, _ = samples
    for name in ("safetensors_tar_polyglot", "safetensors_pickle_polyglot"):
        with safe_open(str(paths[name]), "np") as f:
            assert list(f.keys()) == ["t"]
    assert serialization.msgpack_restore(paths["msgpack_pickle_polyglot"].read_bytes())
    assert read_checkpoint(paths["safetensors_tar_polyglot"]).format == "torch-tar"
    assert read_checkpoint(paths["msgpack_pickle_polyglot"]).format == "pickle"
