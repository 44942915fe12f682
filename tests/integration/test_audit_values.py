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

from cdc.audit import generator, values
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


FAST_DDL = """CREATE TABLE typed (id int PRIMARY KEY, s smallint, big bigint, n numeric(30,10), nu numeric,
    f8 double precision, f4 real, t text, v varchar(20), c char(5), flag boolean, d date, ts timestamp(6),
    tz timestamptz)"""
FAST_ROWS = [
    "INSERT INTO typed VALUES (1, -32768, -9223372036854775808, -12345678901234567890.0123456789, 1e-20, "
    "0.1 + 0.2, 1.1, 'naïve \"q\" \\ é', 'x', 'ab', true, '2020-02-29', '2020-02-29 23:59:59.123456', "
    "'2020-06-01 12:00:00.5+02')",
    "INSERT INTO typed VALUES (2, 0, 0, 0, 12345678901234567890123456789, 1e300 / 3, 1e-45, '', '', '', false, "
    "'0044-03-15 BC', 'infinity', '-infinity')",
    "INSERT INTO typed VALUES (3, 1, 1, 'NaN', 'Infinity', 'NaN', 'Infinity', 't', 'v', 'c', NULL, "
    "'infinity', '1999-12-31 23:59:59', '1883-11-18 12:00:00 America/New_York')",
    "INSERT INTO typed VALUES (4, 2, 2, 1.5, 7, 1, 1, 't', 'v', 'c', true, '10000-01-01', "
    "'2020-01-01 00:00:00.000001', '2020-01-01 00:00:00+05:45')",
    "INSERT INTO typed (id) VALUES (5)",
]


def _identical(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    """Same keys, and per value the same repr (a Decimal's exponent, a float's sign and NaN, a
    datetime's zone) and type."""
    assert got.keys() == want.keys(), where
    for name, value in want.items():
        assert repr(got[name]) == repr(value) and type(got[name]) is type(value), (
            f"{where}, {name}: {got[name]!r} != {value!r}"
        )


def _fast_and_server(engine: sa.Engine, reader: TableReader, n: int) -> list[Any]:
    """Every audit row decoded by the relay and rebuilt by the server: identical."""
    with engine.connect() as conn:
        ids = [i for i, _ in reader.candidates(conn, 100)]
        fast, _ = reader._pg_images(conn, ids)
        server, _ = reader._pg_populate(conn, ids)
    assert [r.id for r in fast] == [r.id for r in server] == ids and len(ids) == n
    for a, b in zip(fast, server, strict=True):
        assert (a.op, a.ts_ms, a.txid) == (b.op, b.ts_ms, b.txid)
        for side_a, side_b in ((a.before, b.before), (a.after, b.after)):
            assert (side_a is None) == (side_b is None)
            if side_a is not None and side_b is not None:
                _identical(side_a, side_b, f"audit id {a.id}")
    return fast


def test_postgres_fast_decoding_equals_the_server_and_polling(pg_database: str) -> None:
    """A table of common built-in types: its images are decoded in the relay, not rebuilt by the
    server (jsonb_populate_record); every value equals the server's and the polling source's,
    type and time zone included, and values it cannot be sure of (NaN, infinities, BC dates,
    years past 9999, a column added after the row was written) still come out right."""
    engine = create_engine(pg_database)
    with engine.begin() as conn:
        conn.exec_driver_sql(FAST_DDL)
    generator.apply(engine, ["typed"])
    writer = create_engine(pg_database)  # a writer in another zone: the images carry its offset
    with writer.begin() as conn:
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'Asia/Kathmandu'")
        for row in FAST_ROWS:
            conn.exec_driver_sql(row)
        conn.exec_driver_sql("UPDATE typed SET n = n + 1 WHERE id = 1")
    writer.dispose()
    columns = [c.name for c in sa.Table("typed", sa.MetaData(), autoload_with=engine).c]
    reader = TableReader(_spec(columns), "typed", engine, "postgresql", "public")
    assert reader._pg_decoders is not None  # the fast path is taken
    fast = _fast_and_server(engine, reader, 6)
    with engine.connect() as conn:  # the plain rows are decoded here, not handed back
        for text in conn.exec_driver_sql(
            "SELECT after::text FROM cdc_audit_log WHERE (after->>'id')::int IN (1, 5)"
        ):
            assert values.decode_pg(text[0], columns, reader._pg_decoders) is not None
    relayed = {r.after["id"]: r.after for r in fast if r.after is not None and r.op == "u"}
    assert relayed[1]["n"] == Decimal("-12345678901234567889.0123456789")
    last = {r.after["id"]: r.after for r in fast if r.after is not None}
    for key, row in _polled(engine, columns).items():
        _identical(last[key], row, f"key {key}")
    # a column added later: the older images lack it (the server fills NULL)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE typed ADD COLUMN late int")
        conn.exec_driver_sql("INSERT INTO typed (id, late) VALUES (6, 6)")
    columns.append("late")
    reader = TableReader(_spec(columns), "typed", engine, "postgresql", "public")
    fast = _fast_and_server(engine, reader, 7)
    assert fast[0].after is not None and fast[0].after["late"] is None
    assert fast[-1].after is not None and fast[-1].after["late"] == 6
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
