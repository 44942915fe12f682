"""One PostgreSQL WAL connector capturing many tables (issue #15, "scale with the work").

Mode: **drain** for the rates (the workload is committed while the connector is stopped); the
start-up and idle figures are taken on a running connector. The connector runs as its own
process (``cdc run``, the way it is deployed), with its health endpoint on a free port:

  start-up      process start -> the connector is ready: ``/readyz`` answers 200 (the
                pipeline runs: 2N subjects registered, topics ensured, the capture process
                started its source, the publication ensured) AND the replication slot is
                active (it is created by the source's reader thread, after readiness). Measured
                cold (nothing exists: 2N subjects, N topics, publication, slot are created) and
                warm (everything exists); the same for a connector of ONE of the tables, as the
                baseline of what N tables add.
  idle RSS      the connector's process tree (connector + capture process), 3 s after start-up
                (1 s with --quick)
  drain         --rows single-row transactions into ONE table while the N-1 others are idle,
                drained by the N-table connector and by the one-table connector (the
                difference is what idle tables cost); then as many spread round-robin over
                the N tables, drained by the N-table connector. Rate = events / (last acknowledged - first
                acknowledged), read from the broker's end offsets (acks=all; polled every
                100 ms, 500 ms above 100 partitions), not from the connector's /metrics, whose
                exposition of 1,000 streams costs the connector ~26 ms of CPU; CPU of the
                connector's process tree per event (robust to other load on the machine).
  spread        per table: events (each table gets rows/N) and the time (from the drain's
                first event) at which its last event was acknowledged: min / median / max.

Tables, slots, publications, topics and subjects are named bench_tables_<hex> and dropped at
the end (a leaked slot holds WAL). Progress on stderr; the last line printed is JSON.
Goal (issue #15): start-up < 10 s for 1,000 tables; cost linear in rows, none in idle tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import KEY, VALUE, _descendants, cpu_s, env, report

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
{streams}
kafka:
  bootstrap_servers: "{bootstrap}"
  topics: {{partitions: {partitions}}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 100ms}}
runtime: {{metrics_log_interval: 3600s, http_port: {port}}}
"""

STREAM = """  - name: {table}
    topic: {prefix}.{table}
    key_schema: {table}.key.avsc
    value_schema: {table}.value.avsc
    capture: {{table: public.{table}}}
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table_names(n: int) -> list[str]:
    return [f"t{i:04d}" for i in range(n)]


def setup_database(dsn: str, name: str, tables: list[str]) -> str:
    """The database with the N tables and the two workload procedures; returns its URL."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{dsn.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(url) as conn:  # one transaction for all the tables
        for table in tables:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigserial PRIMARY KEY, account int NOT NULL, label text NOT NULL, "
                    "amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(table))
            )
        # n single-row transactions, row i into table i mod ntables (ntables = 1: table t0000 only)
        conn.execute(
            """CREATE PROCEDURE spread_txns(n int, ntables int) LANGUAGE plpgsql AS $$
               BEGIN FOR i IN 0..n - 1 LOOP
                 EXECUTE format('INSERT INTO %I (account, label, amount) VALUES ($1, $2, $3)',
                                't' || lpad((i % ntables)::text, 4, '0'))
                   USING i % 1000, 'row ' || i, (i % 100000) / 100.0;
                 COMMIT;
               END LOOP; END $$"""
        )
    return url


