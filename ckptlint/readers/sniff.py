"""Find a file's format from its first bytes, never from its extension alone.

The order follows the loaders that could run code from the file, so that the most dangerous reading wins:
``torch.load`` takes a file starting with ``PK\\x03\\x04`` as a zip, else a file ``tarfile`` opens as a
tar-format torch file (torch's own test), else a pickle; ``np.load(allow_pickle=True)`` and ``pickle.load``
unpickle anything that is not a zip or npy; ``joblib.load`` decompresses a file that starts with a compressor's
magic. So a tar file and a compressed pickle are sniffed as ``pickle`` (whose reader handles them), and a file
that sniffs as safetensors, flax msgpack, an npz/torch zip not starting with a local header, or nothing known is
read as ``pickle.load`` would read it from its first byte too (:mod:`ckptlint.readers.pickle_probe`): when that
reading imports a global outside the safe set, the file is a polyglot and is read as the pickle it also is.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers.jsonfile import load_json
from ckptlint.readers.tar_probe import is_torch_tar

HEAD_BYTES = 512
ZIP_LOCAL = b"PK\x03\x04"
ZIP_MAGICS = (ZIP_LOCAL, b"PK\x05\x06")
NPY_MAGIC = b"\x93NUMPY"
# pickle opcodes a protocol 0/1 stream can start with when it holds a container of tensors
_PICKLE_V0_FIRST = frozenset(b"(}])cIJKLMNFGSTUVXBCP\x95\x96")
# opcodes an unpickler accepts as the first of a stream (they need nothing on the stack); files of other formats
# that start with one of them are also walked as pickles (see the module docstring)
_STREAM_FIRST = frozenset(b"(}])cIJKLMNFGSTUVXBC\x80\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x95\x96")
_POLYGLOT_KINDS = frozenset({"safetensors", "flax-msgpack", "npz", "torch-zip"})


def sniff(path: Path) -> str:
    """Return the reader name for ``path`` (a file or a directory) or raise ``UnreadableCheckpoint``."""
    if path.is_dir():
        return "directory"
    if not path.exists():  # a URL says why (``cannot reach remote file: not found (HTTP 404)``)
        raise UnreadableCheckpoint(str(path), getattr(path, "missing_reason", "no such file or directory"))
    if not path.is_file():
        raise UnreadableCheckpoint(str(path), "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise UnreadableCheckpoint(str(path), "empty file")
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
            if head.startswith(ZIP_LOCAL):
                return _sniff_zip(path)
            if is_torch_tar(fh):
                return "pickle"
            if _compressed_pickle(head):
                return "pickle"
            kind: str | None = None
            error: UnreadableCheckpoint | None = None
            try:
                kind = sniff_bytes(head, size, path)
            except UnreadableCheckpoint as exc:
                error = exc
            probe = (kind is None or kind in _POLYGLOT_KINDS) and head[0] in _STREAM_FIRST
            if probe:
                # imported here: the pickle machinery costs ~10 ms of start-up that most files never need
                from ckptlint.readers.pickle_probe import pickle_view

                if pickle_view(fh, path.name, evidence=kind is None).unsafe:
                    return "pickle"
    except OSError as exc:
        raise UnreadableCheckpoint(str(path), f"cannot open: {exc.strerror or exc}") from None
    if error is not None:
        raise error
    assert kind is not None
    return kind


# joblib's compressors (joblib/compressor.py): magic prefixes joblib.load decompresses
_JOBLIB_MAGIC = (b"\x78", b"\x1f\x8b", b"BZh", b"\xfd\x37\x7a\x58\x5a", b"\x5d\x00\x00")


def _compressed_pickle(head: bytes) -> bool:
    """A file joblib.load would decompress and that decompresses to something starting like a pickle."""
    if not head.startswith(_JOBLIB_MAGIC):
        return False
    import bz2
    import lzma
    import zlib

    try:
        if head[:1] == b"\x78" or head[:2] == b"\x1f\x8b":
            out = zlib.decompressobj(zlib.MAX_WBITS | (16 if head[:1] == b"\x1f" else 0)).decompress(head, 16)
        elif head[:3] == b"BZh":
            out = bz2.BZ2Decompressor().decompress(head, 16)
        else:
            fmt = lzma.FORMAT_XZ if head[:1] == b"\xfd" else lzma.FORMAT_ALONE
            out = lzma.LZMADecompressor(fmt).decompress(head, 16)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
        return False
    return bool(out) and out[0] in _STREAM_FIRST


def sniff_bytes(head: bytes, size: int, path: Path) -> str:
    """Decide the reader from the first bytes; ``path`` is used only for zip member listing and JSON."""
    if head.startswith(ZIP_MAGICS):
        return _sniff_zip(path)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= size - 8:
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return "pickle"
    if head[:1] in (b"{", b"[") or head.lstrip()[:1] == b"{":
        return _sniff_json(path, size)
    if 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF):
        return "flax-msgpack"
    if head[0] in _PICKLE_V0_FIRST:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":  # a safetensors header whose length the file cannot hold
        (n,) = struct.unpack("<Q", head[:8])
        if n > size - 8:
            raise UnreadableCheckpoint(
                str(path), f"not a checkpoint (safetensors header length {n} exceeds file size {size})"
            )
    shown = head[:8].hex()
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head[:8]):
        shown += f" {head[:8].decode('ascii')!r}: a text file?"
    raise UnreadableCheckpoint(str(path), f"not a checkpoint: unknown format (first bytes {shown})")


def _sniff_zip(path: Path) -> str:
    import zipfile  # imported here, with the bounded reader: most files are no zip (start-up time)

    from ckptlint.readers.limits import LimitExceeded, zip_file

    try:
        with path.open("rb") as raw, zip_file(raw) as zf:
            names = zf.namelist()
    except LimitExceeded as exc:
        raise UnreadableCheckpoint(str(path), f"zip archive refused: {exc}", refused=True) from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise UnreadableCheckpoint(str(path), f"corrupt zip archive: {exc}") from None
    # torch finds members case-insensitively (miniz): ``archive/DATA.PKL`` is loaded as ``archive/data.pkl``
    lower = [n.lower() for n in names]
    if any(n.endswith(".npy") for n in lower) and not any(n.endswith("data.pkl") for n in lower):
        return "npz"
    if any(n.endswith(".pkl") for n in lower):
        return "torch-zip"
    if not names:
        raise UnreadableCheckpoint(str(path), "empty zip archive")
    raise UnreadableCheckpoint(str(path), "not a checkpoint: zip archive with neither .npy nor .pkl members")


def _sniff_json(path: Path, size: int) -> str:
    doc = load_json(path, "JSON file", invalid="not a checkpoint")
    if isinstance(doc, dict) and isinstance(doc.get("weight_map"), dict):
        return "sharded"
    if isinstance(doc, dict) and doc.get("schema_version") and isinstance(doc.get("tensors"), dict):
        return "dump-json"
    raise UnreadableCheckpoint(
        str(path),
        "not a checkpoint: a JSON file that is neither a shard index (with a weight_map) nor a "
        "`ckptlint dump --format json` document (with schema_version and tensors)",
    )


def file_size(path: Path) -> int:
    """Size of ``path`` in bytes (os.stat, no read)."""
    return os.stat(path).st_size
