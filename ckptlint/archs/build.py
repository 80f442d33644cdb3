"""Family-file tables to schema objects: validated by pydantic, or built directly from a bundled file.

``validate`` is the only way in for a family file from outside the package: pydantic checks every field against
``ckptlint.archs.schema`` (imported here, on first use). The family files shipped in ``rules/archs`` are validated by
the tests instead, which also prove ``build`` gives objects equal to ``validate``'s for every one of them
(``tests/test_family_files.py``); a run builds them without importing pydantic, which costs more than all the rest
of a one-file check (issue 13 item 5). ``build`` converts as pydantic does (``Before`` markers, aliases, ``int`` to
``float``, lists to tuples) and skips the checks (``After`` markers, ``_check``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from ckptlint.archs.schema_types import Before, Choice, Strict, as_dataclasses

T = TypeVar("T")
Builder = Callable[[Any], Any]
_builders: dict[Any, Builder] = {}
_adapters: dict[type, Any] = {}
_type_hints: dict[type, dict[str, Any]] = {}
_SCALARS = (str, int, float, bool)


class InvalidTable(ValueError):
    """A family-file table pydantic rejected: ``errors`` are (dotted location, message), ``count`` all of them."""

    def __init__(self, errors: list[tuple[str, str]], count: int) -> None:
        super().__init__("; ".join(f"{loc}: {msg}" for loc, msg in errors))
        self.errors = errors
        self.count = count


_ALIAS_OF = {"from_": "from", "with_": "with", "class_": "class"}


def validate(cls: type[T], raw: Any) -> T:
    """``raw`` validated as ``cls`` by pydantic (``InvalidTable`` names what is wrong)."""
    adapter = _adapters.get(cls)
    if adapter is None:
        from pydantic import TypeAdapter

        as_dataclasses()
        adapter = _adapters[cls] = TypeAdapter(cls)
    from pydantic import ValidationError

    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        errors = [
            (
                ".".join(_ALIAS_OF.get(str(p), str(p)) for p in err["loc"] if p not in ("tensor", "group")),
                _msg(err),
            )
            for err in exc.errors()
        ]
        raise InvalidTable(errors, exc.error_count()) from None


def _msg(err: Any) -> str:
    if err["type"] == "unexpected_keyword_argument":  # as pydantic words it for a model
        return "Extra inputs are not permitted"
    return str(err["msg"])


def build(cls: type[T], raw: Any) -> T:
    """``raw`` as ``cls``, converted but not checked (only for the bundled family files: see the module doc)."""
    return _builder(cls)(raw)


def build_field(cls: type[Strict], name: str, raw: dict[str, Any]) -> Any:
    """Field ``name`` of ``cls`` built alone from the table ``raw`` (its default when ``raw`` lacks it)."""
    if name not in raw:
        return cls._factories[name]() if name in cls._factories else cls._defaults[name]
    return _builder(_hints(cls)[name])(raw[name])


def _hints(cls: type) -> dict[str, Any]:
    hints = _type_hints.get(cls)
    if hints is None:
        hints = _type_hints[cls] = typing.get_type_hints(cls, include_extras=True)
    return hints


def _builder(tp: Any) -> Builder:
    fn = _builders.get(tp)
    if fn is None:
        fn = _builders[tp] = _compile(tp)
    return fn


def _compile(tp: Any) -> Builder:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        choice = next((m for m in meta if isinstance(m, Choice)), None)
        if choice is not None:
            members = {tag: _builder(member) for tag, member in choice.members.items()}
            return lambda raw: members[choice.pick(raw)](raw)
        inner = _builder(base)
        befores = [m.fn for m in meta if isinstance(m, Before)]
        if not befores:
            return inner

        def converted(raw: Any) -> Any:
            for fn in befores:
                raw = fn(raw)
            return inner(raw)

        return converted
    if isinstance(tp, type) and issubclass(tp, Strict):
        return _object(tp)
    if origin is list:
        item = _builder(get_args(tp)[0])
        return lambda raw: [item(v) for v in raw]
    if origin is dict:
        value = _builder(get_args(tp)[1])
        return lambda raw: {k: value(v) for k, v in raw.items()}
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            each = _builder(args[0])
            return lambda raw: tuple(each(v) for v in raw)
        parts = [_builder(a) for a in args]
        return lambda raw: tuple(fn(v) for fn, v in zip(parts, raw, strict=True))
    if origin in (Union, types.UnionType):
        return _union([a for a in get_args(tp) if a is not type(None)])
    if tp is float:
        return lambda raw: float(raw) if type(raw) is int else raw
    if tp in _SCALARS or tp is Any or origin is Literal:
        return _same
    raise TypeError(f"cannot build {tp!r}")  # a schema annotation this builder does not know: a bug here


def _same(raw: Any) -> Any:
    return raw


def _union(members: list[Any]) -> Builder:
    """pydantic's smart union for what family files hold: the exact scalar type, else the member of its kind."""
    scalars = {m for m in members if m in _SCALARS}
    rest = [(m, _builder(m)) for m in members if m not in scalars]

    def pick(raw: Any) -> Any:
        if raw is None or type(raw) in scalars:
            return raw
        if float in scalars and type(raw) is int:
            return float(raw)
        for member, fn in rest:
            if _kind_fits(member, raw):
                return fn(raw)
        return raw

    return pick


def _kind_fits(member: Any, raw: Any) -> bool:
    while get_origin(member) is Annotated:
        member = get_args(member)[0]
    origin = get_origin(member) or member
    if isinstance(raw, dict):
        return origin is dict or (isinstance(origin, type) and issubclass(origin, Strict))
    if isinstance(raw, list):
        return origin in (list, tuple)
    return True


def _object(cls: type[Strict]) -> Builder:
    hints = _hints(cls)
    names = cls.FIELDS
    fields: dict[str, Builder] = {}
    prepare = cls._prepare

    def make(raw: Any) -> Any:
        if not fields:  # compiled on first use: fields may name classes defined later
            fields.update({name: _builder(hints[name]) for name in names})
        data = prepare(raw)
        return cls(**{k: fields[k](v) for k, v in data.items() if k in fields})

    return make
