"""A loopback HTTP server that serves files with Range requests and counts every byte of body it sends."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeServer:
    """``with RangeServer(root) as srv: srv.url("a.safetensors"); srv.bytes_served; srv.requests``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bytes_served = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _target(self) -> Path | None:
                p = (server.root / self.path.lstrip("/").split("?", 1)[0]).resolve()
                return p if p.is_file() and server.root.resolve() in p.parents else None

            def do_HEAD(self) -> None:
                self._respond(head=True)

            def do_GET(self) -> None:
                self._respond(head=False)

            def _respond(self, head: bool) -> None:
                rng = self.headers.get("Range")
                with server._lock:
                    server.requests.append((self.command, self.path, rng))
                target = self._target()
                if target is None:
                    self.send_error(404)
                    return
                size = target.stat().st_size
                start, end = 0, size - 1
                status = 200
                if rng:
                    m = _RANGE.match(rng.strip())
                    if not m or (not m.group(1) and not m.group(2)):
                        self.send_error(416)
                        return
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                    else:  # suffix range: the last N bytes
                        start = max(size - int(m.group(2)), 0)
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.end_headers()
                        return
                    status = 206
                body_len = end - start + 1
                self.send_response(status)
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
                with server._lock:  # counted before sending, so a client never sees data not yet counted
                    server.bytes_served += len(data)
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def reset(self) -> None:
        with self._lock:
            self.bytes_served = 0
            self.requests.clear()

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
