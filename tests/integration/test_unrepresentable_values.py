"""Values PostgreSQL holds but Python cannot ('infinity', BC dates) are row errors routed by
on_error, never a crash that stops the stream at that row on every restart.

Both the WAL source (snapshot and stream) and the polling source: the good rows around the bad
one are produced field by field, the bad one lands in the dead-letter topic with its raw value.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.conftest import unique
from tests.integration.harness import Connector, TopicReader, wait_for, write_config

pytestmark = pytest.mark.integration

KEY = {"type": "record", "name": "EvKey", "fields": [{"name": "id", "type": "long"}]}
VALUE = {
    "type": "record",
    "name": "Ev",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": None},
    ],
}
SOURCES = {
    "postgres_wal": "{{connector: postgres_wal, url: '{url}', slot: {slot}, publication: {slot}_pub}}",
    "polling": "{{connector: polling, url: '{url}', poll_interval: 200ms}}",
}
CAPTURE = {
    "postgres_wal": "{table: public.ev}",
    "polling": "{table: ev, mode: incrementing, incrementing_column: id}",
}
CONFIG = """
name: {name}
source: {source}
streams:
  - name: ev
    topic: {name}
    key_schema: key.avsc
    value_schema: value.avsc
    on_error: dead_letter
    dead_letter_topic: {name}.rejects
    capture: {capture}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
"""


def _dead_letters(bootstrap: str, topic: str, want: int) -> list[dict[str, Any]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique("dlq"), "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < want and time.monotonic() < deadline:
            msg = consumer.poll(1)
            if msg is not None and msg.error() is None:
                out.append(json.loads(msg.value()))
    finally:
        consumer.close()
    return out


@pytest.mark.parametrize("connector", ["postgres_wal", "polling"])
def test_infinity_and_bc_values_are_dead_lettered_and_the_rest_flows(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str, connector: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE ev (id bigint PRIMARY KEY, at timestamptz NOT NULL, day date)")
        conn.execute(
            "INSERT INTO ev VALUES (1, '2024-01-01 00:00:00+00', '2024-01-01'), (2, 'infinity', NULL), (3, '2024-01-03 12:00:00+00', '0044-03-15 BC')"
        )
        conn.execute("INSERT INTO ev VALUES (4, '2024-01-04 00:00:00+00', '2024-01-04')")
    slot = unique("test")
    source = SOURCES[connector].format(url=pg_database, slot=slot)
    text = CONFIG.format(
        name=topic_name,
        source=source,
        capture=CAPTURE[connector],
        bootstrap=kafka_bootstrap,
        registry=registry_url,
    )
    config = write_config(tmp_path, text, {"key.avsc": KEY, "value.avsc": VALUE})
    conn_proc = Connector(config, tmp_path / "run.log")
    reader: TopicReader | None = None
    try:
        reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
        # Streamed too (the WAL source: after its snapshot), between good rows.
        wait_for(lambda: len(reader.drain(0.5)) >= 2, 60, "the snapshot's good rows")  # type: ignore[union-attr]
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("INSERT INTO ev VALUES (5, '-infinity', NULL), (6, '2024-01-06 00:00:00+00', NULL)")
        state = reader.wait_until(lambda s: len(s) >= 3, 60)
        assert conn_proc.alive(), conn_proc.log_text()[-3000:]
    finally:
        conn_proc.terminate()
        conn_proc.ensure_stopped()
    assert reader is not None
    state = reader.latest()
    reader.close()
    assert state == {
        '{"id": 1}': {"id": 1, "at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "day": dt.date(2024, 1, 1)},
        '{"id": 4}': {"id": 4, "at": dt.datetime(2024, 1, 4, tzinfo=dt.UTC), "day": dt.date(2024, 1, 4)},
        '{"id": 6}': {"id": 6, "at": dt.datetime(2024, 1, 6, tzinfo=dt.UTC), "day": None},
    }
    rejects = _dead_letters(kafka_bootstrap, f"{topic_name}.rejects", 3)
    by_key = {json.dumps(r["key"], sort_keys=True): r for r in rejects}
    assert set(by_key) == {'{"id": 2}', '{"id": 3}', '{"id": 5}'}, rejects
    assert "infinity" in json.dumps(by_key['{"id": 2}'])
    assert "BC" in json.dumps(by_key['{"id": 3}'])
    assert "-infinity" in json.dumps(by_key['{"id": 5}'])
