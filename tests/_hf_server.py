"""A loopback server speaking the subset of the Hugging Face Hub's HTTP API that ``huggingface_hub``'s
``HfFileSystem`` uses to read files (pointed to with ``HF_ENDPOINT``): repo info, tree listing, paths-info and
``resolve`` downloads with Range support. Repositories are folders ``root/<org>/<repo>/``; every revision serves
the same files. Counts every request and body byte per file, like ``_range_server``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
SHA = "0123456789abcdef0123456789abcdef01234567"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class HubServer:
    """``with HubServer(root) as hub: hub.endpoint``; ``hub.downloads[path]`` and ``hub.bytes_served[path]``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.downloads: Counter[str] = Counter()  # "org/repo/path" -> resolve requests
        self.bytes_served: Counter[str] = Counter()
        self.api_calls: Counter[str] = Counter()  # "info" | "tree" | "paths-info"
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, doc: object, status: int = 200, error_code: str | None = None) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if error_code:
                    self.send_header("X-Error-Code", error_code)
                self.end_headers()
                self.wfile.write(body)

            def _repo(self, org: str, name: str) -> Path | None:
                repo = hub.root / org / name
                return repo if repo.is_dir() else None

            def _entry(self, repo: Path, path: Path) -> dict:
                rel = path.relative_to(repo).as_posix()
                if path.is_dir():
                    return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "path": rel}
                return {
                    "type": "file",
                    "oid": hashlib.sha1(path.read_bytes()).hexdigest(),
                    "size": path.stat().st_size,
                    "path": rel,
                }

            def do_GET(self) -> None:
                self._dispatch(head=False)

            def do_HEAD(self) -> None:
                self._dispatch(head=True)

            def do_POST(self) -> None:
                parts = unquote(urlsplit(self.path).path).strip("/").split("/")
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                # /api/models/<org>/<repo>/paths-info/<rev>
                if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "paths-info":
                    repo = self._repo(parts[2], parts[3])
                    if repo is None:
                        return self._json({"error": "Repository not found"}, 404, "RepoNotFound")
                    with hub._lock:
                        hub.api_calls["paths-info"] += 1
                    found = [repo / p for p in form.get("paths", []) if (repo / p).exists()]
                    return self._json([self._entry(repo, p) for p in found])
                return self._json({"error": "not found"}, 404)

            def _dispatch(self, head: bool) -> None:
                parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    repo = self._repo(parts[2], parts[3])
                    if repo is None:
                        return self._json({"error": "Repository not found"}, 404, "RepoNotFound")
                    if len(parts) == 4 or parts[4] == "revision":  # repo info
                        with hub._lock:
                            hub.api_calls["info"] += 1
                        return self._json({"id": f"{parts[2]}/{parts[3]}", "sha": SHA, "private": False})
                    if parts[4] == "tree":  # /tree/<rev>[/<path>] (the path comes %2F-encoded: one part)
                        with hub._lock:
                            hub.api_calls["tree"] += 1
                        folder = repo.joinpath(*parts[6:]) if len(parts) > 6 else repo
                        if not folder.is_dir():
                            return self._json({"error": "Entry not found"}, 404, "EntryNotFound")
                        return self._json([self._entry(repo, p) for p in sorted(folder.iterdir())])
                    return self._json({"error": "not found"}, 404)
                # /<org>/<repo>/resolve/<rev>/<path...>
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo = self._repo(parts[0], parts[1])
                    target = repo.joinpath(*parts[4:]) if repo else None
                    if target is None or not target.is_file():
                        return self._json({"error": "Entry not found"}, 404, "EntryNotFound")
                    return self._file(target, "/".join([parts[0], parts[1], *parts[4:]]), head)
                return self._json({"error": "not found"}, 404)

            def _file(self, target: Path, key: str, head: bool) -> None:
                size = target.stat().st_size
                start, end, status = 0, size - 1, 200
                m = _RANGE.match((self.headers.get("Range") or "").strip())
                if m:
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                    status = 206
                data = b"" if head else target.read_bytes()[start : end + 1]
                self.send_response(status)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("ETag", f'"{hashlib.sha1(target.read_bytes()).hexdigest()}"')
                self.send_header("X-Repo-Commit", SHA)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                with hub._lock:
                    hub.downloads[key] += 1
                    hub.bytes_served[key] += len(data)
                self.wfile.write(data)

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
