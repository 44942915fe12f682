"""The binlog source on the real MariaDB hands over exactly the polling source's canonical values.

Every type of the MySQL value contract (tests.integration.mysql_matrix) is captured twice by the
binlog source - read by its initial snapshot, then streamed from the binlog after the rows were
deleted and inserted again - and once by the polling source. For every row and column the values
are equal (floats bit for bit), and the Avro bodies the stream's schema gives are byte-identical.
"""

from __future__ import annotations

import io
import random
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from cdc.errors import RowError
from cdc.plugin import ChangeEvent, Op, SourceConnector, StreamSpec
from cdc.schemas.convert import compile_record
from connectors.sources.mysql_binlog.config import BinlogConfig
from connectors.sources.mysql_binlog.source import MysqlBinlogSource
from connectors.sources.polling.config import PollingConfig
from connectors.sources.polling.source import PollingSource
from tests.integration import mysql_matrix as mx
from tests.integration.harness import wait_for
from tests.integration.sakila_mysql import mysql_connect

pytestmark = pytest.mark.integration


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


def _collect(source: SourceConnector, want: int, op: Op | None = None) -> dict[int, ChangeEvent]:
    events: dict[int, ChangeEvent] = {}

    def enough() -> bool:
        for e in source.poll(0.5):
            if e.op is Op.CHECKPOINT:  # the runtime's part: a checkpoint waits until acknowledged
                source.acknowledge({e.partition: e.offset})
            elif op is None or e.op is op:
                events[e.key["id"]] = e
        return len(events) >= want

    wait_for(enough, 60, f"{want} matrix events")
    return events


def _polled(dsn: str, zero_dates: str) -> dict[int, ChangeEvent]:
    spec = StreamSpec("matrix", ("id",), mx.READ, {"table": "matrix", "mode": "bulk", "poll_interval": 60})
    source = PollingSource(PollingConfig.model_validate({"url": dsn, "zero_dates": zero_dates}), [spec])
    try:
        source.start({})
        return _collect(source, len(mx.ROWS))
    finally:
        source.close()


def _binlog(dsn: str, zero_dates: str) -> Iterator[tuple[dict[int, ChangeEvent], dict[int, ChangeEvent]]]:
    """(snapshot events, streamed events) of the matrix rows."""
    spec = StreamSpec("matrix", ("id",), mx.READ, {"table": "matrix"})
    config = BinlogConfig.model_validate(
        {
            "url": dsn,
            "server_id": random.randint(10_000, 2**31),
            "zero_dates": zero_dates,
            "heartbeat_interval": 1,
        }
    )
    source = MysqlBinlogSource(config, [spec])
    try:
        source.start({})
        snapshot = _collect(source, len(mx.ROWS))
        conn = mysql_connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM matrix")
                mx.insert_rows(cur)
        finally:
            conn.close()
        yield snapshot, _collect(source, len(mx.ROWS), Op.CREATE)
    finally:
        source.close()


def _avro(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, record)
    return out.getvalue()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


def test_every_type_equals_the_polling_value_and_encodes_to_the_same_avro(matrix_db: str) -> None:
    polled = _polled(matrix_db, "null")
    convert = compile_record(mx.VALUE_SCHEMA, stream="matrix")
    schema = parse_schema(mx.VALUE_SCHEMA)
    for snapshot, streamed in _binlog(matrix_db, "null"):
        for how, events in (("snapshot", snapshot), ("stream", streamed)):
            assert set(events) == set(polled), how
            for i, event in events.items():
                want, got = polled[i].after, event.after
                assert want is not None and got is not None
                for column in mx.READ:
                    assert _same(got[column], want[column]), (how, i, column, got[column], want[column])
                assert _avro(schema, convert(got, event.key)) == _avro(
                    schema, convert(want, polled[i].key)
                ), (how, i)


def test_zero_dates_are_row_errors_by_default(matrix_db: str) -> None:
    convert = compile_record(mx.VALUE_SCHEMA, stream="matrix")
    for snapshot, streamed in _binlog(matrix_db, "error"):
        for events in (snapshot, streamed):
            for i, event in events.items():
                assert event.after is not None
                zero = mx.ZERO_DATES.get(i)
                if zero is None:
                    convert(event.after, event.key)
                    continue
                with pytest.raises(RowError) as info:
                    convert(event.after, event.key)
                assert info.value.field == zero[0] and "zero or invalid date" in info.value.reason


def _source(dsn: str, mode: str) -> MysqlBinlogSource:
    spec = StreamSpec("matrix", ("id",), ("id", "i64"), {"table": "matrix"})
    config = {
        "url": dsn,
        "server_id": random.randint(10_000, 2**31),
        "snapshot_mode": mode,
        "heartbeat_interval": 1,
    }
    return MysqlBinlogSource(BinlogConfig.model_validate(config), [spec])


def test_snapshot_modes_never_and_initial_only(matrix_db: str) -> None:
    never = _source(matrix_db, "never")
    try:
        never.start({})
        time.sleep(2)  # registered as a replica at the current position
        conn = mysql_connect(matrix_db)
        try:
            with conn.cursor() as cur:
                cur.execute("UPDATE matrix SET i64 = 77 WHERE id = 3")
        finally:
            conn.close()
        events = _collect(never, 1)
        assert [(e.op, e.key, e.after) for e in events.values()] == [
            (Op.UPDATE, {"id": 3}, {"id": 3, "i64": 77})
        ]
    finally:
        never.close()
    only = _source(matrix_db, "initial_only")
    try:
        only.start({})
        events = _collect(only, len(mx.ROWS))
        assert {e.op for e in events.values()} == {Op.READ}
        time.sleep(1)
        assert only._thread is not None and not only._thread.is_alive()  # done: no streaming
    finally:
        only.close()
