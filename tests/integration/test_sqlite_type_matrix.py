"""The polling source on SQLite, type by type (issue 12): what reaches Kafka, decoded by an
independent Avro implementation (Apache avro, logical types stripped), equals SQLite's own stored
values read with the standard library's sqlite3, and the database sink writes them back into a
copy of the table byte for byte.

SQLite stores a value's storage class, not the declared type: NUMERIC(10,2) keeps a REAL (or an
INTEGER when the value is whole), DATETIME and DATE keep text, BOOLEAN an integer. The expected
Avro values are computed from those stored values, so a conversion that rounds, shifts a zone or
pads anything shows as a difference.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration import pg_matrix as m
from tests.integration.harness import Connector, cdc, wait_for, write_config
from tests.integration.sink_harness import ROUND_TRIP_SINK, SinkProcess
from tests.integration.test_pg_type_matrix import RawTopic

pytestmark = pytest.mark.integration

DDL = """CREATE TABLE matrix (id INTEGER PRIMARY KEY, i64 BIGINT, r REAL, n NUMERIC(10,2), t TEXT,
    b BLOB, ts DATETIME, d DATE, flag BOOLEAN)"""
COLUMNS = ("id", "i64", "r", "n", "t", "b", "ts", "d", "flag")
ROWS = [
    (1, 2**63 - 1, 1.7976931348623157e308, "12.34", "naïve 🐘 'quoted' \"twice\"\nnext line",
     b"\x00\xff\x10", "2020-01-02 03:04:05.123456", "2021-12-31", 1),
    (2, -(2**63), -0.0, "-99999999.99", "", b"", "1970-01-01 00:00:00.000001", "1969-12-31", 0),
    (3, 0, 5e-324, "0.01", "\u00e9\u0301 combining", b"\x00", "2038-01-19 03:14:08.999999", "0001-01-01", 1),
    (4, 42, 0.1 + 0.2, "100", "x" * 5000, bytes(range(256)), "1900-02-28 23:59:59.500000", "9999-12-31", 0),
    (5, None, None, None, None, None, None, None, None),
]  # fmt: skip
KEY = {
    "type": "record",
    "name": "MatrixKey",
    "namespace": "test.sqlite",
    "fields": [{"name": "id", "type": "long"}],
}


def _nullable(avro: Any) -> list[Any]:
    return ["null", avro]


VALUE = {
    "type": "record", "name": "Matrix", "namespace": "test.sqlite",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "i64", "type": _nullable("long"), "default": None},
        {"name": "r", "type": _nullable("double"), "default": None},
        {"name": "n", "type": _nullable({"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}),
         "default": None},
        {"name": "t", "type": _nullable("string"), "default": None},
        {"name": "b", "type": _nullable("bytes"), "default": None},
        {"name": "ts", "type": _nullable({"type": "long", "logicalType": "local-timestamp-micros"}), "default": None},
        {"name": "d", "type": _nullable({"type": "int", "logicalType": "date"}), "default": None},
        {"name": "flag", "type": _nullable("boolean"), "default": None},
    ],
}  # fmt: skip
POLLING = """
name: {name}
source: {{connector: polling, url: "sqlite:///{db}", poll_interval: 200ms}}
streams:
  - name: matrix
    topic: {name}
    key_schema: key.avsc
    value_schema: value.avsc
    capture: {{table: matrix, mode: incrementing, incrementing_column: id}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
"""
EPOCH = dt.datetime(1970, 1, 1)


def _stored(db: Path, table: str) -> dict[int, tuple[Any, ...]]:
    """SQLite's own values, read with the standard library (no SQLAlchemy type processing)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM {table}").fetchall()
    return {row[0]: tuple(row) for row in rows}


def _bits(v: float) -> bytes:
    return struct.pack("<d", v)


def _expected_raw(stored: tuple[Any, ...]) -> dict[str, Any]:
    """The Avro value the stored row must become, in Apache avro's raw (logical-type-free) form."""
    _id, i64, r, n, t, b, ts, d, flag = stored
    unscaled = None
    if n is not None:
        scaled = Decimal(repr(n)) * 100 if isinstance(n, float) else Decimal(n) * 100
        assert scaled == scaled.to_integral_value(), f"{n!r} has more than 2 decimals"
        unscaled = int(scaled)
    return {
        "id": _id,
        "i64": i64,
        "r": r,
        "n": None
        if unscaled is None
        else unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True),
        "t": t,
        "b": b,
        "ts": None if ts is None else (dt.datetime.fromisoformat(ts) - EPOCH) // dt.timedelta(microseconds=1),
        "d": None if d is None else (dt.date.fromisoformat(d) - EPOCH.date()).days,
        "flag": None if flag is None else bool(flag),
    }


