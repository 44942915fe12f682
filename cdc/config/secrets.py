"""A string type for DSNs and passwords that never prints its secret."""

from __future__ import annotations

from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from cdc.masking import mask_dsn


class Dsn:
    """A connection URL. ``str()``/``repr()`` mask the password; ``.secret`` is the real value."""

    __slots__ = ("secret",)

    def __init__(self, value: str) -> None:
        self.secret = value

    def __str__(self) -> str:
        return mask_dsn(self.secret)

    def __repr__(self) -> str:
        return f"Dsn({mask_dsn(self.secret)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dsn) and other.secret == self.secret

    def __hash__(self) -> int:
        return hash(self.secret)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, _source: Any, _handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _to_dsn,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


def _to_dsn(value: Any) -> Dsn:
    if isinstance(value, Dsn):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("expected a connection URL string, e.g. postgresql://user:pass@host:5432/db")
    return Dsn(value)


DsnField = Dsn
