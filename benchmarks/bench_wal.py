"""Benchmarks of the PostgreSQL WAL source (pgoutput -> Avro -> Kafka), three scenarios:

  --scenario big-txn      drain: ONE transaction inserting N rows (default 1,000,000) committed
                          before the connector starts; reports events/s and peak RSS (goal <= 300 MB)
  --scenario small-txns   drain: N single-row transactions (default 200,000) committed before the
                          connector starts; goal >= 30,000 events/s (stretch 50,000)
  --scenario live         live: a separate process commits single-row transactions at --rate
                          (default 5,000/s) for --seconds; reports commit-to-broker latency
                          percentiles (goal p99 <= 100 ms). --writer server (default) paces
                          the inserts in a procedure on the server (pg_sleep between commits);
                          --writer client sends each INSERT from a Python process, whose own
                          CPU competes with the connector on a 2-core machine: the workload is
                          the same, the load generator's CPU is not the connector's.

With --shaping the stream hashes two fields (keyed HMAC-SHA-256 of label and account) and has a
row filter that every row passes (so the event count is the same), and the JSON also reports the
shaping step's own cost per event, measured in-process for each policy and the filter.

Drain rate = events / (last broker ack - first read). The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    KEY,
    VALUE,
    drain,
    drop_pg_database,
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
  connector: postgres_wal
  url: {url}
  slot: {name}
  publication: {name}
  snapshot_mode: never
  status_interval: 1s
streams:
  - name: rows
    topic: {name}
    key_schema: key.avsc
    value_schema: value.avsc
    capture: {{table: public.bench}}
{shaping}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 100ms}}
runtime: {{metrics_log_interval: 3600s, capture: {capture}}}
"""


