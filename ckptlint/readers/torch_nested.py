"""Judge the bytes ``torch.storage._load_from_bytes`` hands to ``torch.load`` as the whole torch file they are.

``pickle.dumps(tensor)`` outside ``torch.save`` pickles each storage as ``_load_from_bytes(b)``, where ``b`` is a
``torch.save`` of that storage; unpickling calls ``torch.load(io.BytesIO(b), weights_only=False)``: an
unrestricted load of whatever ``b`` holds. ``torch.load`` on bytes takes ``b`` as a zip archive when it starts
with ``PK\\x03\\x04``, else as a legacy file (the tar path needs a real file). The call is accepted only when
``b`` verifies here, nested at most a few levels.
"""

from __future__ import annotations

from typing import IO, Any

from ckptlint.facts import SecurityFacts
from ckptlint.readers.pickle_legacy import read_legacy
from ckptlint.readers.pickle_scan import Budget, Source
from ckptlint.readers.torch_archive import Archive, open_zip, read_archive

MAX_PAYLOADS = 1 << 15  # nested payloads judged in one file (pickle.dumps of a tensor makes one per storage)


def nested_reader(fh: IO[bytes] | None) -> Any:
    """The ``nested`` callback for payloads found in a pickle read from ``fh`` (which holds skipped regions).
    All the payloads of one file share one budget of opcodes and objects, and there are at most MAX_PAYLOADS."""
    budget = Budget()
    count = 0

    def read(data: Any, label: str, depth: int, facts: SecurityFacts) -> Any:
        nonlocal count
        count += 1
        if count > MAX_PAYLOADS:
            raise ValueError(f"more than {MAX_PAYLOADS} nested torch.load payloads in one file")
        if isinstance(data, tuple):  # (offset, length): a region of the enclosing file that was not read
            if fh is None:
                raise ValueError("nested payload outside the file")
            offset, length = data
            fh.seek(offset)
            head = fh.read(4)
            src = Source(fh=fh, start=offset, end=offset + length)
        else:
            head = data[:4]
            src = Source(data)
        if head == b"PK\x03\x04":
            payload = data if isinstance(data, bytes) else src.read(src.start, src.end - src.start)
            zf, fp, size = open_zip(payload)
            archive = Archive(facts=facts)
            with zf:
                read_archive(zf, fp, size, nested=read, depth=depth, label=f"{label}/", into=archive,
                             budget=budget)  # fmt: skip
            return archive.value
        value, _ = read_legacy(
            src, src.start, member=label, facts=facts, budget=budget, nested=read, depth=depth
        )
        return value

    return read
