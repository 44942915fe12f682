"""The outbox relay's log mode on MariaDB: outbox inserts read from the binlog, relayed rows
deleted after the broker's acknowledgement, a kill -9 mid-stream loses nothing.

Real MariaDB and Kafka. The application writes events with OutboxWriter in transactions of one
to five events (some rolled back, some deleting their own rows in the same transaction); rows
written before the relay first starts come from its start-up snapshot.
"""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pymysql
import pytest

from cdc import migrations
from cdc.outbox import OutboxWriter
from tests.integration.harness import Connector, TopicReader, cdc, wait_for, write_config

pytestmark = pytest.mark.integration

EVENT = {
    "type": "record", "name": "OrderPlaced", "namespace": "shop.events",
    "fields": [
        {"name": "order_id", "type": "long"},
        {"name": "note", "type": "string"},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
    ],
}  # fmt: skip
KEY = {"type": "record", "name": "OrderKey", "namespace": "shop.events",
       "fields": [{"name": "aggregate_id", "type": "string"}]}  # fmt: skip

CONFIG = """
name: {name}
source:
  connector: outbox
  url: {url}
  mode: log
  server_id: {server_id}
  status_interval: 500ms
streams:
  - name: order
    topic: {name}.order
    key_schema: key.avsc
    value_schema: event.avsc
    fields: {{aggregate_id: aggregateid}}
    capture: {{aggregate_type: order}}
kafka: {{bootstrap_servers: "{bootstrap}", producer: {{linger.ms: 1000}}}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 100ms}}
"""
# linger.ms 1000: events wait a second in the producer before the broker has them, so at any
# moment many rows are read but unacknowledged (a delete before the ack would show at the kill).


def connect(dsn: str) -> pymysql.connections.Connection[Any]:
    u = urlparse(dsn)
    return pymysql.connect(
        host=u.hostname, port=u.port or 3306, user=u.username, password=u.password or "",
        database=u.path.lstrip("/"), autocommit=False, charset="utf8mb4",
    )  # fmt: skip


