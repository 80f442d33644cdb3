"""Small formatting helpers shared by text reporters."""

from __future__ import annotations


def human_bytes(n: int) -> str:
    """``1536 -> '1.5 KiB'``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    """``93474817 -> '93.5M'``."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{suffix}"
    return str(n)


def shape_str(shape: tuple[int, ...] | list[int]) -> str:
    """``(16, 16, 3, 768) -> '[16,16,3,768]'``."""
    return "[" + ",".join(str(d) for d in shape) + "]"


def counted(n: int, noun: str) -> str:
    """``(1, 'error') -> '1 error'``, ``(2, 'error') -> '2 errors'``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
