"""The same FileReports whatever the engine: threads here, a local Ray cluster, a local Dask cluster (each
started once for this module). A worker killed mid-scan (the range server SIGKILLs the process reading a file)
loses and duplicates nothing; a file that kills every worker that reads it is reported as CK001."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

from _range_server import Fault, RangeServer
from cli_support import ckptlint
from scan_support import jsonl, write_checkpoints

import ckptlint as api

N = 48


def canon(reports) -> list[str]:
    """FileReports as sorted canonical JSON (stats included: they must not depend on the engine either)."""
    return sorted(json.dumps(r.model_dump(mode="json"), sort_keys=True) for r in reports)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("served")
    names = write_checkpoints(root, N, per_dir=24, torch_every=12)
    with RangeServer(root) as srv:
        yield root, names, srv


@pytest.fixture
def srv(served) -> RangeServer:
    server: RangeServer = served[2]
    server.reset()
    yield server
    server.reset()


@pytest.fixture(scope="module")
def inputs(served) -> list[str]:
    """Remote files, local files, and a URL that does not exist."""
    root, names, srv = served
    return (
        [srv.url(n) for n in names[: N // 2]]
        + [str(root / n) for n in names[N // 2 :]]
        + [srv.url("gone.pt")]
    )


@pytest.fixture(scope="module")
def expected(inputs) -> list[str]:
    return canon(api.scan(inputs, engine="local", stats=True))


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def dask_cluster():
    pytest.importorskip("distributed")
    import logging

    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture(params=["ray", "dask"])
def cluster(request) -> tuple[str, str]:
    return request.param, request.getfixturevalue(f"{request.param}_cluster")


def test_same_file_reports_on_every_engine(cluster, inputs: list[str], expected: list[str]) -> None:
    engine, address = cluster
    got = canon(api.scan(inputs, engine=engine, engine_address=address, stats=True, batch_size=5))
    assert got == expected
    assert len(got) == len(inputs)


def test_cli_jsonl_on_a_cluster_matches_local(cluster, inputs: list[str]) -> None:
    engine, address = cluster
    local = ckptlint("check", *inputs, "--format", "jsonl")
    if engine == "dask":  # the address from the environment; the work must reach that very scheduler
        from distributed import Client

        def transitions(client: Client) -> int:
            return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)

        with Client(address) as client:
            before = transitions(client)
            remote = ckptlint(
                "check",
                *inputs,
                "--format",
                "jsonl",
                "--engine",
                engine,
                env={"DASK_SCHEDULER_ADDRESS": address},
            )
            assert transitions(client) > before
    else:
        remote = ckptlint(
            "check", *inputs, "--format", "jsonl", "--engine", engine, "--engine-address", address
        )
    assert remote.returncode == local.returncode == 2, remote.stderr
    assert remote.stderr == local.stderr  # one line: the first input (in argument order) that was unreadable
    assert sorted(local.stdout.splitlines()) == sorted(remote.stdout.splitlines())


def test_a_worker_killed_mid_scan_loses_and_repeats_nothing(
    cluster, served, srv: RangeServer, expected
) -> None:
    engine, address = cluster
    root, names, _ = served
    inputs = (
        [srv.url(n) for n in names[: N // 2]]
        + [str(root / n) for n in names[N // 2 :]]
        + [srv.url("gone.pt")]
    )
    srv.inject(names[6], Fault(kill=True))  # the worker dies reading the header
    got = canon(api.scan(inputs, engine=engine, engine_address=address, stats=True, batch_size=5))
    assert srv.killed  # a worker process really died
    assert [json.loads(d)["path"] for d in got] == [json.loads(d)["path"] for d in expected]  # each once
    no_stats = lambda docs: [{k: v for k, v in json.loads(d).items() if k != "stats"} for d in docs]  # noqa: E731
    assert no_stats(got) == no_stats(expected)  # the retried batch gives the same reports


def test_a_file_that_kills_every_worker_is_refused_alone(cluster, served, srv: RangeServer) -> None:
    engine, address = cluster
    _, names, _ = served
    urls = [srv.url(n) for n in names[:10]]
    srv.always[names[3]] = Fault(kill=True)
    reports = {r.path: r for r in api.scan(urls, engine=engine, engine_address=address, batch_size=5)}
    assert sorted(reports) == sorted(urls)
    poison = reports[srv.url(names[3])]
    assert poison.error and poison.error.startswith(f"the {engine} worker checking this file failed")
    assert [f.code for f in poison.findings] == ["CK001"]
    assert not any(r.error for path, r in reports.items() if path != srv.url(names[3]))


def test_ray_and_dask_are_not_imported_unless_chosen(served) -> None:
    root, names, _ = served
    code = (
        "import sys; from ckptlint.cli import main\n"
        "try:\n    main(['check', sys.argv[1], '--format', 'jsonl'])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('ray', 'dask', 'distributed') if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(root) / names[0])], capture_output=True, text=True
    )
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr
    assert len(jsonl(proc.stdout)[0]) == 1
