"""``@record``: the part of ``dataclasses`` ckptlint's read path uses, without its cost at start-up (issue 13 item 5).

``@dataclass`` imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``: ~4 ms) and compiles three or four generated
methods per class (~0.15 ms a class); a plain ``ckptlint check`` defines some sixty such classes and builds instances
of a third of them. ``@record`` reads the same declarations (annotations, class-level defaults, ``field(...)``) and
gives the class shared, generic methods (closures over the class's fields, nothing compiled) that behave as the ones
``@dataclass`` generates: ``__init__`` (calls ``__post_init__``), ``__repr__``, ``__eq__``, ``__hash__``, frozen
``__setattr__``/``__delattr__``, ``__match_args__``; a method the class defines itself is kept. ``replace`` is
``dataclasses.replace``. Not supported (nothing uses them): ``order``, ``unsafe_hash``, ``slots`` (see ``slotted``),
``InitVar``, ``KW_ONLY``, ``field(init=..., hash=..., kw_only=..., metadata=...)``.

pydantic needs real dataclasses: ``as_dataclasses`` turns every record class into one in place (their own methods
stay), when ``ckptlint.model`` first builds a ``TypeAdapter``; a record defined later is turned at once.

Only the classes a plain run defines are records. Modules off that path (pickle readers, convert, writers, fix,
strip, diff, ``declared.hf_*``, ``declared.contradict``…) keep ``@dataclass``: they are not on the start-up path,
and some make their instances in bulk (one per pickle opcode), where a compiled ``__init__`` is faster (a record's
costs ~0.5-0.9 µs, 1-3× a dataclass's). Unlike a dataclass, a record class without a docstring has none until
``as_dataclass``, and ``inspect.signature`` shows its ``__init__`` as ``(*args, **kwargs)``.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable
from operator import attrgetter
from types import MemberDescriptorType
from typing import Any, ClassVar, TypeVar, overload

T = TypeVar("T")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # no default given (as ``dataclasses.MISSING``)
_RECORDS: list[type] = []  # every record class, in definition order (bases first)
_converted = False  # ``as_dataclasses`` ran: a record defined from now on is made a dataclass at once
_lock = _thread.RLock()


class FrozenInstanceError(AttributeError):
    """Assigning to or deleting a field of a frozen record (as ``dataclasses.FrozenInstanceError``)."""


class Field:
    """One field of a record: what ``field(...)`` returns, and what the record keeps for each field."""

    __slots__ = ("compare", "default", "default_factory", "kw_only", "name", "repr", "type")

    def __init__(
        self, default: Any, default_factory: Any, repr: bool, compare: bool, kw_only: bool = False
    ) -> None:
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare
        self.kw_only = kw_only

    def __repr__(self) -> str:
        return (
            f"Field(name={self.name!r}, default={self.default!r}, default_factory={self.default_factory!r}, "
            f"repr={self.repr}, compare={self.compare}, kw_only={self.kw_only})"
        )


def field(
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    """A field's options, as ``dataclasses.field`` (the subset ckptlint uses)."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, repr, compare)


class Spec:
    """A record class's fields and options (``cls.__record__``)."""

    __slots__ = ("eq", "fields", "frozen", "kw_only", "slotted")

    def __init__(
        self, fields: dict[str, Field], frozen: bool, eq: bool, kw_only: bool, slotted: bool
    ) -> None:
        self.fields = fields
        self.frozen = frozen
        self.eq = eq
        self.kw_only = kw_only
        self.slotted = slotted


@overload
def record(cls: type[T], /) -> type[T]: ...
@overload
def record(
    *, frozen: bool = False, eq: bool = True, kw_only: bool = False
) -> Callable[[type[T]], type[T]]: ...
def record(
    cls: type[T] | None = None, /, *, frozen: bool = False, eq: bool = True, kw_only: bool = False
) -> Any:
    """``@record`` / ``@record(frozen=True, eq=..., kw_only=True)``: the class with ``@dataclass``'s behaviour."""

    def wrap(cls: type[T]) -> type[T]:
        return _process(cls, frozen, eq, kw_only)

    return wrap if cls is None else wrap(cls)


