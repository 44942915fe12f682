"""A source column, as the runtime's start-up check sees it (:class:`cdc.plugin.ColumnInfo`),
mapped onto the Avro type the README's type-mapping table documents.

The mapping is judged by the runtime's own rules: :func:`cdc.schemas.sourcecheck.check_fields`
runs on every scaffolded schema (see :mod:`cdc.discover.scaffold`), so a rule here that drifted
from the runtime shows up as a finding instead of a config that fails ``cdc check``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from cdc.plugin import ColumnInfo

_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT32 = (-(1 << 31), (1 << 31) - 1)
_INT64 = (-(1 << 63), (1 << 63) - 1)
# PostgreSQL base type names (pg_type.typname, or format_type() text) with an exact Avro type.
_PG_INTS = {
    "int2": "int",
    "int4": "int",
    "smallint": "int",
    "integer": "int",
    "int8": "long",
    "bigint": "long",
}
_PG_SCALARS: dict[str, Any] = {
    **_PG_INTS,
    "oid": "long",
    "bool": "boolean",
    "boolean": "boolean",
    "float4": "float",
    "real": "float",
    "float8": "double",
    "double precision": "double",
    "date": {"type": "int", "logicalType": "date"},
    "uuid": {"type": "string", "logicalType": "uuid"},
    "bytea": "bytes",
    "timestamp": {"type": "long", "logicalType": "local-timestamp-micros"},
    "timestamp without time zone": {"type": "long", "logicalType": "local-timestamp-micros"},
    "timestamptz": {"type": "long", "logicalType": "timestamp-micros"},
    "timestamp with time zone": {"type": "long", "logicalType": "timestamp-micros"},
    "time": {"type": "long", "logicalType": "time-micros"},
    "time without time zone": {"type": "long", "logicalType": "time-micros"},
}
_TEXT_TYPES = re.compile(
    r"^(text|varchar|bpchar|char|character|character varying|name|citext|tinytext|mediumtext|longtext"
    r"|string|clob|nvarchar|nchar|ntext)\b",
    re.I,
)


@dataclass
class Mapped:
    """The Avro type of one column, and what a person should look at."""

    avro: Any  # the non-null type (the caller adds the null branch for a nullable column)
    symbol_map: dict[str, str] = field(default_factory=dict)  # enum label -> symbol, where renamed
    notes: list[str] = field(default_factory=list)  # decisions for a person, one line each
    skip: bool = False  # no exact mapping: the column is left out of the contract
    guessed: bool = False  # the type name said too little (a domain): the widest fitting type


def avro_name(text: str) -> str:
    """A valid Avro name from arbitrary text (letters, digits, _; not starting with a digit)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if name and not name[0].isdigit() else f"_{name}"


def record_name(table: str) -> str:
    """``film_actor`` -> ``FilmActor``."""
    return avro_name(
        "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", table) if part)
    )


def _enum(name: str, labels: tuple[str, ...], what: str) -> Mapped:
    symbols: list[str] = []
    renamed: dict[str, str] = {}
    for label in labels:
        symbol = label if _SYMBOL.match(label) else avro_name(label)
        while symbol in symbols:  # two labels that sanitize alike stay distinct
            symbol += "_"
        if symbol != label:
            renamed[label] = symbol
        symbols.append(symbol)
    mapped = Mapped({"type": "enum", "name": record_name(name), "symbols": symbols}, renamed)
    if renamed:
        shown = ", ".join(f"{k!r} -> {v}" for k, v in renamed.items())
        mapped.notes.append(
            f"{what}: enum labels that are not Avro symbols are renamed by symbol_maps ({shown}); "
            "consumers see the symbols. Keep, or declare the field a string to carry the labels as they are"
        )
    return mapped


def _integer(info: ColumnInfo, hint: str | None, what: str) -> Mapped:
    if info.value_range is not None:  # MySQL: the column's true range, signedness included
        lo, hi = info.value_range
        if info.data_type == "bit" and hi == 1:
            return Mapped("boolean")
        if _INT32[0] <= lo and hi <= _INT32[1]:
            return Mapped("int")
        if _INT64[0] <= lo and hi <= _INT64[1]:
            return Mapped("long")
        return Mapped(
            {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 0},
            notes=[
                f"{what}: {info.type_name} holds 0..2^64-1, beyond Avro long: mapped to decimal(20,0) "
                "(or declare string)"
            ],
        )
    base = (hint or info.type_name).lower()
    return Mapped(_PG_INTS.get(base, "long"), guessed=base not in _PG_INTS)


