"""Typed values rebuilt from the JSON row images of MySQL/MariaDB and SQLite audit triggers.

The relay must hand the runtime the same Python values the polling (and binlog) sources hand
over, so a row's Avro is byte-identical whatever the capture method (MySQL/MariaDB: the canonical
values of the project's MySQL value contract). The trigger side (``cdc.audit.sql_mysql``,
``cdc.audit.sql_sqlite``) chose an exact JSON form per column type; this module inverts it.
PostgreSQL needs none of this: the relay lets the server rebuild the row with
``jsonb_populate_record`` and the driver load it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from cdc.audit import sql_mysql
from cdc.audit.catalog import Column

Decoder = Callable[[Any], Any]


def parse_image(text: str | None) -> dict[str, Any] | None:
    """A JSON image with exact numbers (DECIMAL stays Decimal; DOUBLE text round-trips)."""
    if text is None:
        return None
    return json.loads(text, parse_float=Decimal)  # type: ignore[no-any-return]


def _time(text: str) -> dt.timedelta | str:
    """MySQL TIME text (``-838:59:59.500000``) as a signed timedelta."""
    negative = text.startswith("-")
    try:
        h, m, s = text.lstrip("-").split(":")
        sec = Decimal(s)
        value = dt.timedelta(
            hours=int(h), minutes=int(m), seconds=int(sec), microseconds=int(sec % 1 * 1_000_000)
        )
    except ValueError:
        return text
    return -value if negative else value


def _date(text: str) -> dt.date | str:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return text  # a zero date: the converter makes it a row error naming the field


def _datetime(text: str) -> dt.datetime | str:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return text


def _epoch(value: Any) -> dt.datetime | str:
    """UNIX_TIMESTAMP(ts) -> aware UTC datetime, exact to the microsecond."""
    seconds = Decimal(value)
    if seconds == 0:
        return "0000-00-00 00:00:00"  # MySQL's zero TIMESTAMP
    whole = int(seconds)
    micros = int((seconds - whole) * 1_000_000)
    return dt.datetime.fromtimestamp(whole, dt.UTC) + dt.timedelta(microseconds=micros)


def _set(text: str) -> list[str]:
    return [] if text == "" else text.split(",")  # the server renders members in declared order


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def _float(value: Any) -> float:
    return float(value)


def _mysql_decoder(column: Column) -> Decoder | None:
    kind = sql_mysql.kind(column)
    t = column.data_type
    if kind == "hex":
        return bytes.fromhex
    if kind == "epoch":
        return _epoch
    if kind == "float" or t in ("double", "real"):
        return _float
    if t in ("decimal", "numeric"):
        return _decimal
    if t == "date":
        return _date
    if t == "datetime":
        return _datetime
    if t == "time":
        return _time
    if t == "set":
        return _set
    return None  # ints, bit (cast to unsigned), strings, enums, year, json/uuid text: as parsed


def mysql_decoders(columns: Sequence[Column]) -> dict[str, Decoder | None]:
    """Per column, the function from its JSON image value to the canonical Python value."""
    return {c.name: _mysql_decoder(c) for c in columns}


def decode_mysql(
    image: dict[str, Any], names: Sequence[str], decoders: dict[str, Decoder | None]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = image.get(name)
        decoder = decoders.get(name)
        out[name] = value if value is None or decoder is None else decoder(value)
    return out


def _sqlite_raw(value: Any) -> Any:
    """Undo the trigger's tags: ["r", "<17 digits>"] is a REAL, ["b", "<hex>"] a BLOB."""
    if isinstance(value, list) and len(value) == 2 and value[0] in ("r", "b"):
        return float(value[1]) if value[0] == "r" else bytes.fromhex(value[1])
    if isinstance(value, Decimal):  # json.loads(parse_float=Decimal) above; SQLite hands floats
        return float(value)
    return value


def sqlite_decoders(table: sa.Table, dialect: sa.Dialect) -> dict[str, Decoder | None]:
    """Per column, the reflected type's result processor (what the polling source applies)."""
    out: dict[str, Decoder | None] = {}
    for col in table.c:
        try:
            out[col.name] = col.type.dialect_impl(dialect).result_processor(dialect, None)
        except NotImplementedError:
            out[col.name] = None
    return out


def decode_sqlite(
    image: dict[str, Any], names: Sequence[str], processors: dict[str, Decoder | None]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = _sqlite_raw(image.get(name))
        proc = processors.get(name)
        out[name] = value if value is None or proc is None else proc(value)
    return out
