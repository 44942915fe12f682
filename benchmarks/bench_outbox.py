"""Benchmark: the outbox relay (drain), and what the outbox insert costs the application.

Drain mode: the application first commits N events, 10 per transaction (OutboxWriter, Avro
validated and encoded locally), then the relay starts; rate = events / (last broker ack -
first read). Also reports the time one outbox write adds to an application transaction (median).

  --mode polling  the relay claims and deletes rows (goal >= 15,000 events/s)
  --mode log      PostgreSQL WAL: the app inserts and deletes in the same transaction, the relay
                  reads the inserts from the WAL (goal >= 25,000 events/s)

    python benchmarks/bench_outbox.py [--mode polling|log] [--events N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import drain_until_empty, env, report, rss_mb, start_rss_sampling

from cdc import migrations
from cdc.config import load_config
from cdc.outbox import OutboxWriter
from cdc.runtime.runner import Runner

EVENT = {
    "type": "record",
    "name": "OrderPlaced",
    "fields": [
        {"name": "order_id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    ],
}
KEY = {"type": "record", "name": "OrderKey", "fields": [{"name": "aggregate_id", "type": "string"}]}
CONFIG = """
name: {name}
source: {{connector: outbox, url: "{url}", shards: 16, batch_size: 2000, poll_interval: 50ms{extra}}}
streams:
  - name: order
    topic: {name}
    key_schema: key.avsc
    value_schema: event.avsc
    fields: {{aggregate_id: aggregateid}}
    capture: {{aggregate_type: order}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 50ms}}
runtime: {{metrics_log_interval: 3600s, capture: {capture}}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="5,000 events: keeps the script working in CI")
    parser.add_argument("--mode", choices=["polling", "log"], default="polling")
    parser.add_argument(
        "--capture",
        choices=["auto", "process", "inline"],
        default="auto",
        help="runtime.capture of the relay",
    )
    args = parser.parse_args()
    start_rss_sampling()
    events = 5_000 if args.quick else args.events
    dsn = env("CDC_TEST_POSTGRES_DSN")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{dsn.rsplit('/', 1)[0]}/{name}"
    try:
        migrations.apply(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer text, total numeric(10,2))")
        writer = OutboxWriter(EVENT, aggregate_type="order", event_type="OrderPlaced")
        tmp = Path(tempfile.mkdtemp())
        (tmp / "event.avsc").write_text(json.dumps(EVENT))
        (tmp / "key.avsc").write_text(json.dumps(KEY))
        extra = f", mode: log, slot: {name}, publication: {name}" if args.mode == "log" else ""
        (tmp / "c.yaml").write_text(
            CONFIG.format(
                name=name,
                url=url,
                extra=extra,
                bootstrap=env("CDC_TEST_KAFKA_BOOTSTRAP"),
                registry=env("CDC_TEST_SCHEMA_REGISTRY_URL"),
                capture=args.capture,
            )
        )
        if args.mode == "log":
            # A first short run creates the slot and publication, so the workload is captured.
            first_run = Runner(load_config(tmp / "c.yaml"))
            t = threading.Thread(target=first_run.run, daemon=True)
            t.start()
            time.sleep(4)
            first_run.stop.set()
            t.join(30)
        plain: list[float] = []
        with_outbox: list[float] = []
        t0 = time.monotonic()
        with psycopg.connect(url) as conn:
            for txn in range(events // 10):
                started = time.perf_counter()
                for i in range(10):
                    n = txn * 10 + i
                    conn.execute("INSERT INTO orders VALUES (%s, %s, %s)", (n, f"c{n % 500}", n % 10000))
                business = time.perf_counter()
                for i in range(10):
                    n = txn * 10 + i
                    event_id = writer.write(
                        conn, str(n), {"order_id": n, "customer": f"c{n % 500}", "total": n % 10000}
                    )
                    if args.mode == "log":
                        conn.execute("DELETE FROM cdc_outbox WHERE id = %s", (event_id,))
                done = time.perf_counter()
                conn.commit()
                plain.append(business - started)
                with_outbox.append(done - business)
        print(f"workload: {events} events in {time.monotonic() - t0:.1f}s", file=sys.stderr)

        def remaining() -> int:
            with psycopg.connect(url) as conn:
                return int(conn.execute("SELECT count(*) FROM cdc_outbox").fetchone()[0])  # type: ignore[index]

        first, done_at = drain_until_empty(tmp / "c.yaml", "order", events, remaining)
    finally:
        time.sleep(1)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    report(
        {
            "bench": f"outbox_{args.mode}_relay",
            "capture": args.capture,
            "mode": "drain",
            "events": events,
            "events_per_txn": 10,
            "events_per_s": round(events / (done_at - first)),
            "seconds": round(done_at - first, 2),
            "outbox_write_ms_per_event_median": round(statistics.median(with_outbox) * 1000 / 10, 3),
            "business_insert_ms_per_row_median": round(statistics.median(plain) * 1000 / 10, 3),
            "rss_mb": round(rss_mb(), 1),
            "goal_events_per_s": 15_000 if args.mode == "polling" else 25_000,
        }
    )


if __name__ == "__main__":
    main()
