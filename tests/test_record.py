"""``ckptlint.record`` behaves as ``dataclasses``: each class is declared twice, as a record and as a stdlib
dataclass, and both must construct, print, compare, hash, freeze and copy alike (the dataclass is the truth)."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from ckptlint import record
from ckptlint.checkpoint import TensorInfo

OPTIONS = [
    {},
    {"frozen": True},
    {"kw_only": True},
    {"eq": False},
    {"frozen": True, "kw_only": True},
    {"frozen": True, "eq": False},
    {"kw_only": True, "eq": False},
]


def declare(
    kind: str, options: dict[str, Any], body: Callable[[Any], dict[str, Any]], base: type = object
) -> type:
    """The class ``body(field)`` describes (annotations as strings, as in every ckptlint module), made a record
    (``kind="record"``) or a dataclass."""
    field = record.field if kind == "record" else dataclasses.field
    namespace = {"__module__": __name__, "__qualname__": "P", **body(field)}
    cls = type("P", (base,), namespace)
    return record.record(**options)(cls) if kind == "record" else dataclasses.dataclass(**options)(cls)


def five(field: Any) -> dict[str, Any]:
    return {
        "__annotations__": {
            "a": "int",
            "b": "str",
            "c": "int",
            "d": "list[int]",
            "e": "str",
            "K": "ClassVar[int]",
        },
        "c": 3,
        "d": field(default_factory=list),
        "e": field(default="e", repr=False, compare=False),
        "K": 7,
    }


def pair(options: dict[str, Any], body: Callable[[Any], dict[str, Any]] = five) -> tuple[type, type]:
    return declare("record", options, body), declare("dataclass", options, body)


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What ``fn(*args, **kwargs)`` gives: its value, or the kind of exception it raises."""
    try:
        return ("ok", fn(*args, **kwargs))
    except TypeError:
        return ("TypeError",)
    except AttributeError:
        return ("AttributeError",)
    except ValueError:
        return ("ValueError",)


def state(obj: Any) -> dict[str, Any]:
    return dict(vars(obj))


def built(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return state(cls(*args, **kwargs))


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1, "x"), {}),
    ((1, "x", 5, [1], "y"), {}),
    ((1,), {"b": "x", "e": "z"}),
    ((), {"a": 1, "b": "x"}),
    ((), {"a": 1, "b": "x", "c": 4, "d": [2], "e": "y"}),
    ((), {}),  # missing
    ((1,), {}),  # missing b
    ((1, "x"), {"z": 1}),  # unexpected
    ((1, "x"), {"a": 2}),  # twice
    ((1, "x", 3, [], "e", 9), {}),  # too many
    ((), {"a": 1, "b": "x", "K": 1}),  # a ClassVar is no field
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_init_matches_dataclass(options: dict[str, Any]) -> None:
    rec, dc = pair(options)
    for args, kwargs in CALLS:
        assert outcome(built, rec, args, kwargs) == outcome(built, dc, args, kwargs), (args, kwargs)
    one, two = rec(a=1, b="x"), rec(a=1, b="x")
    assert one.d == [] and one.d is not two.d  # a factory runs per instance
    assert (rec.c, rec.e, rec.K) == (dc.c, dc.e, dc.K) == (3, "e", 7)  # defaults stay class attributes
    assert "d" not in vars(rec) and "d" not in vars(dc)  # a factory field has none
    assert rec.__match_args__ == dc.__match_args__


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_repr_eq_hash_match_dataclass(options: dict[str, Any]) -> None:
    rec, dc = pair(options)
    other_rec, other_dc = pair(options)  # same fields, another class: never equal

    def probe(cls: type, other: type) -> list[Any]:
        x, y = cls(a=1, b="x", d=(1,)), cls(a=1, b="x", d=(1,), e="other")
        return [
            repr(x),
            x == x,
            x == y,  # e is not compared
            x != y,
            x == cls(a=2, b="x", d=(1,)),
            x == other(a=1, b="x", d=(1,)),
            x == (1, "x", 3, (1,)),
            cls.__hash__ is None,
            cls.__hash__ is object.__hash__,
            outcome(lambda: hash(x) == hash(y)),
            outcome(lambda: hash(cls(a=1, b="x")))[0],  # a list in the hashed fields (or the identity hash)
        ]

    assert probe(rec, other_rec) == probe(dc, other_dc)
    if options.get("frozen") and options.get("eq", True):
        assert hash(rec(a=1, b="x", d=(1,))) == hash(dc(a=1, b="x", d=(1,)))


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_frozen_and_replace_match_dataclass(options: dict[str, Any]) -> None:
    rec, dc = pair(options)

    def probe(cls: type, replace: Callable[..., Any]) -> list[Any]:
        x = cls(a=1, b="x")
        changed = replace(x, b="y", c=9)
        results = [
            outcome(lambda: setattr(x, "a", 2)),
            outcome(lambda: setattr(x, "new", 2)),
            outcome(lambda: delattr(x, "b")),
            state(x),
            state(changed),
            type(changed) is cls,
            outcome(lambda: replace(x, z=1)),
        ]
        return results

    assert probe(rec, record.replace) == probe(dc, dataclasses.replace)
    if options.get("frozen"):
        with pytest.raises(record.FrozenInstanceError):
            rec(a=1, b="x").a = 3


