"""Snapshot/stream identity as a property of the code, over every type the WAL source supports.

The same row contents are captured by the initial snapshot (ids 1..4), by streaming (inserted
after start as ids 101..104) and by an incremental snapshot (``cdc snapshot``, DBLog windows)
of both. For each content the Avro value bytes after the 5-byte header are identical in all
captures (bar the id field in front), and decoded by Apache avro they equal PostgreSQL's own
text of the row field by field (tests/integration/pg_matrix.py). The topic then goes through the
database sink into a copy of the table: equal text, column by column.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.conftest import unique
from tests.integration import pg_matrix as m
from tests.integration.harness import Connector, cdc, wait_for, write_config
from tests.integration.sink_harness import ROUND_TRIP_SINK, SinkProcess
from tests.integration.test_wal_source import drop_slot

pytestmark = pytest.mark.integration

STREAMED = 100  # id offset of the streamed copies
CONFIG = """
name: {name}
source:
  connector: postgres_wal
  url: {url}
  slot: {slot}
  publication: {name}_pub
  status_interval: 1s
  signal_table: public.cdc_signals
streams:
  - {{name: matrix, topic: {name}, key_schema: key.avsc, value_schema: value.avsc, capture: {{table: public.matrix}}}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
"""


POLLING = """
name: {name}
source: {{connector: polling, url: "{url}", poll_interval: 200ms}}
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


class RawTopic:
    """Every record of a one-partition topic as (id, op header, value body without the header)."""

    def __init__(self, bootstrap: str, topic: str, decode: m.RawDecoder) -> None:
        self.decode = decode
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": unique("raw"), "isolation.level": "read_committed"}
        )
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.records: list[tuple[int, str, bytes]] = []

    def drain(self) -> int:
        while (msg := self.consumer.poll(0.5)) is not None:
            if msg.error() or msg.value() is None:
                continue
            value = msg.value()
            assert value[0] == 0, "not the Confluent wire format"
            body = value[5:]
            op = dict(msg.headers() or [])["cdc.op"].decode()
            self.records.append((int(self.decode(body)["id"]), op, body))
        return len(self.records)

    def close(self) -> None:
        self.consumer.close()


def _id_prefix(i: int) -> bytes:
    """The Avro encoding of long ``i`` (zig-zag varint): the id field in front of each body."""
    n, out = (i << 1) ^ (i >> 63), bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _without_id(i: int, body: bytes) -> bytes:
    prefix = _id_prefix(i)
    assert body.startswith(prefix), f"id {i} is not the first field of its body"
    return body[len(prefix) :]


@pytest.fixture
def matrix_db(pg_database: str) -> str:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        for statement in m.SETUP:
            conn.execute(statement.format(table="matrix"))
        conn.execute(m.insert_sql("matrix", 1))
    return pg_database


