"""``--engine dask``: batches of files as Dask futures (``pip install 'ckptlint[dask]'``).

Connects to the scheduler at ``address`` (``--engine-address`` or ``DASK_SCHEDULER_ADDRESS``), or starts a local
cluster of worker processes (closed again on ``close``). Workers need ckptlint importable. The scheduler re-runs
a task whose worker died (up to its ``allowed-failures``); what still fails is handled by ``engines.run``.
"""

from __future__ import annotations

import logging
from typing import Any

from ckptlint.errors import UsageError
from ckptlint.scanning.task import FileTask, ScanOptions, check_batch


class DaskEngine:
    name = "dask"

    def __init__(self, address: str | None, workers: int | None) -> None:
        try:
            import distributed
        except ImportError:
            raise UsageError("--engine dask needs Dask (pip install 'ckptlint[dask]')") from None
        self._distributed = distributed
        self._cluster = None
        if address:
            try:
                self._client = distributed.Client(address, timeout="20s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise UsageError(f"cannot connect to the Dask scheduler at {address}: {exc}") from None
        else:
            import dask

            # a batch whose worker died is re-run by engines.run, file by file: the scheduler need not insist
            with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
                self._cluster = distributed.LocalCluster(
                    n_workers=workers or None,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            self._client = distributed.Client(self._cluster)
        self.capacity = max(sum(self._client.nthreads().values()), 1)

    def submit(self, batch: list[FileTask], opts: ScanOptions) -> Any:
        return self._client.submit(check_batch, batch, opts, pure=False)

    def wait(self, handles: list[Any]) -> list[Any]:
        return list(self._distributed.wait(handles, return_when="FIRST_COMPLETED").done)

    def result(self, handle: Any) -> Any:
        try:
            return handle.result()
        finally:
            handle.release()

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()
