"""Remote checkpoints (``https://``, ``s3://``, ``gs://``, ``hf://`` ...) read through fsspec, header bytes only.

``RemotePath`` stands in for ``pathlib.Path`` in the readers: it has the few methods they use (``open``, ``stat``,
``exists``, ``is_file``, ``is_dir``, ``read_bytes``, ``name``, ``parent``, ``/``...). Its files fetch byte ranges
on demand (``ckptlint.rangecache``: the first 16 KiB, then what each read touches plus a small read-ahead), so
reading a safetensors header costs the header, a zip's directory and pickles cost those bytes, and tensor data is
never downloaded. Its folders list their children once (``children``): a store's listing, or, for an http(s)
folder, the names a caller asks to probe. fsspec and the scheme's backend (aiohttp for https, s3fs, gcsfs,
huggingface_hub) are imported only when a URL is given.

A file's size comes from a listing when the scan listed its folder (``remember``, or the folder's children),
else, over http(s), from the first ranged GET (which also brings the first block: one request for a small
header), else from ``info``. Every request goes through ``netfaults.call``: retried with backoff on timeouts, 5xx,
429 (``Retry-After``) and truncated bodies, counted in the file's ``FetchStats`` (``--stats``), and a final
failure is a one-line ``UnreadableCheckpoint``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import IO, Any

from ckptlint import netfaults
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.rangecache import FIRST, SPARSE, Ranges, RemoteFile, View

# The first read of a file fetches this much (a safetensors header, a pickle's start); later reads fetch what
# they need plus a small read-ahead (``ckptlint.rangecache``).
BLOCK = FIRST
READ_AHEAD = BLOCK  # what one header read may fetch beyond the bytes it needs
PROBE_THREADS = 8  # names of an unlistable (http) folder probed at once


# what a listing already said about files about to be read (url -> fsspec info): read once, then forgotten
_listed: dict[str, dict[str, Any]] = {}
MAX_LISTED = 100_000


def remember(url: str, info: dict[str, Any]) -> None:
    """Let the next ``RemotePath(url)`` take ``info`` (type, size) from a listing instead of asking the server."""
    if len(_listed) < MAX_LISTED:
        _listed[url] = info


def is_remote(path: object) -> bool:
    """True for a URL with a scheme other than ``file://`` (``s3://``, ``gs://``, ``hf://``, ``https://``...)."""
    if isinstance(path, RemotePath):
        return True
    if not isinstance(path, str):
        return False
    head, sep, _ = path.partition("://")
    return bool(sep) and head.isascii() and head.replace("+", "").isalnum() and head != "file"


