"""One PostgreSQL table with a column per type the WAL source supports, its explicit Avro mapping
(README, type mapping), rows full of edge cases, and an independent check of a captured value.

The check decodes Avro with the Apache ``avro`` library (not fastavro, which the project writes
with), with every ``logicalType`` stripped so the raw encoding is seen, and compares each field
with PostgreSQL's own text of the column (its type's output function, through ``format('%s')``)
in a TimeZone=UTC, lc_monetary=C session. Where the text has no single rendering (floats) it is parsed and compared
bit for bit; intervals are rendered by PostgreSQL from the decoded parts.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import io
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import avro.io
import avro.schema
import psycopg
from psycopg import sql


def _ts(micros: int, zone: str) -> str:
    return _clock_text(dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=micros), " ") + zone


def _clock_text(v: dt.datetime | dt.time, sep: str = "") -> str:
    """PostgreSQL's ISO text of a wall-clock value: fractional seconds without trailing zeros."""
    text = (
        v.isoformat(sep=sep, timespec="microseconds")
        if isinstance(v, dt.datetime)
        else v.isoformat("microseconds")
    )
    return text.rstrip("0").rstrip(".") if "." in text else text


def _time(micros: int) -> str:
    return _clock_text((dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=micros)).time())


def _decimal(scale: int) -> Callable[[bytes], str]:
    exact = decimal.Context(prec=1000)
    return lambda raw: format(Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale, exact), "f")


def _array_text(items: list[Any]) -> str:
    """array_out's quoting: NULL bare, quotes around empty/special elements, \\ before " and \\."""

    def one(x: Any) -> str:
        if x is None:
            return "NULL"
        s = str(x)
        if s == "" or s.upper() == "NULL" or any(c in s for c in '{},"\\ \t\n\r\v\f'):
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return s

    return "{" + ",".join(one(x) for x in items) + "}"


def _float_bits(fmt: str) -> Callable[[float, str], bool]:
    def same(decoded: float, text: str) -> bool:
        parsed = float(text.replace("Infinity", "inf"))
        if math.isnan(parsed):
            return math.isnan(decoded)
        return struct.pack(fmt, decoded) == struct.pack(fmt, parsed)

    return same


@dataclass(frozen=True)
class Col:
    """One column: SQL type, Avro type, and how a decoded (logical-type-free) value reads as text."""

    name: str
    sql_type: str
    avro: Any
    render: Callable[[Any], str] | None = None  # decoded -> PostgreSQL's text (None: str value as is)
    same: Callable[[Any, str], bool] | None = None  # instead of render, where text is not canonical
    pg_render: str | None = None  # instead: SQL rendering the decoded value's parts (%s each)


def _logical(base: str, logical: str, **extra: Any) -> dict[str, Any]:
    return {"type": base, "logicalType": logical, **extra}


INTERVAL = {
    "type": "record",
    "name": "Interval",
    "fields": [
        {"name": "months", "type": "int"},
        {"name": "days", "type": "int"},
        {"name": "micros", "type": "long"},
    ],
}
MOOD = {"type": "enum", "name": "Mood", "symbols": ["sad", "ok", "happy"]}

COLUMNS: list[Col] = [
    Col("c_char", "char(6)", "string"),
    Col("c_varchar", "varchar(20)", "string"),
    Col("c_text", "text", "string"),
    Col("c_bool", "boolean", "boolean", render=lambda v: "t" if v else "f"),
    Col("n_money", "numeric(12,4)", _logical("bytes", "decimal", precision=12, scale=4), render=_decimal(4)),
    Col("n_big", "numeric(60,30)", _logical("bytes", "decimal", precision=60, scale=30), render=_decimal(30)),
    Col("n_any", "numeric", "string"),  # unconstrained: NaN and any scale only fit a string
    Col("i2", "smallint", "int", render=str),
    Col("i4", "integer", "int", render=str),
    Col("i8", "bigint", "long", render=str),
    Col("f4", "real", "float", same=_float_bits("<f")),
    Col("f8", "double precision", "double", same=_float_bits("<d")),
    Col("b", "bytea", "bytes", render=lambda v: "\\x" + v.hex()),
    Col(
        "d",
        "date",
        _logical("int", "date"),
        render=lambda v: (dt.date(1970, 1, 1) + dt.timedelta(days=v)).isoformat(),
    ),
    Col("ts", "timestamp", _logical("long", "local-timestamp-micros"), render=lambda v: _ts(v, "")),
    Col("tstz", "timestamptz", _logical("long", "timestamp-micros"), render=lambda v: _ts(v, "+00")),
    Col("t", "time", _logical("long", "time-micros"), render=_time),
    Col("ttz", "timetz", "string"),
    Col("u", "uuid", _logical("string", "uuid")),
    Col("j", "json", "string"),
    Col("jb", "jsonb", "string"),
    Col("a_text", "text[]", {"type": "array", "items": ["null", "string"]}, render=_array_text),
    Col("a_int", "integer[]", {"type": "array", "items": ["null", "int"]}, render=_array_text),
    Col("e", "mood", MOOD),
    Col("dom", "positive", "int", render=str),
    Col("tsv", "tsvector", "string"),
    Col("ip", "inet", "string"),
    Col("net", "cidr", "string"),
    Col("mac", "macaddr", "string"),
    Col("cash", "money", "string"),
    Col("bits", "bit(4)", "string"),
    Col("vbits", "varbit", "string"),
    Col("r_int", "int4range", "string"),
    Col("r_ts", "tstzrange", "string"),
    # Last: the polling source has no exact interval, and its bodies are the WAL's without it.
    Col(
        "iv",
        "interval",
        INTERVAL,
        pg_render="SELECT (make_interval(months => %s, days => %s) + %s::int8 * interval '1 microsecond')::text",
    ),
]

