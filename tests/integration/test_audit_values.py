"""The audit relay's values equal what the polling source reads from the table itself (PostgreSQL,
SQLite), and the MySQL value contract (MariaDB), for rows of many column types."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cdc.audit import generator
from cdc.plugin import StreamSpec
from cdc.sql.engines import create_engine
from connectors.sources.audit.reader import TableReader
from connectors.sources.polling.config import Mode, PollingStream
from connectors.sources.polling.reader import StreamReader

pytestmark = pytest.mark.integration

PG_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed (
    id int PRIMARY KEY, n numeric(30,10), nu numeric, f8 double precision, f4 real, t text,
    ts timestamp(6), tz timestamptz, d date, tm time, b bytea, arr int[], tarr text[], u uuid,
    j jsonb, js json, iv interval, m mood, flag boolean, big bigint
)"""
PG_ROWS = [
    "INSERT INTO typed VALUES (1, 12345678901234567890.0123456789, 1e-20, 0.1 + 0.2, 1.1, 'naïve ''q''', "
    "'2020-02-29 23:59:59.123456', '2020-06-01 12:00:00.5+02', '0044-03-15', '13:14:15.000001', "
    "'\\x00ff10'::bytea, '{1,NULL,3}', '{\"a b\",\"\"}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
    "'{\"k\": [1, 2.50, null]}', '{\"x\":  1}', '1 year 2 mons 3 days 04:05:06.7', 'happy', true, 9223372036854775807)",
    "INSERT INTO typed (id) VALUES (2)",
]


def _spec(columns: list[str]) -> StreamSpec:
    return StreamSpec("typed", ("id",), tuple(columns), {"table": "typed"})


def _polled(engine: sa.Engine, columns: list[str]) -> dict[Any, dict[str, Any]]:
    capture = PollingStream(table="typed", mode=Mode.BULK)
    reader = StreamReader(_spec(columns), capture, engine, dt.UTC)
    return {e.key["id"]: e.after for e in reader.read(0.0, 100)}


def _relayed(engine: sa.Engine, columns: list[str], dialect: str) -> dict[Any, Any]:
    with engine.connect() as conn:
        schema = "public" if dialect == "postgresql" else ""
        reader = TableReader(_spec(columns), "typed", engine, dialect, schema)
        ids = [i for i, _ in reader.candidates(conn, 100)]
        rows = reader.images(conn, ids)
    assert all(r.op == "c" and r.before is None for r in rows)
    return {r.after["id"]: r.after for r in rows if r.after is not None}


def _same(relayed: dict[Any, Any], polled: dict[Any, Any]) -> None:
    """Field by field, value and type (Decimal vs float would compare equal)."""
    assert relayed.keys() == polled.keys()
    for key, row in polled.items():
        for name, value in row.items():
            got = relayed[key][name]
            assert got == value and type(got) is type(value), f"key {key}, {name}: {got!r} != {value!r}"


def test_postgres_values_equal_polling(pg_database: str) -> None:
    engine = create_engine(pg_database)
    with engine.begin() as conn:
        conn.exec_driver_sql(PG_DDL)
    generator.apply(engine, ["typed"])
    with engine.begin() as conn:
        for row in PG_ROWS:
            conn.exec_driver_sql(row)
    columns = [c.name for c in sa.Table("typed", sa.MetaData(), autoload_with=engine).c]
    polled, relayed = _polled(engine, columns), _relayed(engine, columns, "postgresql")
    # A json (not jsonb) column keeps its text as written in polling and the WAL; the trigger's
    # jsonb row image normalizes it (documented in the README): equal as JSON, not as text.
    assert relayed[1]["js"] == '{"x": 1}' and polled[1]["js"] == '{"x":  1}'
    assert json.loads(relayed[1]["js"]) == json.loads(polled[1]["js"])
    for rows in (polled, relayed):
        for row in rows.values():
            row.pop("js")
    _same(relayed, polled)
    assert relayed[1]["n"] == Decimal("12345678901234567890.0123456789")
    assert relayed[1]["tz"] == dt.datetime(2020, 6, 1, 10, 0, 0, 500000, dt.UTC)
    assert relayed[1]["ts"].tzinfo is None and relayed[1]["b"] == b"\x00\xff\x10"
    engine.dispose()


