"""Tiny expressions for the declarative arch specs: shapes (``"3 * width"``) and conditions (``"pool == 'map'"``).

The specs are data shipped with ckptlint, but they are still data: an expression may only read the parameters in
scope and call the few helpers below. ``compile`` (a builtin: no ``ast`` import at start-up) gives a code object
whose ``co_names`` list every name it touches, so attribute access, imports, lambdas and comprehensions are
refused before anything runs.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from ckptlint.errors import CkptlintError


class SpecError(CkptlintError):
    """A family file (``rules/archs/*.toml`` or one added with ``$CKPTLINT_FAMILY_PATH``) is invalid or
    inconsistent; the message names the file and the field."""


def _is_square(n: int) -> bool:
    return n >= 0 and math.isqrt(n) ** 2 == n


HELPERS: dict[str, Any] = {
    "isqrt": lambda n: math.isqrt(max(int(n), 0)),
    "is_square": _is_square,
    "int": int,
    "min": min,
    "max": max,
    "abs": abs,
    "True": True,
    "False": False,
    "None": None,
}


@cache
def compile_expr(src: str) -> Any:
    """Compile ``src`` once; refuse anything but names, literals, operators and the helpers."""
    try:
        code = compile(src, "<arch spec>", "eval")
    except SyntaxError as exc:
        raise SpecError(f"invalid expression {src!r}: {exc.msg}") from None
    for name in code.co_names:
        if name.startswith("_"):
            raise SpecError(f"expression {src!r} may not use {name!r}")
    if any(hasattr(c, "co_code") for c in code.co_consts):
        raise SpecError(f"expression {src!r} may not define functions or comprehensions")
    return code


def evaluate(src: Any, env: dict[str, Any]) -> Any:
    """Value of ``src`` in ``env``: strings are expressions, anything else is a literal."""
    if not isinstance(src, str):
        return src
    code = compile_expr(src)
    missing = [n for n in code.co_names if n not in env and n not in HELPERS]
    if missing:
        raise SpecError(f"expression {src!r} uses undefined parameter(s): {', '.join(missing)}")
    try:
        return eval(code, {"__builtins__": {}, **HELPERS}, env)  # checked above: names and operators only
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise SpecError(f"expression {src!r} failed: {type(exc).__name__}: {exc}") from None


def parse_literal(text: str) -> Any:
    """A user-given override value (``image_size=384``, ``pool=map``, ``scan=true``): int, float, bool or string."""
    low = text.strip().lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip().strip("'\"")
