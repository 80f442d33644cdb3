"""What transformers refuses in a configuration of a model class, found by building it: a family's ``checks`` and
``divides`` beyond the generic candidates (used by ``scripts/gen_hf_families.py``).

Every int knob of a group is set to 0 at a valid configuration, and the config class, then each model class, is
built on the meta device. A ``ZeroDivisionError`` is located in transformers' own code: the innermost transformers
frame of the traceback names the function (``BertSelfAttention.__init__``) and, with Python 3.11's positions, the
exact operation; its operands are evaluated in that frame and named by their values (the other knobs have
different values; found alike at several configurations), and the value it is assigned to (``head_dim``) is read
from the statement. The same site must not fail when the knob is 1 (else the divisor is a quantity the knob only
feeds, not the knob). Whether transformers also refuses a value that does not divide (the numerator one more than
a multiple of it), at the same site, decides what is recorded: a check (its ``ValueError`` message with the values
named) or a division only. Then -1: a refusal other than a negative tensor dimension (which ckptlint's trees name)
is the check ``knob > 0``, under the flag that decides whether the refusing module is built.
"""

from __future__ import annotations

import ast
import linecache
import random
import re
import sys
import traceback
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hf_families import Group, env_of, make_config, param_name, sample_values
from hf_fit import FitError, fit_condition

N_CONFIRM = 3  # configurations a finding must hold at
N_NEGATIVE = 8  # configurations the -1 probe tries (flags varied)
MAX_TRIES = 400
OPS = {ast.FloorDiv: "//", ast.Mod: "%", ast.Div: "/"}


@dataclass(frozen=True)
class Site:
    """Where transformers raised: its function, the operation (source text) and the frame."""

    where: str  # "BertSelfAttention.__init__"
    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    frame: Any


@dataclass(frozen=True)
class Division:
    """A division transformers does by a knob (``hidden_size // num_attention_heads``), and where."""

    num: str  # parameters
    op: str
    den: str
    where: str
    name: str  # what transformers assigns the result to ("head_dim"); "" inside a condition
    build: bool  # the model's constructor divides (else the config class)

    @property
    def expr(self) -> str:
        return f"{self.num} {self.op} {self.den}"


def log(*args: Any) -> None:
    print(*args, file=sys.stderr)


def _build(name: str, config: Any) -> None:
    from ckptlint.declared.hf_introspect import build_meta, model_class

    build_meta(model_class(name), config)


# ---- where an exception comes from ----------------------------------------------------------------------------
@cache
def _transformers_dir() -> str:
    import transformers

    return str(Path(transformers.__file__).parent)


def _root_cause(exc: BaseException) -> BaseException:
    """The exception transformers raised, under huggingface_hub's validation wrapper (``__cause__``)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def site(exc: BaseException, inside: str | None = None) -> Site | None:
    """The innermost frame of ``exc``'s traceback in transformers (``inside``: that directory instead)."""
    root = inside or _transformers_dir()
    tb, summaries = exc.__traceback__, traceback.extract_tb(exc.__traceback__)
    found = None
    for summary in summaries:
        assert tb is not None
        if summary.filename.startswith(root):
            found = (summary, tb.tb_frame)
        tb = tb.tb_next
    if found is None:
        return None
    s, frame = found
    if s.colno is None or s.end_colno is None or s.end_lineno is None or s.lineno is None:
        return None
    return Site(frame.f_code.co_qualname, s.filename, s.lineno, s.colno, s.end_lineno, s.end_colno, frame)


def _segment(s: Site) -> str:
    lines = [linecache.getline(s.file, n).encode() for n in range(s.line, s.end_line + 1)]
    if len(lines) == 1:
        return lines[0][s.col : s.end_col].decode()
    return b"".join([lines[0][s.col :], *lines[1:-1], lines[-1][: s.end_col]]).decode()


@cache
def _module_ast(file: str) -> ast.Module:
    return ast.parse("".join(linecache.getlines(file)))


def _assigned(s: Site) -> str:
    """The name the operation's value is assigned to (``self.head_dim = ...``), "" when it is not assigned."""
    best: tuple[int, str] | None = None
    for node in ast.walk(_module_ast(s.file)):
        if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
            continue
        v = node.value
        if (v.lineno, v.col_offset) <= (s.line, s.col) and (s.end_line, s.end_col) <= (
            v.end_lineno,
            v.end_col_offset,
        ):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            size = (v.end_lineno or 0) - v.lineno
            if best is None or size < best[0]:
                best = (size, name)
    return best[1] if best else ""


