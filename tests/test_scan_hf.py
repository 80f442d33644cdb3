"""``hf://`` files through huggingface_hub's HfFileSystem against a local server speaking the Hub's HTTP API
(``HF_ENDPOINT``, tests/_hf_server.py): the same reports as on disk, header ranges only, a listing of a folder
for the sizes of many files, and missing files or repositories reported as such."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from _hf_server import HubServer
from cli_support import ckptlint, one_error_line
from scan_support import jsonl, strip, write_checkpoints

from ckptlint.remote import READ_AHEAD


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, corpus: Path):
    root = tmp_path_factory.mktemp("hub")
    repo = root / "org" / "tiny"
    repo.mkdir(parents=True)
    shutil.copy(corpus / "timm" / "timm_vit_clip_tiny.safetensors", repo / "model.safetensors")
    shutil.copy(corpus / "open_clip" / "openclip_tiny.pt", repo / "open_clip_pytorch_model.bin")
    runs = write_checkpoints(repo / "runs", 10, per_dir=10, torch_every=5)
    with HubServer(root) as server:
        yield repo, runs, server


def test_hf_files_read_like_local_ones_with_header_ranges_only(hub) -> None:
    repo, runs, server = hub
    names = ["model.safetensors", "open_clip_pytorch_model.bin", *(f"runs/{r}" for r in runs)]
    urls = [f"hf://org/tiny/{n}" for n in names]
    env = {"HF_ENDPOINT": server.endpoint, "HF_HUB_OFFLINE": "0"}
    proc = ckptlint("check", *urls, "--format", "jsonl", "--stats", env=env)
    files, summaries = jsonl(proc.stdout)
    assert sorted(f["path"] for f in files) == sorted(urls) and summaries[0]["summary"]["files"] == len(urls)
    local = {
        f["path"]: f
        for f in jsonl(ckptlint("check", *(str(repo / n) for n in names), "--format", "jsonl").stdout)[0]
    }
    for name in names:
        doc, disk = next(f for f in files if f["path"] == f"hf://org/tiny/{name}"), local[str(repo / name)]
        if disk["error"]:
            assert doc["error"] == disk["error"]
        else:
            assert strip(doc) == strip(disk), name
        data = (repo / name).read_bytes()
        assert server.bytes_served[f"org/tiny/{name}"] <= len(data)
        if name.endswith(".safetensors") and not disk["error"]:
            header = 8 + int.from_bytes(data[:8], "little")
            assert header <= doc["stats"]["bytes"] <= header + READ_AHEAD
    big = (repo / "model.safetensors").stat().st_size
    assert server.bytes_served["org/tiny/model.safetensors"] < big  # the tensor data stayed on the server
    assert all(server.downloads[f"org/tiny/runs/{r}"] == 1 for r in runs)  # sizes from one listing of runs/


def test_hf_revision_and_missing_files_or_repos(hub) -> None:
    _, _, server = hub
    env = {"HF_ENDPOINT": server.endpoint}
    ok = ckptlint("check", "hf://org/tiny@main/model.safetensors", "--format", "json", env=env)
    assert ok.returncode == 0, ok.stderr
    for url in ("hf://org/tiny/absent.safetensors", "hf://org/absent/model.safetensors"):
        line = one_error_line(ckptlint("check", url, env=env))
        assert line.startswith(f"ckptlint: error: {url}: cannot reach remote file: not found"), line
