"""Benchmark: trigger audit capture - what the triggers cost the application, and the relay's rate.

Write overhead. PostgreSQL: pgbench's TPC-B-like run (-c 1, each transaction updates
pgbench_accounts, pgbench_tellers and pgbench_branches and inserts into pgbench_history) without,
then with the audit triggers on the three keyed tables (pgbench_history has no key: not audited);
overhead = 1 - tps_with / tps_without. MariaDB: the same transaction shape from a Python loop.

Relay (drain). N changes are recorded by the triggers first (one multi-row INSERT per 10,000
rows of a table with an id, a text, a numeric(10,2) and a timestamp), then the relay starts;
rate = N / (all events acknowledged and the audit log empty - first event). Goal on PostgreSQL:
>= 20,000 events/s; triggers' overhead on pgbench: aim <= 30%.

    python benchmarks/bench_audit.py [--dialect postgresql|mysql] [--events N] [--seconds S] [--quick]
        [--relay-only] [--batch-size N] [--max-pending N]

``--relay-only`` skips the write-overhead runs (for measuring relay changes alone); the relay runs
with the audit source's own defaults (batch_size 2000, max_pending 20000) unless told otherwise:
the benchmark measures the relay as a user gets it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import drain_until_empty, env, report, rss_mb, start_rss_sampling

from cdc.audit import generator
from cdc.sql.engines import create_engine

KEY = {"type": "record", "name": "RowKey", "fields": [{"name": "id", "type": "long"}]}
VALUE = {
    "type": "record",
    "name": "Row",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "at", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    ],
}
DDL = {
    "postgresql": "CREATE TABLE item (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL, at timestamp(6) NOT NULL)",
    "mysql": "CREATE TABLE item (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, price DECIMAL(10,2) NOT NULL, at DATETIME(6) NOT NULL)",
}
FILL = {
    "postgresql": "INSERT INTO item SELECT g, 'item ' || g, (g % 100000) / 100.0, TIMESTAMP '2024-01-01' + g * INTERVAL '1 second' "
    "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) g",
    "mysql": "INSERT INTO item SELECT seq, CONCAT('item ', seq), MOD(seq, 100000) / 100, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND "
    "FROM seq_{a}_to_{b}",  # MariaDB's sequence engine
}
CONFIG = """
name: {name}
source: {{connector: audit, url: "{url}", batch_size: {batch}, max_pending: {window}, poll_interval: 50ms}}
streams:
  - {{name: item, topic: {name}, key_schema: key.avsc, value_schema: value.avsc, capture: {{table: item}}}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 50ms}}
