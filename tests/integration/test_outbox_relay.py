"""The outbox pattern end to end on Sakila: a legacy app writes a rental and its event in one
transaction, with concurrent writers and rollbacks; two relay replicas run and one is killed -9."""

from __future__ import annotations

import io
import random
import struct
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import parse_schema, schemaless_reader

from cdc import migrations
from cdc.outbox import OutboxWriter
from tests.conftest import unique
from tests.integration.harness import Connector, cdc, wait_for, write_config
from tests.integration.sakila import load_postgres

pytestmark = pytest.mark.integration

EVENT = {
    "type": "record", "name": "RentalCreated", "namespace": "sakila.events",
    "fields": [
        {"name": "rental_id", "type": "int"},
        {"name": "inventory_id", "type": "int"},
        {"name": "customer_id", "type": "int"},
        {"name": "staff_id", "type": "int"},
    ],
}  # fmt: skip
KEY = {
    "type": "record",
    "name": "CustomerKey",
    "namespace": "sakila.events",
    "fields": [{"name": "aggregate_id", "type": "string"}],
}

CONFIG = """
name: {name}
source:
  connector: outbox
  url: {url}
  shards: 8
  poll_interval: 50ms
streams:
  - name: customer
    topic: {name}.customer
    key_schema: key.avsc
    value_schema: rental-created.avsc
    fields: {{aggregate_id: aggregateid}}
    capture: {{aggregate_type: customer}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 100ms}}
"""


class RentalApp(threading.Thread):
    """The legacy app: lock the customer (the aggregate), insert a rental, write its event."""

    def __init__(
        self,
        dsn: str,
        seed: int,
        writer: OutboxWriter,
        committed: list[str],
        lock: threading.Lock,
        delete_after_insert: bool = False,
    ) -> None:
        super().__init__(daemon=True)
        self.delete_after_insert = delete_after_insert
        self.dsn, self.rng, self.writer = dsn, random.Random(seed), writer
        self.committed, self.lock = committed, lock
        self.rolled_back: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn) as conn:
            while not self.stop.is_set():
                customer = self.rng.randint(1, 20)  # few aggregates: many events each
                inventory = self.rng.randint(1, 4500)
                with conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM customer WHERE customer_id = %s FOR UPDATE", (customer,))
                    cur.execute(
                        "INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) "
                        "VALUES (clock_timestamp(), %s, %s, 1) RETURNING rental_id",
                        (inventory, customer),
                    )
                    rental = cur.fetchone()[0]  # type: ignore[index]
                event_id = str(
                    self.writer.write(
                        conn, str(customer),
                        {"rental_id": rental, "inventory_id": inventory, "customer_id": customer, "staff_id": 1},
                    )
                )  # fmt: skip
                if self.delete_after_insert:  # the log-mode pattern: the table stays empty
                    conn.execute("DELETE FROM cdc_outbox WHERE id = %s", (event_id,))
                if self.rng.random() < 0.1:
                    conn.rollback()
                    self.rolled_back.append(event_id)
                else:
                    conn.commit()
                    with self.lock:
                        self.committed.append(event_id)


def read_all(bootstrap: str, topic: str, expect: set[str], timeout: float) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{topic}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    messages: list[Any] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not expect <= seen:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        messages.append(msg)
        seen.add(dict(msg.headers())["id"].decode())
    consumer.close()
    return messages


@pytest.mark.parametrize("mode", ["polling", "log"])
def test_two_relays_one_killed_every_event_in_order(
    mode: str, pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    load_postgres(pg_database)
    migrations.apply(pg_database)
    text = CONFIG.format(name=topic_name, url=pg_database, bootstrap=kafka_bootstrap, registry=registry_url)
    if mode.startswith("log"):
        log_source = f"  mode: log\n  slot: {unique('test')}\n  publication: {topic_name}_pub\n  status_interval: 500ms\n"
        text = text.replace("  shards: 8\n", log_source)
    config = write_config(tmp_path, text, {"key.avsc": KEY, "rental-created.avsc": EVENT})
    writer = OutboxWriter(EVENT, aggregate_type="customer", event_type="RentalCreated")
    committed: list[str] = []
    lock = threading.Lock()
    apps = [
        RentalApp(pg_database, seed, writer, committed, lock, mode.startswith("log")) for seed in range(3)
    ]
    first = Connector(config, tmp_path / "relay1.log")
    # Log mode sees only what is written after its slot exists: start the relay first.
    ready = "created slot" if mode.startswith("log") else "starting connector"
    wait_for(lambda: ready in first.log_text(), 30, "first relay")
    second = Connector(config, tmp_path / "relay2.log")
    try:
        for app in apps:
            app.start()
        time.sleep(4)
        first.kill9()
        kill_ms = time.time() * 1000
        time.sleep(3)
        restarted = Connector(config, tmp_path / "relay3.log")
        time.sleep(2)
        for app in apps:
            app.stop.set()
            app.join()
        expect = set(committed)
        assert len(expect) > 100
        messages = read_all(kafka_bootstrap, f"{topic_name}.customer", expect, 90)
        ids = [dict(m.headers())["id"].decode() for m in messages]
        # Every committed event at least once; nothing rolled back.
        missing = expect - set(ids)
        positions = sorted(committed.index(e) for e in missing)
        assert not missing, (
            f"{len(missing)} of {len(committed)} committed events never arrived ({len(ids)} read); positions {positions[:20]}...{positions[-5:]}"
        )
        if mode == "polling":
            # The documented bound of a kill -9's replay: batch_size (200) times the shards held.
            assert len(ids) - len(set(ids)) <= 8 * 200
        rolled_back = {e for app in apps for e in app.rolled_back}
        assert rolled_back and not rolled_back & set(ids)
        # Repeats only after the kill.
        seen: set[str] = set()
        by_aggregate: dict[str, list[int]] = defaultdict(list)
        for m, event_id in zip(messages, ids, strict=True):
            if event_id in seen:
                assert m.timestamp()[1] >= kill_ms - 50, "a repeat was produced before any relay died"
                continue
            seen.add(event_id)
            by_aggregate[m.key()].append(int(dict(m.headers())["seq"]))
        # After dropping repeats, each aggregate's events are in seq order.
        for key, seqs in by_aggregate.items():
            assert seqs == sorted(seqs), f"aggregate {key!r} out of order"
        # The relays deleted what they published.
        wait_for(lambda: _outbox_rows(pg_database) == 0, 30, "outbox drained")
        assert cdc("status", str(config)).returncode == 0
        for relay in (second, restarted):
            assert relay.terminate()[0] == 0
    finally:
        for app in apps:
            app.stop.set()
        first.ensure_stopped()
        second.ensure_stopped()
        if mode.startswith("log"):
            with psycopg.connect(pg_database, autocommit=True) as db:
                db.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE database = current_database() AND NOT active"
                )


