"""A loopback HTTP server that serves files with Range requests, counts every byte of body it sends, and
injects faults on request: error statuses (503, 429 with Retry-After, 403, 404), truncated bodies, latency, a
stall longer than the client's timeout, and killing the client process that asked (a worker dying mid-read)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or before) serving one request.

    ``status``: answer with this HTTP status (``retry_after`` adds the header); ``truncate``: send only this many
    bytes of the body (Content-Length announces all of it), then close; ``delay``: sleep first, then serve;
    ``kill``: SIGKILL the process that owns the client socket; ``ignore_range``: answer 200 with the whole
    file, as servers without Range support do.
    """

    status: int | None = None
    retry_after: str | None = None
    truncate: int | None = None
    delay: float = 0.0
    kill: bool = False
    ignore_range: bool = False


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that were killed or gave up mid-request (the faults under test)


class RangeServer:
    """``with RangeServer(root) as srv: srv.url("a.safetensors"); srv.bytes_served; srv.requests``.

    ``srv.inject(name, fault, ...)`` queues faults for the next requests of ``name`` (one each);
    ``srv.always[name] = fault`` applies to every request of ``name``; ``srv.latency`` delays every request;
    ``srv.ranges = False`` makes it a server without Range support (``python -m http.server``): every GET is
    answered 200 with the whole file, and no ``Accept-Ranges`` header is sent.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bytes_served = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self.bytes_by_path: Counter[str] = Counter()
        self.requests_by_path: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}  # name -> monotonic arrival time of each request
        self.latency = 0.0
        self.ranges = True
        self.always: dict[str, Fault] = {}
        self.killed: list[int] = []
        self._queued: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers

            def log_message(self, *args: object) -> None:
                pass

            def _name(self) -> str:
                return self.path.lstrip("/").split("?", 1)[0]

            def _target(self) -> Path | None:
                p = (server.root / self._name()).resolve()
                return p if p.is_file() and server.root.resolve() in p.parents else None

            def do_HEAD(self) -> None:
                self._respond(head=True)

            def do_GET(self) -> None:
                self._respond(head=False)

            def _fail(self, status: int, retry_after: str | None = None) -> None:
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _respond(self, head: bool) -> None:
                rng = self.headers.get("Range")
                name = self._name()
                with server._lock:
                    server.requests.append((self.command, self.path, rng))
                    server.requests_by_path[name] += 1
                    server.times.setdefault(name, []).append(time.monotonic())
                    queue = server._queued.get(name)
                    fault = queue.popleft() if queue else server.always.get(name)
                if server.latency:
                    time.sleep(server.latency)
                if fault is not None and fault.delay:
                    time.sleep(fault.delay)
                if fault is not None and fault.kill:
                    server._kill_client(self.client_address)
                    self.close_connection = True
                    return
                if fault is not None and fault.status is not None:
                    self._fail(fault.status, fault.retry_after)
                    return
                target = self._target()
                if target is None:
                    self._fail(404)
                    return
                size = target.stat().st_size
                start, end = 0, size - 1
                status = 200
                if rng and server.ranges and not (fault is not None and fault.ignore_range):
                    m = _RANGE.match(rng.strip())
                    if not m or (not m.group(1) and not m.group(2)):
                        self._fail(416)
                        return
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                    else:  # suffix range: the last N bytes
                        start = max(size - int(m.group(2)), 0)
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body_len = end - start + 1
                self.send_response(status)
                if server.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(body_len))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if head:
                    return
                with target.open("rb") as fh:
                    fh.seek(start)
                    data = fh.read(body_len)
                if fault is not None and fault.truncate is not None:
                    data = data[: fault.truncate]
                    self.close_connection = True
                with server._lock:  # counted before sending, so a client never sees data not yet counted
                    server.bytes_served += len(data)
                    server.bytes_by_path[name] += len(data)
                try:
                    self.wfile.write(data)
                except OSError:  # the client hung up (it wanted only the first bytes)
                    self.close_connection = True

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.request_queue_size = 256  # many concurrent clients (threads, workers)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def inject(self, name: str, *faults: Fault) -> None:
        with self._lock:
            self._queued.setdefault(name, deque()).extend(faults)

    def reset(self) -> None:
        with self._lock:
            self.bytes_served = 0
            self.requests.clear()
            self.bytes_by_path.clear()
            self.requests_by_path.clear()
            self.times.clear()
            self.always.clear()
            self._queued.clear()
            self.latency = 0.0
            self.ranges = True

    def _kill_client(self, peer: tuple[str, int]) -> None:
        """SIGKILL the local process whose socket is the other end of this connection."""
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and (conn.laddr.ip, conn.laddr.port) == tuple(peer[:2]) and conn.pid:
                if conn.pid != os.getpid():
                    os.kill(conn.pid, signal.SIGKILL)
                    with self._lock:
                        self.killed.append(conn.pid)
                return

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