def test_post_init_runs_after_the_fields_are_set() -> None:
    def body(field: Any) -> dict[str, Any]:
        def __post_init__(self: Any) -> None:
            object.__setattr__(self, "total", self.a + len(self.items))

        return {
            "__annotations__": {"a": "int", "items": "list[int]"},
            "items": field(default_factory=lambda: [1, 2]),
            "__post_init__": __post_init__,
        }

    for options in ({}, {"frozen": True}):
        rec, dc = pair(options, body)
        assert state(rec(1)) == state(dc(1)) == {"a": 1, "items": [1, 2], "total": 3}
        assert state(record.replace(rec(1), a=5)) == state(dataclasses.replace(dc(1), a=5))


def test_inheritance_redefined_field_keeps_its_place_with_the_new_default() -> None:
    def base(field: Any) -> dict[str, Any]:
        return {
            "__annotations__": {"a": "int", "b": "int", "c": "list"},
            "b": 1,
            "c": field(default_factory=list),
        }

    def sub(field: Any) -> dict[str, Any]:
        return {"__annotations__": {"b": "int", "d": "str"}, "b": 5, "d": "d"}

    for options in ({}, {"frozen": True}, {"kw_only": True}):
        rec = declare("record", options, sub, declare("record", options, base))
        dc = declare("dataclass", options, sub, declare("dataclass", options, base))
        for args, kwargs in [((0,), {}), ((0, 2, [3], "x"), {}), ((), {"a": 0}), ((), {"d": "y"})]:
            assert outcome(built, rec, args, kwargs) == outcome(built, dc, args, kwargs)
        assert repr(rec(a=0)) == repr(dc(a=0)) == "P(a=0, b=5, c=[], d='d')"


def test_declaration_errors_match_dataclass() -> None:
    def mutable(field: Any) -> dict[str, Any]:
        return {"__annotations__": {"a": "list"}, "a": []}

    def order(field: Any) -> dict[str, Any]:
        return {"__annotations__": {"a": "int", "b": "int"}, "a": 1}

    def unannotated(field: Any) -> dict[str, Any]:
        return {"__annotations__": {"a": "int"}, "b": field(default=1)}

    for body in (mutable, order, unannotated):
        want = outcome(declare, "dataclass", {}, body)[0]
        assert want != "ok" and outcome(declare, "record", {}, body)[0] == want, body.__name__
    assert outcome(declare, "record", {"kw_only": True}, order)[0] == "ok"  # keywords: any order