SETUP = [
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE DOMAIN positive AS integer CHECK (VALUE > 0)",
    "CREATE TABLE {table} (id bigint PRIMARY KEY, "
    + ", ".join(f"{c.name} {c.sql_type}" for c in COLUMNS)
    + ")",
]

#: The contents; row i is inserted as id i (snapshot) and again as id 100 + i (stream). SQL literals.
ROWS: list[dict[str, str]] = [
    {
        "c_char": "'ab'",
        "c_varchar": "'plain'",
        "c_text": "'Ünïcødé ✓ 😀 日本'",
        "c_bool": "true",
        "n_money": "'12345678.9012'",
        "n_big": "'123456789012345678901234567890.000000000000000000000000000001'",
        "n_any": "'0.000000000000000000000000000001'",
        "i2": "-32768",
        "i4": "2147483647",
        "i8": "-9223372036854775808",
        "f4": "'-0'",
        "f8": "'-0'",
        "b": "'\\x00ff10'::bytea",
        "d": "'2024-02-29'",
        "ts": "'2024-03-10 02:30:00.000001'",
        "tstz": "'2024-03-10 01:59:59.999999-05'",
        "t": "'23:59:59.999999'",
        "ttz": "'12:34:56.5+05:30'",
        "iv": "'1 year 2 mons -3 days 04:05:06.789'",
        "u": "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
        "j": '\'{"b": 1,  "a": [1, 2.50]}\'',
        "jb": '\'{"b": 1, "a": [1, 2.50], "u": "é"}\'',
        "a_text": """E'{"a,b", "c\\\\"d", NULL, "NULL", "", " x "}'""",
        "a_int": "'{1,NULL,-3}'",
        "e": "'happy'",
        "dom": "7",
        "tsv": "'a fat cat sat on a mat'::tsvector",
        "ip": "'::ffff:1.2.3.4'",
        "net": "'10.1.0.0/16'",
        "mac": "'08:00:2b:01:02:03'",
        "cash": "'1234.56'",
        "bits": "B'1010'",
        "vbits": "B'10101'",
        "r_int": "'[1,10)'",
        "r_ts": "'[2024-01-01 00:00+02, 2024-01-02 00:00+00)'",
    },
    {
        "c_char": "''",
        "c_varchar": "'  trailing  '",
        "c_text": "E'tab\\there \\\\ \"q\" \\nnewline'",
        "c_bool": "false",
        "n_money": "'-0.0001'",
        "n_big": "'-0.000000000000000000000000000001'",
        "n_any": "'NaN'",
        "i2": "32767",
        "i4": "-2147483648",
        "i8": "9223372036854775807",
        "f4": "'NaN'",
        "f8": "'-Infinity'",
        "b": "''::bytea",
        "d": "'0001-01-01'",
        "ts": "'1999-12-31 23:59:59'",
        "tstz": "'2024-06-01 12:00:00.5+05:30'",
        "t": "'00:00:00'",
        "ttz": "'00:00:00-11'",
        "iv": "'-1 mons +1 day -00:00:00.000001'",
        "u": "'00000000-0000-0000-0000-000000000000'",
        "j": "'[]'",
        "jb": "'null'",
        "a_text": "'{}'",
        "a_int": "'{NULL}'",
        "e": "'sad'",
        "dom": "2147483647",
        "tsv": "$$'don''t' 'a:1A,2B' 'x y'$$::tsvector",
        "ip": "'192.168.0.1/24'",
        "net": "'2001:db8::/32'",
        "mac": "'ff:ff:ff:ff:ff:ff'",
        "cash": "'-92233720368547758.08'",
        "bits": "B'0000'",
        "vbits": "B''",
        "r_int": "'empty'",
        "r_ts": "'(,2024-01-01 00:00:00.000001+00]'",
    },
    {
        "c_char": "'ÿ ü'",
        "n_any": "'-123456789012345678901234567890.1234567890'",
        "f4": "'3.4028235e+38'",
        "f8": "'5e-324'",
        "tstz": "'1999-12-31 23:59:59.000001+14'",
    },
    {
        "c_char": "'abcdef'",
        "n_any": "'-Infinity'",
        "f4": "'-Infinity'",
        "f8": "'Infinity'",
        "ts": "'2000-01-01 00:00:00'",
        "iv": "'0'",
        "j": '\'{"k": "\\u00e9"}\'',
        "tsv": "''::tsvector",
        "ip": "'10.0.0.1'",
        "net": "'192.168.0.0/24'",
        "r_int": "'(,5]'",
        "a_text": "ARRAY['NuLL', 'a b', E'back\\\\slash', '{', 'é']",
    },
    {},  # every column NULL
]