def _same_decimal_bytes(got: bytes | None, want: bytes | None) -> bool:
    if got is None or want is None:
        return got is want
    return int.from_bytes(got, "big", signed=True) == int.from_bytes(want, "big", signed=True)


def test_polling_on_sqlite_writes_the_stored_values_exactly_and_the_sink_copies_them(
    tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    db, copy = tmp_path / "app.db", tmp_path / "copy.db"
    for path in (db, copy):
        with sqlite3.connect(path) as conn:
            conn.execute(DDL)
    with sqlite3.connect(db) as conn:
        conn.executemany(f"INSERT INTO matrix VALUES ({', '.join('?' * len(COLUMNS))})", ROWS)
    stored = _stored(db, "matrix")

    config = write_config(
        tmp_path,
        POLLING.format(name=topic_name, db=db, bootstrap=kafka_bootstrap, registry=registry_url),
        {"key.avsc": KEY, "value.avsc": VALUE},
    )
    check = cdc("check", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    decode = m.RawDecoder(VALUE)
    conn = Connector(config, tmp_path / "polling.log")
    raw = RawTopic(kafka_bootstrap, topic_name, decode)
    try:
        wait_for(lambda: raw.drain() >= len(ROWS) or not conn.alive(), 60, "the polled rows")
        assert conn.alive(), conn.log_text()[-3000:]
    finally:
        conn.ensure_stopped()
        raw.close()
    assert sorted(i for i, _op, _body in raw.records) == sorted(stored)
    problems = []
    for i, _op, body in raw.records:
        got, want = decode(body), _expected_raw(stored[i])
        for name in COLUMNS:
            g, w = got[name], want[name]
            same = (
                _same_decimal_bytes(g, w) if name == "n"
                else (g is None and w is None) or (type(g) is float and _bits(g) == _bits(w)) if name == "r"
                else g == w and type(g) is type(w)
            )  # fmt: skip
            if not same:
                problems.append(f"id {i} {name}: topic {g!r}, stored {w!r}")
    assert not problems, "\n".join(problems)

    sink_config = tmp_path / "sink.yaml"
    sink_config.write_text(
        ROUND_TRIP_SINK.format(
            name=topic_name,
            topics=f"  - {{topic: {topic_name}, table: matrix}}",
            target=f"sqlite:///{copy}",
            bootstrap=kafka_bootstrap,
            registry=registry_url,
        )
    )
    sink = SinkProcess(sink_config, tmp_path / "sink.log")
    try:
        wait_for(
            lambda: len(_stored(copy, "matrix")) == len(ROWS) or sink.proc.poll() is not None, 60, "the sink"
        )
        assert sink.proc.poll() is None, sink.log_text()[-3000:]
    finally:
        sink.ensure_stopped()
    copied = _stored(copy, "matrix")
    for i, row in stored.items():
        diff = {
            c: (a, b)
            for c, a, b in zip(COLUMNS, row, copied[i], strict=True)
            if not (a == b and type(a) is type(b) and (not isinstance(a, float) or _bits(a) == _bits(b)))
        }
        assert not diff, f"id {i}: (source, sink copy) differ: {diff}"
