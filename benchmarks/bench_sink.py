"""Benchmark: the database sink upserting into PostgreSQL, MariaDB or SQLite (drain mode).

Drain mode: N entity records (distinct keys, one table) are produced to a 4-partition topic
first, then one sink instance starts; rate = rows / (last batch committed - first batch
committed). Each batch is one transaction with its conditional offset update. Goal (issue #15,
PostgreSQL): >= 70,000 rows/s; MariaDB and SQLite figures are recorded. The last line printed
is JSON.

    python benchmarks/bench_sink.py [--records N] [--batch-size B] [--target postgresql|mysql|sqlite] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pymysql
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import _descendants, cpu_s, env, report, rss_mb, start_rss_sampling

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


@contextlib.contextmanager
def target_database(target: str, name: str, tmp: Path) -> Iterator[str]:
    """A fresh database on the chosen target; yields the sink's URL and drops it afterwards."""
    if target == "sqlite":
        yield f"sqlite:///{tmp / 'target.db'}"
        return
    if target == "mysql":
        dsn = env("CDC_TEST_MYSQL_DSN")
        parts = urlsplit(dsn)
        conn = pymysql.connect(
            host=parts.hostname, port=parts.port or 3306, user=parts.username, password=parts.password or ""
        )
        with conn.cursor() as cur:  # the name is ours (bench_ + hex): nothing to quote away
            cur.execute(f"CREATE DATABASE `{name}`")
        try:
            yield f"{dsn.rsplit('/', 1)[0]}/{name}"
        finally:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            conn.close()
        return
    dsn = env("CDC_TEST_POSTGRES_DSN")
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as pg:
            pg.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def postgres_cpu_s(postmaster: int | None) -> float | None:
    """CPU seconds used so far by the PostgreSQL server's processes (None: not measured)."""
    return cpu_s(_descendants(postmaster)) if postmaster is not None else None


def postmaster_pid(target: str) -> int | None:
    """The local PostgreSQL server's postmaster (the parent of a backend), for its CPU."""
    if target != "postgresql":
        return None
    with psycopg.connect(env("CDC_TEST_POSTGRES_DSN")) as pg:
        row = pg.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    try:
        with open(f"/proc/{row[0]}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None  # a server on another machine


def count_rows(target: str, url: str) -> int:
    """Rows in the target's ``orders`` table."""
    if target == "sqlite":
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as lite:
            return int(lite.execute("SELECT count(*) FROM orders").fetchone()[0])
    if target == "mysql":
        parts = urlsplit(url)
        conn = pymysql.connect(
            host=parts.hostname,
            port=parts.port or 3306,
            user=parts.username,
            password=parts.password or "",
            database=parts.path.lstrip("/"),
        )
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM orders")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    with psycopg.connect(url) as pg:
        row = pg.execute("SELECT count(*) FROM orders").fetchone()
        return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument(
        "--target",
        choices=["postgresql", "mysql", "sqlite"],
        default="postgresql",
        help="the sink's database",
    )
    parser.add_argument("--quick", action="store_true", help="10,000 records: keeps the script working in CI")
    args = parser.parse_args()
    start_rss_sampling()
    records = 10_000 if args.quick else args.records
    batch_size = min(args.batch_size, max(records // 10, 1))
    bootstrap = env("CDC_TEST_KAFKA_BOOTSTRAP")
    registry = env("CDC_TEST_SCHEMA_REGISTRY_URL")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp())
    try:
        with target_database(args.target, name, tmp) as url:
            t0 = time.monotonic()
            produce(bootstrap, registry, name, records)
            print(f"workload: {records} records produced in {time.monotonic() - t0:.1f}s", file=sys.stderr)
            (tmp / "sink.yaml").write_text(
                CONFIG.format(
                    name=name, url=url, bootstrap=bootstrap, registry=registry, batch_size=batch_size
                )
            )
            runner = SinkRunner(load_sink_config(tmp / "sink.yaml"))
            server = postmaster_pid(args.target)
            thread = threading.Thread(target=runner.run, daemon=True)
            launched = time.monotonic()
            thread.start()
            first = None
            while runner.stats.messages < records:
                if first is None and runner.stats.messages > 0:
                    first = (
                        time.monotonic(),
                        runner.stats.messages,
                        time.process_time(),
                        postgres_cpu_s(server),
                    )
                if not thread.is_alive():
                    sys.exit("benchmark: the sink stopped early")
                time.sleep(0.01)
            done_at, done_cpu, done_server = time.monotonic(), time.process_time(), postgres_cpu_s(server)
            runner.stop.set()
            thread.join(60)
            rows = count_rows(args.target, url)
            assert rows == records, f"{rows} rows, expected {records}"
    finally:
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics([name, f"{name}.sink-dlq"])
    # Steady rate: from the first committed batch on (group join and table creation excluded).
    started, counted, cpu_at_first, server_at_first = (
        first if first is not None else (launched, 0, None, None)
    )
    seconds = done_at - started
    # CPU per row over the same span: the sink's own (its threads and librdkafka's), and the
    # PostgreSQL server's (all its processes: the sink's backend, checkpointer, WAL writer).
    rows_measured = max(records - counted, 1)
    cpu_us = (done_cpu - cpu_at_first) / rows_measured * 1e6 if cpu_at_first is not None else None
    server_us = (
        (done_server - server_at_first) / rows_measured * 1e6
        if done_server is not None and server_at_first is not None
        else None
    )
    report(
        {
            "bench": "sink_postgres_upsert" if args.target == "postgresql" else f"sink_{args.target}_upsert",
            "target": args.target,
            "mode": "drain",
            "records": records,
            "batch_size": batch_size,
            "rows_per_s": round((records - counted) / seconds) if seconds > 0 else None,
            "seconds": round(seconds, 2),
            "rows_per_s_incl_startup": round(records / (done_at - launched)),
            "batches": runner.stats.batches,
            "sink_cpu_us_per_row": round(cpu_us, 2) if cpu_us is not None else None,
            "server_cpu_us_per_row": round(server_us, 2) if server_us is not None else None,
            "rss_mb": round(rss_mb(), 1),
            "goal_rows_per_s": 70_000 if args.target == "postgresql" else None,
        }
    )


if __name__ == "__main__":
    main()
