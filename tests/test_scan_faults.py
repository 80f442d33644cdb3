"""Network faults, injected by the loopback range server: timeouts, 5xx, 429 with Retry-After, 403/404 and
truncated bodies. Transient ones are retried with backoff and the file is then reported as if nothing happened;
the rest give that file a CK001 with the reason; every input is reported exactly once."""

from __future__ import annotations

import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

from _range_server import Fault, RangeServer
from cli_support import ckptlint
from scan_support import jsonl, strip, write_checkpoints

N = 40


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("served")
    names = write_checkpoints(root, N, per_dir=20, torch_every=10)
    with RangeServer(root) as srv:
        clean = {
            doc["path"]: doc
            for doc in jsonl(ckptlint("check", *map(srv.url, names), "--format", "jsonl").stdout)[0]
        }
        yield names, srv, clean


@pytest.fixture
def srv(served) -> RangeServer:
    server: RangeServer = served[1]
    server.reset()
    yield server
    server.reset()


def scan(srv: RangeServer, names: list[str], *extra: str) -> dict[str, dict]:
    proc = ckptlint("check", *map(srv.url, names), "--format", "jsonl", "-j", "8", *extra)
    files, summaries = jsonl(proc.stdout)
    assert sorted(f["path"] for f in files) == sorted(map(srv.url, names))  # each exactly once
    assert len(summaries) == 1 and summaries[0]["summary"]["files"] == len(names)
    return {f["path"]: f for f in files}


def test_transient_faults_are_retried_then_the_file_is_checked_as_usual(served, srv: RangeServer) -> None:
    names, _, clean = served
    torch_name = next(n for n in names if n.endswith(".pt"))
    plan = {
        names[1]: [Fault(status=503), Fault(status=503)],
        names[2]: [Fault(status=429, retry_after="1")],
        names[4]: [Fault(status=500), Fault(status=502), Fault(status=504)],
        names[5]: [Fault(delay=3.0)],  # longer than --timeout: the request is abandoned and sent again
        torch_name: [Fault(truncate=100)],  # the body stops after 100 of the bytes announced
    }
    for name, faults in plan.items():
        srv.inject(name, *faults)
    reports = scan(srv, names, "--timeout", "1", "--stats")
    for name in names:
        doc = reports[srv.url(name)]
        assert strip(doc) == strip(clean[srv.url(name)]), name  # as if nothing had happened
        # retries included; a request sent on a pooled connection the server had just cut never arrives
        assert doc["stats"]["requests"] >= srv.requests_by_path[name] >= 1 + len(plan.get(name, ()))
    gap = srv.times[names[2]][1] - srv.times[names[2]][0]
    assert gap >= 0.95  # Retry-After: 1 was honoured


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault(status=404), "cannot reach remote file: not found (HTTP 404)"),
        (Fault(status=403), "cannot reach remote file: access denied (HTTP 403)"),
        (Fault(status=503), "cannot reach remote file: server error (HTTP 503) after 4 attempts"),
        (
            Fault(status=429, retry_after="3600"),
            "cannot reach remote file: rate limited (HTTP 429), and the server asks to wait 3600 s",
        ),
        (Fault(delay=2.0), "cannot reach remote file: timed out (no answer within 0.5 s) after 4 attempts"),
    ],
    ids=["404", "403", "503-always", "429-too-long", "timeout-always"],
)
def test_final_faults_give_that_file_a_ck001_with_the_reason(
    served, srv: RangeServer, fault: Fault, reason: str
) -> None:
    names, _, clean = served
    victim = names[7]
    srv.always[victim] = fault
    reports = scan(srv, names[:12], "--timeout", "0.5")
    doc = reports[srv.url(victim)]
    assert doc["error"] == reason
    assert [f["code"] for f in doc["findings"]] == ["CK001"] and reason in doc["findings"][0]["message"]
    for name in names[:12]:
        if name != victim:
            assert strip(reports[srv.url(name)]) == strip(clean[srv.url(name)])
    if fault.status in (403, 404):
        # not retried: 4 attempts otherwise (2 if the connection itself broke once)
        assert srv.requests_by_path[victim] <= 2


def test_a_body_cut_short_every_time_is_refused(served, srv: RangeServer) -> None:
    names, _, _ = served
    victim = names[9]
    srv.always[victim] = Fault(truncate=50)
    doc = scan(srv, [victim])[srv.url(victim)]
    assert doc["error"].startswith("cannot reach remote file: ") and doc["error"].endswith("after 4 attempts")
    assert "truncated" in doc["error"] or "payload" in doc["error"].lower()


def test_forty_urls_with_503s_and_a_404_each_reported_once(served, srv: RangeServer) -> None:
    names, _, clean = served
    for i, name in enumerate(names):
        if i % 3 == 0:
            srv.inject(name, *[Fault(status=503, retry_after="0")] * (1 + i % 2))
    srv.always[names[10]] = Fault(status=404)
    reports = scan(srv, names)
    for name in names:
        doc = reports[srv.url(name)]
        if name == names[10]:
            assert doc["error"] == "cannot reach remote file: not found (HTTP 404)"
        else:
            assert strip(doc) == strip(clean[srv.url(name)])
