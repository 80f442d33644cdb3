"""Whether any installed distribution may declare an entry-point group, answered without ``importlib.metadata``.

``importlib.metadata.entry_points()`` imports the email parser and reads every distribution's metadata: ~20 ms
of start-up for a group that almost nobody declares. This pre-check lists the ``*.dist-info`` / ``*.egg-info``
folders of the path entries the standard finder searches and reads only their ``entry_points.txt``. It may say
yes wrongly (then the real lookup decides), never no wrongly: whatever it cannot see through (a zip on the path,
a finder of distributions other than the standard one) counts as yes. Written here because the library has no
cheaper question to ask (start-up time, a principle).
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import PathFinder

_SUFFIXES = (".dist-info", ".egg-info")


def may_declare(group: str) -> bool:
    """False only when no distribution on ``sys.path`` declares entry points of ``group``."""
    for finder in sys.meta_path:
        if finder is not PathFinder and hasattr(finder, "find_distributions"):
            return True
    needle = f"[{group}]"
    for entry in dict.fromkeys(sys.path):
        folder = entry or "."
        if not os.path.isdir(folder):
            if os.path.exists(folder):
                return True  # a zip (or another file) on the path: only the real lookup can read it
            continue
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if not name.lower().endswith(_SUFFIXES):
                continue
            try:
                with open(
                    os.path.join(folder, name, "entry_points.txt"), encoding="utf-8", errors="replace"
                ) as fh:
                    text = fh.read()
            except OSError:
                continue
            if needle in text.replace(" ", "").replace("\t", ""):
                return True
    return False