def _pg_element(element: str) -> Any | None:
    """The Avro items type of a PostgreSQL array element base type, where one is exact."""
    if element in _PG_SCALARS:
        return _PG_SCALARS[element]
    if _TEXT_TYPES.match(element):
        return "string"
    return None


def map_column(
    table: str, info: ColumnInfo, *, pg_base: str | None = None, pg_category: str | None = None
) -> Mapped:
    """The Avro type of ``info`` (non-null), following the README's type-mapping table.

    ``pg_base``/``pg_category`` are the PostgreSQL base type name and category (domains
    resolved, ``_text`` for text[]) where the caller read the catalog; they refine what the
    ColumnInfo alone cannot tell (int4 vs int8 behind a domain, an array's element type).
    """
    what = f"{table}.{info.name} ({info.type_name})"
    py = info.python_type
    base = (pg_base or "").lower()
    if py is None and base in _PG_SCALARS:  # a type the reflection does not know (a domain)
        return Mapped(_PG_SCALARS[base])
    if py is None and base:  # tsvector, xml... read as their text
        py = str
    if info.enum_labels is not None and info.data_type == "set":
        items = _enum(f"{table}_{info.name}", info.enum_labels, what)
        if items.symbol_map:
            return Mapped({"type": "array", "items": "string"})
        return Mapped({"type": "array", "items": items.avro})
    if info.enum_labels is not None and py is str:
        return _enum(f"{table}_{info.name}", info.enum_labels, what)
    if py is bool:
        return Mapped("boolean")
    if py is int:
        return _integer(info, base or None, what)
    if py is float:
        if (
            info.data_type == "float"
            or base in ("float4", "real")
            or info.type_name.lower() in ("real", "float")
        ):
            return Mapped("float")
        return Mapped("double")
    if py is decimal.Decimal:
        if info.precision is None:
            return Mapped(
                "string",
                notes=[
                    f"{what}: unconstrained numeric mapped to string (the database's digits, exact); "
                    "declare a decimal(p,s) if every value fits one"
                ],
            )
        return Mapped(
            {"type": "bytes", "logicalType": "decimal", "precision": info.precision, "scale": info.scale or 0}
        )
    if py is dt.datetime:
        # micros whatever the column's precision: it holds every value, and no row error waits
        # for the first sub-millisecond value
        logical = "timestamp-micros" if info.timezone_aware else "local-timestamp-micros"
        return Mapped({"type": "long", "logicalType": logical})
    if py is dt.date:
        return Mapped({"type": "int", "logicalType": "date"})
    if py is dt.time:
        return Mapped({"type": "long", "logicalType": "time-micros"})
    if py is dt.timedelta:
        if info.data_type == "time":  # MySQL TIME: a signed interval, as signed microseconds
            return Mapped(
                "long",
                notes=[f"{what}: MySQL TIME (an interval) mapped to long: signed microseconds"],
            )
        return Mapped(
            None,
            skip=True,
            notes=[
                f"{what}: an interval read by this connector has no exact Avro type (the driver folds "
                "months into days); left out: select col::text in a query, or use the WAL source"
            ],
        )
    if py is tuple:  # the WAL source's interval: exact months, days, microseconds
        return Mapped(
            {
                "type": "record",
                "name": record_name(f"{table}_{info.name}_interval"),
                "fields": [
                    {"name": "months", "type": "int"},
                    {"name": "days", "type": "int"},
                    {"name": "micros", "type": "long"},
                ],
            }
        )
    if py is uuid.UUID or info.data_type == "uuid":
        return Mapped({"type": "string", "logicalType": "uuid"})
    if py in (bytes, bytearray, memoryview):
        return Mapped("bytes")
    if py is list:
        element = base[1:] if base.startswith("_") else info.type_name.lower().removesuffix("[]")
        element_type = _pg_element(element)
        if element_type is None:
            return Mapped(
                {"type": "array", "items": "string"},
                notes=[f"{what}: array elements mapped to string (their text)"],
            )
        return Mapped({"type": "array", "items": element_type})
    if py is str or py is dict:
        mapped = Mapped("string")
        if not _TEXT_TYPES.match(info.type_name) and pg_category not in ("S", "E"):
            mapped.notes.append(f"{what}: mapped to string (the type's own text; no exact Avro type)")
        return mapped
    return Mapped(
        "string",
        notes=[f"{what}: type unknown to the mapping, mapped to string: check the values it carries"],
    )
