"""Remote folders and shards: ``hf://org/repo``, ``s3://bucket/prefix/`` and ``https://host/path/`` give the same
report as the same folder on disk, at a cost of configs + metadata + 64 KiB per weight file.

The folders are written by the real libraries (transformers ``save_pretrained``, sharded with ``max_shard_size``;
open_clip's hub folder; flax ``serialization.to_bytes``; numpy ``savez``; torch ``save``) and served by real
protocol servers started here: the Hub's HTTP API (``_hf_server``), moto's S3 server (``_s3_server``) and a plain
Range HTTP server (``_range_server``), each counting the body bytes it sends. "Metadata" is computed from the
files themselves: a safetensors header; a zip's central directory and every member that is not tensor data (the
pickles, the records) or, for an npz, every member's local header and npy header; for a flax msgpack file, every
byte that is not an array's data (flax's own ``msgpack_restore`` tells the arrays).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("huggingface_hub")
pytest.importorskip("s3fs")
pytest.importorskip("moto")

from _hf_server import HubServer
from _range_server import RangeServer
from _s3_server import S3Server
from cli_support import ckptlint
from scan_support import jsonl, strip

SLACK = 64 << 10  # per weight file
REPOS = ("hf_tiny", "sharded", "bin_code", "oc_tiny")
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".npz", ".msgpack")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo never",))


def _flax_file(path: Path, corpus: Path) -> None:
    """big_vision's tiny ViT params as flax writes a checkpoint (``serialization.to_bytes``)."""
    from flax import serialization

    tree: dict = {}
    with np.load(corpus / "big_vision" / "tiny_vit.npz") as z:
        for key in z.files:
            node = tree
            *parents, leaf = key.split("/")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = z[key]
    path.write_bytes(serialization.to_bytes(tree))


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, corpus: Path):
    """``root/org/<repo>`` folders and ``root/org/runs`` (a folder of runs), behind the three servers."""
    import torch
    from declared_support import open_clip_folder
    from engine_support import hf_clip_tiny
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("stores")
    org = root / "org"
    hf = org / "hf_tiny"
    hf_clip_tiny().save_pretrained(hf)
    shutil.copy(corpus / "hf" / "hf_clip_tiny" / "preprocessor_config.json", hf)
    hf_clip_tiny().save_pretrained(org / "sharded", max_shard_size="200KB")
    shutil.copy(corpus / "hf" / "hf_clip_tiny" / "preprocessor_config.json", org / "sharded")
    code = org / "bin_code"  # torch pickles, model code and a trainer's pickle that runs code when loaded
    shutil.copytree(corpus / "hf" / "hf_clip_tiny_bin", code)
    config = json.loads((code / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_tiny.TinyModel"}
    (code / "config.json").write_text(json.dumps(config))
    (code / "modeling_tiny.py").write_text("raise SystemExit('never imported')\n")
    (code / "checkpoint-500").mkdir()
    torch.save({"state": {}, "extra": _Payload()}, code / "checkpoint-500" / "optimizer.pt")
    open_clip_folder(org / "oc_tiny")
    (org / "ckptlint-decl-tiny.json").unlink()  # open_clip's registration file, not part of the folder
    runs = org / "runs"
    (runs / "run_a").mkdir(parents=True)
    _flax_file(runs / "run_a" / "params.msgpack", corpus)
    shutil.copy(corpus / "big_vision" / "tiny_vit.npz", runs / "run_a" / "vit.npz")
    g = np.random.default_rng(0)
    save_file({f"w.{i}": g.standard_normal((128, 128)).astype(np.float32) for i in range(4)},
              str(runs / "run_a" / "step_1.safetensors"))  # fmt: skip
    shutil.copytree(hf, runs / "run_b" / "export")
    (runs / "notes.md").write_text("not a checkpoint\n")
    with HubServer(root) as hub, S3Server(root, "ckpts") as s3, RangeServer(org) as web:
        yield org, hub, s3, web


def metadata_bytes(path: Path) -> int:
    """The bytes a loader's own metadata parse touches in ``path`` (see the module docstring)."""
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":
        total = 0
        with zipfile.ZipFile(path) as zf:
            total += len(data) - zf.start_dir  # central directory and end records
            for info in zf.infolist():
                off = info.header_offset
                name_len, extra_len = struct.unpack("<HH", data[off + 26 : off + 30])
                local = 30 + name_len + extra_len
                if info.filename.endswith(".npy"):
                    start = off + local
                    major = data[start + 6]
                    hlen = (
                        struct.unpack("<H", data[start + 8 : start + 10])[0] + 10
                        if major == 1
                        else struct.unpack("<I", data[start + 8 : start + 12])[0] + 12
                    )
                    total += local + hlen
                elif "/data/" not in f"/{info.filename}":
                    total += local + info.compress_size
        return total
    if path.suffix == ".safetensors":
        return 8 + int.from_bytes(data[:8], "little")
    if path.suffix == ".msgpack":
        from flax import serialization

        arrays = 0
        todo = [serialization.msgpack_restore(data)]
        while todo:
            node = todo.pop()
            if isinstance(node, dict):
                todo.extend(node.values())
            elif isinstance(node, np.ndarray):
                arrays += node.nbytes
        return len(data) - arrays
    raise AssertionError(f"no metadata rule for {path}")


def bound(folder: Path) -> int:
    """configs + metadata + 64 KiB per weight file, for every file under ``folder`` (or the one file)."""
    files = [folder] if folder.is_file() else [p for p in folder.rglob("*") if p.is_file()]
    total = 0
    for f in files:
        if f.name.endswith(".json"):
            total += f.stat().st_size
        elif f.name.endswith(WEIGHTS):
            total += metadata_bytes(f) + SLACK
    return total


def local_report(path: Path) -> dict:
    proc = ckptlint("check", str(path), "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    (doc,) = json.loads(proc.stdout)["files"]
    return doc


def remote_report(url: str, env: dict[str, str]) -> dict:
    proc = ckptlint("check", url, "--format", "json", "--stats", env=env)
    assert proc.returncode in (0, 1), proc.stderr
    (doc,) = json.loads(proc.stdout)["files"]
    assert doc["path"] == url and doc["stats"]["requests"] >= 1
    return doc


def codes(doc: dict) -> list[str]:
    return sorted(f["code"] for f in doc["findings"])


def without(doc: dict, code: str) -> dict:
    return {**doc, "findings": [f for f in doc["findings"] if f["code"] != code]}


def test_hf_repos_read_like_the_folders_on_disk(stores) -> None:
    org, hub, _, _ = stores
    env = {"HF_ENDPOINT": hub.endpoint}
    for repo in REPOS:
        local = local_report(org / repo)
        before = sum(hub.bytes_served.values())
        remote = remote_report(f"hf://org/{repo}", env)
        served = sum(hub.bytes_served.values()) - before
        assert strip(remote) == strip(local), repo
        assert remote["diff"] == local["diff"] and remote["arch"] == local["arch"]
        assert served <= bound(org / repo), (repo, served, bound(org / repo))
        assert remote["stats"]["bytes"] <= bound(org / repo)
    trainer = local_report(org / "bin_code")  # the trainer's pickle that runs code, and the shipped code
    assert "CK301" in codes(trainer) and "CK302" in codes(trainer)
    pinned = remote_report("hf://org/sharded@main", env)
    assert strip(pinned) == strip(local_report(org / "sharded"))
    assert len(list((org / "sharded").glob("model-*.safetensors"))) >= 2


def test_s3_prefixes_read_and_walked_like_the_folders_on_disk(stores) -> None:
    org, _, s3, _ = stores
    for repo in REPOS:
        local = local_report(org / repo)
        before = s3.served()
        remote = remote_report(f"s3://ckpts/org/{repo}/", s3.env())
        after = s3.served()
        served = sum(after.values()) - sum(before.values())
        assert strip(remote) == strip(local), repo
        assert served <= bound(org / repo), (repo, served, bound(org / repo))
    # a folder of runs is walked as on disk: the same checkpoints, each with the same report
    proc = ckptlint("check", "s3://ckpts/org/", "--format", "jsonl", "--stats", env=s3.env())
    remote_files, _ = jsonl(proc.stdout)
    local_files, _ = jsonl(ckptlint("check", str(org), "--format", "jsonl").stdout)
    by_rel = {f["path"].removeprefix("s3://ckpts/org/").rstrip("/"): f for f in remote_files}
    local_by_rel = {os.path.relpath(f["path"], org): f for f in local_files}
    assert set(by_rel) == set(local_by_rel) and "runs/run_a/params.msgpack" in by_rel
    assert "runs/run_b/export" in by_rel and "runs/notes.md" not in by_rel
    for rel, doc in by_rel.items():
        assert strip(doc) == strip(local_by_rel[rel]), rel
        assert doc["stats"]["bytes"] <= bound(org / rel), (rel, doc["stats"])


def test_https_folders_are_probed_by_the_names_loaders_open(stores) -> None:
    org, _, _, web = stores
    for repo in REPOS:
        local = local_report(org / repo)
        web.reset()
        remote = remote_report(web.url(f"{repo}/"), {})
        served = sum(web.bytes_by_path.values())
        note = next(f for f in remote["findings"] if f["code"] == "CK005")
        found = sorted(
            p.name for p in (org / repo).iterdir() if p.is_file() and p.name in note["details"]["probed"]
        )
        assert (
            note["details"]["found"] == found and "other files in the folder were not seen" in note["message"]
        )
        if repo == "bin_code":  # the trainer's pickle and the code were not seen, and the report says so
            assert "CK301" in codes(local) and "CK301" not in codes(remote)
            assert "checkpoint-500" not in json.dumps(remote)
        else:
            assert strip(without(remote, "CK005")) == strip(local), repo
        assert served <= bound(org / repo), (repo, served, bound(org / repo))
        assert all(rng is not None for method, _, rng in web.requests if method == "GET")


def test_https_folders_on_a_server_without_range_support(stores) -> None:
    """A plain server (``python -m http.server``) answers every GET 200 with the whole file: a weight file whose
    metadata the first block holds reads as with ranges (safetensors headers), one that needs more (a torch zip's
    directory at the end) is that folder's one CK001 in one line, and never more than a block of any file."""
    from ckptlint.remote import BLOCK, NO_RANGES

    org, _, _, web = stores
    for repo in REPOS:
        web.reset()
        web.ranges = False
        proc = ckptlint("check", web.url(f"{repo}/"), "--format", "json", "--stats")
        (doc,) = json.loads(proc.stdout)["files"]
        weights = [p for p in (org / repo).iterdir() if p.is_file() and p.name.endswith(WEIGHTS)]
        configs = sum(p.stat().st_size for p in (org / repo).iterdir() if p.name.endswith(".json"))
        assert doc["stats"]["bytes"] <= configs + len(weights) * BLOCK, (repo, doc["stats"])
        if repo == "bin_code":
            assert proc.returncode == 2 and doc["error"] == NO_RANGES
            (ck001,) = doc["findings"]
            assert ck001["code"] == "CK001" and ck001["details"]["path"] == web.url(
                f"{repo}/pytorch_model.bin"
            )
            assert proc.stderr.splitlines() == [f"ckptlint: error: {web.url(f'{repo}/')}: {NO_RANGES}"]
        else:
            assert proc.returncode in (0, 1), proc.stderr
            web.reset()
            assert strip(doc) == strip(remote_report(web.url(f"{repo}/"), {})), repo
    # the file alone, and next to another input: each reported once, each in one line
    web.reset()
    web.ranges = False
    bin_url = web.url("bin_code/pytorch_model.bin")
    proc = ckptlint("check", bin_url, web.url("oc_tiny/"), "--format", "jsonl", "--stats")
    files, _ = jsonl(proc.stdout)
    assert proc.returncode == 2 and sorted(f["path"] for f in files) == sorted([bin_url, web.url("oc_tiny/")])
    (refused,) = [f for f in files if f["error"]]
    assert refused["path"] == bin_url and refused["error"] == NO_RANGES
    assert refused["stats"]["bytes"] <= BLOCK
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = ckptlint("dump", bin_url)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"ckptlint: error: {bin_url}: {NO_RANGES}"]
    web.reset()


def test_remote_flax_npz_and_shards_fetch_metadata_only(stores) -> None:
    """Single files of each format over plain https: the bytes the server sent against the file's metadata."""
    org, _, _, web = stores
    names = ["runs/run_a/params.msgpack", "runs/run_a/vit.npz", "runs/run_a/step_1.safetensors"]
    for name in names:
        web.reset()
        proc = ckptlint("dump", web.url(name), "--format", "json")
        assert proc.returncode == 0, proc.stderr
        local = json.loads(ckptlint("dump", str(org / name), "--format", "json").stdout)
        assert json.loads(proc.stdout)["tensors"] == local["tensors"]
        size = (org / name).stat().st_size
        assert web.bytes_served <= metadata_bytes(org / name) + SLACK < size, (name, web.bytes_served, size)
    web.reset()
    index = web.url("sharded/model.safetensors.index.json")
    proc = ckptlint("dump", index, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "safetensors-sharded"
    shards = sorted((org / "sharded").glob("model-*.safetensors"))
    assert web.bytes_served <= bound(org / "sharded" / "model.safetensors.index.json") + sum(
        metadata_bytes(s) + SLACK for s in shards
    )


def test_probed_names_cover_what_the_readers_look_for() -> None:
    from ckptlint.discover import CHECKPOINT_DIR_MARKERS
    from ckptlint.folders import PROBED_NAMES
    from ckptlint.readers.directory import HF_ORDER, OPEN_CLIP_ORDER
    from ckptlint.readers.sidecars import SIDECAR_KINDS

    wanted = {*HF_ORDER, *OPEN_CLIP_ORDER, *SIDECAR_KINDS, *CHECKPOINT_DIR_MARKERS, "training_args.bin"}
    assert wanted <= set(PROBED_NAMES)
