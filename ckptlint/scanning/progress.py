"""A one-line progress bar on stderr: done/total, rate and ETA (only drawn on a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 24
EVERY = 0.1  # seconds between redraws


class Progress:
    def __init__(self, total: int, *, stream: TextIO | None = None, label: str = "checking") -> None:
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._label = label
        self._start = time.monotonic()
        self._drawn = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._drawn >= EVERY or self.done >= self.total:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * WIDTH)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        line = (
            f"\r{self._label} [{bar:<{WIDTH}}] {self.done}/{self.total} {rate:,.1f} files/s "
            f"ETA {_clock(eta)} "
        )
        self._stream.write(line)
        self._stream.flush()

    def close(self) -> None:
        self._draw(time.monotonic())
        self._stream.write("\n")
        self._stream.flush()


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