def test_snapshot_incremental_snapshot_and_stream_write_the_same_bytes(
    matrix_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    n = len(m.ROWS)
    schema = m.value_schema()
    text = CONFIG.format(
        name=topic_name, url=matrix_db, slot=unique("test"), bootstrap=kafka_bootstrap, registry=registry_url
    )
    config = write_config(tmp_path, text, {"key.avsc": m.KEY_SCHEMA, "value.avsc": schema})
    conn = Connector(config, tmp_path / "source.log")
    raw = RawTopic(kafka_bootstrap, topic_name, m.RawDecoder(schema))

    def until(count: int, what: str) -> None:
        wait_for(lambda: raw.drain() >= count or not conn.alive(), 60, what)
        assert conn.alive(), conn.log_text()[-3000:]

    try:
        until(n, "the initial snapshot")
        with psycopg.connect(matrix_db, autocommit=True) as db:
            db.execute(m.insert_sql("matrix", STREAMED + 1))
        until(2 * n, "the streamed rows")
        result = cdc("snapshot", str(config))
        assert result.returncode == 0, result.stderr
        until(4 * n, "the incremental snapshot")
        time.sleep(1)
        assert raw.drain() == 4 * n, "records beyond the three captures"
        _check_captures(matrix_db, raw.records, raw.decode)
        _check_sink(matrix_db, tmp_path, topic_name, kafka_bootstrap, registry_url)
        _check_polling(matrix_db, tmp_path, raw.records, topic_name, kafka_bootstrap, registry_url)
    finally:
        conn.ensure_stopped()
        raw.close()
        drop_slot(matrix_db, config)


def _check_captures(dsn: str, records: list[tuple[int, str, bytes]], decode: m.RawDecoder) -> None:
    captures: dict[int, list[tuple[str, bytes]]] = {}
    for i, op, body in records:
        captures.setdefault(i, []).append((op, body))
    with psycopg.connect(dsn, autocommit=True) as db:
        texts = m.pg_texts(db, "matrix")
        problems: list[str] = []
        for k in range(1, len(m.ROWS) + 1):
            snap, streamed = captures[k], captures[STREAMED + k]
            assert [op for op, _ in snap] == ["r", "r"], f"id {k}: initial then incremental snapshot"
            assert [op for op, _ in streamed] == ["c", "r"], f"id {STREAMED + k}: stream then incremental"
            bodies = {
                "initial snapshot": _without_id(k, snap[0][1]),
                "incremental snapshot": _without_id(k, snap[1][1]),
                "stream": _without_id(STREAMED + k, streamed[0][1]),
                "incremental snapshot of the streamed row": _without_id(STREAMED + k, streamed[1][1]),
            }
            reference = bodies["initial snapshot"]
            for what, body in bodies.items():
                if body != reference:
                    fields = [
                        c.name
                        for c in m.COLUMNS
                        if decode(snap[0][1])[c.name] != decode(_id_prefix(k) + body)[c.name]
                    ]
                    problems.append(f"row {k}: {what} differs from the initial snapshot in {fields}")
            problems += [f"row {k}: {p}" for p in m.mismatches(db, decode(snap[0][1]), texts[k])]
        assert not problems, "\n".join(problems)


def _check_sink(dsn: str, tmp_path: Path, topic: str, bootstrap: str, registry: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE TABLE matrix_copy (LIKE matrix INCLUDING ALL)")
    config = tmp_path / "sink.yaml"
    config.write_text(
        ROUND_TRIP_SINK.format(
            name=topic,
            topics=f"  - {{topic: {topic}, table: matrix_copy}}",
            target=dsn,
            bootstrap=bootstrap,
            registry=registry,
        )
    )
    sink = SinkProcess(config, tmp_path / "sink.log")
    try:
        with psycopg.connect(dsn, autocommit=True) as db:

            def copied() -> bool:
                row = db.execute("SELECT count(*) FROM matrix_copy").fetchone()
                return (row is not None and row[0] == 2 * len(m.ROWS)) or sink.proc.poll() is not None

            wait_for(copied, 60, "the sink")
            assert sink.proc.poll() is None, sink.log_text()[-3000:]
            source, copy = m.pg_texts(db, "matrix"), m.pg_texts(db, "matrix_copy")
    finally:
        sink.ensure_stopped()
    assert source.keys() == copy.keys()
    for i, row in source.items():
        diff = {c: (row[c], copy[i][c]) for c in row if row[c] != copy[i][c]}
        assert not diff, f"id {i}: (source, sink copy) differ: {diff}"


def _check_polling(
    dsn: str, tmp_path: Path, wal: list[tuple[int, str, bytes]], topic: str, bootstrap: str, registry: str
) -> None:
    """The polling source over the same table writes the WAL stream's bytes, row for row."""
    polled_topic = f"{topic}.polled"
    schema = m.value_schema(without=("iv",))  # README: no exact interval record from polling
    (tmp_path / "polling").mkdir()
    # The documented difference (README, type mapping): with the interval field, refused up front.
    full = write_config(
        tmp_path / "polling",
        POLLING.format(name=polled_topic, url=dsn, bootstrap=bootstrap, registry=registry),
        {"key.avsc": m.KEY_SCHEMA, "value.avsc": m.value_schema()},
    )
    refused = cdc("check", str(full))
    assert refused.returncode != 0
    assert "column 'iv' (INTERVAL) cannot be written as Avro record exactly" in refused.stderr, refused.stderr
    assert "'ttz'" not in refused.stderr and "'r_ts'" not in refused.stderr
    config = write_config(
        tmp_path / "polling",
        POLLING.format(name=polled_topic, url=dsn, bootstrap=bootstrap, registry=registry),
        {"key.avsc": m.KEY_SCHEMA, "value.avsc": schema},
    )
    conn = Connector(config, tmp_path / "polling.log")
    raw = RawTopic(bootstrap, polled_topic, m.RawDecoder(schema))
    try:
        wait_for(lambda: raw.drain() >= 2 * len(m.ROWS) or not conn.alive(), 60, "the polled rows")
        assert conn.alive(), conn.log_text()[-3000:]
    finally:
        conn.ensure_stopped()
        raw.close()
    first = {i: body for i, _op, body in reversed(wal)}  # the first capture of each id
    assert m.COLUMNS[-1].name == "iv"
    problems = []
    for i, _op, body in raw.records:
        # The same bytes, but for the interval the polling schema leaves out (the last field).
        if first[i][: len(body)] != body or len(first[i]) == len(body):
            wal_row, polled = m.RawDecoder(m.value_schema())(first[i]), raw.decode(body)
            diff = [
                f"{c}: WAL {wal_row[c]!r}, polling {polled[c]!r}" for c in polled if wal_row[c] != polled[c]
            ]
            problems.append(f"id {i}: " + ", ".join(diff))
    assert sorted(i for i, _op, _body in raw.records) == sorted(first)
    assert not problems, "\n".join(problems)
