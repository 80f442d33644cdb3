"""What ``pickle.load`` would import from a file read as something else (a polyglot probe).

``torch.load(weights_only=False)``, ``np.load(allow_pickle=True)`` and ``pickle.load`` unpickle any file that is
not a zip (nor an npy file, for numpy), so a safetensors, msgpack or tar file crafted to be a pickle too runs
code there. The file is judged from its first byte as ``pickle.load`` (called again and again) would read it:
streams are parsed until one does not parse, which for a genuine file happens within a few bytes. Globals a
loader could import before that point are recorded (names that are not dotted identifiers cannot be imported,
and random bytes produce them); a construct ckptlint will not judge is recorded as unverifiable.
"""

from __future__ import annotations

from typing import IO

from ckptlint.facts import SecurityFacts
from ckptlint.readers.pickle_globals import danger_of
from ckptlint.readers.pickle_interpret import Corrupt
from ckptlint.readers.pickle_scan import Budget, Source
from ckptlint.readers.pickle_stream import StreamError, parse_stream

MAX_VIEW_STREAMS = 5  # a legacy torch file is 5 streams; pickle.load and np.load read one
NOTE = "the file is also a pickle"


def importable(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def pickle_view(
    fh: IO[bytes], name: str, *, evidence: bool = False, encoding: str = "latin1"
) -> SecurityFacts:
    """The facts of unpickling ``fh`` from its first byte, as far as it parses.

    ``evidence`` (for files of no known format, text files included): report only when a stream parses to its
    STOP or a global is a known-dangerous one, so that a text file whose first lines read as a GLOBAL
    (``c`` + two lines) stays "not a checkpoint".
    """
    size = fh.seek(0, 2)
    src = Source.of_file(fh, 0, size)
    seen = SecurityFacts()
    member = f"{name} (read as a pickle)"
    budget = Budget()
    complete = 0
    pos = 0
    for _ in range(MAX_VIEW_STREAMS):
        if pos >= size:
            break
        try:
            _, pos = parse_stream(src, pos, member=member, facts=seen, budget=budget)
        except StreamError as exc:
            if exc.refused and (complete or seen.globals):
                seen.add_unverifiable("a pickle stream", member, exc.offset, f"{exc.reason}.")
            break
        except Corrupt:
            break
        complete += 1
    out = SecurityFacts()
    kept = [g for g in seen.globals if importable(g.name)]
    if evidence and not complete and not any(danger_of(g.name) for g in kept):
        return out
    for g in kept:
        why = g.why
        out.add_global(g.name, g.member, g.offsets[0] if g.offsets else None, g.opcode, why, count=g.count)
    for item in seen.unverifiable:
        out.add_unverifiable(item.what, item.member, item.offset, item.reason)
    return out
