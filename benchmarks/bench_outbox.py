"""Benchmark: the outbox relay (drain), and what the outbox insert costs the application.

Drain mode: the application first commits N events, 10 per transaction (OutboxWriter, Avro
validated and encoded locally), then the relay starts; rate = events / (last broker ack -
first read). Also reports the time one outbox write adds to an application transaction (median).

  --mode polling  the relay claims and deletes rows (goal >= 30,000 events/s, issue #15)
  --mode log      PostgreSQL WAL: the app inserts and deletes in the same transaction, the relay
                  reads the inserts from the WAL (goal >= 40,000 events/s, issue #15)
                  MySQL/MariaDB binlog (--db mysql): the app only inserts; the relay reads the
                  inserts from the binlog and deletes the rows after the broker's ack. A short
                  first run relays one event, so the drain starts from a stored binlog position
                  (not from the start-up snapshot of the table).

    python benchmarks/bench_outbox.py [--mode polling|log] [--db postgresql|mysql] [--events N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import psycopg
import pymysql
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import drain_until_empty, drop_pg_database, env, report, rss_mb, start_rss_sampling

from cdc import migrations
from cdc.config import load_config
from cdc.outbox import OutboxWriter

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


class PostgresDb:
    """The benchmark's database on the PostgreSQL test server."""

    def __init__(self) -> None:
        self.dsn = env("CDC_TEST_POSTGRES_DSN")

    def create(self, name: str) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"{self.dsn.rsplit('/', 1)[0]}/{name}"

    def connect(self, url: str) -> Any:
        return psycopg.connect(url)

    def execute(self, url: str, statement: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement.encode())

    def remaining(self, url: str) -> int:
        with psycopg.connect(url) as conn:
            return int(conn.execute("SELECT count(*) FROM cdc_outbox").fetchone()[0])  # type: ignore[index]

    def drop(self, name: str) -> None:
        drop_pg_database(self.dsn, name)


class MysqlDb:
    """The benchmark's database on the MariaDB test server."""

    def __init__(self) -> None:
        self.dsn = env("CDC_TEST_MYSQL_DSN")

    def connect(self, url: str) -> Any:
        u = urlparse(url)
        return pymysql.connect(
            host=u.hostname, port=u.port or 3306, user=unquote(u.username or ""),
            password=unquote(u.password or ""), database=u.path.lstrip("/") or None, charset="utf8mb4",
        )  # fmt: skip

    def create(self, name: str) -> str:
        with self.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        return f"{self.dsn.rsplit('/', 1)[0]}/{name}"

    def execute(self, url: str, statement: str) -> None:
        with self.connect(url) as conn, conn.cursor() as cur:
            cur.execute(statement.replace(" text", " varchar(20)"))
            conn.commit()

    def remaining(self, url: str) -> int:
        with self.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM cdc_outbox")
            return int(cur.fetchone()[0])  # type: ignore[index]

    def drop(self, name: str) -> None:
        with self.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def main() -> None:
    from cdc.runtime.runner import Runner  # here: a spawned capture process re-imports this script

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="5,000 events: keeps the script working in CI")
    parser.add_argument("--mode", choices=["polling", "log"], default="polling")
    parser.add_argument("--db", choices=["postgresql", "mysql"], default="postgresql")
    parser.add_argument(
        "--capture",
        choices=["auto", "process", "inline"],
        default="auto",
        help="runtime.capture of the relay",
    )
    args = parser.parse_args()
    start_rss_sampling()
    events = 5_000 if args.quick else args.events
    db = PostgresDb() if args.db == "postgresql" else MysqlDb()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    url = db.create(name)
    try:
        migrations.apply(url)
        db.execute(url, "CREATE TABLE orders (id bigint PRIMARY KEY, customer text, total numeric(10,2))")
        writer = OutboxWriter(EVENT, aggregate_type="order", event_type="OrderPlaced")
        tmp = Path(tempfile.mkdtemp())
        (tmp / "event.avsc").write_text(json.dumps(EVENT))
        (tmp / "key.avsc").write_text(json.dumps(KEY))
        extra = ""
        if args.mode == "log":
            extra = (
                f", mode: log, slot: {name}, publication: {name}"
                if args.db == "postgresql"
                else f", mode: log, server_id: {random.randint(10_000, 2**31)}"
            )
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
            # PostgreSQL: a first short run creates the slot and publication, so the workload is
            # captured. MySQL: it stores a binlog position (one event relayed), so the drain
            # reads the binlog rather than a start-up snapshot of the table.
            first_run = Runner(load_config(tmp / "c.yaml"))
            t = threading.Thread(target=first_run.run, daemon=True)
            t.start()
            time.sleep(4)
            if args.db == "mysql":
                with db.connect(url) as conn:
                    writer.write(conn, "warm-up", {"order_id": -1, "customer": "warm-up", "total": 0})
                    conn.commit()
                while db.remaining(url):
                    time.sleep(0.1)
                time.sleep(1)  # the position of that event's ack is saved
            first_run.stop.set()
            t.join(30)
        own_delete = args.mode == "log" and args.db == "postgresql"
        plain: list[float] = []
        with_outbox: list[float] = []
        t0 = time.monotonic()
        with db.connect(url) as conn:
            cur = conn.cursor()
            for txn in range(events // 10):
                started = time.perf_counter()
                for i in range(10):
                    n = txn * 10 + i
                    cur.execute("INSERT INTO orders VALUES (%s, %s, %s)", (n, f"c{n % 500}", n % 10000))
                business = time.perf_counter()
                for i in range(10):
                    n = txn * 10 + i
                    event_id = writer.write(
                        conn, str(n), {"order_id": n, "customer": f"c{n % 500}", "total": n % 10000}
                    )
                    if own_delete:
                        cur.execute("DELETE FROM cdc_outbox WHERE id = %s", (event_id,))
                done = time.perf_counter()
                conn.commit()
                plain.append(business - started)
                with_outbox.append(done - business)
        print(f"workload: {events} events in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        cpu: list[float] = []
        first, done_at = drain_until_empty(tmp / "c.yaml", "order", events, lambda: db.remaining(url), cpu)
    finally:
        time.sleep(1)
        db.drop(name)
    report(
        {
            "bench": f"outbox_{args.mode}_relay",
            "db": args.db,
            "capture": args.capture,
            "mode": "drain",
            "events": events,
            "events_per_txn": 10,
            "events_per_s": round(events / (done_at - first)),
            "seconds": round(done_at - first, 2),
            "outbox_write_ms_per_event_median": round(statistics.median(with_outbox) * 1000 / 10, 3),
            "business_insert_ms_per_row_median": round(statistics.median(plain) * 1000 / 10, 3),
            "connector_cpu_us_per_event": round(cpu[0] / events * 1e6, 1),
            "rss_mb": round(rss_mb(), 1),
            # issue #15's goals on PostgreSQL; the MariaDB modes have none of their own
            "goal_events_per_s": {"polling": 30_000, "log": 40_000}[args.mode]
            if args.db == "postgresql"
            else None,
        }
    )


if __name__ == "__main__":
    main()