def test_a_class_keeps_the_methods_it_defines() -> None:
    def body(field: Any) -> dict[str, Any]:
        return {
            "__annotations__": {"a": "int"},
            "__repr__": lambda self: "mine",
            "__eq__": lambda self, other: True,
            "__hash__": lambda self: 7,
        }

    for options in ({}, {"frozen": True}):
        rec, dc = pair(options, body)
        for cls in (rec, dc):
            assert repr(cls(1)) == "mine" and cls(1) == cls(2) and hash(cls(1)) == 7


@record.record(frozen=True)
class Pickled:
    TAG: ClassVar[str] = "p"  # not a field (and what lets dataclasses see the ClassVar annotations above)
    name: str
    sizes: tuple[int, ...] = ()


def test_pickle_round_trip() -> None:
    obj = Pickled("a", (1, 2))
    assert pickle.loads(pickle.dumps(obj)) == obj and Pickled.__match_args__ == ("name", "sizes")


def test_as_dataclass_gives_the_dataclass_fields() -> None:
    for options in ({}, {"kw_only": True}, {"frozen": True}):
        rec, dc = pair(options)
        made = record.as_dataclass(rec)
        assert made is rec and dataclasses.is_dataclass(rec)

        def view(cls: type) -> list[Any]:
            return [
                (f.name, f.type, f.default, f.default_factory, f.repr, f.compare, f.kw_only)
                for f in dataclasses.fields(cls)
            ]

        assert view(rec) == view(dc)
        assert rec.__doc__ == dc.__doc__  # what dataclasses writes for a class without a docstring
        x = rec(a=1, b="x")  # the record's own methods stay
        assert repr(x) == repr(dc(a=1, b="x")) and x == rec(a=1, b="x")
        assert outcome(setattr, x, "a", 3)[0] == ("AttributeError" if options.get("frozen") else "ok")
        assert (rec.c, rec.e) == (3, "e") and "d" not in vars(rec)


def test_as_dataclasses_converts_every_record_and_later_ones() -> None:
    record.as_dataclasses()
    from ckptlint.results import Report

    assert dataclasses.is_dataclass(Report)
    assert all(dataclasses.is_dataclass(cls) for cls in record._RECORDS)

    @record.record(kw_only=True)
    class Later:
        a: int = 1

    assert [(f.name, f.default, f.kw_only) for f in dataclasses.fields(Later)] == [("a", 1, True)]


@dataclasses.dataclass(slots=True)
class Ref:
    """``TensorInfo`` as it was: a slotted dataclass."""

    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    storage: str | None = None
    offset: int | None = None


def test_tensor_info_is_slotted_and_behaves_as_its_dataclass() -> None:
    t = TensorInfo((2, 3), "float32", 24)
    assert not hasattr(t, "__dict__") and t.numel == 6
    assert repr(t) == repr(Ref((2, 3), "float32", 24)).replace("Ref(", "TensorInfo(")
    assert t == TensorInfo((2, 3), "float32", 24, None, None) and t != TensorInfo((2, 3), "float32", 24, "m")
    assert TensorInfo.__hash__ is None and TensorInfo.__match_args__ == Ref.__match_args__
    assert record.replace(t, storage="m") == TensorInfo((2, 3), "float32", 24, "m")
    assert pickle.loads(pickle.dumps(t)) == t
    record.as_dataclasses()
    assert [(f.name, f.default) for f in dataclasses.fields(TensorInfo)] == [
        (f.name, f.default) for f in dataclasses.fields(Ref)
    ]
    assert all(type(vars(TensorInfo)[name]).__name__ == "member_descriptor" for name in Ref.__match_args__)
    assert TensorInfo.model_validate({"shape": [1], "dtype": "f", "nbytes": 4}) == TensorInfo((1,), "f", 4)
    assert t.model_dump() == dataclasses.asdict(Ref((2, 3), "float32", 24))
