"""Reader for ``torch.save`` zip archives (torch >= 1.6; ``.pt/.pth/.bin/.ckpt``) and TorchScript archives.

The archive is judged by :mod:`ckptlint.readers.torch_archive` as ``torch.load`` and ``np.load`` read it; only
its pickles and tiny metadata members are read, never the ``data/*`` storage members (their sizes come from the
central directory and are checked against what the tensors need). A storage member that is missing or smaller
than its tensors need makes the file unreadable (exit 2), because ``torch.load`` fails on it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.facts import one_line
from ckptlint.readers.limits import LimitExceeded, zip_file
from ckptlint.readers.pickle_interpret import Corrupt
from ckptlint.readers.pickle_stream import StreamError
from ckptlint.readers.pickle_tree import TreeTooLarge, flatten
from ckptlint.readers.torch_archive import ZIP_ERRORS, Archive, ArchiveError, read_archive
from ckptlint.readers.torch_nested import nested_reader
from ckptlint.remote import zip_source


def read(path: Path) -> Checkpoint:
    """Read the structure of a torch zip archive without executing or loading any tensor data."""
    p = str(path)
    remote = not isinstance(path, Path)
    try:
        opened = zip_source(path)
        source: IO[bytes] = opened if not isinstance(opened, Path) else opened.open("rb")
        size = source.seek(0, 2)
        source.seek(0)
        zf = zip_file(source)
    except LimitExceeded as exc:
        raise UnreadableCheckpoint(p, f"zip archive refused: {exc}", refused=True) from None
    except ZIP_ERRORS as exc:
        raise UnreadableCheckpoint(p, one_line(f"corrupt zip archive: {exc}", 500)) from None
    archive = Archive()
    with source, zf:
        try:
            archive = read_archive(zf, source, size, nested=nested_reader(None), remote=remote, into=archive)
            tree = flatten(archive.value, sep=".", root_key=path.stem)
        except (ArchiveError, StreamError, Corrupt, TreeTooLarge) as exc:
            facts = archive.facts
            reason = one_line(getattr(exc, "reason", str(exc)), 500)
            seen = facts.names()
            if seen:
                reason += f"; before that it imports unsafe globals: {seen}"
            refused = bool(getattr(exc, "refused", isinstance(exc, TreeTooLarge)))
            raise UnreadableCheckpoint(p, reason, facts, refused=refused) from None
        except ZIP_ERRORS as exc:
            raise UnreadableCheckpoint(
                p, one_line(f"corrupt zip archive: {exc}", 500), archive.facts
            ) from None
    metadata = tree.metadata
    if archive.byteorder:
        metadata = {"__byteorder__": archive.byteorder[:16], **metadata}
    return Checkpoint.model_construct(
        path=p,
        format="torch-zip",
        key_sep=".",
        tensors=tree.tensors,
        groups=tree.groups,
        metadata=metadata,
        sidecars=[],
        files=[p],
        findings=[],
        security=archive.facts,
    )


def walk_data_pkl(path: Path) -> tuple[Any, str]:
    """The object ``data.pkl`` rebuilds (``TensorRef`` leaves over ``StorageRef``s naming their ``data/`` member)
    and the archive's record prefix, for writers that emit it again; raises UnreadableCheckpoint as ``read`` does.
    Call it on a file ``read`` accepted: unsafe globals stay inert placeholders, as in ``read``."""
    p = str(path)
    archive = Archive()
    try:
        with path.open("rb") as source:
            size = source.seek(0, 2)
            source.seek(0)
            with zip_file(source) as zf:
                read_archive(zf, source, size, nested=nested_reader(None), into=archive)
    except (ArchiveError, StreamError, Corrupt) as exc:
        reason = one_line(getattr(exc, "reason", str(exc)), 500)
        raise UnreadableCheckpoint(
            p, reason, archive.facts, refused=bool(getattr(exc, "refused", False))
        ) from None
    except ZIP_ERRORS as exc:
        raise UnreadableCheckpoint(p, one_line(f"corrupt zip archive: {exc}", 500)) from None
    return archive.value, archive.prefix
