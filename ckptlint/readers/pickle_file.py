"""Files that are pickles: legacy ``torch.save`` files, tar-format torch files, plain pickles and joblib files.

Each is judged the way every loader that could read it reads it:

- ``torch.load`` first tries the tar format (``tarfile`` accepts the file: :mod:`ckptlint.readers.torch_tar`),
  else unpickles the stream at byte 0, and for a legacy file the four that follow (:mod:`pickle_legacy`);
- ``pickle.load`` / ``np.load(allow_pickle=True)`` unpickle from byte 0, again and again for appended streams
  (the C unpickler; a tar file too, whose header may be crafted to be a pickle);
- ``joblib.load`` drives the pure-Python unpickler, reading each array's bytes inline after its wrapper, and
  decompresses files that start with a compressor's magic (zlib, gzip, bz2, xz, lzma).

Every view must reach a verdict: a plain pickle that one unpickler reads and the other fails on, or that they
end at different offsets, is refused; a joblib file is one whose pure-Python reading succeeds and whose C
reading breaks only where the array data starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.facts import SecurityFacts, one_line
from ckptlint.readers.joblib_stream import Decompressed
from ckptlint.readers.pickle_interpret import Corrupt
from ckptlint.readers.pickle_legacy import LEGACY_MAGIC, judge_trailing, read_legacy
from ckptlint.readers.pickle_probe import pickle_view
from ckptlint.readers.pickle_scan import Budget, Scan, Source
from ckptlint.readers.pickle_stream import StreamError, parse_joblib, parse_stream
from ckptlint.readers.pickle_stubs import RegionReader
from ckptlint.readers.pickle_tree import TreeTooLarge, flatten
from ckptlint.readers.tar_probe import is_torch_tar
from ckptlint.readers.torch_nested import nested_reader
from ckptlint.readers.torch_tar import NotTorchTar, read_tar

# joblib's compressors (joblib/compressor.py): magic prefix -> name
JOBLIB_MAGIC = {
    b"\x78": "zlib", b"\x1f\x8b": "gzip", b"BZ": "bz2", b"\xfd\x37\x7a\x58\x5a": "xz", b"\x5d\x00": "lzma",
    b"\x04\x22\x4d\x18": "lz4", b"ZF": "joblib<0.10",
}  # fmt: skip


def joblib_compression(head: bytes) -> str | None:
    """The compressor joblib.load would detect from a file's first bytes, or None."""
    return next((name for magic, name in JOBLIB_MAGIC.items() if head.startswith(magic)), None)


def read(path: Path) -> Checkpoint:
    """Read a legacy torch file, a tar-format torch file, a plain or joblib pickle without executing it."""
    p = str(path)
    facts = SecurityFacts()
    try:
        with path.open("rb") as fh:
            return _read(fh, path, facts)
    except UnreadableCheckpoint:
        raise
    except (StreamError, Corrupt, NotTorchTar) as exc:
        raise unreadable(p, exc, facts) from None
    except OSError as exc:
        raise UnreadableCheckpoint(p, f"cannot read: {exc.strerror or exc}", facts) from None


def legacy_value(path: Path) -> Any:
    """The object a legacy torch file rebuilds (``TensorRef`` leaves over ``StorageRef``s placed in the file), for
    writers that emit it again; raises UnreadableCheckpoint as ``read`` does."""
    facts = SecurityFacts()
    try:
        with path.open("rb") as fh:
            src = Source.of_file(fh)
            value, _ = read_legacy(
                src, 0, member=path.name, facts=facts, budget=Budget(), nested=nested_reader(fh)
            )
    except (StreamError, Corrupt) as exc:
        raise unreadable(str(path), exc, facts) from None
    return value


def unreadable(path: str, exc: Exception, facts: SecurityFacts) -> UnreadableCheckpoint:
    """An UnreadableCheckpoint for ``exc`` that carries (and names) what was seen before it."""
    reason = one_line(str(exc), 500)
    seen = facts.names()
    if seen:
        reason += f"; before that it imports unsafe globals: {seen}"
    return UnreadableCheckpoint(path, reason, facts, refused=bool(getattr(exc, "refused", False)))


