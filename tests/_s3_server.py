"""moto's S3 server (the real S3 HTTP API, in memory) in a child process, holding a folder's files as objects.

``with S3Server(seed_dir, bucket) as s3: s3.endpoint`` — every file under ``seed_dir`` becomes the object
``bucket/<relative path>``. The objects are stored by moto's own S3 backend inside the server process before it
starts serving (uploading thousands of files through the API would take most of a test's time); everything the
tests read goes through moto's S3 HTTP API. Only the S3 app is served (moto's multi-service dispatcher would
double the cost of each request).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    def __init__(self, seed_dir: Path, bucket: str) -> None:
        self.seed_dir = seed_dir
        self.bucket = bucket
        self.endpoint = ""
        self._proc: subprocess.Popen[str] | None = None

    def served(self) -> dict[str, int]:
        """Body bytes the server sent for each object (``bucket/key``) since it started: GETs of objects only
        (not listings), counted inside the server process as each response body is written."""
        import json
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint}/{_SERVED}") as r:
            return json.loads(r.read())

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 / s3fs (in this process or a child) at the server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def __enter__(self) -> S3Server:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, str(self.seed_dir), self.bucket],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **CREDENTIALS},
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self._proc.kill()
            raise RuntimeError(f"moto S3 server did not start: {line!r}")
        self.endpoint = line
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=30)


_SERVED = "__served_bytes__"


def _counting(app):
    """``app`` that counts the body bytes of every object GET (path ``/bucket/key``, no query) by object, and
    answers ``GET /__served_bytes__`` with those counts as JSON."""
    import json
    import threading
    from collections import Counter

    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def wrapped(environ, start_response):
        path = environ.get("PATH_INFO", "").lstrip("/")
        if path == _SERVED:
            with lock:
                body = json.dumps(dict(counts)).encode()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        is_object_get = environ["REQUEST_METHOD"] == "GET" and not environ.get("QUERY_STRING") and "/" in path
        out = app(environ, start_response)
        if not is_object_get:
            return out

        def body():
            try:
                for chunk in out:
                    with lock:
                        counts[path] += len(chunk)
                    yield chunk
            finally:
                close = getattr(out, "close", None)
                if close is not None:
                    close()

        return body()

    return wrapped


def _serve(seed_dir: Path, bucket: str) -> None:
    import logging

    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.moto_server.werkzeug_app import create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    backend = get_backend("s3")[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(bucket, "us-east-1")
    for path in sorted(seed_dir.rglob("*")):
        if path.is_file():
            backend.put_object(bucket, path.relative_to(seed_dir).as_posix(), path.read_bytes())
    server = make_server("127.0.0.1", 0, _counting(create_backend_app("s3")), threaded=True)
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), sys.argv[2])
