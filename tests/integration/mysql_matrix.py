"""A MariaDB table with every column type of the MySQL value contract (cdc.mysql.types), its rows,
their canonical values, and the stream's Avro schemas. Shared by the polling tests (issue 18)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

U64 = 18446744073709551615
FLT_MAX = 3.4028234663852886e38
DEC_MAX = Decimal("9" * 35 + "." + "9" * 30)
DEC_MIN = Decimal("-" + "9" * 35 + "." + "9" * 30)  # not -DEC_MAX: negation rounds to 28 digits

DDL = """
CREATE TABLE matrix (
  id INT PRIMARY KEY,
  dec65 DECIMAL(65,30),
  u64 BIGINT UNSIGNED,
  i64 BIGINT,
  f FLOAT,
  d DOUBLE,
  dt6 DATETIME(6),
  ts6 TIMESTAMP(6) NULL DEFAULT NULL,
  t6 TIME(6),
  y YEAR,
  b3 BIT(3),
  b1 BIT(1),
  j JSON,
  e ENUM('small','medium','large'),
  s SET('a','b','c','d'),
  u8 VARCHAR(50) CHARACTER SET utf8mb4,
  l1 VARCHAR(50) CHARACTER SET latin1,
  bl BLOB,
  bn BINARY(4),
  zd DATE,
  zdt DATETIME,
  uid UUID,
  ip INET6,
  g BIGINT AS (id * 1000) STORED,
  gv VARCHAR(20) AS (CONCAT('v', id)) VIRTUAL
) DEFAULT CHARSET=utf8mb4
"""
COLUMNS = [
    "id",
    "dec65",
    "u64",
    "i64",
    "f",
    "d",
    "dt6",
    "ts6",
    "t6",
    "y",
    "b3",
    "b1",
    "j",
    "e",
    "s",
    "u8",
    "l1",
    "bl",
    "bn",
    "zd",
    "zdt",
    "uid",
    "ip",
]  # inserted; g and gv are generated
READ = (*COLUMNS, "g", "gv")

UID = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")
# id -> the values inserted (None: NULL)
ROWS: dict[int, tuple[Any, ...]] = {
    1: (
        1,
        DEC_MAX,
        U64,
        2**63 - 1,
        FLT_MAX,
        1.7976931348623157e308,
        "9999-12-31 23:59:59.999999",
        "2038-01-19 03:14:07.999999",
        "838:59:59",
        2155,
        7,
        1,
        '{"a": [1, 2.5, "é"], "b": null}',
        "large",
        "d,a",
        "héllo 😀 世界",
        "café €",
        bytes(range(256)),
        b"\x01\x02",
        "0000-00-00",
        "0000-00-00 00:00:00",
        str(UID),
        "2001:db8::1",
    ),
    2: (
        2,
        DEC_MIN,
        0,
        -(2**63),
        1.401298464324817e-45,
        -2.2250738585072014e-308,
        "1000-01-01 00:00:00",
        "1970-01-01 00:00:01",
        "-838:59:59",
        1901,
        0,
        0,
        "[]",
        "small",
        "",
        "",
        "",
        b"",
        b"\x00\x00\x00\x00",
        "2020-00-00",
        "2020-01-02 03:04:05",
        "00000000-0000-0000-0000-000000000000",
        "::ffff:10.0.0.1",
    ),
    3: (
        3,
        Decimal("0.000000000000000000000000000001"),
        1,
        0,
        0.1,
        0.1,
        "2024-02-29 12:00:00.000001",
        "2024-02-29 12:00:00.000001",
        "25:00:00.000001",
        2000,
        5,
        1,
        '{"x": "😀"}',
        "medium",
        "c,b,a",
        "😀",
        "ÿ",
        b"\x00",
        b"abcd",
        "2024-02-29",
        "2024-02-29 00:00:00",
        str(UID).upper(),
        "::",
    ),
    4: (
        4,
        Decimal("-1.5"),
        2**63,
        -1,
        -0.0,
        5e-324,
        "1970-01-01 00:00:00",
        "1999-12-31 23:59:59",
        "24:00:00",
        0,
        4,
        0,
        "1",
        "large",
        "b",
        "a",
        "z",
        b"\xff",
        b"\xff\xff\xff\xff",
        "1000-01-01",
        "1000-01-01 00:00:00",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "1::",
    ),
    5: (
        5,
        Decimal("123.456"),
        42,
        42,
        16777217.0,
        -0.0,
        "2000-01-01 00:00:00.5",
        "2000-01-01 00:00:00.5",
        "-00:00:00.000001",
        1999,
        3,
        1,
        '"text"',
        "small",
        "a,b,c,d",
        "ñ",
        "ñ",
        b"\x01" * 5,
        b"\x00a",
        "2000-01-01",
        "2000-01-01 00:00:00",
        str(UID),
        "::1",
    ),
    6: (6, *([None] * (len(COLUMNS) - 1))),
}
# MariaDB's TIME extremes with fractions (row 3 otherwise)
for _id, _time in ((7, "838:59:59.999999"), (8, "-838:59:59.999999")):
    ROWS[_id] = (_id, *ROWS[3][1:8], _time, *ROWS[3][9:])

# The canonical value each row must arrive with, where it differs from the inserted value
# (cdc.mysql.types); TIME as the exact signed interval.
TIMES = {
    1: dt.timedelta(hours=838, minutes=59, seconds=59),
    2: -dt.timedelta(hours=838, minutes=59, seconds=59),
    3: dt.timedelta(hours=25, microseconds=1),
    4: dt.timedelta(hours=24),
    5: -dt.timedelta(microseconds=1),
    6: None,
    7: dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999),
    8: -dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999),
}
TIME_MICROS = {k: None if v is None else v // dt.timedelta(microseconds=1) for k, v in TIMES.items()}
SETS = {1: ["a", "d"], 2: [], 3: ["a", "b", "c"], 4: ["b"], 5: ["a", "b", "c", "d"], 6: None}
BITS = {1: (7, 1), 2: (0, 0), 3: (5, 1), 4: (4, 0), 5: (3, 1), 6: (None, None)}
FLOATS = {1: FLT_MAX, 2: 1.401298464324817e-45, 3: 0.10000000149011612, 4: 0.0, 5: 16777216.0, 6: None}
DOUBLES = {1: 1.7976931348623157e308, 2: -2.2250738585072014e-308, 3: 0.1, 4: 5e-324, 5: 0.0, 6: None}
BINARIES = {1: b"\x01\x02\x00\x00", 2: b"\x00" * 4, 3: b"abcd", 4: b"\xff" * 4, 5: b"\x00a\x00\x00", 6: None}
for _table in (SETS, BITS, FLOATS, DOUBLES, BINARIES):  # rows 7 and 8 are row 3 but for the TIME
    _table.update({7: _table[3], 8: _table[3]})
ZERO_DATES = {1: ("zd", "zdt"), 2: ("zd",)}  # the columns holding a zero or invalid date

INSERT = f"INSERT INTO matrix ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"


def insert_rows(cur: Any, ids: list[int] | None = None) -> None:
    """Insert the matrix rows (MariaDB accepts the zero dates: no NO_ZERO_DATE in sql_mode)."""
    cur.execute("SET SESSION time_zone = '+00:00'")
    cur.execute("SET SESSION sql_mode = 'STRICT_TRANS_TABLES'")
    for i in ids or list(ROWS):
        cur.execute(INSERT, ROWS[i])


def _n(t: Any) -> list[Any]:
    return ["null", t]


def _dec(p: int, s: int) -> dict[str, Any]:
    return {"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s}


FIELDS: list[tuple[str, Any]] = [
    ("dec65", _dec(65, 30)),
    ("u64", _dec(20, 0)),
    ("i64", "long"),
    ("f", "float"),
    ("d", "double"),
    ("dt6", {"type": "long", "logicalType": "local-timestamp-micros"}),
    ("ts6", {"type": "long", "logicalType": "timestamp-micros"}),
    ("t6", "long"),
    ("y", "int"),
    ("b3", "long"),
    ("b1", "boolean"),
    ("j", "string"),
    ("e", {"type": "enum", "name": "Size", "symbols": ["small", "medium", "large"]}),
    ("s", {"type": "array", "items": "string"}),
    ("u8", "string"),
    ("l1", "string"),
    ("bl", "bytes"),
    ("bn", {"type": "fixed", "name": "Bin4", "size": 4}),
    ("zd", {"type": "int", "logicalType": "date"}),
    ("zdt", {"type": "long", "logicalType": "local-timestamp-micros"}),
    ("uid", "string"),
    ("ip", "string"),
    ("g", "long"),
    ("gv", "string"),
]
KEY_SCHEMA = {
    "type": "record",
    "name": "MatrixKey",
    "namespace": "test.mysql",
    "fields": [{"name": "id", "type": "int"}],
}
VALUE_SCHEMA = {
    "type": "record",
    "name": "Matrix",
    "namespace": "test.mysql",
    "fields": [
        {"name": "id", "type": "int"},
        *({"name": n, "type": _n(t), "default": None} for n, t in FIELDS),
    ],
}