def _read(fh: IO[bytes], path: Path, facts: SecurityFacts) -> Checkpoint:
    p = str(path)
    size = fh.seek(0, 2)
    fh.seek(0)
    head = fh.read(8)
    compression = joblib_compression(head)
    if compression is not None:  # pickle.load fails on the first bytes; joblib decompresses
        return _read_compressed(fh, path, compression, facts)
    tar = is_torch_tar(fh)
    if tar:  # torch.load reads tar files first; pickle.load still reads the file as a pickle
        try:
            ckpt = read_tar(fh, path=p, size=size, stem=path.stem, facts=facts)
        except NotTorchTar:
            facts.merge(pickle_view(fh, path.name))
            raise
        facts.merge(pickle_view(fh, path.name))
        if ckpt is not None:
            ckpt.security = facts
            return ckpt
    src = Source.of_file(fh, 0, size)
    budget = Budget()
    nested = nested_reader(fh)
    calls: list[str] = []
    scans: list[Scan] = []
    cfacts = SecurityFacts()
    c_error: Exception | None = None
    first: tuple[Any, int] | None = None
    try:
        first = parse_stream(src, 0, member=path.name, facts=cfacts, budget=budget,
                             nested=nested, calls_out=calls, scans_out=scans)  # fmt: skip
    except (StreamError, Corrupt) as exc:
        c_error = exc
    if first is not None and type(first[0]) is int and first[0] == LEGACY_MAGIC:
        facts.merge(cfacts)
        value, end = read_legacy(
            src, 0, member=path.name, facts=facts, budget=budget, nested=nested, first=first
        )
        judge_trailing(src, end, member=path.name, facts=facts, budget=budget)
        return _checkpoint(p, "torch-legacy", value, path.stem, facts)
    if c_error is not None and getattr(c_error, "refused", False) and not _joblib_arrays(c_error, calls):
        facts.merge(cfacts)  # past one of ckptlint's bounds (or read two ways): refused whatever joblib reads
        raise c_error
    if first is not None and not scans[0].loose and not any(name.startswith("joblib.") for name in calls):
        # pickle.load reads it to its end and joblib.load could read nothing else: the two unpicklers differ only
        # on text numbers (refused by the walk unless written as picklers write them), joblib's inline arrays and
        # where C fails; INST/OBJ/PERSID (``loose``) are read both ways all the same
        # (tests/test_pickle_differential.py checks this on generated pickles)
        facts.merge(cfacts)
        value, end = first
    else:
        value, end = _joblib_view(fh, size, path.name, facts, nested, first, c_error, calls, cfacts)
    judge_trailing(src, end, member=path.name, facts=facts, budget=budget)
    return _checkpoint(p, "pickle", value, path.stem, facts)


def _joblib_view(
    fh: IO[bytes],
    size: int,
    name: str,
    facts: SecurityFacts,
    nested: Any,
    first: tuple[Any, int] | None,
    c_error: Exception | None,
    c_calls: list[str],
    cfacts: SecurityFacts,
) -> tuple[Any, int]:
    """Judge the file as ``joblib.load`` reads it and reconcile it with the C reading (``first`` or
    ``c_error``, whose facts are ``cfacts``); return ``(value, end of the stream)``."""
    reader = RegionReader(fh, 0, size)
    py_calls: list[str] = []
    arrays: list[int] = []
    jfacts = SecurityFacts()
    try:
        jvalue, jend = parse_joblib(reader, member=f"{name} (joblib.load)", facts=jfacts, nested=nested,
                                    calls_out=py_calls, arrays_out=arrays)  # fmt: skip
    except (StreamError, Corrupt) as exc:
        facts.merge(cfacts)
        facts.merge(jfacts)
        if c_error is not None:
            raise c_error from None
        raise StreamError(name, getattr(exc, "offset", None),
                          f"joblib.load's unpickler fails where pickle.load's does not ({_reason(exc)})",
                          refused=True) from None  # fmt: skip
    facts.merge(jfacts)
    if arrays:
        # joblib reads array data inline where pickle.load reads opcodes: the two must agree up to the
        # first array, and pickle.load usually fails inside it
        at = getattr(c_error, "offset", None) if c_error is not None else first[1] if first else None
        if at is None or at < arrays[0]:
            facts.merge(cfacts)
            raise StreamError(name, at, "pickle.load and joblib.load read this pickle differently before its "
                                        "first array", refused=True)  # fmt: skip
        # pickle.load goes on into the array bytes: every global it reaches there is imported too
        carried = SecurityFacts()
        carried.globals, carried.more_globals = cfacts.globals, cfacts.more_globals
        facts.merge(carried)
        return jvalue, jend
    facts.merge(cfacts)
    if c_error is not None:
        raise StreamError(name, getattr(c_error, "offset", None),
                          f"pickle.load fails where joblib.load does not ({_reason(c_error)})", refused=True)  # fmt: skip
    assert first is not None
    if jend != first[1] or py_calls != c_calls:
        raise StreamError(name, min(jend, first[1]), "pickle.load and joblib.load read this pickle differently",
                          refused=True)  # fmt: skip
    return first[0], first[1]


def _joblib_arrays(c_error: Exception, calls: list[str]) -> bool:
    """Whether the C reading may have failed on joblib's inline array data (joblib.load reads it as data)."""
    modules = [g.module for g in getattr(c_error, "globals", ())] + calls
    return any(name.startswith("joblib.") for name in modules)


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, StreamError) else str(exc)


def _checkpoint(p: str, fmt: str, value: Any, stem: str, facts: SecurityFacts) -> Checkpoint:
    try:
        tree = flatten(value, sep=".", root_key=stem)
    except TreeTooLarge as exc:
        raise UnreadableCheckpoint(p, str(exc), facts, refused=True) from None
    return Checkpoint.model_construct(
        path=p, format=fmt, key_sep=".", tensors=tree.tensors, groups=tree.groups, metadata=tree.metadata,
        sidecars=[], files=[p], findings=[], security=facts,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# compressed joblib files
# ---------------------------------------------------------------------------------------------------------------


def _read_compressed(fh: IO[bytes], path: Path, compression: str, facts: SecurityFacts) -> Checkpoint:
    p = str(path)
    if compression in ("lz4", "joblib<0.10"):
        raise UnreadableCheckpoint(p, f"{compression} joblib file: ckptlint does not judge it", facts,
                                   refused=True)  # fmt: skip
    fh.seek(0)
    stream = Decompressed(fh, compression)
    value, _ = parse_joblib(
        stream, member=f"{path.name} (decompressed)", facts=facts, nested=nested_reader(None)
    )
    return _checkpoint(p, "pickle", value, path.stem, facts)
