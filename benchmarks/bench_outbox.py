"""Benchmark: the outbox relay in polling mode (drain), and what the outbox insert costs the app.

Drain mode: the application first commits N events, 10 per transaction (OutboxWriter, Avro
validated and encoded locally), then the relay starts; rate = events / (last broker ack and
delete - first read). Also reports the time one outbox write adds to an application transaction
(median over the load). Goal: >= 15,000 events/s relayed. The last line printed is JSON.

    python benchmarks/bench_outbox.py [--events N] [--quick]
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
from _common import env, report, rss_mb

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
source: {{connector: outbox, url: "{url}", shards: 16, batch_size: 2000, poll_interval: 50ms}}
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
runtime: {{metrics_log_interval: 3600s}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="5,000 events: keeps the script working in CI")
    args = parser.parse_args()
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
                    writer.write(conn, str(n), {"order_id": n, "customer": f"c{n % 500}", "total": n % 10000})
                done = time.perf_counter()
                conn.commit()
                plain.append(business - started)
                with_outbox.append(done - business)
        print(f"workload: {events} events in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        tmp = Path(tempfile.mkdtemp())
        (tmp / "event.avsc").write_text(json.dumps(EVENT))
        (tmp / "key.avsc").write_text(json.dumps(KEY))
        (tmp / "c.yaml").write_text(
            CONFIG.format(
                name=name,
                url=url,
                bootstrap=env("CDC_TEST_KAFKA_BOOTSTRAP"),
                registry=env("CDC_TEST_SCHEMA_REGISTRY_URL"),
            )
        )
        runner = Runner(load_config(tmp / "c.yaml"))
        counter = runner.metrics.events.labels(name, "order")
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        first = None
        while True:
            produced = counter._value.get()
            if first is None and produced > 0:
                first = time.monotonic()
            if produced >= events:
                with psycopg.connect(url) as conn:
                    left = conn.execute("SELECT count(*) FROM cdc_outbox").fetchone()
                if left == (0,):
                    done_at = time.monotonic()
                    break
            if not thread.is_alive():
                sys.exit("benchmark: the relay stopped early")
            time.sleep(0.05)
        runner.stop.set()
        thread.join(30)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    assert first is not None
    report(
        {
            "bench": "outbox_polling_relay",
            "mode": "drain",
            "events": events,
            "events_per_txn": 10,
            "events_per_s": round(events / (done_at - first)),
            "seconds": round(done_at - first, 2),
            "outbox_write_ms_per_event_median": round(statistics.median(with_outbox) * 1000 / 10, 3),
            "business_insert_ms_per_row_median": round(statistics.median(plain) * 1000 / 10, 3),
            "rss_mb": round(rss_mb(), 1),
            "goal_events_per_s": 15_000,
        }
    )


if __name__ == "__main__":
    main()