def _value(node: ast.expr, frame: Any) -> Any:
    """An operand of transformers' operation, evaluated in its own frame (the generator runs transformers anyway)."""
    return eval(ast.unparse(node), frame.f_globals, dict(frame.f_locals))


class Ambiguous(Exception):
    """A value more than one parameter has at this configuration: try another."""


def _named(value: Any, env: dict[str, Any], exclude: str) -> str | None:
    """The parameter whose value ``value`` is (None: no parameter's); ``Ambiguous`` when several have it."""
    names = [p for p, v in env.items() if p != exclude and type(v) is int and v == value]
    if len(names) > 1:
        raise Ambiguous(value)
    return names[0] if names else None


# ---- one probe -----------------------------------------------------------------------------------------------------
def _attempt(group: Group, name: str, values: dict[str, Any]) -> tuple[BaseException | None, bool]:
    """The exception building ``name`` at ``values`` raises (None: it builds), and whether the config class raised."""
    try:
        config = make_config(group, values)
    except Exception as exc:
        return exc, False
    try:
        _build(name, config)
    except Exception as exc:
        return exc, True
    return None, True


def _division(group: Group, name: str, path: str, values: dict[str, Any]) -> Division | None:
    """The division by knob ``path`` that makes ``name`` fail at ``values`` with ``path`` = 0, if that is how."""
    den = param_name(path)
    exc, build = _attempt(group, name, {**values, path: 0})
    if exc is None:
        return None
    exc = _root_cause(exc)
    s = site(exc) if isinstance(exc, ZeroDivisionError) else None
    if s is None:
        return None
    try:
        node = ast.parse(f"({_segment(s)})", mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(node, ast.BinOp) or type(node.op) not in OPS:
        return None  # 0.0 ** -0.5 (a zero head_dim): not a division by the knob
    try:
        left, right = _value(node.left, s.frame), _value(node.right, s.frame)
    except Exception:
        return None
    num = _named(left, env_of(group, values), den)
    if right != 0 or num is None:
        return None
    again, _ = _attempt(group, name, {**values, path: 1})  # the knob itself is the divisor, not what it feeds
    if (
        again is not None
        and (s2 := site(_root_cause(again))) is not None
        and (s2.file, s2.line) == (s.file, s.line)
    ):
        return None
    return Division(num, OPS[type(node.op)], den, s.where, _assigned(s), build)


def _valid(group: Group, rng: random.Random) -> dict[str, Any] | None:
    """A configuration transformers accepts."""
    for _ in range(MAX_TRIES):
        values = sample_values(group, rng)
        try:
            make_config(group, values)
        except Exception:
            continue
        return values
    return None


# ---- what a division is: a check, or a division only ------------------------------------------------------------
def _template(message: str, values: dict[int, str], env: dict[str, Any]) -> str:
    """``message`` with every number that is a parameter's value named by it (``Ambiguous``: several are)."""
    out = message.replace("{", "{{").replace("}", "}}")

    def name(m: re.Match[str]) -> str:
        p = values.get(int(m.group(0))) or _named(int(m.group(0)), env, "")
        return m.group(0) if p is None else "{" + p + "}"  # a number of no parameter: transformers' own

    return re.sub(r"(?<![\w.])-?\d+(?![\w.])", name, out)


def _samples(group: Group, rng: random.Random, n: int, one: Any) -> list[Any] | None:
    """``one(values)`` at ``n`` valid configurations (one where a value names several parameters is drawn again);
    None when there are not that many."""
    out = []
    for _ in range(MAX_TRIES):
        if len(out) == n:
            return out
        values = _valid(group, rng)
        if values is None:
            return None
        try:
            out.append(one(values))
        except Ambiguous:
            continue
    return None


def _non_multiple(group: Group, name: str, d: Division, rng: random.Random) -> dict[str, Any] | None:
    """The check transformers applies to ``d`` (refusing a numerator that is no multiple of the divisor, at the same
    function), or None when it divides only."""
    knobs = {param_name(k): k for k in group.ints}
    if d.op not in ("//", "%") or d.num not in knobs:
        return None
    num_path, den_path = knobs[d.num], knobs[d.den]

    def one(values: dict[str, Any]) -> str | None:
        den = max(values[den_path], 2)
        values = {**values, den_path: den, num_path: den * 8 + 1}
        exc, build = _attempt(group, name, values)
        cause = _root_cause(exc) if exc is not None else None
        s = site(cause) if cause is not None else None
        if cause is None or s is None or s.where != d.where or build != d.build:
            return None
        text = _template(str(cause), {den: d.den, den * 8 + 1: d.num}, env_of(group, values))
        if set(re.findall(r"(?<!{){(\w+)}", text)) - {d.num, d.den}:
            raise Ambiguous(
                text
            )  # another divisor refused first (the encoder's heads): another configuration
        return f"{s.where} raises {type(cause).__name__}: {text}"

    messages = _samples(group, rng, N_CONFIRM, one)
    if not messages or None in messages or len(set(messages)) != 1:
        return None
    return {
        "expr": f"{d.num} % {d.den} == 0",
        "fields": [d.num, d.den],
        "message": messages[0],
        "where": d.where,
        "build": d.build,
    }


def _positive(group: Group, name: str, den_path: str, rng: random.Random) -> dict[str, Any] | None:
    """The check ``den > 0`` when transformers refuses -1 other than by a negative tensor dimension, under the
    flag that decides whether the refusing module is built; None when it does not."""
    den = param_name(den_path)
    torch_dir = str(Path(sys.modules["torch"].__file__).parent)

    def one(values: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str, bool] | None]:
        values = {**values, den_path: -1}
        exc, build = _attempt(group, name, values)
        cause = _root_cause(exc) if exc is not None else None
        if cause is None or isinstance(cause, ZeroDivisionError) or "negative dimension" in str(cause):
            return env_of(group, values), None
        s = site(cause, inside=torch_dir) or site(cause)
        if s is None:
            return env_of(group, values), None
        text = _template(str(cause), {-1: den}, env_of(group, values))
        return env_of(group, values), (f"{s.where} raises {type(cause).__name__}: {text}", s.where, build)

    rows = _samples(group, rng, N_NEGATIVE, one)
    messages = {r for _, r in rows or [] if r is not None}
    if not rows or len(messages) != 1:
        return None
    bools = [param_name(b) for b in group.bools]
    strings = {param_name(k): v for k, v in group.strings.items()}
    try:
        when = fit_condition([r is not None for _, r in rows], [e for e, _ in rows], bools, strings)
    except FitError:
        return None
    message, where, build = messages.pop()
    return {
        "expr": f"{den} > 0" if when is None else f"not ({when}) or {den} > 0",
        "fields": [den],
        "message": message,
        "where": where,
        "build": build,
    }


