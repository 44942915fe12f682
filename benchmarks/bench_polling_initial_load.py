"""Benchmark: initial load of a 10-column PostgreSQL table into Kafka with Avro (drain mode).

Drain mode: the table is loaded before the connector starts. Rate = events / (last broker ack -
first read). Runs the real pipeline in-process (source -> eventify -> wire format -> idempotent
producer -> delivery reports -> offsets) and prints a JSON line last.

  --source polling  the polling source's first poll (timestamp+incrementing), the default
  --source wal      the WAL source's initial snapshot of the same table (snapshot_mode: initial:
                    the slot is created with an exported snapshot, then the table is read in key
                    order inside it): the same work, issue #15 sets it the same goal

    python benchmarks/bench_polling_initial_load.py [--rows N] [--source polling|wal] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import children_cpu_s, current_rss_mb, drop_pg_database, env, report, rss_mb, start_rss_sampling

from cdc.config import load_config

KEY = {"type": "record", "name": "BenchKey", "fields": [{"name": "id", "type": "long"}]}
VALUE = {
    "type": "record",
    "name": "BenchRow",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "c_int", "type": "int"},
        {"name": "c_bigint", "type": "long"},
        {"name": "c_text", "type": "string"},
        {"name": "c_label", "type": "string"},
        {
            "name": "c_amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
        },
        {"name": "c_flag", "type": "boolean"},
        {"name": "c_day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "c_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    ],
}
#: what both sources' configs share: the output, the offsets and the runtime
OUTPUT = """kafka:
  bootstrap_servers: {bootstrap}
schema_registry:
  url: {registry}
  auto_register: true
offsets:
  store: kafka
  topic: {name}.offsets
runtime:
  metrics_log_interval: 3600s
  capture: {capture}
"""
CONFIG = (
    """
name: {name}
source:
  connector: polling
  url: {url}
  fetch_size: 20000
  progress: false
streams:
  - name: rows
    topic: {name}
    key_schema: key.avsc
    value_schema: value.avsc
    capture: {{table: bench_rows, mode: timestamp+incrementing, timestamp_column: updated_at, incrementing_column: id}}
"""
    + OUTPUT
)
WAL_CONFIG = (
    """
name: {name}
source:
  connector: postgres_wal
  url: {url}
  slot: {name}
  publication: {name}
  snapshot_mode: initial
  snapshot_fetch_size: 20000
streams:
  - name: rows
    topic: {name}
    key_schema: key.avsc
    value_schema: value.avsc
    capture: {{table: public.bench_rows}}
"""
    + OUTPUT
)


def loaded(committed: dict[str, dict[str, object]], source: str, name: str, rows: int) -> bool:
    """Whether the committed offsets cover the whole table (its last key, ``rows``)."""
    if source == "polling":
        return committed.get("rows", {}).get("id") == rows
    offset = committed.get(f"slot:{name}", {})
    return offset.get("after") == [rows] or offset.get("phase") == "stream"


def load_table(dsn: str, db: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    base = dsn.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/{db}", autocommit=True) as conn:
        conn.execute(
            """CREATE TABLE bench_rows (id bigint PRIMARY KEY, c_int int NOT NULL, c_bigint bigint NOT NULL,
               c_text text NOT NULL, c_label text NOT NULL, c_amount numeric(12,2) NOT NULL, c_flag boolean NOT NULL,
               c_day date NOT NULL, c_at timestamptz NOT NULL, updated_at timestamp NOT NULL)"""
        )
        conn.execute(
            """INSERT INTO bench_rows SELECT g, g %% 100000, g::bigint * 7919, md5(g::text), 'label-' || (g %% 50),
               (g %% 1000000) / 100.0, g %% 2 = 0, date '2020-01-01' + (g %% 2000),
               timestamptz '2024-01-01 00:00+00' + g * interval '1 second',
               timestamp '2024-01-01' + g * interval '1 millisecond'
               FROM generate_series(1, %s) g""",
            (rows,),
        )
        conn.execute("CREATE INDEX ON bench_rows (updated_at, id)")
        conn.execute("ANALYZE bench_rows")


def main() -> None:
    from cdc.runtime.runner import Runner  # here: a spawned capture process re-imports this script

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--capture",
        choices=["auto", "process", "inline"],
        default="auto",
        help="runtime.capture of the connector",
    )
    parser.add_argument(
        "--source",
        choices=["polling", "wal"],
        default="polling",
        help="polling: the polling source's first poll; wal: the WAL source's initial snapshot",
    )
    parser.add_argument("--quick", action="store_true", help="20,000 rows: keeps the script working in CI")
    args = parser.parse_args()
    start_rss_sampling()
    rows = 20_000 if args.quick else args.rows
    dsn = env("CDC_TEST_POSTGRES_DSN")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    load_table(dsn, name, rows)
    print(f"loaded {rows} rows in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp())
    (tmp / "key.avsc").write_text(json.dumps(KEY))
    (tmp / "value.avsc").write_text(json.dumps(VALUE))
    url = f"{dsn.rsplit('/', 1)[0]}/{name}"
    (tmp / "c.yaml").write_text(
        (CONFIG if args.source == "polling" else WAL_CONFIG).format(
            name=name,
            url=url,
            bootstrap=env("CDC_TEST_KAFKA_BOOTSTRAP"),
            registry=env("CDC_TEST_SCHEMA_REGISTRY_URL"),
            capture=args.capture,
        )
    )
    runner = Runner(load_config(tmp / "c.yaml"))
    counter = runner.metrics.events.labels(name, "rows")
    thread = threading.Thread(target=runner.run, daemon=True)
    baseline_rss = current_rss_mb()
    started = time.monotonic()
    thread.start()
    first = None
    samples: list[float] = []
    try:
        while True:
            produced = counter._value.get()
            if first is None and produced > 0:
                first = time.monotonic()
                cpu_first, capture_first = time.process_time(), children_cpu_s()
            if loaded(json.loads(runner.metrics.committed_text), args.source, name, rows):
                done = time.monotonic()
                cpu_done, capture_done = time.process_time(), children_cpu_s()
                break
            if not thread.is_alive():
                sys.exit("benchmark: the connector stopped early")
            samples.append(current_rss_mb())
            time.sleep(0.05)
    finally:
        runner.stop.set()
        thread.join(60)
        drop_pg_database(dsn, name)
    assert first is not None
    elapsed = done - first
    report(
        {
            "bench": "polling_initial_load",
            "source": args.source,
            "capture": args.capture,
            "mode": "drain",
            "rows": rows,
            "columns": 10,
            "events_per_s": round(rows / elapsed),
            "seconds": round(elapsed, 2),
            "startup_s": round(first - started, 2),
            "rss_mb": round(rss_mb(), 1),
            "rss_growth_mb": round(max(samples or [baseline_rss]) - baseline_rss, 1),
            # CPU per event over the same span: this process (the connector: produce, acks) and
            # its capture process (reading, eventifying and encoding: the polling source encodes there)
            "connector_cpu_us_per_event": round((cpu_done - cpu_first) / rows * 1e6, 1),
            "capture_cpu_us_per_event": round((capture_done - capture_first) / rows * 1e6, 1),
            "goal_events_per_s": 60_000,  # issue #15 (was 50,000)
        }
    )


if __name__ == "__main__":
    main()