def slotted(**defaults: Any) -> Callable[[type[T]], type[T]]:
    """Register a hand-written slotted class (its own ``__slots__``, ``__init__``…) as a record: its fields are its
    annotations, ``defaults`` the defaults of its ``__init__`` (a slot cannot have a class-level default).

    For a class made so often that only a hand-written ``__init__`` is fast enough; ``replace`` and
    ``as_dataclasses`` then work on it as on any record.
    """

    def wrap(cls: type[T]) -> type[T]:
        if "__slots__" not in cls.__dict__ or "__init__" not in cls.__dict__:
            raise TypeError(f"{cls.__name__}: @slotted is for a class with its own __slots__ and __init__")
        fields = {}
        for name, annotation in _annotations(cls):
            f = fields[name] = Field(defaults.pop(name, MISSING), MISSING, True, True)
            f.name, f.type = name, annotation
        if defaults:
            raise TypeError(f"{cls.__name__}: defaults for no field: {sorted(defaults)}")
        cls.__record__ = Spec(fields, frozen=False, eq=True, kw_only=False, slotted=True)  # type: ignore[attr-defined]
        _register(cls)
        return cls

    return wrap


def replace(obj: T, /, **changes: Any) -> T:
    """A new instance of ``obj``'s class with ``changes`` (as ``dataclasses.replace``; also takes a dataclass)."""
    spec = getattr(type(obj), "__record__", None)
    if spec is None:
        import dataclasses

        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    values = {name: getattr(obj, name) for name in spec.fields}
    values.update(changes)
    return obj.__class__(**values)


def as_dataclasses() -> None:
    """Make every record class a stdlib dataclass in place, bases first (for pydantic, which reads
    ``__dataclass_fields__``); records defined later are made dataclasses as they are defined."""
    global _converted
    if _converted:  # every record is one already
        return
    with _lock:
        for cls in _RECORDS:
            as_dataclass(cls)
        _converted = True


def as_dataclass(cls: type[T]) -> type[T]:
    """Make the record class ``cls`` a stdlib dataclass in place: its fields in ``__dataclass_fields__`` with their
    defaults and options, its own methods kept (the record's bases must be dataclasses already)."""
    import dataclasses

    if "__dataclass_fields__" in cls.__dict__:
        return cls
    spec: Spec = cls.__dict__["__record__"]
    own = [name for name, _ in _annotations(cls)]
    if not spec.slotted:  # the field options, as dataclasses reads them: a class attribute holding a Field
        for name in own:
            setattr(cls, name, dataclass_field(spec.fields[name]))
    if not cls.__doc__ and getattr(cls.__init__, "__record_init__", False):
        cls.__doc__ = cls.__name__ + _signature(spec)  # what dataclasses writes, without inspect
    dataclasses.dataclass(init=False, repr=False, eq=False, kw_only=spec.kw_only)(cls)
    if spec.slotted:  # no class attribute may shadow a slot: the defaults go on the Field objects
        for name in own:
            if spec.fields[name].default is not MISSING:
                cls.__dataclass_fields__[name].default = spec.fields[name].default  # type: ignore[attr-defined]
    return cls


def dataclass_field(f: Field) -> Any:
    """The ``dataclasses.field(...)`` with the options of ``f``."""
    import dataclasses

    options: dict[str, Any] = {"repr": f.repr, "compare": f.compare}
    if f.default is not MISSING:
        options["default"] = f.default
    elif f.default_factory is not MISSING:
        options["default_factory"] = f.default_factory
    return dataclasses.field(**options)


def _register(cls: type) -> None:
    with _lock:
        _RECORDS.append(cls)
        if _converted:
            as_dataclass(cls)


def _annotations(cls: type) -> list[tuple[str, Any]]:
    """The class's own field annotations (``ClassVar`` ones left out)."""
    out = []
    for name, annotation in vars(cls).get("__annotations__", {}).items():  # not inspect: see the module doc
        if isinstance(annotation, str):
            if annotation.startswith(("ClassVar", "typing.ClassVar")):
                continue
            if annotation.startswith(("InitVar", "KW_ONLY", "dataclasses.")):
                raise TypeError(f"{cls.__name__}.{name}: {annotation} is not supported by @record")
        elif annotation is ClassVar or getattr(annotation, "__origin__", None) is ClassVar:
            continue
        out.append((name, annotation))
    return out


