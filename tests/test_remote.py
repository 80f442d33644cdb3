"""Remote inputs through fsspec: only header byte ranges are fetched. A loopback HTTP server serves Range requests
and counts every body byte it sends; the files are written by the real libraries and are megabytes of tensor
data behind a header of a few kilobytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")  # fsspec's https backend

from _range_server import Fault, RangeServer
from cli_support import ckptlint

from ckptlint.remote import NO_RANGES, READ_AHEAD


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, corpus: Path):
    """Big files of three formats plus a corpus file, behind a counting range server."""
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("served")
    g = torch.Generator().manual_seed(0)
    big = {f"blocks.{i}.weight": torch.randn(512, 512, generator=g) for i in range(8)}  # 8 MiB of data
    big["head.bias"] = torch.zeros(7, dtype=torch.bfloat16)
    save_file(big, str(root / "big.safetensors"), metadata={"format": "pt"})
    torch.save(big, root / "big.pt")
    np.savez(root / "big.npz", **{k.replace(".", "/"): v.float().numpy() for k, v in big.items()})
    (root / "clippo.npz").write_bytes((corpus / "big_vision" / "tiny_clippo.npz").read_bytes())
    with RangeServer(root) as srv:
        yield root, srv


def local_vs_remote(root: Path, srv: RangeServer, name: str) -> tuple[dict, dict, int]:
    local = ckptlint("dump", str(root / name), "--format", "json")
    assert local.returncode == 0, local.stderr
    srv.reset()
    remote = ckptlint("dump", srv.url(name), "--format", "json")
    assert remote.returncode == 0, remote.stderr
    return json.loads(local.stdout), json.loads(remote.stdout), srv.bytes_served


@pytest.mark.parametrize("name", ["big.safetensors", "big.pt", "big.npz"])
def test_remote_dump_reads_headers_only(served: tuple[Path, RangeServer], name: str) -> None:
    root, srv = served
    local, remote, served_bytes = local_vs_remote(root, srv, name)
    assert remote["tensors"] == local["tensors"] and remote["format"] == local["format"]
    size = (root / name).stat().st_size
    assert size > 8 << 20
    # a few read-ahead windows per member header at most; never the tensor data
    n_members = len(local["tensors"]) + 4
    assert served_bytes <= n_members * (READ_AHEAD + 4096), (served_bytes, size)
    assert served_bytes < size / 20
    assert all(method in ("HEAD", "GET") for method, _, _ in srv.requests)
    assert all(rng is not None for method, _, rng in srv.requests if method == "GET")  # ranges only


def test_remote_safetensors_costs_one_window(served: tuple[Path, RangeServer]) -> None:
    root, srv = served
    _, _, served_bytes = local_vs_remote(root, srv, "big.safetensors")
    with (root / "big.safetensors").open("rb") as fh:
        header_len = 8 + int.from_bytes(fh.read(8), "little")
    assert header_len <= served_bytes <= header_len + 2 * READ_AHEAD


def test_remote_check_same_report_as_local(served: tuple[Path, RangeServer]) -> None:
    root, srv = served
    local = json.loads(
        ckptlint("check", str(root / "clippo.npz"), "--arch", "bv-vit", "--format", "json").stdout
    )
    remote_proc = ckptlint("check", srv.url("clippo.npz"), "--arch", "bv-vit", "--format", "json")
    assert remote_proc.returncode == 1, remote_proc.stderr  # the CLIPPO-into-ViT mistake, found remotely
    remote = json.loads(remote_proc.stdout)

    def strip(
        doc: dict,
    ) -> list[dict]:  # the path, and the commands a local file gets (fix/strip write locally)
        files = [{k: v for k, v in f.items() if k != "path"} for f in doc["files"]]
        for f in files:
            f["findings"] = [{k: v for k, v in x.items() if k != "fix"} for x in f["findings"]]
        return files

    assert strip(remote) == strip(local)
    assert not any("`ckptlint fix " in f["fix"] for f in remote["files"][0]["findings"])
    assert remote["files"][0]["path"] == srv.url("clippo.npz")


def test_remote_missing_file_is_one_line(served: tuple[Path, RangeServer]) -> None:
    _, srv = served
    proc = ckptlint("check", srv.url("nope.safetensors"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckptlint: error: ") and "nope.safetensors" in lines[0]


def test_python_api_dump_url(served: tuple[Path, RangeServer]) -> None:
    import ckptlint

    _, srv = served
    ckpt = ckptlint.dump(srv.url("big.safetensors"))
    assert ckpt.tensors["blocks.3.weight"].shape == (512, 512)
    assert ckpt.tensors["head.bias"].dtype == "bfloat16"


def test_any_fsspec_scheme_goes_through_the_same_path(served: tuple[Path, RangeServer]) -> None:
    """Not only https: an fsspec in-memory filesystem stands in for s3/gs/hf (no network here)."""
    import fsspec

    import ckptlint

    root, _ = served
    fs = fsspec.filesystem("memory")
    fs.pipe("/ckpt/big.npz", (root / "big.npz").read_bytes())
    try:
        remote = ckptlint.dump("memory://ckpt/big.npz")
        local = ckptlint.dump(str(root / "big.npz"))
        assert {k: (t.shape, t.dtype) for k, t in remote.tensors.items()} == {
            k: (t.shape, t.dtype) for k, t in local.tensors.items()
        }
        report = ckptlint.check("memory://ckpt/missing.safetensors")
        assert report.files[0].error and "missing.safetensors" in report.files[0].path
    finally:
        fs.rm("/ckpt", recursive=True)


def test_a_server_without_range_support_never_sends_the_whole_file(served: tuple[Path, RangeServer]) -> None:
    """A 200 with the whole body: the first block is read and the connection dropped; a safetensors header
    within it is enough, a torch zip (directory at the end) is refused with the reason."""
    _, srv = served
    srv.reset()
    for name in ("big.safetensors", "big.pt"):
        srv.always[name] = Fault(ignore_range=True)
    proc = ckptlint("check", srv.url("big.safetensors"), srv.url("big.pt"), "--format", "jsonl", "--stats")
    docs = {d["path"]: d for d in map(json.loads, proc.stdout.splitlines()[:-1])}
    good, refused = docs[srv.url("big.safetensors")], docs[srv.url("big.pt")]
    assert good["error"] is None and good["num_tensors"] == 9
    assert refused["error"] == NO_RANGES
    for doc in (good, refused):
        assert doc["stats"]["bytes"] <= 2 * READ_AHEAD  # of 8 MiB sent our way
    srv.reset()