class RemotePath:
    """A remote file or folder, path-like enough for the readers (never ``os.PathLike``: it has no local path).

    A folder's ``children()`` come from one listing (s3, gs, hf, ...), or, where folders cannot be listed (an
    ``http(s)://`` URL ending in ``/``), from probing the names the caller gives; either way they are kept, so
    ``folder / name`` is the listed child (its size known, its fetched bytes shared) and a name a listing did
    not show is missing without asking the server again.
    """

    def __init__(
        self,
        url: str,
        fs: Any = None,
        fs_path: str | None = None,
        *,
        info: dict[str, Any] | None = None,
        parent: RemotePath | None = None,
    ) -> None:
        self.url = url
        if fs is None:
            fs, fs_path = filesystem(url)
        self._fs = fs
        self._path = fs_path if fs_path is not None else url
        self._info: dict[str, Any] | None = info
        self._first: bytes | None = None  # the first block, when the probe that told the size brought it
        self._ranges: Ranges | None = None
        self._parent = parent
        self._children: dict[str, RemotePath] | None = None
        # http(s) requests are counted by aiohttp's tracing (fsspec may send two for one ``info``); others here
        self._traced = bool(_protocols(fs) & HTTP)
        # a URL of an http(s) server ending in "/" is a folder that cannot be listed, only probed
        self.probed: tuple[str, ...] | None = None
        if self._traced and url.split("?", 1)[0].endswith("/") and info is None:
            self._info = {"type": "directory"}

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.split("?", 1)[0].rstrip("/"))

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> RemotePath:
        if self._parent is not None:
            return self._parent
        base = self.url.split("?", 1)[0].rstrip("/")
        return RemotePath(base.rsplit("/", 1)[0], self._fs, posixpath.dirname(self._path.rstrip("/")))

    def __truediv__(self, other: str) -> RemotePath:
        if self._children is not None:
            child = self._children.get(other)
            if child is not None:
                return child
            if self.probed is None:  # a listed folder: what the listing did not show is not there
                return self._child(other, {"type": "missing"})
        return self._child(other, None)

    def _child(self, name: str, info: dict[str, Any] | None) -> RemotePath:
        url = self.url.split("?", 1)[0].rstrip("/") + "/" + name
        return RemotePath(url, self._fs, self._path.rstrip("/") + "/" + name, info=info, parent=self)

    @property
    def listable(self) -> bool:
        """Whether the store lists folders (s3, gs, hf, ...; not plain http)."""
        return not self._traced

    def children(self, probe: Sequence[str] = ()) -> list[RemotePath]:
        """The folder's files and folders, sorted by name (one listing, kept); over http(s), the names of
        ``probe`` that exist (each asked for once: a ranged GET that also brings the file's first block)."""
        if self._children is None:
            if self.listable:
                found = self._list()
            else:
                self.probed = tuple(dict.fromkeys(probe))
                found = self._probe_names(self.probed)
            self._children = {c.name: c for c in sorted(found, key=lambda c: c.name)}
        return list(self._children.values())

    def _list(self) -> list[RemotePath]:
        # a listing the filesystem already holds (a scan listed the prefix) costs no request
        dircache = getattr(self._fs, "dircache", None)
        cached = dircache.get(self._path.rstrip("/")) if dircache is not None else None
        try:
            if cached is not None:
                entries = cached
            else:
                entries = netfaults.call(self.url, "list", lambda: self._fs.ls(self._path, detail=True))
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            name = posixpath.basename(str(entry.get("name", "")).rstrip("/"))
            kind = entry.get("type")
            if not name or kind not in ("file", "directory"):
                continue
            info = {"type": kind, "size": entry.get("size")} if kind == "file" else {"type": kind}
            if kind == "file" and not isinstance(info["size"], int):
                info = None  # asked for when needed
            out.append(self._child(name, info))
        return out

    def _probe_names(self, names: Sequence[str]) -> list[RemotePath]:
        import contextvars
        from concurrent.futures import ThreadPoolExecutor

        kids = [self._child(n, None) for n in names]

        def reach(kid: RemotePath) -> bool:
            return kid.exists()

        # each probe counts in the stats of the file being read: it runs in a copy of this thread's context
        contexts = [contextvars.copy_context() for _ in kids]
        with ThreadPoolExecutor(max_workers=PROBE_THREADS, thread_name_prefix="ckptlint-probe") as pool:
            found = list(pool.map(lambda c, k: c.run(reach, k), contexts, kids))
        return [k for k, ok in zip(kids, found, strict=True) if ok]

    def _details(self) -> dict[str, Any]:
        if self._info is None:
            self._info = _listed.pop(self.url, None)
        if self._info is None:
            try:
                if self._traced:  # http(s): one ranged GET tells the size and brings the first block
                    self._info, self._first = netfaults.call(self.url, "reach", self._probe, request=False)
                if self._info is None:
                    self._info = netfaults.call(
                        self.url, "reach", lambda: self._fs.info(self._path), request=not self._traced
                    )
            except FileNotFoundError as exc:
                self._info = {"type": "missing", "reason": getattr(exc, "reason", "not found")}
        return self._info

    @property
    def missing_reason(self) -> str:
        """Why the file is not there, as the contract words it: ``cannot reach remote file: not found (HTTP 404)``."""
        return f"cannot reach remote file: {self._details().get('reason', 'not found')}"

    def _probe(self) -> tuple[dict[str, Any] | None, bytes | None]:
        from fsspec.asyn import sync

        return sync(self._fs.loop, _probe_http, self._fs, self._path)

    def known_type(self) -> str | None:
        """``file``, ``directory`` or ``missing`` when already known, without asking the server."""
        return None if self._info is None else self._info.get("type")

    def exists(self) -> bool:
        return self._details().get("type") != "missing"

    def is_dir(self) -> bool:
        return self._details().get("type") == "directory"

    def is_file(self) -> bool:
        return self._details().get("type") == "file"

    def is_symlink(self) -> bool:
        return False

    def iterdir(self) -> Iterator[RemotePath]:
        return iter(self.children())

    def stat(self) -> SimpleNamespace:
        size = self._details().get("size")
        if size is None:
            raise UnreadableCheckpoint(
                self.url, "the server does not tell the file's size (no Content-Length)"
            )
        return SimpleNamespace(st_size=int(size))

    def open(self, mode: str = "rb") -> IO[bytes]:
        """A seekable binary file whose bytes are fetched by range request when read, each at most once."""
        if mode != "rb":
            raise ValueError("remote checkpoints are read-only")
        if self._ranges is None:  # one cache shared by every open(): sniff, then read
            size = self.stat().st_size
            raw = netfaults.call(
                self.url,
                "open",
                lambda: self._fs.open(self._path, "rb", block_size=BLOCK, cache_type="none", size=size),
                request=False,  # given the size, no backend asks the server anything to open a file
            )
            if hasattr(type(raw), "details"):  # fsspec files look the details up again (a HEAD) unless told
                raw.details = self._details()
            ranged = not self._details().get("no_ranges")
            self._ranges = Ranges(size, _Fetcher(self.url, raw, traced=self._traced, ranged=ranged))
            if self._first is not None:
                self._ranges.seed(0, self._first)
                self._first = None
        # io.BufferedReader gives the full file API (readline(limit), peek) that fsspec's file lacks; its buffer
        # is small, so that a small read far from the last one fetches little more than it needs
        return RemoteFile(View(self._ranges), buffer_size=SPARSE)

    def read_bytes(self) -> bytes:
        with self.open("rb") as fh:
            return fh.read()


