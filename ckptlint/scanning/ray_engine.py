"""``--engine ray``: batches of files as Ray tasks (``pip install 'ckptlint[ray]'``).

Connects to ``address`` (``--engine-address`` or ``RAY_ADDRESS``), reuses a Ray runtime this process already
started, or starts a local one (stopped again on ``close``). Workers need ckptlint importable (installed, or on
their ``PYTHONPATH``). Ray re-runs a task whose worker died (``max_retries``); what still fails is handled by
``engines.run``.
"""

from __future__ import annotations

import logging
from typing import Any

from ckptlint.errors import UsageError
from ckptlint.scanning.task import FileTask, ScanOptions, check_batch

MAX_RETRIES = 1  # Ray's own re-runs of a batch whose worker process died


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None, workers: int | None) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError("--engine ray needs Ray (pip install 'ckptlint[ray]')") from None
        self._ray = ray
        self._owned = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
            try:
                ray.init(
                    **kwargs,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,  # stderr stays for ckptlint's own line
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UsageError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
            self._owned = True
        self.capacity = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        self._remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(check_batch)

    def submit(self, batch: list[FileTask], opts: ScanOptions) -> Any:
        return self._remote.remote(batch, opts)

    def wait(self, handles: list[Any]) -> list[Any]:
        ready, _ = self._ray.wait(handles, num_returns=1)
        return ready

    def result(self, handle: Any) -> Any:
        return self._ray.get(handle)

    def close(self) -> None:
        if self._owned:
            self._ray.shutdown()
