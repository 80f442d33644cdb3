"""Hard bounds every reader shares: a file past one is refused (CK001) with the bound in the reason.

They keep the cost of any input linear in its size with small constants (README "Resource bounds"): a 32 MB file
holds at most ~450k safetensors headers, so no real checkpoint comes near them, while a file that repeats a
reference (a pickle memo, a nested key) cannot make a reader build more than these.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import zipfile

MAX_TENSORS = 1 << 19  # tensors in one checkpoint file (~1 KB of memory each once read)
MAX_LEAVES = 1 << 21  # values (tensors and others) a reader visits in one checkpoint file
MAX_MEMBERS = 1 << 19  # zip members (zipfile reads the whole central directory, ~400 bytes a member)
MAX_KEY_CHARS = 1 << 16  # one full key path (``a.b.c``), joined from nested containers
MAX_KEY_TOTAL = 1 << 26  # characters of all key paths built for one checkpoint


class LimitExceeded(ValueError):
    """The input goes past one of the bounds above; the message names it."""


class KeyPaths:
    """Join nested keys into key paths within MAX_KEY_CHARS each and MAX_KEY_TOTAL in all."""

    __slots__ = ("sep", "total")

    def __init__(self, sep: str) -> None:
        self.sep = sep
        self.total = 0

    def join(self, prefix: str | None, key: str) -> str:
        """``prefix + sep + key`` (``key`` alone when there is no prefix)."""
        n = len(key) if prefix is None else len(prefix) + len(self.sep) + len(key)
        if n > MAX_KEY_CHARS:
            raise LimitExceeded(f"a key path is longer than {MAX_KEY_CHARS} characters")
        self.total += n
        if self.total > MAX_KEY_TOTAL:
            raise LimitExceeded(f"its key paths add up to more than {MAX_KEY_TOTAL} characters")
        return key if prefix is None else f"{prefix}{self.sep}{key}"


def check_tensor_count(n: int) -> None:
    """Refuse a checkpoint about to hold more than MAX_TENSORS tensors."""
    if n > MAX_TENSORS:
        raise LimitExceeded(f"it holds more than {MAX_TENSORS} tensors")


def zip_file(fp: IO[bytes]) -> zipfile.ZipFile:
    """``zipfile.ZipFile(fp)``, refused before the central directory is parsed when it is too large to list at
    most MAX_MEMBERS members (each takes at least 46 bytes; its own count of entries is not trusted)."""
    import zipfile  # imported here: a safetensors run needs the limits, not zipfile (start-up time)

    endrec = zipfile._EndRecData(fp)  # type: ignore[attr-defined]  (what ZipFile itself reads first)
    if endrec is not None and endrec[zipfile._ECD_SIZE] > MAX_MEMBERS * 46:  # type: ignore[attr-defined]
        raise LimitExceeded(f"its central directory may list more than {MAX_MEMBERS} members")
    return zipfile.ZipFile(fp)