# ---- a group ---------------------------------------------------------------------------------------------------
def refusals(
    group: Group, classes: list[str], known: list[dict[str, Any]], seed: int
) -> dict[str, dict[str, list]]:
    """Per class: the checks (beyond ``known``, the generic ones) and the divisions transformers refuses a zero in."""
    out: dict[str, dict[str, list]] = {}
    known_exprs = {c["expr"] for c in known}
    for name in classes:
        rng = random.Random(seed)
        checks: list[dict[str, Any]] = []
        divides: list[dict[str, Any]] = []
        for path in group.ints:
            found = _samples(
                group,
                rng,
                N_CONFIRM,
                lambda values, name=name, path=path: _division(group, name, path, values),
            )
            if not found or None in found:
                continue
            if len(set(found)) != 1:
                log(f"  {name}: {path} = 0: different divisions at different configurations {set(found)}")
                continue
            d = found[0]
            check = _non_multiple(group, name, d, rng)
            if check is not None:
                if check["expr"] not in known_exprs and check not in checks:
                    checks.append(check)
            elif d.expr not in {x["expr"] for x in divides}:
                divides.append({"expr": d.expr, "where": d.where, "name": d.name, "build": d.build})
            positive = _positive(group, name, path, rng)
            if positive is not None and positive not in checks:
                checks.append(positive)
        out[name] = {"checks": checks, "divides": divides}
        if checks or divides:
            log(f"  {name}: {len(checks)} checks, {len(divides)} divisions")
    return out
