"""A bucket of 2,000 checkpoints behind moto's S3 server (the real S3 HTTP API, started here), scanned with
``--format jsonl --stats``: every object reported exactly once, each the same report as for the same file on
disk, at the cost of one ranged GET per file (sizes come from one listing per prefix)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from _s3_server import S3Server
from cli_support import ckptlint, one_error_line
from scan_support import jsonl, strip, write_checkpoints

import ckptlint as api
from ckptlint.remote import READ_AHEAD

N = 2000


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bucket")
    names = write_checkpoints(root, N)
    with S3Server(root, "ckpts") as s3:
        yield root, names, s3


def test_s3_bucket_of_2000_streams_each_once_as_on_disk(bucket, tmp_path: Path) -> None:
    root, names, s3 = bucket
    urls = [f"s3://ckpts/{name}" for name in names]
    out = tmp_path / "scan.jsonl"
    proc = ckptlint("check", *urls, "--format", "jsonl", "--stats", "--output", str(out), env=s3.env())
    line = one_error_line(proc)  # two files are cut short: exit 2, one line naming the first
    assert "(and 1 more unreadable)" in line
    assert proc.stdout == ""  # the report went to --output

    files, summaries = jsonl(out.read_text())
    assert out.read_text().splitlines()[-1].startswith('{"summary"') and len(summaries) == 1
    assert sorted(f["path"] for f in files) == sorted(urls)  # each object exactly once

    local = {r.path: r.model_dump(mode="json") for r in api.scan([str(root / n) for n in names])}
    by_url = {f["path"]: f for f in files}
    for name in names:
        remote, disk = by_url[f"s3://ckpts/{name}"], local[str(root / name)]
        if disk["error"]:
            assert remote["error"] == disk["error"] and remote["findings"][0]["code"] == "CK001"
        else:
            assert strip(remote) == strip(disk), name

    counts = {"files": len(files), "errors": 0, "warnings": 0, "infos": 0}
    for f in files:
        for finding in f["findings"]:
            counts[finding["severity"] + "s"] += 1
    assert summaries[0]["summary"] == counts
    assert counts["warnings"] > 100 and counts["errors"] >= 2  # CK201 on the files with optimizer state

    for name in names:
        stats = by_url[f"s3://ckpts/{name}"]["stats"]
        data = (root / name).read_bytes()
        if name.endswith(".safetensors") and not by_url[f"s3://ckpts/{name}"]["error"]:
            header = 8 + int.from_bytes(data[:8], "little")
            assert stats["requests"] == 1, (name, stats)  # the size came from the prefix's listing
            assert header <= stats["bytes"] <= header + READ_AHEAD
        else:
            assert 1 <= stats["requests"] <= 6 and stats["bytes"] <= len(data), (name, stats)
