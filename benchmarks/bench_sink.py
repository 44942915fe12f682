"""Benchmark: the database sink upserting into PostgreSQL (drain mode).

Drain mode: N entity records (distinct keys, one table) are produced to a 4-partition topic
first, then one sink instance starts; rate = rows / (last batch committed - first batch
committed). Each batch is one transaction with its conditional offset update. Goal: >= 30,000
rows/s. The last line printed is JSON.

    python benchmarks/bench_sink.py [--records N] [--batch-size B] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import env, report, rss_mb, start_rss_sampling

from cdc.schemas.wire import WireEncoder
from cdc.sink.loader import load_sink_config
from cdc.sink.runner import SinkRunner

KEY = {"type": "record", "name": "OrderKey", "namespace": "bench", "fields": [{"name": "id", "type": "long"}]}
VALUE = {
    "type": "record",
    "name": "Order",
    "namespace": "bench",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "qty", "type": "int"},
        {"name": "paid", "type": "boolean"},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
CONFIG = """
name: {name}
topics: [{{topic: {name}, table: orders}}]
target: {{url: "{url}"}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}"}}
batch_size: {batch_size}
batch_timeout: 200ms
"""


def produce(bootstrap: str, registry: str, topic: str, records: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)]).values():
        fut.result()
    client = SchemaRegistryClient({"url": registry})
    key = WireEncoder(KEY, client.register_schema(f"{topic}-key", Schema(json.dumps(KEY), "AVRO")))
    value = WireEncoder(VALUE, client.register_schema(f"{topic}-value", Schema(json.dumps(VALUE), "AVRO")))
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4", "batch.size": 1_000_000}
    )
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for i in range(records):
        record = {
            "id": i,
            "customer": f"customer-{i % 5000}",
            "total": Decimal(i % 100000) / 100,
            "qty": i % 17,
            "paid": i % 2 == 0,
            "placed_at": start + dt.timedelta(seconds=i),
            "note": None if i % 3 else "gift wrap",
        }
        while True:
            try:
                producer.produce(topic, value.encode(record), key.encode({"id": i}))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="10,000 records: keeps the script working in CI")
    args = parser.parse_args()
    start_rss_sampling()
    records = 10_000 if args.quick else args.records
    batch_size = min(args.batch_size, max(records // 10, 1))
    dsn = env("CDC_TEST_POSTGRES_DSN")
    bootstrap = env("CDC_TEST_KAFKA_BOOTSTRAP")
    registry = env("CDC_TEST_SCHEMA_REGISTRY_URL")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{dsn.rsplit('/', 1)[0]}/{name}"
    try:
        t0 = time.monotonic()
        produce(bootstrap, registry, name, records)
        print(f"workload: {records} records produced in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        tmp = Path(tempfile.mkdtemp())
        (tmp / "sink.yaml").write_text(
            CONFIG.format(name=name, url=url, bootstrap=bootstrap, registry=registry, batch_size=batch_size)
        )
        runner = SinkRunner(load_sink_config(tmp / "sink.yaml"))
        thread = threading.Thread(target=runner.run, daemon=True)
        launched = time.monotonic()
        thread.start()
        first = None
        while runner.stats.messages < records:
            if first is None and runner.stats.messages > 0:
                first = (time.monotonic(), runner.stats.messages)
            if not thread.is_alive():
                sys.exit("benchmark: the sink stopped early")
            time.sleep(0.01)
        done_at = time.monotonic()
        runner.stop.set()
        thread.join(60)
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM orders").fetchone()
        assert row is not None and row[0] == records, f"{row} rows, expected {records}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics([name, f"{name}.sink-dlq"])
    # Steady rate: from the first committed batch on (group join and table creation excluded).
    started, counted = first if first is not None else (launched, 0)
    seconds = done_at - started
    report(
        {
            "bench": "sink_postgres_upsert",
            "mode": "drain",
            "records": records,
            "batch_size": batch_size,
            "rows_per_s": round((records - counted) / seconds) if seconds > 0 else None,
            "seconds": round(seconds, 2),
            "rows_per_s_incl_startup": round(records / (done_at - launched)),
            "batches": runner.stats.batches,
            "rss_mb": round(rss_mb(), 1),
            "goal_rows_per_s": 30_000,
        }
    )


if __name__ == "__main__":
    main()