runtime: {{metrics_log_interval: 3600s}}
"""
TPCB = [  # pgbench's TPC-B-like transaction
    "UPDATE bench_accounts SET abalance = abalance + :d WHERE aid = :aid",
    "SELECT abalance FROM bench_accounts WHERE aid = :aid",
    "UPDATE bench_tellers SET tbalance = tbalance + :d WHERE tid = :tid",
    "UPDATE bench_branches SET bbalance = bbalance + :d WHERE bid = :bid",
    "INSERT INTO bench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :d, CURRENT_TIMESTAMP)",
]


def _database(dialect: str) -> tuple[str, str, sa.Engine]:
    """A fresh database on the test server: (its URL, its name, an engine on the server)."""
    dsn = env("CDC_TEST_POSTGRES_DSN" if dialect == "postgresql" else "CDC_TEST_MYSQL_DSN")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    server = create_engine(dsn, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    return f"{dsn.rsplit('/', 1)[0]}/{name}", name, server


def _pgbench(url: str, seconds: int, init: bool = False) -> float:
    u = urlparse(url)
    conn = ["-h", u.hostname or "", "-p", str(u.port), "-U", u.username or "", u.path.lstrip("/")]
    cmd = (
        ["pgbench", "-i", "-s", "1", "-q"]
        if init
        else ["pgbench", "-n", "-c", "1", "-j", "1", "-T", str(seconds)]
    )
    envs = {"PGPASSWORD": u.password or "", "PATH": "/usr/bin:/bin:/usr/lib/postgresql/15/bin"}
    out = subprocess.run(
        [*cmd, *conn], env=envs, check=True, capture_output=True, text=True, timeout=600
    ).stdout
    if init:
        return 0.0
    line = next(x for x in out.splitlines() if x.startswith("tps ="))
    return float(line.split()[2])


def pg_overhead(url: str, seconds: int) -> dict[str, float]:
    _pgbench(url, 0, init=True)
    _pgbench(url, 3)  # warm-up
    plain = _pgbench(url, seconds)
    generator.apply(url, ["pgbench_accounts", "pgbench_tellers", "pgbench_branches"])
    audited = _pgbench(url, seconds)
    return {"tps_without": plain, "tps_with": audited, "overhead_pct": round((1 - audited / plain) * 100, 1)}


def mysql_overhead(url: str, seconds: int) -> dict[str, float]:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE bench_branches (bid INT PRIMARY KEY, bbalance INT NOT NULL, filler CHAR(88))"
        )
        conn.exec_driver_sql(
            "CREATE TABLE bench_tellers (tid INT PRIMARY KEY, bid INT, tbalance INT NOT NULL, filler CHAR(84))"
        )
        conn.exec_driver_sql(
            "CREATE TABLE bench_accounts (aid INT PRIMARY KEY, bid INT, abalance INT NOT NULL, filler CHAR(84))"
        )
        conn.exec_driver_sql(
            "CREATE TABLE bench_history (tid INT, bid INT, aid INT, delta INT, mtime DATETIME, filler CHAR(22))"
        )
        conn.exec_driver_sql("INSERT INTO bench_branches VALUES (1, 0, '')")
        conn.exec_driver_sql("INSERT INTO bench_tellers SELECT seq, 1, 0, '' FROM seq_1_to_10")
        conn.exec_driver_sql("INSERT INTO bench_accounts SELECT seq, 1, 0, '' FROM seq_1_to_100000")

    def run() -> float:
        import random

        rng, n = random.Random(1), 0
        statements = [sa.text(s) for s in TPCB]
        with engine.connect() as conn:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                args = {
                    "aid": rng.randint(1, 100000),
                    "tid": rng.randint(1, 10),
                    "bid": 1,
                    "d": rng.randint(-5000, 5000),
                }
                for stmt in statements:
                    conn.execute(stmt, args)
                conn.commit()
                n += 1
        return n / seconds

    run()  # warm-up
    plain = run()
    generator.apply(url, ["bench_accounts", "bench_tellers", "bench_branches"])
    audited = run()
    engine.dispose()
    return {
        "tps_without": round(plain, 1),
        "tps_with": round(audited, 1),
        "overhead_pct": round((1 - audited / plain) * 100, 1),
    }


def relay(
    url: str, dialect: str, events: int, name: str, batch: int = 2000, window: int = 6000
) -> dict[str, float]:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(DDL[dialect])
    generator.apply(engine, ["item"])
    for a in range(1, events + 1, 10_000):
        b = min(events, a + 9_999)
        with engine.begin() as conn:
            if dialect == "postgresql":
                conn.execute(sa.text(FILL[dialect]), {"a": a, "b": b})
            else:
                conn.exec_driver_sql(FILL[dialect].format(a=a, b=b))
    tmp = Path(tempfile.mkdtemp())
    (tmp / "key.avsc").write_text(json.dumps(KEY))
    (tmp / "value.avsc").write_text(json.dumps(VALUE))
    (tmp / "c.yaml").write_text(
        CONFIG.format(
            name=name,
            url=url,
            batch=batch,
            window=window,
            bootstrap=env("CDC_TEST_KAFKA_BOOTSTRAP"),
            registry=env("CDC_TEST_SCHEMA_REGISTRY_URL"),
        )
    )

    def remaining() -> int:
        with engine.connect() as conn:
            query = "SELECT count(*) FROM cdc_audit_log WHERE table_name = 'item'"
            return int(conn.exec_driver_sql(query).scalar() or 0)

    first, done = drain_until_empty(tmp / "c.yaml", "item", events, remaining)
    engine.dispose()
    return {
        "events": events,
        "events_per_s": round(events / (done - first)),
        "seconds": round(done - first, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dialect", choices=["postgresql", "mysql"], default="postgresql")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=20, help="length of each write-overhead run")
    parser.add_argument(
        "--quick", action="store_true", help="5,000 events, 3 s runs: keeps the script working in CI"
    )
    parser.add_argument("--batch-size", type=int, default=2000, help="the relay's batch_size")
    parser.add_argument(
        "--max-pending",
        type=int,
        default=20_000,
        help="the relay's max_pending (default: the source's, 20000)",
    )
    parser.add_argument(
        "--relay-only", action="store_true", help="skip the write-overhead runs: measure the relay alone"
    )
    args = parser.parse_args()
    start_rss_sampling()
    events, seconds = (5_000, 3) if args.quick else (args.events, args.seconds)
    url, name, server = _database(args.dialect)
    try:
        cost: dict[str, float | None] = {"tps_without": None, "tps_with": None, "overhead_pct": None}
        if not args.relay_only:
            overhead = pg_overhead if args.dialect == "postgresql" else mysql_overhead
            cost = {**overhead(url, seconds)}
        print(f"write overhead: {cost}", file=sys.stderr)
        rate = relay(url, args.dialect, events, name, args.batch_size, args.max_pending)
    finally:
        time.sleep(1)
        with server.connect() as conn:
            force = " WITH (FORCE)" if args.dialect == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        server.dispose()
    report(
        {
            "bench": f"audit_relay_{args.dialect}",
            "mode": "drain",
            **rate,
            "write_tps_without_triggers": cost["tps_without"],
            "write_tps_with_triggers": cost["tps_with"],
            "write_overhead_pct": cost["overhead_pct"],
            "rss_mb": round(rss_mb(), 1),
            "goal_events_per_s": 20_000 if args.dialect == "postgresql" else None,
        }
    )


if __name__ == "__main__":
    main()
