"""The building blocks of the family-file schema: plain frozen classes with pydantic's checks attached lazily.

The schema classes (``ckptlint.archs.schema``) are plain classes (``Strict``; made stdlib dataclasses only when
pydantic is asked to validate one), so defining and building them never imports pydantic (start-up time, issue 13
item 5). pydantic validates them only when asked (``ckptlint.archs.build``):
each marker below carries a check or a conversion and tells pydantic, through ``__get_pydantic_core_schema__``, how
to apply it; the trusted builder applies the conversions (``Before``, ``Strict._prepare``) and skips the checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from ckptlint.record import MISSING, Field, dataclass_field


class Before:
    """``Annotated`` metadata: convert the raw value before it is validated (and before it is built)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_before_validator_function(self.fn, handler(source))


class After:
    """``Annotated`` metadata: check (and return) the validated value; a trusted build skips it."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self.fn, handler(source))


class Choice:
    """``Annotated`` metadata on a union: ``pick(raw)`` names the member type (a tagged union)."""

    def __init__(self, pick: Callable[[Any], str], **members: Any) -> None:
        self.pick = pick
        self.members = members

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        choices = {tag: handler.generate_schema(member) for tag, member in self.members.items()}
        return core_schema.tagged_union_schema(choices, discriminator=self.pick)


class Strict:
    """Base of every schema class: keyword-only fields from the annotations, frozen, compared by value.

    Unknown fields are errors (a misspelt field must not be ignored silently). ``ALIASES`` maps a TOML name that is
    a Python keyword to its field (``from`` -> ``from_``); ``_check`` raises ``ValueError`` when fields contradict
    each other (run by pydantic after the fields validate). A subclass is a plain class, not a dataclass: defining
    forty dataclasses costs ~20 ms at every start; ``as_dataclasses`` makes them dataclasses when pydantic needs it.
    """

    # read by pydantic: a plain dict, so pydantic is not imported
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}
    ALIASES: ClassVar[dict[str, str]] = {}
    FIELDS: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}
    _factories: ClassVar[dict[str, Callable[[], Any]]] = {}
    _required: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = list(cls.FIELDS)
        defaults, factories = dict(cls._defaults), dict(cls._factories)
        for name, annotation in vars(cls).get("__annotations__", {}).items():
            if str(annotation).startswith("ClassVar"):
                continue
            if name not in names:
                names.append(name)
            value = vars(cls).get(name, MISSING)
            if value is not MISSING:  # a subclass's default replaces the base's
                defaults.pop(name, None)
                factories.pop(name, None)
            if isinstance(value, Field):
                if value.default_factory is not MISSING:
                    factories[name] = value.default_factory
                elif value.default is not MISSING:
                    defaults[name] = value.default
            elif value is not MISSING:
                defaults[name] = value
        cls.FIELDS = tuple(names)
        cls._defaults, cls._factories = defaults, factories
        cls._required = frozenset(names) - defaults.keys() - factories.keys()

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        if not values.keys() <= set(cls.FIELDS):
            raise TypeError(f"{cls.__name__}: unknown fields {sorted(values.keys() - set(cls.FIELDS))}")
        if not cls._required <= values.keys():
            raise TypeError(f"{cls.__name__}: missing fields {sorted(cls._required - values.keys())}")
        data = dict(cls._defaults)
        for name, factory in cls._factories.items():
            if name not in values:
                data[name] = factory()
        data.update(values)
        object.__setattr__(self, "__dict__", {name: data[name] for name in cls.FIELDS})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def copy(self, **changes: Any) -> Strict:
        """A copy with some fields changed (not checked: the caller keeps them valid)."""
        return type(self)(**{**vars(self), **changes})

    @classmethod
    def _prepare(cls, raw: Any) -> Any:
        """The raw TOML table as the fields name it (aliases renamed)."""
        if cls.ALIASES and isinstance(raw, dict):
            both = [
                f"{alias!r} and {name!r}"
                for alias, name in cls.ALIASES.items()
                if alias in raw and name in raw
            ]
            if both:
                raise ValueError(f"{both[0]} name the same field: give one")
            return {cls.ALIASES.get(k, k): v for k, v in raw.items()}
        return raw

    def _check(self) -> None:
        """Raise ``ValueError`` when the fields do not make sense together."""

    def to_dict(
        self, *, by_alias: bool = False, exclude_none: bool = False, exclude_defaults: bool = False
    ) -> dict:
        """The fields as plain data (nested tables too), named as in the file with ``by_alias``."""
        names = {v: k for k, v in self.ALIASES.items()} if by_alias else {}
        out = {}
        for name, value in vars(self).items():
            if exclude_none and value is None:
                continue
            if exclude_defaults and name in self._defaults and value == self._defaults[name]:
                continue
            if exclude_defaults and name in self._factories and value == self._factories[name]():
                continue
            out[names.get(name, name)] = _plain(value)
        return out

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        schema = handler(source)
        # the type's reference moves to the outer schema: a later use of the type must get the wrapped one
        ref = schema.pop("ref", None) if schema.get("type") == "dataclass" else None
        defined = _defined(cls)
        if "_check" in defined:
            schema = core_schema.no_info_after_validator_function(_checked, schema)
        if "_prepare" in defined or cls.ALIASES:
            schema = core_schema.no_info_before_validator_function(cls._prepare, schema)
        if ref is not None:
            schema["ref"] = ref
        return schema


def as_dataclasses() -> None:
    """Make every schema class a dataclass (its fields, for pydantic; ``Strict``'s methods stay), bases first."""
    import dataclasses

    todo = list(Strict.__subclasses__())
    while todo:
        cls = todo.pop(0)
        if "__dataclass_fields__" not in vars(cls):
            for name, value in list(vars(cls).items()):  # a ``record.field`` as dataclasses reads one
                if isinstance(value, Field):
                    setattr(cls, name, dataclass_field(value))
            dataclasses.dataclass(init=False, repr=False, eq=False, kw_only=True)(cls)
        todo += cls.__subclasses__()


def _defined(cls: type) -> set[str]:
    """Names a subclass of ``Strict`` defines itself or inherits from another subclass (not from ``Strict``)."""
    return {name for c in cls.__mro__ if c is not Strict and issubclass(c, Strict) for name in vars(c)}


def _plain(value: Any) -> Any:
    if isinstance(value, Strict):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _checked(obj: Strict) -> Strict:
    obj._check()
    return obj
