"""Benchmarks of the MySQL/MariaDB binlog source (binlog -> Avro -> Kafka), three scenarios:

  --scenario big-txn      drain: ONE transaction inserting N rows (default 1,000,000) committed
                          before the connector starts; goal >= 40,000 events/s, peak RSS <= 300 MB
  --scenario small-txns   drain: N single-row transactions (default 200,000) committed before the
                          connector starts; goal >= 30,000 events/s
  --scenario live         live: a separate process commits single-row transactions at --rate
                          (default 5,000/s) for --seconds; reports insert-to-broker latency
                          percentiles (goal p99 <= 100 ms). The binlog's own timestamps have
                          whole-second resolution, so each row carries its insert time.
                          --writer server (default) paces the inserts in a stored procedure on
                          the server (SLEEP between them); --writer client sends each INSERT
                          from a Python process, whose own ~30-45% of a core competes with
                          the connector on a 2-core machine: the workload is the same, the
                          load generator's CPU is not the connector's.

The connector starts from the binlog position taken just before the workload (seeded into a
file offset store). Drain rate = events / (last broker ack - first read). The last line
printed is JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    KEY,
    VALUE,
    drain,
    env,
    measure_live,
    report,
    rss_mb,
    start_rss_sampling,
)

from cdc.config import load_config

if TYPE_CHECKING:
    from cdc.runtime.runner import Runner

CONFIG = """
name: {name}
source:
  connector: mysql_binlog
  url: {url}
  server_id: {server_id}
  snapshot_mode: never
streams:
  - name: rows
    topic: {name}
    key_schema: key.avsc
    value_schema: value.avsc
    capture: {{table: bench}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: file, path: offsets.json, commit_interval: 100ms}}
runtime: {{metrics_log_interval: 3600s, capture: {capture}}}
"""


def connect(url: str, database: str | None = None) -> Any:
    u = urlparse(url)
    return pymysql.connect(
        host=u.hostname, port=u.port or 3306, user=u.username, password=u.password or "",
        database=database, autocommit=True,
    )  # fmt: skip


def setup(dsn: str, name: str) -> str:
    conn = connect(dsn)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute(f"USE `{name}`")
        cur.execute(
            "CREATE TABLE bench (id bigint AUTO_INCREMENT PRIMARY KEY, account int NOT NULL, label varchar(100) "
            "NOT NULL, amount decimal(12,2) NOT NULL, created_at timestamp(6) NOT NULL DEFAULT current_timestamp(6))"
        )
        cur.execute(
            """CREATE PROCEDURE one_row_txns(n int) BEGIN
                 DECLARE i int DEFAULT 1;
                 WHILE i <= n DO
                   INSERT INTO bench (account, label, amount) VALUES (i % 1000, CONCAT('row ', i), (i % 100000) / 100);
                   COMMIT;
                   SET i = i + 1;
                 END WHILE;
               END"""
        )
        # The live workload paced on the server (SYSDATE, unlike NOW, is the time of the call):
        # each autocommitted INSERT is a transaction, its label the time just before it.
        cur.execute(
            """CREATE PROCEDURE paced_rows(rate int, seconds double) BEGIN
                 DECLARE n int DEFAULT 0;
                 DECLARE t0 double DEFAULT UNIX_TIMESTAMP(SYSDATE(6));
                 DECLARE ahead double;
                 WHILE UNIX_TIMESTAMP(SYSDATE(6)) - t0 < seconds DO
                   INSERT INTO bench (account, label, amount)
                     VALUES (n % 1000, CAST(UNIX_TIMESTAMP(SYSDATE(6)) AS char), n);
                   SET n = n + 1;
                   SET ahead = t0 + n / rate - UNIX_TIMESTAMP(SYSDATE(6));
                   IF ahead > 0 THEN DO SLEEP(ahead); END IF;
                 END WHILE;
               END"""
        )
    conn.close()
    return f"{dsn.rsplit('/', 1)[0]}/{name}"


def teardown(dsn: str, name: str) -> None:
    conn = connect(dsn)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def make_runner(tmp: Path, name: str, url: str, capture: str, start: str | None = None) -> Runner:
    from cdc.runtime.runner import Runner  # here: a spawned capture process re-imports this script

    (tmp / "key.avsc").write_text(json.dumps(KEY))
    (tmp / "value.avsc").write_text(json.dumps(VALUE))
    (tmp / "c.yaml").write_text(
        CONFIG.format(
            name=name, url=url, server_id=int(uuid.uuid4().int % 2**31) + 10_000, capture=capture,
            bootstrap=env("CDC_TEST_KAFKA_BOOTSTRAP"), registry=env("CDC_TEST_SCHEMA_REGISTRY_URL"),
        )
    )  # fmt: skip
    if start is not None:  # stream from just before the workload
        offset = {"phase": "stream", "start": start, "txn": "", "i": -1}
        (tmp / "offsets.json").write_text(json.dumps({"connectors": {name: {"binlog": offset}}}))
    return Runner(load_config(tmp / "c.yaml"))


def gtid_position(url: str) -> str:
    conn = connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
        (pos,) = cur.fetchone()
    conn.close()
    return str(pos)


def server_writer(url: str, rate: int, seconds: float) -> None:
    """Single-row transactions at ``rate`` for ``seconds``, paced by a stored procedure."""
    conn = connect(url, url.rsplit("/", 1)[1])
    with conn.cursor() as cur:
        cur.execute("CALL paced_rows(%s, %s)", (rate, seconds))
    conn.close()


def writer(url: str, rate: int, seconds: float) -> None:
    """Single-row transactions at ``rate`` for ``seconds``, one INSERT per round trip."""
    conn = connect(url, url.rsplit("/", 1)[1])
    interval = 1.0 / rate
    start = time.monotonic()
    n = 0
    with conn.cursor() as cur:
        while time.monotonic() - start < seconds:
            cur.execute(
                "INSERT INTO bench (account, label, amount) VALUES (%s, %s, %s)",
                (n % 1000, f"{time.time():.6f}", n),
            )
            n += 1
            lag = start + n * interval - time.monotonic()
            if lag > 0:
                time.sleep(lag)
    conn.close()


_ROW_SCHEMA: Any = None


def insert_latency_ms(msg: Any, received_s: float) -> float:
    """The row's insert (its label: the writer's clock just before the INSERT; binlog
    timestamps have whole seconds) to the consumer's receipt."""
    global _ROW_SCHEMA
    from fastavro import parse_schema, schemaless_reader

    if _ROW_SCHEMA is None:
        _ROW_SCHEMA = parse_schema(VALUE)
    row: Any = schemaless_reader(io.BytesIO(msg.value()[5:]), _ROW_SCHEMA, None)
    return (received_s - float(row["label"])) * 1000


