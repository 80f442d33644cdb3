"""Canary: payloads that create a file when unpickled are reported (CK301) and never executed.

Every payload is written by hand as pickle bytes and would create ``canary`` in a temp dir. A positive control
loads a copy (aimed at another file in the same temp dir) with the real unpickler in a subprocess, proving the
payload is live; ckptlint then reads the original, through the Python API and through the CLI, and the canary
file must not exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ckptlint.engine import fact_findings
from ckptlint.readers import read_checkpoint


def _u(text: str) -> bytes:
    """BINUNICODE argument."""
    data = text.encode()
    return len(data).to_bytes(4, "little") + data


def _s(text: str) -> bytes:
    """SHORT_BINUNICODE argument."""
    data = text.encode()
    return bytes([len(data)]) + data


def proto0_os_system(target: Path) -> bytes:
    return f"cos\nsystem\n(S'touch {target}'\ntR.".encode()


def proto2_posix_system(target: Path) -> bytes:
    return b"\x80\x02cposix\nsystem\nX" + _u(f"touch {target}") + b"\x85R."


def proto4_builtins_exec(target: Path) -> bytes:
    body = (
        b"\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94"  # STACK_GLOBAL from memoised strings
        + b"\x8c"
        + _s(f"open({str(target)!r}, 'w').close()")
        + b"\x94\x85\x94R\x94."
    )
    return b"\x80\x04\x95" + len(body).to_bytes(8, "little") + body


def proto2_subprocess_list(target: Path) -> bytes:
    return b"\x80\x02csubprocess\ncall\n](X" + _u("touch") + b"X" + _u(str(target)) + b"e\x85R."


def proto0_inst(target: Path) -> bytes:
    return f"(S'touch {target}'\nios\nsystem\n.".encode()


def proto2_getattr_import(target: Path) -> bytes:
    """getattr(__import__('os'), 'system')(cmd), with Python 2 module names mapped at load time."""
    return (
        b"\x80\x02c__builtin__\ngetattr\n(c__builtin__\n__import__\n(X"
        + _u("os")
        + b"tRX"
        + _u("system")
        + b"tR(X"
        + _u(f"touch {target}")
        + b"tR."
    )


def appended_after_benign(target: Path) -> bytes:
    return b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s." + proto0_os_system(target)


PAYLOADS: dict[str, tuple[Callable[[Path], bytes], set[str]]] = {
    "proto0_os_system": (proto0_os_system, {"os.system"}),
    "proto2_posix_system": (proto2_posix_system, {"posix.system"}),
    "proto4_builtins_exec": (proto4_builtins_exec, {"builtins.exec"}),
    "proto2_subprocess_list": (proto2_subprocess_list, {"subprocess.call"}),
    "proto0_inst": (proto0_inst, {"os.system"}),
    "proto2_getattr_import": (proto2_getattr_import, {"builtins.getattr", "builtins.__import__"}),
    "appended_after_benign": (appended_after_benign, {"os.system"}),
}


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def assert_reported(findings: list, expected: set[str]) -> None:
    names = {f.details.get("global") for f in findings if f.code == "CK301"}
    assert expected <= names
    for f in findings:
        if f.details.get("global") in expected:
            assert f.severity == "error" and "dangerous" in f.message and f.details["dangerous"]
            assert f.details["global"] in f.message


def ckptlint_cli() -> Path:
    cli = Path(sys.executable).parent / "ckptlint"
    if not cli.exists():
        pytest.skip("ckptlint CLI not installed in this environment")
    return cli


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_pickle_payload_is_reported_and_not_run(tmp_path: Path, name: str) -> None:
    make, expected = PAYLOADS[name]
    control_target = tmp_path / "control"
    control = tmp_path / "control.pkl"
    control.write_bytes(make(control_target))
    result = run_python(
        "import pickle, sys\n"
        f"with open({str(control)!r}, 'rb') as f:\n"
        "    while True:\n"
        "        try:\n            pickle.load(f)\n        except EOFError:\n            break\n"
    )
    assert control_target.exists(), f"positive control did not fire: {result.stderr[-400:]}"

    canary = tmp_path / "canary"
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(make(canary))
    ck = read_checkpoint(path)
    assert_reported(fact_findings(ck), expected)
    assert not canary.exists()


def torch_zip_with_payload(tmp_path: Path, target: Path, name: str) -> Path:
    """A real torch.save archive whose data.pkl gains one more entry, ``evil = posix.system(...)``."""
    import torch

    path = tmp_path / f"{name}.pt"
    torch.save({"w": torch.zeros(2, 3), "b": torch.ones(3)}, path)
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    patched = path.with_suffix(".tmp")
    with zipfile.ZipFile(patched, "w") as out:
        for info, data in members:
            if info.filename.endswith("/data.pkl"):
                assert data.endswith(b"u.")
                evil = b"X" + _u("evil") + b"cposix\nsystem\nX" + _u(f"touch {target}") + b"\x85R"
                data = data[:-2] + evil + b"u."
            out.writestr(info, data)
    patched.replace(path)
    return path


def test_torch_zip_payload_is_reported_and_tensors_recovered(tmp_path: Path) -> None:
    control_target = tmp_path / "control"
    control = torch_zip_with_payload(tmp_path, control_target, "control")
    result = run_python(f"import torch; torch.load({str(control)!r}, weights_only=False)")
    assert control_target.exists(), f"positive control did not fire: {result.stderr[-400:]}"

    canary = tmp_path / "canary"
    path = torch_zip_with_payload(tmp_path, canary, "evil")
    ck = read_checkpoint(path)
    assert_reported(fact_findings(ck), {"posix.system"})
    assert {k: t.shape for k, t in ck.tensors.items()} == {"w": (2, 3), "b": (3,)}
    assert fact_findings(ck)[0].details["member"] == "evil/data.pkl"
    assert not canary.exists()


@pytest.mark.parametrize("name", ["proto0_os_system", "proto4_builtins_exec", "torch_zip"])
def test_cli_dump_reports_and_does_not_run(tmp_path: Path, name: str) -> None:
    cli = ckptlint_cli()
    canary = tmp_path / "canary"
    if name == "torch_zip":
        path, expected = torch_zip_with_payload(tmp_path, canary, "evil"), "posix.system"
    else:
        make, names = PAYLOADS[name]
        path, expected = tmp_path / f"{name}.pkl", next(iter(names))
        path.write_bytes(make(canary))
    result = subprocess.run(
        [str(cli), "dump", str(path), "--format", "json"], capture_output=True, text=True, timeout=120
    )
    assert not canary.exists()
    assert result.returncode in (0, 1), result.stderr
    doc = json.loads(result.stdout)
    assert any(f["code"] == "CK301" and expected in f["message"] for f in doc["findings"])
    text = subprocess.run([str(cli), "dump", str(path)], capture_output=True, text=True, timeout=120)
    assert not canary.exists()
    assert "CK301" in text.stdout + text.stderr and expected in text.stdout + text.stderr
