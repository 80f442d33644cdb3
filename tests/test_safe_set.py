"""The few library classes in the pickle walker's safe set are checked against the installed libraries.

The walker lets a real ``training_args.bin`` through only because unpickling these classes runs none of their
code: records are rebuilt by NEWOBJ (``object.__new__``) and BUILD (``__dict__`` update), enums are looked up by
value. If a library release adds a ``__setstate__``, a custom ``__new__``/``__setattr__`` or an enum ``_missing_``
that does work, that would no longer hold — this test fails then, before any user is exposed.
"""

from __future__ import annotations

import enum
import importlib

import pytest

from ckptlint.readers.pickle_globals import _TRAINER_ENUMS, _TRAINER_RECORDS


def resolve(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def defined_by_library(cls: type, attr: str) -> list[str]:
    """The classes in ``cls``'s MRO, other than ``object``, that define ``attr`` themselves."""
    return [k.__qualname__ for k in cls.__mro__ if k is not object and attr in vars(k)]


@pytest.mark.parametrize("name", _TRAINER_RECORDS)
def test_record_classes_unpickle_without_running_their_code(name: str) -> None:
    cls = resolve(name)
    for attr in ("__setstate__", "__new__", "__setattr__", "__reduce__", "__reduce_ex__"):
        assert defined_by_library(cls, attr) == [], f"{name} defines {attr}: unpickling it would run its code"


@pytest.mark.parametrize("name", _TRAINER_ENUMS)
def test_enum_classes_are_plain_str_enums(name: str) -> None:
    cls = resolve(name)
    assert issubclass(cls, enum.Enum) and issubclass(cls, str), f"{name} is not a str enum"
    # EnumType installs Enum.__new__ (look a member up by value) on every enum class; anything else is custom
    assert cls.__new__ is enum.Enum.__new__, f"{name} has a custom __new__"
    member = next(iter(cls))
    assert cls(member.value) is member  # what the walker allows: one call with a member's value
    try:
        missing = cls._missing_("ckptlint-not-a-member")
    except ValueError:
        missing = None
    assert missing is None, f"{name}._missing_ turns unknown values into members"
