"""The polling source on the real MariaDB hands over the contract's canonical values (issue 18).

Every type of the MySQL value contract (tests.integration.mysql_matrix) is read by the real
polling source, checked at start-up against the stream's Avro schema, and converted: TIME arrives
as the exact signed interval (never folded into a time of day), DOUBLE exactly (never a Decimal
with 10 places), FLOAT as its exact 32-bit value (not the text protocol's 6 digits), SET as its
members in declared order, BIT as an int, BINARY(n) padded, zero dates per ``zero_dates``.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterator

import pytest

from cdc.errors import RowError
from cdc.plugin import ChangeEvent, StreamSpec
from cdc.schemas.convert import compile_record
from cdc.schemas.sourcecheck import check_fields
from connectors.sources.polling.config import PollingConfig
from connectors.sources.polling.source import PollingSource
from tests.integration import mysql_matrix as mx
from tests.integration.harness import wait_for
from tests.integration.sakila_mysql import mysql_connect

pytestmark = pytest.mark.integration


def _bits(v: float) -> bytes:
    return struct.pack("<d", v)


@pytest.fixture
def matrix_db(mysql_database: str) -> str:
    conn = mysql_connect(mysql_database)
    try:
        with conn.cursor() as cur:
            cur.execute(mx.DDL)
            mx.insert_rows(cur)
    finally:
        conn.close()
    return mysql_database


def _poll(dsn: str, zero_dates: str) -> Iterator[tuple[PollingSource, dict[int, ChangeEvent]]]:
    spec = StreamSpec("matrix", ("id",), mx.READ, {"table": "matrix", "mode": "bulk", "poll_interval": 60})
    source = PollingSource(PollingConfig.model_validate({"url": dsn, "zero_dates": zero_dates}), [spec])
    try:
        source.start({})
        events: dict[int, ChangeEvent] = {}

        def all_read() -> bool:
            events.update((e.key["id"], e) for e in source.poll(0.5))
            return len(events) == len(mx.ROWS)

        wait_for(all_read, 30, "the matrix rows")
        yield source, events
    finally:
        source.close()


def test_start_up_check_accepts_the_contract_mapping(matrix_db: str) -> None:
    for source, _ in _poll(matrix_db, "null"):
        columns = source.describe()["matrix"]
        problems, warnings = check_fields("matrix", mx.VALUE_SCHEMA, {}, columns, what="value")
        assert (problems, warnings) == ([], [])
        # the mappings the contract refuses are start-up problems, each naming the way out
        bad = {
            "u64": ("long", "decimal(20,0) or string"),
            "b3": ("boolean", "beyond Avro boolean"),
            "d": ("float", "declare double"),
            "t6": ("int", "cannot be written as Avro int"),
            "s": ({"type": "enum", "name": "E", "symbols": ["a"]}, "cannot be written as Avro enum"),
        }
        for name, (avro, message) in bad.items():
            schema = {"type": "record", "name": "R", "fields": [{"name": name, "type": avro}]}
            problems, _ = check_fields("matrix", schema, {}, columns, what="value")
            assert len(problems) == 1 and message in problems[0], (name, problems)
        schema = {
            "type": "record",
            "name": "R",
            "fields": [{"name": "t6", "type": {"type": "long", "logicalType": "time-micros"}}],
        }
        problems, warnings = check_fields("matrix", schema, {}, columns, what="value")
        assert not problems and "interval" in warnings[0]


def test_values_arrive_canonical_and_exact(matrix_db: str) -> None:
    convert = compile_record(mx.VALUE_SCHEMA, stream="matrix")
    for _, events in _poll(matrix_db, "null"):
        for i, event in events.items():
            row = event.after
            assert row is not None
            where = f"row {i}"
            assert row["t6"] == mx.TIMES[i], where  # never wrapped into a time of day
            assert row["s"] == mx.SETS[i], where  # declared order, a list
            assert (row["b3"], row["b1"]) == mx.BITS[i], where
            assert row["bn"] == mx.BINARIES[i], where
            for name, want in (("f", mx.FLOATS[i]), ("d", mx.DOUBLES[i])):
                got = row[name]
                assert (got is None and want is None) or (type(got) is float and _bits(got) == _bits(want)), (
                    where,
                    name,
                    got,
                )
            inserted = dict(zip(mx.COLUMNS, mx.ROWS[i], strict=True))
            if i != 6:
                assert row["u64"] == inserted["u64"] and row["dec65"] == inserted["dec65"], where
                assert row["y"] == inserted["y"] and row["e"] == inserted["e"], where
                assert row["u8"] == inserted["u8"] and row["l1"] == inserted["l1"], where
                assert row["uid"] == inserted["uid"].lower() and row["j"] == inserted["j"], where
                assert row["ts6"].tzinfo is dt.UTC and row["dt6"].tzinfo is None, where
                assert (row["g"], row["gv"]) == (i * 1000, f"v{i}"), where
            for name in mx.ZERO_DATES.get(i, ()):
                assert row[name] is None, (where, name)  # zero_dates: null
            out = convert(row, event.key)
            assert out["t6"] == mx.TIME_MICROS[i], where  # Avro long: signed microseconds
            assert out["d"] is None or _bits(out["d"]) == _bits(mx.DOUBLES[i]), where


def test_zero_dates_are_row_errors_by_default(matrix_db: str) -> None:
    convert = compile_record(mx.VALUE_SCHEMA, stream="matrix")
    for _, events in _poll(matrix_db, "error"):
        for i, event in events.items():
            assert event.after is not None
            zero = mx.ZERO_DATES.get(i)
            if zero is None:
                convert(event.after, event.key)
                continue
            with pytest.raises(RowError) as info:
                convert(event.after, event.key)
            assert info.value.field == zero[0] and "zero or invalid date" in info.value.reason
