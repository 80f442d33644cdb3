"""Remote checkpoints (``https://``, ``s3://``, ``gs://``, ``hf://`` ...) read through fsspec, header bytes only.

``RemotePath`` stands in for ``pathlib.Path`` in the readers: it has the few methods they use (``open``, ``stat``,
``exists``, ``is_file``, ``is_dir``, ``read_bytes``, ``name``...). Its files fetch byte ranges on demand with a
small read-ahead, so reading a safetensors header costs the header, a zip's directory and member headers cost
those bytes, and tensor data is never downloaded. fsspec and the scheme's backend (aiohttp for https, s3fs,
gcsfs, huggingface_hub) are imported only when a URL is given.
"""

from __future__ import annotations

import io
import posixpath
from types import SimpleNamespace
from typing import IO, Any

from ckptlint.errors import UnreadableCheckpoint

# Range requests fetch whole blocks of this size (each block once, kept in an LRU of MAX_BLOCKS): a typical
# safetensors header or zip member header costs one request, small next to any tensor.
BLOCK = 16 * 1024
MAX_BLOCKS = 256
READ_AHEAD = BLOCK  # what one header read may fetch beyond the bytes it needs


def is_remote(path: object) -> bool:
    """True for a URL with a scheme other than ``file://`` (``s3://``, ``gs://``, ``hf://``, ``https://``...)."""
    if isinstance(path, RemotePath):
        return True
    if not isinstance(path, str):
        return False
    head, sep, _ = path.partition("://")
    return bool(sep) and head.isascii() and head.replace("+", "").isalnum() and head != "file"


class RemotePath:
    """A remote file, path-like enough for the readers (never ``os.PathLike``: it has no local path)."""

    def __init__(self, url: str, fs: Any = None, fs_path: str | None = None) -> None:
        self.url = url
        if fs is None:
            fs, fs_path = _filesystem(url)
        self._fs = fs
        self._path = fs_path if fs_path is not None else url
        self._info: dict[str, Any] | None = None
        self._file: Any = None

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
        base = self.url.split("?", 1)[0].rstrip("/")
        return RemotePath(base.rsplit("/", 1)[0], self._fs, posixpath.dirname(self._path.rstrip("/")))

    def __truediv__(self, other: str) -> RemotePath:
        return RemotePath(self.url.rstrip("/") + "/" + other, self._fs, self._path.rstrip("/") + "/" + other)

    def _details(self) -> dict[str, Any]:
        if self._info is None:
            try:
                self._info = self._fs.info(self._path)
            except FileNotFoundError:
                self._info = {"type": "missing"}
            except Exception as exc:  # network, auth, a server error: one line, exit 2
                raise UnreadableCheckpoint(
                    self.url, f"cannot reach remote file: {type(exc).__name__}: {exc}"
                ) from None
        return self._info

    def exists(self) -> bool:
        return self._details().get("type") != "missing"

    def is_dir(self) -> bool:
        return self._details().get("type") == "directory"

    def is_file(self) -> bool:
        return self._details().get("type") == "file"

    def stat(self) -> SimpleNamespace:
        size = self._details().get("size")
        if size is None:
            raise UnreadableCheckpoint(
                self.url, "the server does not tell the file's size (no Content-Length)"
            )
        return SimpleNamespace(st_size=int(size))

    def open(self, mode: str = "rb") -> IO[bytes]:
        """A seekable binary file: blocks of ``BLOCK`` bytes fetched by range request, each at most once."""
        if mode != "rb":
            raise ValueError("remote checkpoints are read-only")
        if self._file is None:  # one fsspec file (and block cache) shared by every open(): sniff, then read
            self._file = self._fs.open(
                self._path,
                "rb",
                block_size=BLOCK,
                cache_type="blockcache",
                cache_options={"maxblocks": MAX_BLOCKS},
            )
        # io.BufferedReader gives the full file API (readline(limit), peek) that fsspec's file lacks
        return io.BufferedReader(_View(self._file), buffer_size=4096)

    def read_bytes(self) -> bytes:
        with self.open("rb") as fh:
            return fh.read()


class _View(io.RawIOBase):
    """An independent read position over the shared remote file; closing it leaves the shared file open."""

    def __init__(self, shared: Any) -> None:
        super().__init__()
        self._shared = shared
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._shared.seek(self._pos)
        data = self._shared.read(len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._shared.size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise UnreadableCheckpoint(
            url, "remote inputs need fsspec (pip install 'ckptlint[remote]')"
        ) from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise UnreadableCheckpoint(url, f"cannot open this kind of URL: {exc}") from None


def zip_source(path: Any) -> Any:
    """What ``zipfile.ZipFile`` should open: a local path as is, a remote file as a seekable file object."""
    return path.open("rb") if isinstance(path, RemotePath) else path