SQLITE_DDL = """CREATE TABLE typed (id INTEGER PRIMARY KEY, n NUMERIC(10,2), r REAL, t TEXT, b BLOB,
    ts DATETIME, d DATE, flag BOOLEAN, i INTEGER)"""


def test_sqlite_values_equal_polling(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(SQLITE_DDL)
    generator.apply(engine, ["typed"])
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO typed VALUES (1, 12.34, 0.1 + 0.2, 'x''y', x'00ff', '2020-01-02 03:04:05.123456', "
            "'2021-12-31', 1, 42)"
        )
        conn.exec_driver_sql("INSERT INTO typed (id, r) VALUES (2, 1e300 / 3)")
    columns = [c.name for c in sa.Table("typed", sa.MetaData(), autoload_with=engine).c]
    polled, relayed = _polled(engine, columns), _relayed(engine, columns, "sqlite")
    _same(relayed, polled)
    assert relayed[1]["r"] == 0.1 + 0.2 and relayed[2]["r"] == 1e300 / 3
    assert relayed[1]["b"] == b"\x00\xff" and isinstance(relayed[1]["ts"], dt.datetime)
    engine.dispose()


MYSQL_DDL = """CREATE TABLE typed (id INT UNSIGNED PRIMARY KEY, n DECIMAL(30,10), f FLOAT, d8 DOUBLE,
    t VARCHAR(50), tx TEXT, bin BINARY(4), vb VARBINARY(10), bl BLOB, bt BIT(5), s SET('x','y','z'),
    e ENUM('a','b'), y YEAR, dtm DATETIME(6), dt0 DATETIME, ts TIMESTAMP(3) NULL, dd DATE, tm TIME(6),
    j JSON, u BIGINT UNSIGNED, tiny TINYINT(1))"""


def test_mariadb_values_follow_the_contract(mysql_database: str) -> None:
    engine = create_engine(mysql_database)
    with engine.begin() as conn:
        conn.exec_driver_sql(MYSQL_DDL)
    generator.apply(engine, ["typed"])
    writer = create_engine(mysql_database)  # its own pool: the zone below stays in its sessions
    with writer.begin() as conn:
        conn.exec_driver_sql("SET time_zone = '+05:00'")  # the writer's zone must not matter
        conn.exec_driver_sql(
            "INSERT INTO typed VALUES (1, 12345678901234567890.0123456789, 1.1, 1e300/3, 'naïve', 'a\\nb', "
            "'ab', x'00ff', x'0102', b'10101', 'z,x', 'b', 2021, '2020-01-02 03:04:05.123456', "
            "'2020-01-02 03:04:05', '2020-01-02 08:04:05.123', '2020-02-29', '-12:00:01.5', "
            '\'{"a": 1,  "b":[1,2]}\', 18446744073709551615, 1)'
        )
        conn.exec_driver_sql("INSERT INTO typed (id) VALUES (2)")
    writer.dispose()
    columns = [c.name for c in sa.Table("typed", sa.MetaData(), autoload_with=engine).c]
    relayed = _relayed(engine, columns, "mysql")
    _same(relayed, _polled(engine, columns))  # the polling source follows the same contract
    import struct

    assert relayed[1] == {
        "id": 1,
        "n": Decimal("12345678901234567890.0123456789"),
        "f": struct.unpack("f", struct.pack("f", 1.1))[0],
        "d8": 1e300 / 3,
        "t": "naïve",
        "tx": "a\nb",
        "bin": b"ab\x00\x00",
        "vb": b"\x00\xff",
        "bl": b"\x01\x02",
        "bt": 21,
        "s": ["x", "z"],
        "e": "b",
        "y": 2021,
        "dtm": dt.datetime(2020, 1, 2, 3, 4, 5, 123456),
        "dt0": dt.datetime(2020, 1, 2, 3, 4, 5),
        "ts": dt.datetime(2020, 1, 2, 3, 4, 5, 123000, dt.UTC),
        "dd": dt.date(2020, 2, 29),
        "tm": -dt.timedelta(hours=12, seconds=1, microseconds=500000),
        "j": '{"a": 1,  "b":[1,2]}',
        "u": 18446744073709551615,
        "tiny": 1,
    }
    assert relayed[2] == {c: (2 if c == "id" else None) for c in columns}
    engine.dispose()
