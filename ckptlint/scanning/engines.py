"""Where batches of files are checked: threads here (``local``), or Ray / Dask workers; and the loop that feeds them.

An engine only ships ``task.check_batch`` and its arguments to a worker and hands back what it returned, in
completion order. ``run`` keeps a bounded number of batches in flight (memory stays flat however many files),
and makes sure every task is reported exactly once: a batch whose worker died (killed, out of memory) is
retried file by file, and a file whose worker dies again, also when it runs alone, is reported as CK001.
Ray and Dask are imported only when chosen.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

from ckptlint.errors import UsageError
from ckptlint.scanning.task import FileTask, ScanOptions, check_batch, failed

if TYPE_CHECKING:
    from ckptlint.results import FileReport

ENGINES = ("local", "ray", "dask")
ADDRESS_ENV = {"ray": "RAY_ADDRESS", "dask": "DASK_SCHEDULER_ADDRESS"}
# threads for remote inputs: header reads mostly wait on the network (16 -> 64 threads doubled the files/s of
# benchmarks/bench_scan.py at 0 and 20 ms per request: more reads in flight hide each other's GIL hand-offs)
LOCAL_THREADS = 64
BATCH = {"local": 1, "ray": 64, "dask": 64}  # files per unit of work
SINGLE_TRIES = 2  # a file run alone on the cluster, whose worker died this many times, is reported as CK001


class Engine(Protocol):
    """Run ``check_batch`` somewhere; ``capacity`` batches run at once."""

    name: str
    capacity: int

    def submit(self, batch: list[FileTask], opts: ScanOptions) -> Any: ...
    def wait(self, handles: list[Any]) -> list[Any]: ...  # at least one finished handle
    def result(self, handle: Any) -> list[FileReport]: ...  # raises when the worker failed
    def close(self) -> None: ...


class LocalEngine:
    """A thread pool in this process (header reads release the GIL while they wait on the network or disk)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.capacity = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckptlint-scan")

    def submit(self, batch: list[FileTask], opts: ScanOptions) -> Any:
        return self._pool.submit(check_batch, batch, opts)

    def wait(self, handles: list[Any]) -> list[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        return list(wait(handles, return_when=FIRST_COMPLETED).done)

    def result(self, handle: Any) -> list[FileReport]:
        return handle.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Deferred:
    """A batch not run yet (hashable by identity, like a future)."""

    def __init__(self, batch: list[FileTask], opts: ScanOptions) -> None:
        self.batch, self.opts = batch, opts


class InlineEngine:
    """One worker: check each batch in the calling thread when its result is asked for (no thread hand-offs)."""

    name = "local"
    capacity = 1

    def submit(self, batch: list[FileTask], opts: ScanOptions) -> Any:
        return _Deferred(batch, opts)

    def wait(self, handles: list[Any]) -> list[Any]:
        return handles[:1]

    def result(self, handle: Any) -> list[FileReport]:
        return check_batch(handle.batch, handle.opts)

    def close(self) -> None:
        pass


def open_engine(name: str, *, address: str | None = None, workers: int | None = None) -> Engine:
    """Start (or connect to) the engine ``name``; the caller closes it."""
    if name == "local":
        workers = workers or LOCAL_THREADS
        return LocalEngine(workers) if workers > 1 else InlineEngine()
    if name not in ENGINES:
        raise UsageError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
    address = address or os.environ.get(ADDRESS_ENV[name]) or None
    if name == "ray":
        from ckptlint.scanning.ray_engine import RayEngine

        return RayEngine(address, workers)
    from ckptlint.scanning.dask_engine import DaskEngine

    return DaskEngine(address, workers)


def run(
    engine: Engine, tasks: Iterable[FileTask], opts: ScanOptions, *, batch_size: int | None = None
) -> Iterator[tuple[FileTask, FileReport]]:
    """Check every task on ``engine``; yield ``(task, report)`` as batches finish, each task exactly once.

    When a worker dies (killed, out of memory, a crash in a native library), its batch is split and its files
    run again one per task; a file whose worker dies again becomes a suspect, run alone on the cluster (so
    that another file's crash is not blamed on it) until it has taken ``SINGLE_TRIES`` workers down with it,
    and is then reported as CK001.
    """
    size = batch_size or BATCH.get(engine.name, 32)
    fresh = _batches(iter(tasks), size)
    again: deque[list[FileTask]] = deque()  # files of a batch whose worker died, one per batch
    suspects: deque[tuple[FileTask, int]] = deque()  # (file, deaths while it ran alone)
    inflight: dict[Any, tuple[list[FileTask], int | None]] = {}  # handle -> (batch, deaths if run alone)
    limit = max(2 * engine.capacity, 2)
    while True:
        while len(inflight) < limit:
            if again:
                batch = again.popleft()
            elif (batch := next(fresh, None)) is None:
                break
            inflight[engine.submit(batch, opts)] = (batch, None)
        if not inflight and suspects:
            task, deaths = suspects.popleft()
            inflight[engine.submit([task], opts)] = ([task], deaths)
        if not inflight:
            return
        for handle in engine.wait(list(inflight)):
            batch, alone = inflight.pop(handle)
            try:
                reports = engine.result(handle)
                if len(reports) != len(batch):
                    raise RuntimeError(f"worker returned {len(reports)} reports for {len(batch)} files")
            except UsageError:
                raise
            except Exception as exc:
                if len(batch) > 1:
                    again.extend([t] for t in batch)
                elif alone is None:
                    suspects.append((batch[0], 0))
                elif alone + 1 < SINGLE_TRIES:
                    suspects.append((batch[0], alone + 1))
                else:
                    reason = f"the {engine.name} worker checking this file failed: {_why(exc)}"
                    yield batch[0], failed(batch[0], reason)
                continue
            yield from zip(batch, reports, strict=True)


def _batches(tasks: Iterator[FileTask], size: int) -> Iterator[list[FileTask]]:
    while chunk := list(islice(tasks, size)):
        yield chunk


def _why(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
