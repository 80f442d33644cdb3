"""Plain records with the part of pydantic's ``BaseModel`` API ckptlint and its users call, pydantic on demand.

The read path (readers, engine, rules, the text reporters) builds checkpoints, findings and reports as records
(``ckptlint.record``; the diff results are stdlib dataclasses): defining or constructing one imports nothing and
builds no schema (start-up time, issue 13). Validation, JSON serialisation and the JSON schema go through a
``pydantic.TypeAdapter`` of the class, built on first use and kept per class; pydantic validates and serialises
stdlib dataclasses natively, so every record class is made one first (``record.as_dataclasses``). A class sets
pydantic's config as a plain dict, e.g. ``__pydantic_config__ = {"extra": "forbid"}`` (the default, as for
``BaseModel``, ignores unknown keys).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Self

from ckptlint import record

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, TypeAdapter
    from pydantic_core import CoreSchema

_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


class Model:
    """Mixin for ``@record(kw_only=True)`` (or ``@dataclass``) classes: ``model_validate``, ``model_dump``… as on
    ``BaseModel``."""

    __slots__ = ()  # a slotted dataclass stays slotted

    @classmethod
    def type_adapter(cls) -> TypeAdapter[Self]:
        """The class's ``pydantic.TypeAdapter`` (built once: this is where pydantic is imported)."""
        adapter = _ADAPTERS.get(cls)
        if adapter is None:
            from pydantic import TypeAdapter

            record.as_dataclasses()  # pydantic reads the fields of every model nested in this one
            adapter = _ADAPTERS[cls] = TypeAdapter(cls)
        return adapter

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """Validate ``obj`` (a dict, or an instance: returned as is) into an instance; raises ValidationError."""
        return cls.type_adapter().validate_python(obj, **kwargs)

    @classmethod
    def model_validate_json(cls, data: str | bytes, **kwargs: Any) -> Self:
        """Parse and validate JSON text into an instance."""
        return cls.type_adapter().validate_json(data, **kwargs)

    @classmethod
    def model_construct(cls, **values: Any) -> Self:
        """An instance from exactly typed fields, not validated (the plain constructor)."""
        return cls(**values)

    @classmethod
    def model_json_schema(cls, **kwargs: Any) -> dict[str, Any]:
        """The JSON schema (``mode="validation"`` or ``"serialization"``, as ``BaseModel.model_json_schema``)."""
        return cls.type_adapter().json_schema(**kwargs)

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """The fields as a dict (``mode="json"``, ``exclude_none``… as ``BaseModel.model_dump``)."""
        return type(self).type_adapter().dump_python(self, **kwargs)  # type: ignore[no-any-return]

    def model_dump_json(self, **kwargs: Any) -> str:
        """The instance as JSON text (``indent``… as ``BaseModel.model_dump_json``)."""
        return type(self).type_adapter().dump_json(self, **kwargs).decode()

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy (shallow unless ``deep``) with the fields in ``update`` replaced, not validated."""
        obj = copy.deepcopy(self) if deep else self
        return record.replace(obj, **(update or {}))


def omit_none(schema: CoreSchema, handler: GetCoreSchemaHandler, *names: str) -> CoreSchema:
    """A dataclass's core ``schema`` whose fields ``names`` are left out of the output when None.

    For a class's ``__get_pydantic_core_schema__`` (called only when pydantic builds the schema): what
    ``Field(exclude_if=...)`` does on a ``BaseModel``.
    """
    target: Any = handler.resolve_ref_schema(schema)
    for item in target["schema"]["fields"]:
        if item["name"] in names:
            item["serialization_exclude_if"] = _is_none
    return schema


def _is_none(value: Any) -> bool:
    return value is None


class Tagged:
    """``Annotated`` metadata of a union of models told apart by the field ``name`` (pydantic's discriminator,
    applied only when pydantic builds the schema)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic import Discriminator

        return Discriminator(self.name).__get_pydantic_core_schema__(source, handler)