NO_RANGES = (
    "cannot read remote file: the server does not honour byte ranges (it answered a Range request with the "
    "whole file); ckptlint reads headers only and never downloads whole weight files"
)


class _Fetcher:
    """One range request of a remote file, retried, checked for truncation and counted (``netfaults``).

    fsspec's file object does the backend's range request (``_fetch_range``, which refuses to stream a whole file
    from a server that ignores ``Range``). ``ranged=False``: the size probe found that the server ignores
    ``Range``; every byte beyond the first block it brought is refused (``NO_RANGES``) without another request.
    """

    def __init__(self, url: str, raw: Any, *, traced: bool, ranged: bool = True) -> None:
        self.url = url
        self._raw = raw
        self._traced = traced
        self._ranged = ranged

    def __call__(self, start: int, stop: int) -> bytes:
        if not self._ranged:
            raise netfaults.refuse(self.url, NO_RANGES)

        def request() -> bytes:
            fetch = getattr(self._raw, "_fetch_range", None)  # fsspec's buffered files (http, s3, gs, hf)
            if fetch is not None:
                try:
                    data = fetch(start, stop)
                except ValueError as exc:  # fsspec's http file: a 200 (whole body) to a Range request
                    if "range requests" in str(exc):
                        raise netfaults.refuse(self.url, NO_RANGES) from None
                    raise
            else:  # any other file object fsspec returns (memory://, local caches)
                self._raw.seek(start)
                data = self._raw.read(stop - start)
            if not self._traced:
                netfaults.count(len(data))
            if len(data) != stop - start:
                raise netfaults.Truncated(
                    f"truncated response: {len(data)} of {stop - start} bytes at offset {start}"
                )
            return data

        return netfaults.call(self.url, "read", request, request=not self._traced)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` (with this process's timeouts) and the path inside it."""
    try:
        import fsspec
    except ImportError:
        raise UnreadableCheckpoint(
            url, "remote inputs need fsspec (pip install 'ckptlint[remote]')"
        ) from None
    try:
        protocol = fsspec.core.split_protocol(url)[0] or "file"
        return fsspec.core.url_to_fs(url, **_storage_options(protocol, netfaults.policy().timeout))
    except (ImportError, ValueError) as exc:
        raise UnreadableCheckpoint(url, f"cannot open this kind of URL: {exc}") from None


HTTP = frozenset({"http", "https"})
_trace: list[Any] = []  # one aiohttp TraceConfig per process (fsspec reuses a filesystem for equal options)


def _protocols(fs: Any) -> set[str]:
    proto = getattr(fs, "protocol", ())
    return {proto} if isinstance(proto, str) else set(proto)


def _storage_options(protocol: str, timeout: float) -> dict[str, Any]:
    """Per-request timeouts for the backends that take them (a silent server must not hang a scan)."""
    if protocol in HTTP:
        import aiohttp

        return {
            "client_kwargs": {
                "timeout": aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout),
                "trace_configs": [_http_trace()],
            }
        }
    if protocol in ("s3", "s3a"):
        return {"config_kwargs": {"connect_timeout": timeout, "read_timeout": timeout}}
    return {}


async def _probe_http(fs: Any, url: str) -> tuple[dict[str, Any] | None, bytes | None]:
    """GET the first ``BLOCK`` bytes: the file's size (``Content-Range``) and block 0 in one request.

    Replaces fsspec's ``info`` (a HEAD, then the ranged GET that any read needs anyway). ``(None, None)`` when
    the answer tells no size: the caller then asks ``info``. A server that ignores ``Range`` (200) is read for
    ``BLOCK`` bytes only and the connection dropped, never the whole file; the info then says ``no_ranges``
    (a larger file's later reads are refused: ``NO_RANGES``).
    """
    session = await fs.set_session()
    kwargs = dict(fs.kwargs)
    headers = {**kwargs.pop("headers", {}), "Range": f"bytes=0-{BLOCK - 1}", "Accept-Encoding": "identity"}
    async with session.get(fs.encode_url(url), headers=headers, **kwargs) as r:
        if r.status in (404, 410):
            missing = FileNotFoundError(url)
            missing.reason = f"{'not found' if r.status == 404 else 'gone'} (HTTP {r.status})"  # type: ignore[attr-defined]
            raise missing
        if r.status == 416:  # an empty file: no byte 0 to send
            return {"type": "file", "size": 0}, b""
        r.raise_for_status()
        size: int | None = None
        if r.status == 206:
            total = r.headers.get("Content-Range", "").rpartition("/")[2]
            size = int(total) if total.isdigit() else None
        elif r.headers.get("Content-Encoding", "identity") in ("identity", ""):
            length = r.headers.get("Content-Length", "")
            size = int(length) if length.isdigit() else None
        if size is None:
            return None, None
        want = min(BLOCK, size)
        if r.status == 206:
            data = await r.read()  # counted by the trace
        else:
            chunks: list[bytes] = []
            got = 0
            while got < want and (chunk := await r.content.read(want - got)):
                chunks.append(chunk)
                got += len(chunk)
            data = b"".join(chunks)
            netfaults.count(len(data))
    if len(data) < want:
        raise netfaults.Truncated(f"truncated response: {len(data)} of {want} bytes at offset 0")
    info: dict[str, Any] = {"type": "file", "size": size}
    if r.status != 206 and size > want:
        info["no_ranges"] = True
    return info, data[:want]


def _http_trace() -> Any:
    """Count every http request and body byte in the stats of the file being read (``--stats``).

    aiohttp runs the callbacks inside fsspec's event loop, in a task that inherited the context of the thread
    that asked for the read, so ``netfaults`` sees that file's stats.
    """
    if not _trace:
        import aiohttp

        async def on_request(*_: Any) -> None:
            netfaults.count(0, requests=1)

        async def on_body(_session: Any, _ctx: Any, params: Any) -> None:
            netfaults.count(len(params.chunk))

        config = aiohttp.TraceConfig()
        config.on_request_start.append(on_request)
        config.on_response_chunk_received.append(on_body)
        config.freeze()
        _trace.append(config)
    return _trace[0]


def zip_source(path: Any) -> Any:
    """What ``zipfile.ZipFile`` should open: a local path as is, a remote file as a seekable file object."""
    return path.open("rb") if isinstance(path, RemotePath) else path
