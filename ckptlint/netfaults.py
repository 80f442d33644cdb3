"""Network faults of remote reads: which are worth a retry, how long to wait, and the one-line reason otherwise.

fsspec backends report failures in their own types (aiohttp's ``ClientResponseError`` with ``status`` and
``headers``; fsspec's http ``info`` wraps any failure in ``FileNotFoundError`` with the real cause chained;
s3fs/gcsfs raise ``FileNotFoundError``/``PermissionError`` or botocore errors; huggingface_hub's errors carry an
httpx ``response``). ``classify`` walks the exception chain and reads those attributes by name, so no backend
is imported here.

``call`` runs one request with retries: timeouts, connection resets, truncated bodies, 5xx, 408 and 429 are
retried with exponential backoff (429/503 honour ``Retry-After``); 4xx are final. Every request is counted in the
``FetchStats`` of the file being read (a context variable: each file is read in one thread).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from ckptlint.errors import UnreadableCheckpoint
from ckptlint.record import field, record

T = TypeVar("T")

_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_STATUS_WORDS = {401: "not authorised", 403: "access denied", 404: "not found", 410: "gone"}
# exception class names (anywhere in the MRO) that mean "the connection broke": worth another try
_TRANSIENT_NAMES = frozenset(
    {
        "ClientPayloadError",
        "ClientConnectionError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ConnectionError",
        "IncompleteRead",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "EndpointConnectionError",
        "ConnectionClosedError",
    }
)


@record(frozen=True)
class RetryPolicy:
    """How hard to try one remote request (travels with each batch to Ray/Dask workers)."""

    attempts: int = 4  # the first try included
    backoff: float = 0.25  # seconds before the first retry; doubled each time, with jitter
    max_backoff: float = 8.0
    max_retry_after: float = 60.0  # a server asking for a longer wait is not waited for
    timeout: float = 30.0  # seconds without progress on one request (connect or read)


@record
class FetchStats:
    """What reading one remote file cost: body bytes received and requests sent (retries included)."""

    bytes: int = 0
    requests: int = 0
    retries: int = 0
    failure: str | None = None  # the final network failure, if any (kept even if a reader re-wraps it)


_policy = RetryPolicy()
_current: contextvars.ContextVar[FetchStats | None] = contextvars.ContextVar("ckptlint_fetch", default=None)


def configure(policy: RetryPolicy) -> None:
    """Set the retry policy of this process (each batch sets it before reading)."""
    global _policy
    _policy = policy


def policy() -> RetryPolicy:
    return _policy


@contextmanager
def collecting() -> Iterator[FetchStats]:
    """Count the requests made by this thread while the block runs."""
    stats = FetchStats()
    token = _current.set(stats)
    try:
        yield stats
    finally:
        _current.reset(token)


def count(nbytes: int, requests: int = 0) -> None:
    """Add ``nbytes`` of received body (and ``requests`` sent) to the current file's stats."""
    stats = _current.get()
    if stats is not None:
        stats.bytes += nbytes
        stats.requests += requests


@record
class Fault:
    """A classified failure."""

    retry: bool
    reason: str
    wait: float | None = None  # Retry-After, in seconds
    status: int | None = None
    missing: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def classify(exc: BaseException) -> Fault:
    """Decide whether ``exc`` is worth a retry, and say it in one line."""
    chain = list(_chain(exc))
    for e in chain:
        status = _status_of(e)
        if status is None:
            continue
        word = _STATUS_WORDS.get(status) or ("server error" if status >= 500 else "refused")
        if status == 429:
            word = "rate limited"
        return Fault(
            retry=status in _RETRY_STATUS,
            reason=f"{word} (HTTP {status})",
            wait=_retry_after(e),
            status=status,
            missing=status in (404, 410),
        )
    for e in chain:
        names = {c.__name__ for c in type(e).__mro__}
        if isinstance(e, TimeoutError) or "TimeoutError" in names or "ReadTimeoutError" in names:
            return Fault(retry=True, reason=f"timed out (no answer within {_policy.timeout:g} s)")
        if isinstance(e, Truncated):
            return Fault(retry=True, reason=str(e))
        if names & _TRANSIENT_NAMES or isinstance(e, ConnectionError):
            return Fault(retry=True, reason=f"connection failed: {_short(e)}")
    for e in chain:
        if isinstance(e, FileNotFoundError):
            return Fault(retry=False, reason=getattr(e, "reason", "not found"), missing=True)
        if isinstance(e, PermissionError):
            return Fault(retry=False, reason=f"access denied: {_short(e)}")
    return Fault(retry=False, reason=_short(exc))


class Truncated(OSError):
    """A response body shorter than the bytes asked for (connection cut, or a lying server)."""


def call(url: str, what: str, fn: Callable[[], T], *, request: bool = True) -> T:
    """Run ``fn`` with the process's retry policy; a final failure is ``UnreadableCheckpoint``.

    ``request``: ``fn`` sends one request (counted in the file's stats); else it only prepares one.
    """
    stats = _current.get()
    pol = _policy
    for attempt in range(1, pol.attempts + 1):
        if stats is not None and request:
            stats.requests += 1
        try:
            return fn()
        except UnreadableCheckpoint:
            raise
        except Exception as exc:
            fault = classify(exc)
            if fault.missing and what == "reach":
                missing = FileNotFoundError(url)  # the caller decides what a missing file means
                missing.reason = fault.reason  # type: ignore[attr-defined]  # "not found (HTTP 404)"
                raise missing from None
            if not fault.retry or attempt == pol.attempts:
                tries = f" after {attempt} attempts" if fault.retry and attempt > 1 else ""  # retries ran out
                reason = f"cannot {what} remote file: {fault.reason}{tries}"
                if stats is not None:
                    stats.failure = reason
                raise UnreadableCheckpoint(url, reason) from None
            wait = _backoff(pol, attempt, fault.wait)
            if wait is None:
                reason = (
                    f"cannot {what} remote file: {fault.reason}, and the server asks to wait {fault.wait:g} s"
                )
                if stats is not None:
                    stats.failure = reason
                raise UnreadableCheckpoint(url, reason) from None
            if stats is not None:
                stats.retries += 1
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def refuse(url: str, reason: str) -> UnreadableCheckpoint:
    """A final failure that no retry can change (a server that ignores ``Range``), kept in the file's stats as
    ``call``'s failures are (a reader that re-words it does not hide it)."""
    stats = _current.get()
    if stats is not None:
        stats.failure = reason
    return UnreadableCheckpoint(url, reason)


def _backoff(pol: RetryPolicy, attempt: int, retry_after: float | None) -> float | None:
    if retry_after is not None:
        return retry_after if retry_after <= pol.max_retry_after else None
    base = min(pol.backoff * 2 ** (attempt - 1), pol.max_backoff)
    import random  # only when a request is retried (start-up time)

    return base * (0.5 + random.random() / 2)  # jitter: many workers hitting one server do not retry in step


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _status_of(e: BaseException) -> int | None:
    status = getattr(e, "status", None)  # aiohttp ClientResponseError
    if isinstance(status, int) and 100 <= status < 600:
        return status
    response = getattr(e, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(code, int):
            return code
    code = getattr(response, "status_code", None)  # requests / httpx (huggingface_hub's HfHubHTTPError)
    return code if isinstance(code, int) and 100 <= code < 600 else None


def _retry_after(e: BaseException) -> float | None:
    headers = getattr(e, "headers", None)
    if headers is None:
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            headers = response.get("ResponseMetadata", {}).get("HTTPHeaders")
        else:
            headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