def insert_sql(table: str, first_id: int) -> str:
    """One INSERT of every row of :data:`ROWS`, ids from ``first_id``."""
    values = []
    for i, row in enumerate(ROWS):
        values.append("(" + ", ".join([str(first_id + i)] + [row.get(c.name, "NULL") for c in COLUMNS]) + ")")
    return f"INSERT INTO {table} (id, {', '.join(c.name for c in COLUMNS)}) VALUES " + ", ".join(values)


def value_schema(name: str = "Matrix", without: tuple[str, ...] = ()) -> dict[str, Any]:
    """The value .avsc: every column but ``without``, nullable (row 4 is all NULL)."""
    return {
        "type": "record",
        "name": name,
        "namespace": "test.matrix",
        "fields": [{"name": "id", "type": "long"}]
        + [
            {"name": c.name, "type": ["null", c.avro], "default": None}
            for c in COLUMNS
            if c.name not in without
        ],
    }


KEY_SCHEMA = {
    "type": "record",
    "name": "MatrixKey",
    "namespace": "test.matrix",
    "fields": [{"name": "id", "type": "long"}],
}


def _strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical(s) for s in schema]
    return schema


class RawDecoder:
    """Apache avro's DatumReader over the value schema without logical types (raw ints and bytes)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.reader = avro.io.DatumReader(
            avro.schema.parse(json.dumps(_strip_logical(copy.deepcopy(schema))))
        )

    def __call__(self, body: bytes) -> dict[str, Any]:
        decoder = avro.io.BinaryDecoder(io.BytesIO(body))
        value: dict[str, Any] = self.reader.read(decoder)
        return value


def pg_texts(conn: psycopg.Connection[Any], table: str) -> dict[int, dict[str, str | None]]:
    """PostgreSQL's own text of every column of every row: format('%s') calls the type's output
    function (``::text`` is not always that: it trims char(n), spells booleans out, adds /32)."""
    exprs = [
        sql.SQL("CASE WHEN {0} IS NOT NULL THEN format('%s', {0}) END").format(sql.Identifier(c.name))
        for c in COLUMNS
    ]
    query = sql.SQL("SELECT id, {} FROM {}").format(sql.SQL(", ").join(exprs), sql.Identifier(table))
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET lc_monetary = 'C'")  # as the WAL source's sessions (SESSION_OPTIONS)
    return {
        row[0]: {c.name: row[i + 1] for i, c in enumerate(COLUMNS)} for row in conn.execute(query).fetchall()
    }


def mismatches(
    conn: psycopg.Connection[Any], decoded: dict[str, Any], texts: dict[str, str | None]
) -> list[str]:
    """Every field whose decoded Avro value is not the database's text, as readable lines."""
    out = []
    for c in COLUMNS:
        value, text = decoded[c.name], texts[c.name]
        if value is None or text is None:
            ok, shown = value is None and text is None, repr(value)
        elif c.pg_render is not None:
            parts = list(value.values()) if isinstance(value, dict) else [value]
            row = conn.execute(c.pg_render, parts).fetchone()
            shown = row[0] if row else None
            ok = shown == text
        elif c.same is not None:
            ok, shown = c.same(value, text), repr(value)
        else:
            shown = c.render(value) if c.render is not None else value
            ok = shown == text
        if not ok:
            out.append(f"{c.name} ({c.sql_type}): Avro gives {shown!r}, PostgreSQL {text!r}")
    return out