def _outbox_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM cdc_outbox").fetchone()[0])  # type: ignore[index]


@pytest.mark.parametrize("mode", ["polling", "log"])
def test_every_part_of_a_relayed_event(
    mode: str, pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    """Key, value bytes and every header of each relayed event, with and without the
    application's extra headers (NULL, an empty object, two strings, non-ASCII text)."""
    migrations.apply(pg_database)
    text = CONFIG.format(name=topic_name, url=pg_database, bootstrap=kafka_bootstrap, registry=registry_url)
    if mode == "log":
        log_source = f"  mode: log\n  slot: {unique('test')}\n  publication: {topic_name}_pub\n"
        text = text.replace("  shards: 8\n", log_source)
    config = write_config(tmp_path, text, {"key.avsc": KEY, "rental-created.avsc": EVENT})
    writer = OutboxWriter(EVENT, aggregate_type="customer", event_type="RentalCreated")
    extras: list[dict[str, str] | None] = [None, {}, {"trace-id": "abc-123", "tenant": "zürich"}, None]
    relay = Connector(config, tmp_path / "relay.log")
    try:
        ready = "created slot" if mode == "log" else "starting connector"
        wait_for(lambda: ready in relay.log_text(), 30, "relay")
        expected: dict[str, tuple[str, dict[str, Any], list[tuple[str, bytes]]]] = {}
        with psycopg.connect(pg_database) as conn:
            for n, extra in enumerate(extras):
                payload = {"rental_id": n, "inventory_id": 10 + n, "customer_id": n % 2, "staff_id": 1}
                event_id = str(writer.write(conn, str(n % 2), payload, headers=extra))
                expected[event_id] = (str(n % 2), payload, [])
            # Read in the writing transaction: the polling relay may delete the rows once committed.
            for event_id, seq in conn.execute("SELECT id::text, seq FROM cdc_outbox"):
                aggregate, payload, _ = expected[event_id]
                extra = extras[[*expected].index(event_id)] or {}
                headers = [("id", event_id.encode()), ("type", b"RentalCreated"), ("seq", str(seq).encode())]
                headers += [(name, value.encode()) for name, value in extra.items()]
                expected[event_id] = (aggregate, payload, headers)
            conn.commit()
        messages = read_all(kafka_bootstrap, f"{topic_name}.customer", set(expected), 60)
        assert relay.terminate()[0] == 0
    finally:
        relay.ensure_stopped()
        if mode == "log":
            with psycopg.connect(pg_database, autocommit=True) as db:
                db.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE database = current_database() AND NOT active"
                )
    assert len(messages) == len(expected)
    value_id = (
        SchemaRegistryClient({"url": registry_url})
        .get_latest_version(f"{topic_name}.customer-value")
        .schema_id
    )
    for msg in messages:
        headers = msg.headers()
        assert [name for name, _ in headers[:2]] == ["cdc.op", "cdc.position"]
        assert headers[0][1] == b"c"
        event_id = dict(headers)["id"].decode()
        aggregate, payload, rest = expected[event_id]
        # The extra headers follow jsonb's key order, not the order the application wrote.
        assert headers[2:5] == rest[:3] and sorted(headers[5:]) == sorted(rest[3:])
        assert schemaless_reader(io.BytesIO(msg.key()[5:]), parse_schema(KEY), None) == {
            "aggregate_id": aggregate
        }
        assert msg.value()[:5] == struct.pack(">bI", 0, value_id)
        assert msg.value()[5:] == writer.encode(payload)
