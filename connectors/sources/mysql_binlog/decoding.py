"""Rows of a binlog row event -> the canonical Python values of the MySQL-family contract.

Each row is decoded with the columns of ITS OWN TABLE_MAP event (``binlog_row_metadata=FULL``
puts names, signedness, charsets and enum/set labels in every TABLE_MAP), never with today's
``information_schema``. A TABLE_MAP is checked against the stream once per table id and shape:
a mapped column that is missing or whose type family changed stops the connector before the
first row of that shape is produced (a column the stream does not map is ignored).

``information_schema`` is read once at start-up only for what a TABLE_MAP cannot say: that a
``BINARY(16)`` column is really a MariaDB ``UUID`` or ``INET6`` (rendering), and the type family
the stream was configured against (the baseline a retype is detected from).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE

from cdc.errors import SchemaError

Normalizer = Callable[[Any], Any]

_INT_TYPES = {
    FIELD_TYPE.TINY: "tinyint",
    FIELD_TYPE.SHORT: "smallint",
    FIELD_TYPE.INT24: "mediumint",
    FIELD_TYPE.LONG: "int",
    FIELD_TYPE.LONGLONG: "bigint",
}
_TEXTUAL = (FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING, FIELD_TYPE.BLOB)
_FAMILIES = {
    FIELD_TYPE.NEWDECIMAL: "decimal",
    FIELD_TYPE.FLOAT: "float",
    FIELD_TYPE.DOUBLE: "double",
    FIELD_TYPE.BIT: "bit",
    FIELD_TYPE.DATE: "date",
    FIELD_TYPE.DATETIME: "datetime",
    FIELD_TYPE.DATETIME2: "datetime",
    FIELD_TYPE.TIMESTAMP: "timestamp",
    FIELD_TYPE.TIMESTAMP2: "timestamp",
    FIELD_TYPE.TIME: "time",
    FIELD_TYPE.TIME2: "time",
    FIELD_TYPE.YEAR: "year",
    FIELD_TYPE.JSON: "json",
    FIELD_TYPE.ENUM: "enum",
    FIELD_TYPE.SET: "set",
    FIELD_TYPE.GEOMETRY: "geometry",
}
# information_schema DATA_TYPE -> the binlog families it may arrive as
_EXPECTED = {
    **{t: {t} for t in ("tinyint", "smallint", "mediumint", "int", "bigint")},
    "decimal": {"decimal"},
    "float": {"float"},
    "double": {"double"},
    "bit": {"bit"},
    **{t: {"text"} for t in ("char", "varchar", "tinytext", "text", "mediumtext", "longtext")},
    **{t: {"bytes"} for t in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob")},
    "date": {"date"},
    "datetime": {"datetime"},
    "timestamp": {"timestamp"},
    "time": {"time"},
    "year": {"year"},
    "json": {"json", "text"},  # MariaDB's JSON is LONGTEXT with a check
    "enum": {"enum"},
    "set": {"set"},
    "uuid": {"bytes"},
    "inet6": {"bytes"},
    "inet4": {"int"},
}


@dataclass(frozen=True, slots=True)
class Baseline:
    """A mapped column as ``information_schema`` described it at start-up."""

    data_type: str  # DATA_TYPE, lowercase (e.g. "int", "varchar", "uuid")
    unsigned: bool
    precision: int | None = None
    scale: int | None = None


def family(column: Any) -> str:
    """The type family of a TABLE_MAP column (what a retype is judged by)."""
    kind = column.type
    if kind in _INT_TYPES:
        return _INT_TYPES[kind]
    if kind in _TEXTUAL:
        return "bytes" if column.character_set_name in (None, "binary") else "text"
    return _FAMILIES.get(kind, f"type {kind}")


def incompatibility(column: Any, base: Baseline) -> str | None:
    """Why a TABLE_MAP column no longer fits the stream's baseline, or None."""
    got = family(column)
    expected = _EXPECTED.get(base.data_type, {got})
    if got not in expected:
        return f"type changed: was {base.data_type}, the binlog now carries {got}"
    if got in _INT_TYPES.values() and bool(column.unsigned) != base.unsigned:
        return f"signedness changed: was {'unsigned' if base.unsigned else 'signed'}"
    if got == "decimal" and (column.precision, column.decimals) != (base.precision, base.scale):
        return (
            f"type changed: was decimal({base.precision},{base.scale}), "
            f"the binlog now carries decimal({column.precision},{column.decimals})"
        )
    return None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC)