def _process(cls: type[T], frozen: bool, eq: bool, kw_only: bool) -> type[T]:
    name = cls.__qualname__
    if "__slots__" in cls.__dict__:
        raise TypeError(f"{name}: a slotted record is hand-written (see ``slotted``)")
    fields: dict[str, Field] = {}
    record_bases = frozen_bases = 0
    for base in cls.__mro__[-1:0:-1]:
        base_spec = getattr(base, "__record__", None)
        if base_spec is not None:
            fields.update(base_spec.fields)
            record_bases += 1
            frozen_bases += base_spec.frozen
        elif "__dataclass_fields__" in base.__dict__:
            raise TypeError(f"{name}: a record cannot derive from the dataclass {base.__qualname__}")
    if record_bases and frozen_bases and not frozen:
        raise TypeError("cannot inherit non-frozen record from a frozen one")
    if record_bases and frozen and frozen_bases < record_bases:
        raise TypeError("cannot inherit frozen record from a non-frozen one")
    own = _annotations(cls)
    annotated = {n for n, _ in own}
    for attr, value in cls.__dict__.items():
        if isinstance(value, Field) and attr not in annotated:
            raise TypeError(f"{attr!r} is a field but has no type annotation")
    for fname, annotation in own:
        default = getattr(cls, fname, MISSING)  # inherited class attributes count, as for dataclasses
        if isinstance(default, Field):
            f = default
        else:
            if isinstance(default, MemberDescriptorType):
                default = MISSING
            f = Field(default, MISSING, True, True)
        f.name, f.type, f.kw_only = fname, annotation, kw_only
        if f.default is not MISSING and type(f.default).__hash__ is None:
            raise ValueError(
                f"mutable default {type(f.default)} for field {fname} is not allowed: use default_factory"
            )
        if isinstance(cls.__dict__.get(fname), Field):  # the class attribute is the default, or nothing
            if f.default is MISSING:
                delattr(cls, fname)
            else:
                setattr(cls, fname, f.default)
        fields[fname] = f
    spec = Spec(fields, frozen, eq, kw_only, slotted=False)
    cls.__record__ = spec  # type: ignore[attr-defined]
    _methods(cls, spec)
    _register(cls)
    return cls


def _methods(cls: type, spec: Spec) -> None:
    fields = spec.fields.values()
    positional = tuple(f.name for f in fields if not f.kw_only)
    own = cls.__dict__
    if "__init__" not in own:
        _set(cls, "__init__", _make_init(cls, spec, positional))
    if "__repr__" not in own:
        _set(cls, "__repr__", _make_repr(tuple(f.name for f in fields if f.repr)))
    compared = _getter(tuple(f.name for f in fields if f.compare))
    if spec.eq and "__eq__" not in own:
        _set(cls, "__eq__", _make_eq(compared))
    class_hash = own.get("__hash__", MISSING)
    explicit_hash = not (class_hash is MISSING or (class_hash is None and "__eq__" in own))
    if spec.eq and not explicit_hash:
        if spec.frozen:
            _set(cls, "__hash__", _make_hash(compared), force=True)
        else:
            cls.__hash__ = None  # type: ignore[assignment]
    if spec.frozen:
        names = frozenset(spec.fields)
        for method, make in (("__setattr__", _make_setattr), ("__delattr__", _make_delattr)):
            if method in own:
                raise TypeError(f"Cannot overwrite attribute {method} in class {cls.__name__}")
            _set(cls, method, make(cls, names))
    if "__match_args__" not in own:
        cls.__match_args__ = positional  # type: ignore[attr-defined]


def _set(cls: type, name: str, fn: Callable[..., Any], force: bool = False) -> None:
    if force or name not in cls.__dict__:
        fn.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, fn)