def setup(dsn: str, name: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{dsn.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench (id bigserial PRIMARY KEY, account int NOT NULL, label text NOT NULL, "
            "amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            """CREATE PROCEDURE one_row_txns(n int) LANGUAGE plpgsql AS $$
               BEGIN FOR i IN 1..n LOOP
                 INSERT INTO bench (account, label, amount) VALUES (i % 1000, 'row ' || i, (i % 100000) / 100.0);
                 COMMIT;
               END LOOP; END $$"""
        )
        # The live workload paced on the server (clock_timestamp, unlike now(), moves within a
        # call): a transaction per row.
        conn.execute(
            """CREATE PROCEDURE paced_rows(rate int, seconds float8) LANGUAGE plpgsql AS $$
               DECLARE
                 n int := 0;
                 t0 float8 := extract(epoch FROM clock_timestamp());
                 ahead float8;
               BEGIN
                 WHILE extract(epoch FROM clock_timestamp()) - t0 < seconds LOOP
                   INSERT INTO bench (account, label, amount) VALUES (n % 1000, 'live ' || n, n % 1000);
                   COMMIT;
                   n := n + 1;
                   ahead := t0 + n::float8 / rate - extract(epoch FROM clock_timestamp());
                   IF ahead > 0 THEN PERFORM pg_sleep(ahead); END IF;
                 END LOOP;
               END $$"""
        )
    return url


SHAPING = """    policies:
      label: {policy: hash, secret_env: BENCH_HASH_KEY}
      account: {policy: hash, secret_env: BENCH_HASH_KEY}
    where: "amount >= 0 and label != ''"
"""
#: the value schema with --shaping: a hashed account is a hex string
SHAPED_VALUE = {
    **VALUE,
    "fields": [{**f, "type": "string"} if f["name"] == "account" else f for f in VALUE["fields"]],
}


def make_runner(tmp: Path, name: str, url: str, capture: str, shaping: bool = False) -> Runner:
    from cdc.runtime.runner import Runner  # here: a spawned capture process re-imports this script

    (tmp / "key.avsc").write_text(json.dumps(KEY))
    (tmp / "value.avsc").write_text(json.dumps(SHAPED_VALUE if shaping else VALUE))
    (tmp / "c.yaml").write_text(
        CONFIG.format(
            name=name,
            url=url,
            bootstrap=env("CDC_TEST_KAFKA_BOOTSTRAP"),
            registry=env("CDC_TEST_SCHEMA_REGISTRY_URL"),
            capture=capture,
            shaping=SHAPING if shaping else "",
        )
    )
    return Runner(load_config(tmp / "c.yaml"))


def shaping_cost(n: int) -> dict[str, float]:
    """Microseconds per event of the shaping step alone, per policy and for the filter."""
    import datetime as dt
    import decimal

    from cdc.plugin import ChangeEvent, Op
    from cdc.shaping.config import HashPolicy, MaskPolicy, NullPolicy, TruncatePolicy
    from cdc.shaping.shaper import StreamShaper

    value = {**SHAPED_VALUE, "fields": [{**f, "type": ["null", "string"]} if f["name"] == "label" else f
                                        for f in SHAPED_VALUE["fields"]]}  # fmt: skip
    row = {"id": 1, "account": 7, "label": "row 1", "amount": decimal.Decimal("1.00"),
           "created_at": dt.datetime.now(dt.UTC)}  # fmt: skip
    hashed = HashPolicy(policy="hash", secret_env="BENCH_HASH_KEY")  # noqa: S106 - a variable name
    cases: dict[str, tuple[dict[str, Any], str | None]] = {
        "hash_one_field": ({"label": hashed}, None),
        "two_hashed_fields": ({"label": hashed, "account": hashed}, None),
        "mask": ({"label": MaskPolicy(policy="mask")}, None),
        "truncate": ({"label": TruncatePolicy(policy="truncate", length=3)}, None),
        "null": ({"label": NullPolicy(policy="null")}, None),
        "filter": ({}, "amount >= 0 and label != ''"),
        "two_hashed_fields_and_filter": ({"label": hashed, "account": hashed}, "amount >= 0 and label != ''"),
    }
    out = {}
    for case, (policies, where) in cases.items():
        shaper = StreamShaper("rows", policies, where, KEY, value, {}, Path("."))
        # a fresh event each (shaping replaces an event's fields); the row dict is never changed
        events = [ChangeEvent("rows", Op.CREATE, {"id": 1}, row, "p", {}) for _ in range(n)]
        t0 = time.perf_counter()
        for event in events:
            if shaper(event) is None:
                raise AssertionError(f"{case}: the filter dropped the row; nothing was measured")
        out[case] = round((time.perf_counter() - t0) / n * 1e6, 2)
    return out


def routing_cost(tmp: Path, n: int, rounds: int = 3) -> dict[str, float]:
    """CPU microseconds per event of the connector process's own work on an event, in-process:
    route (filter, policies, eventify) and Avro-encode the same ``n`` change events, plain and
    with --shaping's stream, alternating, best of ``rounds``. Process CPU time, so other load on
    the machine distorts it less than a rate."""
    import datetime as dt
    import decimal
    import gc

    from cdc.plugin import ChangeEvent, Op
    from cdc.runtime.encoding import RecordEncoder
    from cdc.runtime.routing import Router
    from cdc.schemas.eventify import Record, StreamEventifier

    def build(shaping: bool) -> tuple[Router, RecordEncoder]:
        (tmp / ("shaped" if shaping else "plain")).mkdir(parents=True, exist_ok=True)
        app = make_runner(
            tmp / ("shaped" if shaping else "plain"), "routing", "postgresql://u@h/d", "inline", shaping
        ).app
        eventifiers = {s.name: StreamEventifier(app, s) for s in app.streams}
        return Router(app, eventifiers), RecordEncoder(eventifiers, {"rows": (1, 2)}, lambda: None)

    def events() -> list[ChangeEvent]:  # like the WAL source's: one insert per transaction
        ts = dt.datetime.now(dt.UTC)
        return [
            ChangeEvent("rows", Op.CREATE, {"id": i},
                        {"id": i, "account": i % 1000, "label": f"row {i}",
                         "amount": decimal.Decimal(i % 100000) / 100, "created_at": ts},
                        "slot", {"phase": "stream", "commit": 1000 + i, "i": 0}, None, 1, str(i), {}, txn_order=1)
            for i in range(1, n + 1)
        ]  # fmt: skip

    def run(router: Router, encoder: RecordEncoder, encode: bool) -> float:
        todo = events()
        gc.collect()
        t0 = time.process_time()
        for event in todo:
            record = router(event)
            if encode:
                assert isinstance(record, Record)
                encoder.encode(record)
        return (time.process_time() - t0) / n * 1e6

    sides = {"plain": build(False), "shaped": build(True)}
    best: dict[str, float] = {}
    for _ in range(rounds):
        for encode in (False, True):
            for side, (router, encoder) in sides.items():
                name = f"{'route_encode' if encode else 'route'}_{side}"
                best[name] = min(best.get(name, float("inf")), run(router, encoder, encode))
    return {name: round(us, 2) for name, us in best.items()}


def create_slot_first(tmp: Path, name: str, url: str, capture: str, shaping: bool) -> None:
    """A first short run creates the slot and publication, so the workload written next is captured."""
    runner = make_runner(tmp, name, url, capture, shaping)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    for _ in range(300):
        with psycopg.connect(url) as conn:
            if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone():
                break
        time.sleep(0.1)
    time.sleep(1)
    runner.stop.set()
    thread.join(30)


def server_writer(url: str, rate: int, seconds: float) -> None:
    """Single-row transactions at ``rate`` for ``seconds``, paced by a procedure."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CALL paced_rows(%s, %s)", (rate, seconds))


def writer(url: str, rate: int, seconds: float) -> None:
    """Single-row transactions at ``rate`` for ``seconds``, one INSERT per round trip."""
    with psycopg.connect(url, autocommit=True) as conn:
        interval = 1.0 / rate
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            conn.execute(
                "INSERT INTO bench (account, label, amount) VALUES (%s, %s, %s)",
                (n % 1000, f"live {n}", n % 1000),
            )
            n += 1
            lag = start + n * interval - time.monotonic()
            if lag > 0:
                time.sleep(lag)


def commit_latency_ms(msg: Any, received_s: float) -> float:
    """Commit (PostgreSQL's commit timestamp, the event's header) to the consumer's receipt."""
    return received_s * 1000 - int(dict(msg.headers() or [])["cdc.commit_ts_ms"])


def live(runner: Runner, name: str, url: str, rate: int, seconds: float, on_server: bool) -> dict[str, Any]:
    def warm_up() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO bench (account, label, amount) VALUES (0, 'warm-up', 0)")

    write = server_writer if on_server else writer
    return measure_live(runner, name, warm_up, write, (url, rate, seconds), commit_latency_ms, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=["big-txn", "small-txns", "live", "all"], default="all")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--capture",
        choices=["auto", "process", "inline"],
        default="auto",
        help="runtime.capture of the connector",
    )
    parser.add_argument(
        "--writer", choices=["server", "client"], default="server",
        help="live: pace the inserts in a procedure (server) or from a Python client process",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes: keeps the script working in CI")
    parser.add_argument(
        "--shaping", action="store_true", help="two hashed fields and a row filter (that every row passes)"
    )
    args = parser.parse_args()
    os.environ.setdefault("BENCH_HASH_KEY", uuid.uuid4().hex)
    start_rss_sampling()
    scenarios = ["big-txn", "small-txns", "live"] if args.scenario == "all" else [args.scenario]
    dsn = env("CDC_TEST_POSTGRES_DSN")
    results: dict[str, Any] = {
        "bench": "wal", "quick": args.quick, "capture": args.capture, "shaping": args.shaping,
    }  # fmt: skip
    for scenario in scenarios:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        url = setup(dsn, name)
        tmp = Path(tempfile.mkdtemp())
        try:
            create_slot_first(tmp, name, url, args.capture, args.shaping)
            if scenario == "live":
                rate = 500 if args.quick else args.rate
                seconds = 3 if args.quick else args.seconds
                runner = make_runner(tmp, name, url, args.capture, args.shaping)
                out = live(runner, name, url, rate, seconds, args.writer == "server")
                results["live"] = {
                    "mode": "live", "writer": args.writer, "rate_per_s": rate, **out,
                    "goal_p99_ms": 100, "goal_p99_ms_issue15": 50,
                }  # fmt: skip
                continue
            rows = args.rows or (
                (20_000 if args.quick else 1_000_000)
                if scenario == "big-txn"
                else (5_000 if args.quick else 200_000)
            )
            t0 = time.monotonic()
            with psycopg.connect(url, autocommit=True) as conn:
                if scenario == "big-txn":
                    conn.execute(
                        "INSERT INTO bench (account, label, amount) SELECT g %% 1000, 'row ' || g, (g %% 100000) / 100.0 "
                        "FROM generate_series(1, %s) g",
                        (rows,),
                    )
                else:
                    conn.execute("CALL one_row_txns(%s)", (rows,))
            print(
                f"{scenario}: workload of {rows} rows committed in {time.monotonic() - t0:.1f}s",
                file=sys.stderr,
            )
            runner = make_runner(tmp, name, url, args.capture, args.shaping)
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
                # CPU of the connector process from the first event to the last ack (eventify,
                # shaping, encode, produce; the capture process reads): robust to other load on
                # the machine, unlike the rate
                "connector_cpu_us_per_event": round(cpu[0] / rows * 1e6, 1),
                # the capture process's (reading, decoding, pickling), same span
                "capture_cpu_us_per_event": round(capture_cpu[0] / rows * 1e6, 1),
            }
        finally:
            time.sleep(1)
            drop_pg_database(dsn, name)
    if args.shaping:
        # In-process, after the drains: their 100,000-event lists would otherwise raise the peak
        # RSS recorded for a drain and leave the heap fragmented for it.
        results["shaping_us_per_event"] = shaping_cost(2_000 if args.quick else 100_000)
        results["routing_cpu_us_per_event"] = routing_cost(
            Path(tempfile.mkdtemp()), 2_000 if args.quick else 100_000
        )
    results["goals"] = {"big_txn_rss_mb": 300, "small_txns_events_per_s": 30000, "live_p99_ms": 100}
    report(results)


if __name__ == "__main__":
    main()