def live(runner: Runner, name: str, url: str, rate: int, seconds: float, on_server: bool) -> dict[str, Any]:
    def warm_up() -> None:
        conn = connect(url, url.rsplit("/", 1)[1])
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO bench (account, label, amount) VALUES (0, %s, 0)", (f"{time.time():.6f}",)
            )
        conn.close()

    write = server_writer if on_server else writer
    return measure_live(runner, name, warm_up, write, (url, rate, seconds), insert_latency_ms, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=["big-txn", "small-txns", "live", "all"], default="all")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--capture", choices=["auto", "process", "inline"], default="auto")
    parser.add_argument(
        "--writer", choices=["server", "client"], default="server",
        help="live: pace the inserts in a stored procedure (server) or from a Python client process",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes: keeps the script working in CI")
    args = parser.parse_args()
    start_rss_sampling()
    scenarios = ["big-txn", "small-txns", "live"] if args.scenario == "all" else [args.scenario]
    dsn = env("CDC_TEST_MYSQL_DSN")
    results: dict[str, Any] = {"bench": "binlog", "quick": args.quick, "capture": args.capture}
    for scenario in scenarios:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        url = setup(dsn, name)
        tmp = Path(tempfile.mkdtemp())
        try:
            start = gtid_position(url)
            if scenario == "live":
                rate = 500 if args.quick else args.rate
                seconds = 3 if args.quick else args.seconds
                runner = make_runner(tmp, name, url, args.capture, start)
                out = live(runner, name, url, rate, seconds, args.writer == "server")
                results["live"] = {
                    "mode": "live",
                    "writer": args.writer,
                    "rate_per_s": rate,
                    **out,
                    "goal_p99_ms": 100,
                }
                continue
            rows = args.rows or (
                (20_000 if args.quick else 1_000_000)
                if scenario == "big-txn"
                else (5_000 if args.quick else 200_000)
            )
            t0 = time.monotonic()
            conn = connect(url, name)
            with conn.cursor() as cur:
                if scenario == "big-txn":
                    cur.execute(
                        "INSERT INTO bench (account, label, amount) SELECT seq % 1000, CONCAT('row ', seq), "
                        "(seq % 100000) / 100 FROM seq_1_to_" + str(int(rows))
                    )
                else:
                    cur.execute("CALL one_row_txns(%s)", (rows,))
            conn.close()
            print(
                f"{scenario}: workload of {rows} rows committed in {time.monotonic() - t0:.1f}s",
                file=sys.stderr,
            )
            runner = make_runner(tmp, name, url, args.capture, start)
            cpu: list[float] = []
            capture_cpu: list[float] = []
            first, done = drain(runner, name, rows, timeout=1800, cpu=cpu, capture_cpu=capture_cpu)
            runner.stop.set()
            results[scenario] = {
                "mode": "drain",
                "events": rows,
                "events_per_s": round(rows / max(done - first, 1e-6)),
                "seconds": round(done - first, 2),
                "rss_mb": round(rss_mb(), 1),
                # CPU per event, first event to last ack: the connector process (eventify, encode,
                # produce) and its capture process (binlog reading, decoding, pickling)
                "connector_cpu_us_per_event": round(cpu[0] / rows * 1e6, 1),
                "capture_cpu_us_per_event": round(capture_cpu[0] / rows * 1e6, 1),
            }
        finally:
            time.sleep(1)
            teardown(dsn, name)
    results["goals"] = {"big_txn_events_per_s": 40000, "big_txn_rss_mb": 300, "small_txns_events_per_s": 30000,
                        "live_p99_ms": 100}  # fmt: skip
    report(results)


if __name__ == "__main__":
    main()