def _signature(spec: Spec) -> str:
    """The ``__init__`` signature as ``inspect`` renders it (``(a: 'int', *, b: 'str' = 'x')``)."""
    params, star = [], False
    for f in spec.fields.values():
        if f.kw_only and not star:
            params.append("*")
            star = True
        text = f"{f.name}: {f.type!r}" if f.type is not None else f.name
        if f.default is not MISSING:
            text += f" = {f.default!r}"
        elif f.default_factory is not MISSING:
            text += " = <factory>"
        params.append(text)
    return f"({', '.join(params)})"


def _make_init(cls: type, spec: Spec, positional: tuple[str, ...]) -> Callable[..., None]:
    frozen = spec.frozen
    template: dict[str, Any] = {}  # every field in order: its default, or a placeholder
    todo: list[tuple[str, Callable[[], Any] | None]] = []
    required = set()
    for f in spec.fields.values():
        template[f.name] = f.default
        if f.default is MISSING:
            if f.default_factory is not MISSING:
                todo.append((f.name, f.default_factory))
            else:
                todo.append((f.name, None))
                required.add(f.name)
    seen_default = False
    for fname in positional:
        if fname not in required:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default argument {fname!r} follows default argument")
    # the fields with no default (a factory, or None when required) not given by the first k positional arguments
    todo_after = [tuple(t for t in todo if t[0] not in positional[:k]) for k in range(len(positional) + 1)]
    count, npos = len(template), len(positional)
    post_init = hasattr(cls, "__post_init__")
    set_each = (
        not frozen and cls.__setattr__ is not object.__setattr__
    )  # the class's own __setattr__ sees them
    set_dict = object.__setattr__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        i = 0
        if args:
            if len(args) > npos:
                _bad_arguments(cls, positional, args, kwargs)
            values = template.copy()
            for value in args:  # faster than update(zip(...)) for a few fields
                values[positional[i]] = value
                i += 1
            if kwargs:
                if not kwargs.keys().isdisjoint(positional[:i]):
                    _bad_arguments(cls, positional, args, kwargs)
                values.update(kwargs)
        else:
            values = {**template, **kwargs}
        if len(values) != count:
            _bad_arguments(cls, positional, args, kwargs)
        for fname, factory in todo_after[i]:
            if values[fname] is MISSING:
                if factory is None:
                    _bad_arguments(cls, positional, args, kwargs)
                values[fname] = factory()
        if set_each:
            for fname, value in values.items():
                setattr(self, fname, value)
        else:
            set_dict(self, "__dict__", values)
        if post_init:
            self.__post_init__()

    __init__.__record_init__ = True  # type: ignore[attr-defined]
    return __init__


def _bad_arguments(
    cls: type, positional: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Raise the ``TypeError`` a generated ``__init__`` raises for these arguments."""
    title = f"{cls.__qualname__}.__init__()"
    spec: Spec = cls.__dict__["__record__"]
    if len(args) > len(positional):
        raise TypeError(
            f"{title} takes {len(positional) + 1} positional arguments but {len(args) + 1} were given"
        )
    for name in positional[: len(args)]:
        if name in kwargs:
            raise TypeError(f"{title} got multiple values for argument {name!r}")
    for name in kwargs:
        if name not in spec.fields:
            raise TypeError(f"{title} got an unexpected keyword argument {name!r}")
    given = set(positional[: len(args)]) | kwargs.keys()
    missing = [
        name
        for name, f in spec.fields.items()
        if name not in given and f.default is MISSING and f.default_factory is MISSING
    ]
    raise TypeError(f"{title} missing {len(missing)} required argument(s): {', '.join(map(repr, missing))}")


def _make_repr(names: tuple[str, ...]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        inner = ", ".join([f"{name}={getattr(self, name)!r}" for name in names])
        return f"{self.__class__.__qualname__}({inner})"

    return __repr__


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The tuple of the fields ``names`` of an instance (what eq and hash compare)."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()


def _make_eq(values: Callable[[Any], tuple[Any, ...]]) -> Callable[[Any, Any], Any]:
    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    return __eq__


def _make_hash(values: Callable[[Any], tuple[Any, ...]]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        return hash(values(self))

    return __hash__


def _make_setattr(cls: type, names: frozenset[str]) -> Callable[[Any, str, Any], None]:
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    return __setattr__


def _make_delattr(cls: type, names: frozenset[str]) -> Callable[[Any, str], None]:
    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return __delattr__
