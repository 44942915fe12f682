"""Typed values rebuilt from the JSON row images of MySQL/MariaDB and SQLite audit triggers.

The relay must hand the runtime the same Python values the polling (and binlog) sources hand
over, so a row's Avro is byte-identical whatever the capture method (MySQL/MariaDB: the canonical
values of the project's MySQL value contract). The trigger side (``cdc.audit.sql_mysql``,
``cdc.audit.sql_sqlite``) chose an exact JSON form per column type; this module inverts it.
PostgreSQL: the server can rebuild any row with ``jsonb_populate_record`` for the driver to load
(exact for every type, but about 20 µs a row); for tables of common built-in types the relay
decodes the ``to_jsonb`` image text here instead (``pg_decoders``), and hands any value it is
not sure of (infinities, BC dates, NaN) back to the server.
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


class UnsureValueError(ValueError):
    """A PostgreSQL image value the fast decoders leave to the server (``jsonb_populate_record``)."""


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


# --- PostgreSQL: to_jsonb() images of common built-in types ---
# What the driver would load from jsonb_populate_record's typed column, rebuilt from to_jsonb's
# JSON form: integers and booleans as JSON literals; numeric, float4 and float8 as JSON numbers
# (numeric_out/float_out digits, so exact: parsed as Decimal); text types as strings (bpchar
# keeps its padding); dates and timestamps as ISO 8601 strings (timestamptz with the writer's
# UTC offset). Anything else - NaN and infinities (JSON strings), BC or infinite dates, years
# past 9999 - raises UnsureValueError and the row is left to the server.


def _pg_int(value: Any) -> int:
    if type(value) is not int:
        raise UnsureValueError(value)
    return value


def _pg_numeric(value: Any) -> Decimal:
    if type(value) is Decimal:
        return value
    if type(value) is int:
        return Decimal(value)
    raise UnsureValueError(value)


def _pg_float(value: Any) -> float:
    if type(value) is Decimal or type(value) is int:
        return float(value)
    raise UnsureValueError(value)


def _pg_str(value: Any) -> str:
    if type(value) is not str:
        raise UnsureValueError(value)
    return value


def _pg_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise UnsureValueError(value)
    return value


def _pg_date(value: Any) -> dt.date:
    if type(value) is not str or len(value) != 10:
        raise UnsureValueError(value)
    return dt.date.fromisoformat(value)  # a ValueError: the server's


def _pg_timestamp(value: Any) -> dt.datetime:
    if type(value) is not str or len(value) < 19 or value[10] != "T" or value[4] != "-":
        raise UnsureValueError(value)
    out = dt.datetime.fromisoformat(value)
    if out.tzinfo is not None:
        raise UnsureValueError(value)
    return out


def _pg_timestamptz(tz: dt.tzinfo) -> Decoder:
    def decode(value: Any) -> dt.datetime:
        if type(value) is not str or len(value) < 19 or value[10] != "T" or value[4] != "-":
            raise UnsureValueError(value)
        out = dt.datetime.fromisoformat(value)
        if out.tzinfo is None:
            raise UnsureValueError(value)
        return out.astimezone(tz)  # the reading session's zone, as the driver hands it

    return decode


#: built-in type oid -> decoder (domains, arrays, enums and the rest go through the server)
_PG_DECODERS: dict[int, Decoder] = {
    16: _pg_bool,
    20: _pg_int,
    21: _pg_int,
    23: _pg_int,
    25: _pg_str,
    700: _pg_float,
    701: _pg_float,
    1042: _pg_str,
    1043: _pg_str,
    1082: _pg_date,
    1114: _pg_timestamp,
    1700: _pg_numeric,
}
_PG_TIMESTAMPTZ = 1184


def pg_decoders(type_oids: dict[str, int], tz: dt.tzinfo) -> dict[str, Decoder] | None:
    """Per column, the decoder of its to_jsonb() image value; None when a column's type has none
    (the table's images are then rebuilt by the server)."""
    out: dict[str, Decoder] = {}
    for name, oid in type_oids.items():
        decoder = _pg_timestamptz(tz) if oid == _PG_TIMESTAMPTZ else _PG_DECODERS.get(oid)
        if decoder is None:
            return None
        out[name] = decoder
    return out


def decode_pg(text: str | None, names: Sequence[str], decoders: dict[str, Decoder]) -> dict[str, Any] | None:
    """A to_jsonb() image as typed values; raises ValueError (UnsureValueError included) for a value the
    server must decode."""
    if text is None:
        return None
    image = _EXACT_JSON.raw_decode(text)[0]  # jsonb's text: no surrounding whitespace
    # a KeyError: the column was added after the row was written
    return {n: None if (v := image[n]) is None else decoders[n](v) for n in names}


#: one decoder for every image (json.loads with an option builds a new one per call)
_EXACT_JSON = json.JSONDecoder(parse_float=Decimal)