def _bits(value: str) -> int:
    return int(value, 2) if value else 0


def _pad(width: int) -> Normalizer:
    def pad(value: bytes) -> bytes:
        return value.ljust(width, b"\x00")

    return pad


def _set_members(labels: Sequence[str]) -> Normalizer:
    def members(value: set[str]) -> list[str]:
        return [label for label in labels if label in value]

    return members


def _uuid_text(value: bytes) -> str:
    return str(uuid.UUID(bytes=value))


def _inet6_text(value: bytes) -> str:
    return ipaddress.IPv6Address(value).compressed


def normalizer(column: Any, base: Baseline | None) -> Normalizer | None:
    """The conversion of the library's value of ``column`` into the contract's, or None (as is).

    The library already returns ints (true unsigned values), Decimal, exact floats, str decoded
    with the column's charset, date, naive datetime, signed timedelta and enum labels.
    """
    kind = column.type
    data_type = base.data_type if base else ""
    if kind in (FIELD_TYPE.TIMESTAMP, FIELD_TYPE.TIMESTAMP2):
        return _utc  # the library reads the UTC epoch into a naive value
    if kind == FIELD_TYPE.BIT:
        return _bits
    if kind == FIELD_TYPE.SET:
        return _set_members(tuple(column.set_values or ()))
    if data_type == "uuid":
        return _uuid_text
    if data_type == "inet6":
        return _inet6_text
    if kind == FIELD_TYPE.STRING and family(column) == "bytes" and data_type == "binary":
        return _pad(int(column.max_length))  # BINARY(n) is stored without its trailing zeros
    return None


@dataclass(slots=True)
class RowMapper:
    """Turns one TABLE_MAP shape's row dicts into the stream's columns (mapped ones only)."""

    stream: str
    table: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    normalizers: tuple[tuple[str, Normalizer], ...]
    zero_date_columns: frozenset[str]

    def values(self, row: dict[str, Any], none_sources: dict[str, str] | None = None) -> dict[str, Any]:
        out = {c: row[c] for c in self.columns}
        for name, convert in self.normalizers:
            value = out[name]
            if value is not None:
                out[name] = convert(value)
        if none_sources:
            for name in self.zero_date_columns.intersection(none_sources):
                # The library returns None for a zero or invalid date; the converter turns this
                # text into a row error naming the field (never a silent NULL).
                if "range" in none_sources[name]:
                    out[name] = "0000-00-00" if "date range" in none_sources[name] else "0000-00-00 00:00:00"
        return out


def build_mapper(
    stream: str,
    table_name: str,
    table_map: Any,
    columns: Sequence[str],
    key_columns: Sequence[str],
    baselines: dict[str, Baseline],
) -> RowMapper:
    """Check a TABLE_MAP against the stream and build the row mapper (SchemaError if it no
    longer fits: a mapped column dropped, renamed or retyped)."""
    by_name = {c.name: c for c in table_map.columns}
    if any(c.name is None for c in table_map.columns):
        raise SchemaError(
            f"stream {stream!r}: the binlog's TABLE_MAP of {table_name} carries no column names",
            hint="SET GLOBAL binlog_row_metadata = FULL (MySQL 8.0.1+, MariaDB 10.5+), "
            "then restart the connector",
        )
    normalizers: list[tuple[str, Normalizer]] = []
    zero: set[str] = set()
    for name in columns:
        column = by_name.get(name)
        if column is None:
            raise SchemaError(
                f"stream {stream!r}, table {table_name}: mapped column {name!r} was dropped (or renamed) "
                "in the binlog; its next change cannot be produced",
                hint="restore the column, or change the stream's mapping and schema, then restart",
            )
        base = baselines.get(name)
        if base is not None:
            problem = incompatibility(column, base)
            if problem:
                raise SchemaError(
                    f"stream {stream!r}, table {table_name}, column {name!r}: {problem}",
                    hint="change the stream's schema (and register it), or revert the column's type",
                )
        convert = normalizer(column, base)
        if convert is not None:
            normalizers.append((name, convert))
        if family(column) in ("date", "datetime", "timestamp"):
            zero.add(name)
    return RowMapper(
        stream, table_name, tuple(columns), tuple(key_columns), tuple(normalizers), frozenset(zero)
    )