def write_config(tmp: Path, name: str, url: str, tables: list[str], partitions: int, port: int) -> Path:
    """One postgres_wal connector over ``tables``, each its own stream with its own .avsc pair."""
    for table in tables:
        (tmp / f"{table}.key.avsc").write_text(json.dumps(KEY))
        (tmp / f"{table}.value.avsc").write_text(json.dumps(VALUE))
    path = tmp / f"{name}.yaml"
    path.write_text(
        CONFIG.format(
            name=name,
            url=url,
            streams="".join(STREAM.format(table=t, prefix=name) for t in tables),
            bootstrap=env("CDC_TEST_KAFKA_BOOTSTRAP"),
            registry=env("CDC_TEST_SCHEMA_REGISTRY_URL"),
            partitions=partitions,
            port=port,
        )
    )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants."""
    return cpu_s(_descendants(pid))


def tree_rss_mb(pid: int) -> float:
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1])
        except OSError:
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


class Connector:
    """``cdc run CONFIG`` in a process of its own."""

    def __init__(self, name: str, config: Path, port: int, logfile: Path) -> None:
        self.name, self.config, self.port, self.logfile = name, config, port, logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start the process; returns the monotonic time it was started."""
        cdc = Path(sys.executable).parent / "cdc"
        with self.logfile.open("ab") as out:
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                [str(cdc), "run", str(self.config), "--log-level", "WARNING"], stdout=out, stderr=out
            )
        return t0

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.logfile.read_text()[-3000:]
            sys.exit(f"benchmark: the connector exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def start_up(connector: Connector, url: str, slot: str, settle: float) -> dict[str, float]:
    """Start the connector; seconds to /readyz 200, to the slot active, and the RSS ``settle``
    seconds later (idle: no workload is written while it runs)."""
    t0 = connector.start()
    ready_at = slot_at = None
    with psycopg.connect(url, autocommit=True) as conn:
        while ready_at is None or slot_at is None:
            connector.alive()
            now = time.monotonic()
            if now - t0 > 600:
                sys.exit("benchmark: the connector was not ready within 600 s")
            if ready_at is None and http_get(connector.port, "/readyz")[0] == 200:
                ready_at = time.monotonic()
            if slot_at is None:
                row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
                found = row.fetchone()
                if found is not None and found[0]:
                    slot_at = time.monotonic()
            time.sleep(0.02)
    assert connector.proc is not None
    cpu = tree_cpu_s(connector.proc.pid)
    time.sleep(settle)
    return {
        "ready_s": round(ready_at - t0, 2),
        "slot_active_s": round(slot_at - t0, 2),
        "startup_s": round(max(ready_at, slot_at) - t0, 2),
        "startup_cpu_s": round(cpu, 2),
        "idle_rss_mb": round(tree_rss_mb(connector.proc.pid), 1),
    }


class Watermarks:
    """Messages per topic, from the broker's end offsets: progress read without asking the
    connector (its /metrics with 1,000 streams costs it ~26 ms of CPU per scrape, which polled
    every 100 ms would be charged to the idle tables)."""

    def __init__(self, topics: list[str]) -> None:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

        self.admin = AdminClient({"bootstrap.servers": env("CDC_TEST_KAFKA_BOOTSTRAP")})
        metadata = self.admin.list_topics(timeout=30).topics
        self.request = {
            TopicPartition(topic, p): OffsetSpec.latest()  # type: ignore[no-untyped-call]
            for topic in topics
            for p in metadata[topic].partitions
        }

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for tp, fut in self.admin.list_offsets(self.request, request_timeout=30).items():
            out[tp.topic] = out.get(tp.topic, 0) + fut.result().offset
        return out


def drain(connector: Connector, expected: dict[str, int]) -> dict[str, Any]:
    """Run the (stopped) connector until the topic of every stream in ``expected`` received its
    events (acknowledged by the broker: acks=all); the rate, CPU per event and per-table
    completion spread."""
    topics = {f"{connector.name}.{stream}": want for stream, want in expected.items()}
    marks = Watermarks(list(topics))
    before = marks.counts()
    interval = 0.1 if len(marks.request) <= 100 else 0.5  # one ListOffsets request per poll
    connector.start()
    assert connector.proc is not None
    total = sum(expected.values())
    first = cpu0 = None
    done_at: dict[str, float] = {}
    while True:
        connector.alive()
        counts = marks.counts()
        now = time.monotonic()
        produced = sum(counts[t] - before[t] for t in topics)
        if first is None and produced > 0:
            first, cpu0 = now, tree_cpu_s(connector.proc.pid)
        for topic, want in topics.items():
            if topic not in done_at and counts[topic] - before[topic] >= want:
                done_at[topic] = now
        if first is not None and produced >= total:
            cpu = tree_cpu_s(connector.proc.pid) - (cpu0 or 0.0)
            break
        if first is not None and now - first > 1800:
            sys.exit(f"benchmark: drain timed out ({produced} of {total} events)")
        time.sleep(interval)
    connector.stop()
    assert first is not None
    seconds = max(now - first, 1e-6)
    finish = sorted(done_at[t] - first for t in topics)
    return {
        "mode": "drain",
        "events": total,
        "events_per_s": round(total / seconds),
        "seconds": round(seconds, 2),
        "cpu_us_per_event": round(cpu / total * 1e6, 1),
        "tables_written": len(expected),
        "per_table_events": {"min": min(expected.values()), "max": max(expected.values())},
        "per_table_done_s": {
            "min": round(finish[0], 2),
            "median": round(statistics.median(finish), 2),
            "max": round(finish[-1], 2),
        },
    }


def workload(url: str, rows: int, ntables: int) -> None:
    t0 = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CALL spread_txns(%s, %s)", (rows, ntables))
    log(f"workload: {rows} single-row transactions over {ntables} table(s) in {time.monotonic() - t0:.1f}s")


def teardown(dsn: str, name: str, slots: list[str], topic_prefix: str, subjects: list[str]) -> None:
    """Drop the slots (terminating a walsender still on one), the database, topics and subjects."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for slot in slots:
            for _ in range(50):
                row = conn.execute(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
                ).fetchone()
                if row is None:
                    break
                if row[0] is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                    time.sleep(0.2)
                    continue
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                break
            else:
                log(f"WARNING: could not drop replication slot {slot}")
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": env("CDC_TEST_KAFKA_BOOTSTRAP")})
        topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(topic_prefix)]
        if topics:
            for fut in admin.delete_topics(topics, operation_timeout=60).values():
                fut.result()
        registry = env("CDC_TEST_SCHEMA_REGISTRY_URL").rstrip("/")

        def delete(subject: str) -> int:
            """Soft, then hard delete (a registry may not list every subject; the names are known);
            retried: a registry under load drops a connection now and then."""
            done = 0
            for permanent in ("", "?permanent=true"):
                for attempt in range(3):
                    req = urllib.request.Request(  # noqa: S310 - the registry's http URL
                        f"{registry}/subjects/{subject}{permanent}", method="DELETE"
                    )
                    try:
                        with urllib.request.urlopen(req, timeout=30):  # noqa: S310 - local
                            done = 1
                        break
                    except urllib.error.HTTPError as exc:
                        if exc.code == 404:  # never registered (or already gone)
                            break
                    except OSError as exc:
                        if attempt == 2:
                            log(f"teardown: subject {subject} not deleted: {exc}")
                    time.sleep(0.5)
            return done

        with ThreadPoolExecutor(8) as pool:
            deleted = sum(pool.map(delete, subjects))
        log(f"teardown: dropped {len(slots)} slot(s), the database, {len(topics)} topics, {deleted} subjects")
    except Exception as exc:  # the slot and the database are what must not leak
        log(f"teardown: topics/subjects not all deleted: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tables", type=int, default=None, help="tables (and streams); default 1,000")
    parser.add_argument("--rows", type=int, default=None, help="rows of each drain; default 200,000")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of every created topic")
    parser.add_argument(
        "--quick", action="store_true", help="50 tables, 5,000 rows: keeps the script working in CI"
    )
    parser.add_argument("--skip-drain", action="store_true", help="start-up and idle figures only")
    args = parser.parse_args()
    n = args.tables or (50 if args.quick else 1000)
    rows = args.rows or (5_000 if args.quick else 200_000)
    dsn = env("CDC_TEST_POSTGRES_DSN")
    name = f"bench_tables_{uuid.uuid4().hex[:8]}"
    one = f"{name}_one"
    tables = table_names(n)
    results: dict[str, Any] = {"bench": "wal_tables", "name": name, "quick": args.quick, "tables": n, "rows": rows,
                               "partitions": args.partitions}  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench_wal_tables_"))
    connectors: list[Connector] = []
    try:
        t0 = time.monotonic()
        url = setup_database(dsn, name, tables)
        log(f"{n} tables created in {name} in {time.monotonic() - t0:.1f}s")
        port_n, port_1 = free_port(), free_port()
        many = Connector(
            name, write_config(tmp, name, url, tables, args.partitions, port_n), port_n, tmp / "many.log"
        )
        single = Connector(
            one, write_config(tmp, one, url, tables[:1], args.partitions, port_1), port_1, tmp / "one.log"
        )
        connectors += [many, single]
        for label, connector, slot, count in (("n_tables", many, name, n), ("one_table", single, one, 1)):
            for phase in ("cold", "warm"):
                out = start_up(connector, url, slot, 1.0 if args.quick else 3.0)
                connector.stop()
                results.setdefault("startup", {}).setdefault(label, {"tables": count})[phase] = out
                log(f"start-up {label} ({count} tables) {phase}: {out}")
        results["load_avg"] = [round(x, 2) for x in os.getloadavg()]
        if not args.skip_drain:
            # the same rows into one table while the N-1 others idle: N-table connector, then the
            # one-table connector (both slots hold exactly these rows)
            workload(url, rows, 1)
            results["one_busy_n_idle"] = drain(many, {tables[0]: rows})
            log(f"drain, one busy table + {n - 1} idle, N-table connector: {results['one_busy_n_idle']}")
            results["one_table_alone"] = drain(single, {tables[0]: rows})
            log(f"drain, the same table, one-table connector: {results['one_table_alone']}")
            workload(url, rows, n)
            per_table = {t: rows // n + (1 if i < rows % n else 0) for i, t in enumerate(tables)}
            results["spread"] = drain(many, per_table)
            log(f"drain, {rows} rows round-robin over {n} tables: {results['spread']}")
            results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        results["goal_startup_s"] = 10
        results["goal_met"] = results["startup"]["n_tables"]["cold"]["startup_s"] < 10
    finally:
        for connector in connectors:
            connector.stop()
        subjects = [f"{c}.{t}-{part}" for c, ts in ((name, tables), (one, tables[:1])) for t in ts
                    for part in ("key", "value")]  # fmt: skip
        teardown(dsn, name, [name, one], name, subjects)
        shutil.rmtree(tmp, ignore_errors=True)
    report(results)


if __name__ == "__main__":
    main()