class App(threading.Thread):
    """Transactions of 1-5 events on 12 aggregates; 10% rolled back; 20% delete their own rows."""

    def __init__(self, dsn: str, writer: OutboxWriter, first: int, own_deletes: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.own_deletes = own_deletes
        self.dsn, self.writer, self.n = dsn, writer, first
        self.rng = random.Random(first)
        self.committed: dict[str, dict[str, Any]] = {}  # event id -> what the consumer must see
        self.rolled_back: set[str] = set()
        self.deleted_by_app: set[str] = set()
        self.lock = threading.Lock()  # committed ids are read while the app runs
        self.stop = threading.Event()

    def run(self) -> None:
        conn = connect(self.dsn)
        try:
            while not self.stop.is_set():
                self.transaction(conn)
        finally:
            conn.close()

    def transaction(self, conn: pymysql.connections.Connection[Any]) -> None:
        written: dict[str, dict[str, Any]] = {}
        own_delete = self.rng.random() < self.own_deletes
        try:
            for _ in range(self.rng.randint(1, 5)):
                self.n += 1
                aggregate = f"order-{self.n % 12}"
                total = Decimal(self.rng.randint(-(10**9), 10**9)).scaleb(-2)
                payload = {"order_id": self.n, "note": f"é {self.n} ✓", "total": total}
                event_id = str(self.writer.write(conn, aggregate, payload))
                written[event_id] = {"aggregate": aggregate, "payload": payload}
                if own_delete:
                    with conn.cursor() as cur:
                        cur.execute("DELETE FROM cdc_outbox WHERE id = %s", (event_id,))
            if self.rng.random() < 0.1:
                conn.rollback()
                self.rolled_back |= set(written)
                return
            conn.commit()
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != 1213:
                raise
            conn.rollback()  # a deadlock victim (against the relay's deletes) is rolled back whole
            self.rolled_back |= set(written)
            return
        with self.lock:
            self.committed.update(written)
            if own_delete:
                self.deleted_by_app |= set(written)

    def relay_must_hold(self) -> set[str]:
        """Committed ids whose rows only the relay deletes."""
        with self.lock:
            return set(self.committed) - self.deleted_by_app


def outbox_ids(dsn: str) -> set[str]:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM cdc_outbox")
            return {str(r[0]) for r in cur.fetchall()}
    finally:
        conn.close()


def outbox_rows(dsn: str) -> int:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM cdc_outbox")
            return int(cur.fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()


def relay_config(dsn: str, tmp: Path, name: str, bootstrap: str, registry: str) -> Path:
    """The outbox table in ``dsn`` and a log-mode relay config with a fresh replica server_id."""
    migrations.apply(dsn)
    text = CONFIG.format(
        name=name, url=dsn, server_id=random.randint(10_000, 2**31), bootstrap=bootstrap, registry=registry
    )
    return write_config(tmp, text, {"key.avsc": KEY, "event.avsc": EVENT})


def test_binlog_log_mode_kill9_loses_nothing_and_deletes_relayed_rows(
    mysql_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    config = relay_config(mysql_database, tmp_path, topic_name, kafka_bootstrap, registry_url)
    check = cdc("check", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "binlog_row_metadata = FULL" in check.stdout and "server_id" in check.stdout, check.stdout

    writer = OutboxWriter(EVENT, aggregate_type="order", event_type="OrderPlaced")
    # Rows the application deletes itself are only in the binlog: before the relay's first start
    # (no position yet) they are out of reach, as documented, so the early app keeps its rows.
    early = App(mysql_database, writer, 0, own_deletes=0)
    conn = connect(mysql_database)
    for _ in range(20):  # before the relay ever ran: its start-up snapshot must relay these
        early.transaction(conn)
    conn.close()
    assert outbox_rows(mysql_database) > 0

    app = App(mysql_database, writer, 1_000_000)
    first = Connector(config, tmp_path / "relay1.log")
    restarted: Connector | None = None
    reader = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.order")
    try:
        wait_for(lambda: "streaming outbox inserts" in first.log_text(), 60, "first relay streaming")
        app.start()
        # kill -9 mid-stream: once the broker holds a good part of the stream, while the app writes
        wait_for(lambda: reader.written() >= len(early.committed) + 300, 60, "events relayed")
        wait_for(lambda: bool(app.relay_must_hold() - outbox_ids(mysql_database)), 30, "relayed rows deleted")
        first.kill9()
        # Rows are deleted only after the broker has them: with the relay dead, every committed
        # row is still in the table or already on the topic.
        must_hold = early.relay_must_hold() | app.relay_must_hold()
        in_table = outbox_ids(mysql_database)
        reader.drain(1.0)
        on_topic = {h["id"].decode() for _, _, h in reader.records}
        lost = must_hold - in_table - on_topic
        assert not lost, f"{len(lost)} rows deleted before the broker had them"
        time.sleep(1)
        restarted = Connector(config, tmp_path / "relay2.log")
        wait_for(lambda: "streaming outbox inserts" in restarted.log_text(), 60, "restarted relay streaming")
        time.sleep(2)
        app.stop.set()
        app.join(30)

        expected = {**early.committed, **app.committed}
        rolled_back = early.rolled_back | app.rolled_back
        assert len(app.committed) > 300 and rolled_back

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            reader.drain(0.5)
            missing = expected.keys() - {h["id"].decode() for _, _, h in reader.records}
            if not missing:
                break
        early_missing = missing & early.committed.keys()
        assert not missing, (
            f"{len(missing)} committed events never relayed ({len(early_missing)} written before the relay started)"
        )
        by_id: dict[str, tuple[Any, Any, dict[str, bytes]]] = {}
        seqs: dict[str, list[int]] = {}
        for key, value, headers in reader.records:
            event_id = headers["id"].decode()
            assert event_id not in rolled_back, f"rolled-back event {event_id} was relayed"
            if event_id in by_id:  # an at-least-once repeat: the same event, field by field
                assert (key, value) == by_id[event_id][:2]
                continue
            by_id[event_id] = (key, value, headers)
            seqs.setdefault(key["aggregate_id"], []).append(int(headers["seq"]))
        for event_id, want in expected.items():  # field by field, per event
            key, value, headers = by_id[event_id]
            assert key == {"aggregate_id": want["aggregate"]}, event_id
            assert value == want["payload"], event_id
            assert headers["type"] == b"OrderPlaced"
        for aggregate, got in seqs.items():  # one writer: commit order is seq order
            assert got == sorted(got), f"aggregate {aggregate} out of order"
        # Relayed rows are deleted once acknowledged (the app deleted its own ones itself).
        wait_for(lambda: outbox_rows(mysql_database) == 0, 30, "the outbox table emptied")
        assert "binlog" in restarted.log_text()
        assert restarted.terminate()[0] == 0
    finally:
        app.stop.set()
        reader.close()
        first.ensure_stopped()
        if restarted is not None:
            restarted.ensure_stopped()


def test_binlog_log_mode_restart_deletes_rows_published_before_its_position(
    mysql_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    """A row still in the table whose insert lies before the stored position was published and
    acknowledged by an earlier run that died before deleting it: the restart deletes it (it
    is not published again). Simulated by a row inserted without binlog (sql_log_bin = 0)."""
    config = relay_config(mysql_database, tmp_path, topic_name, kafka_bootstrap, registry_url)
    writer = OutboxWriter(EVENT, aggregate_type="order", event_type="OrderPlaced")
    app = App(mysql_database, writer, 0)
    relay = Connector(config, tmp_path / "relay1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.order")
    try:
        wait_for(lambda: "streaming outbox inserts" in relay.log_text(), 60, "relay streaming")
        conn = connect(mysql_database)
        for _ in range(10):
            app.transaction(conn)
        wait_for(lambda: outbox_rows(mysql_database) == 0, 30, "relayed rows deleted")
        assert relay.terminate()[0] == 0
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
        leaked = str(writer.write(conn, "order-x", {"order_id": -1, "note": "leaked", "total": Decimal(0)}))
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 1")
        conn.close()
        relay = Connector(config, tmp_path / "relay2.log")
        wait_for(lambda: outbox_rows(mysql_database) == 0, 30, "the left-behind row deleted")
        assert "deleted 1 outbox rows acknowledged before a restart" in relay.log_text()
        reader.drain(1.0)
        ids = {h["id"].decode() for _, _, h in reader.records}
        assert leaked not in ids and set(app.committed) <= ids
        status = cdc("status", str(config))
        assert status.returncode == 0 and "outbox_rows" in status.stdout, status.stdout + status.stderr
        assert "lag binlog_position_on_server: 1.000" in status.stdout, status.stdout
        assert relay.terminate()[0] == 0
    finally:
        reader.close()
        relay.ensure_stopped()
