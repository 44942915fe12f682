"""Transaction metadata on real PostgreSQL and Kafka: BEGIN/END records whose per-stream counts
match the events of each transaction, under a mixed workload with a kill -9 inside a large one."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from tests.conftest import unique
from tests.integration.harness import Connector, TopicReader, cdc, wait_for, write_config
from tests.integration.test_wal_source import drop_slot

pytestmark = pytest.mark.integration

KEY = {"type": "record", "name": "K", "namespace": "test.txn", "fields": [{"name": "id", "type": "long"}]}
VALUE = {
    "type": "record",
    "name": "V",
    "namespace": "test.txn",
    "fields": [{"name": "id", "type": "long"}, {"name": "v", "type": "long"}],
}
CONFIG = """
name: {name}
source:
  {{connector: postgres_wal, url: "{url}", slot: {slot}, publication: {name}_pub, status_interval: 1s,
   snapshot_mode: never}}
streams:
  - {{name: a, topic: {name}.a, key_schema: key.avsc, value_schema: value.avsc, capture: {{table: public.ta}}}}
  - {{name: b, topic: {name}.b, key_schema: key.avsc, value_schema: value.avsc, capture: {{table: public.tb}}}}
kafka: {{bootstrap_servers: "{bootstrap}", topic_prefix: {name}}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
delivery: {delivery}
transactions: {{}}
"""


def read_json(bootstrap: str, topic: str, idle: float = 2.0) -> list[dict[str, Any]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique("txn"), "enable.auto.commit": False}
    )
    out = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        while True:
            msg = consumer.poll(idle)
            if msg is None:
                return out
            if not msg.error():
                out.append(json.loads(msg.value()))
    finally:
        consumer.close()


def slot_exists(dsn: str, slot: str) -> bool:
    with psycopg.connect(dsn) as db:
        return (
            db.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            is not None
        )


def small_transactions(dsn: str, n: int, rng: random.Random, expected: dict[str, dict[str, int]]) -> None:
    """n transactions, each with 1..8 changes spread over both tables (inserts, updates, deletes)."""
    with psycopg.connect(dsn) as db:
        for _ in range(n):
            counts: dict[str, int] = defaultdict(int)
            for _ in range(rng.randint(1, 8)):
                table = rng.choice(["ta", "tb"])
                row = rng.randint(1, 50)
                kind = rng.random()
                if kind < 0.6:
                    upsert = "INSERT INTO {t} VALUES (%s, 1) ON CONFLICT (id) DO UPDATE SET v = {t}.v + 1"
                    cur = db.execute(sql.SQL(upsert).format(t=sql.Identifier(table)), (row,))
                else:
                    cur = db.execute(
                        sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(table)), (row,)
                    )
                counts[table[1]] += cur.rowcount
            txid = db.execute("SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text").fetchone()
            db.commit()
            assert txid is not None
            if sum(counts.values()):
                expected[txid[0]] = {k: v for k, v in counts.items() if v}


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_end_counts_match_each_transaction_after_kill_minus_9(
    delivery: str, pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as db:
        db.execute("CREATE TABLE ta (id bigint PRIMARY KEY, v bigint NOT NULL)")
        db.execute("CREATE TABLE tb (id bigint PRIMARY KEY, v bigint NOT NULL)")
    slot = unique("test")
    text = CONFIG.format(
        name=topic_name, url=pg_database, slot=slot, bootstrap=kafka_bootstrap, registry=registry_url,
        delivery=delivery,
    )  # fmt: skip
    config = write_config(tmp_path, text, {"key.avsc": KEY, "value.avsc": VALUE})
    rng = random.Random(16)
    expected: dict[str, dict[str, int]] = {}
    conn = Connector(config, tmp_path / "run1.log")
    reader_a = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.a")
    try:
        wait_for(lambda: slot_exists(pg_database, slot), 60, "the replication slot")
        small_transactions(pg_database, 30, rng, expected)
        with psycopg.connect(pg_database) as db:  # a large transaction touching both tables
            db.execute("INSERT INTO ta SELECT g, g FROM generate_series(1000, 40999) g")
            db.execute("INSERT INTO tb SELECT g, g FROM generate_series(1000, 1999) g")
            row = db.execute("SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text").fetchone()
            db.commit()
        assert row is not None
        expected[row[0]] = {"a": 40_000, "b": 1_000}
        wait_for(lambda: reader_a.written() > 10_000, 90, "part of the large transaction")
        conn.kill9()
        assert reader_a.written() < 40_000 + 200, "the large transaction was fully delivered before the kill"
        small_transactions(pg_database, 30, rng, expected)
        conn = Connector(config, tmp_path / "run2.log")
        wait_for(
            lambda: len({r["id"] for r in read_json(kafka_bootstrap, f"{topic_name}.transactions", 0.5)
                         if r["status"] == "END"} & set(expected)) == len(expected),
            120, "END of every transaction",
        )  # fmt: skip
        code, _ = conn.terminate()
        assert code == 0, conn.log_text()[-2000:]
    finally:
        conn.ensure_stopped()
        reader_a.close()
        drop_slot(pg_database, config)

    meta = read_json(kafka_bootstrap, f"{topic_name}.transactions")
    begins = {r["id"] for r in meta if r["status"] == "BEGIN"}
    ends: dict[str, dict[str, Any]] = {r["id"]: r for r in meta if r["status"] == "END"}
    # the records of each transaction, by (stream, order): duplicates after the kill collapse
    orders: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for stream in ("a", "b"):
        reader = TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.{stream}")
        try:
            for _, _, headers in reader.drain(2):
                orders[headers["cdc.txid"].decode()][stream].add(int(headers["cdc.txn.order"]))
        finally:
            reader.close()
    for txid, counts in expected.items():
        assert txid in begins, f"transaction {txid}: no BEGIN"
        end = ends[txid]
        got = {c["stream"]: c["event_count"] for c in end["data_collections"]}
        assert got == counts, f"transaction {txid}: END counts {got} != {counts}"
        assert end["event_count"] == sum(counts.values())
        assert isinstance(end["commit_position"]["lsn"], int) and end["ts_ms"] > 0
        assert {s: len(o) for s, o in orders[txid].items()} == counts, f"transaction {txid}: records"
        every = sorted(o for s in orders[txid].values() for o in s)
        assert every == list(range(1, sum(counts.values()) + 1)), f"transaction {txid}: orders have gaps"


def test_transactions_need_a_source_that_reports_them(pg_database: str, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"""
name: {unique("txn")}
source: {{connector: polling, url: "{pg_database}"}}
streams:
  - {{name: a, key_schema: key.avsc, value_schema: value.avsc, capture: {{table: ta, mode: bulk}}}}
output: {{kind: file, directory: {tmp_path}}}
offsets: {{store: file, path: {tmp_path}/offsets.json}}
transactions: {{}}
""",
        {"key.avsc": KEY, "value.avsc": VALUE},
    )
    with psycopg.connect(pg_database, autocommit=True) as db:
        db.execute("CREATE TABLE ta (id bigint PRIMARY KEY, v bigint NOT NULL)")
    result = cdc("run", str(config), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "the polling source does not report transaction boundaries" in result.stderr
    assert "needs output.kind: kafka" in result.stderr
    assert "Traceback" not in result.stderr
