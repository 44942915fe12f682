"""Round trips on the real stack: PostgreSQL -> WAL source -> Kafka -> database sink -> PostgreSQL,
for Sakila and a pgbench workload, with the sink killed -9 mid-stream and two sink instances.
For every key the target row equals the source row after the documented normalisation
(enum labels through the stream's symbol map)."""

from __future__ import annotations

import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest

from tests.conftest import create_pg_database, drop_pg_database, unique
from tests.integration.harness import Connector, cdc, wait_for, write_config
from tests.integration.sakila import load_postgres
from tests.integration.sink_harness import ROUND_TRIP_SINK, SinkProcess
from tests.integration.test_wal_sakila import FILM, FILM_KEY, PAYMENT, PAYMENT_KEY, RATING, workload

pytestmark = pytest.mark.integration

SOURCE = """
name: {name}
source:
  connector: postgres_wal
  url: {url}
  slot: {slot}
  publication: {name}_pub
  status_interval: 1s
streams:
  - name: film
    topic: {name}.film
    key_schema: film-key.avsc
    value_schema: film.avsc
    symbol_maps: {{rating: {{PG-13: PG_13, NC-17: NC_17}}}}
    capture: {{table: public.film}}
  - name: payment
    topic: {name}.payment
    key_schema: payment-key.avsc
    value_schema: payment.avsc
    capture: {{table: public.payment, children: "payment_p2007_.*"}}
kafka: {{bootstrap_servers: "{bootstrap}", topics: {{partitions: 2}}}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
"""


def source_rows(dsn: str) -> dict[str, dict[Any, tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        films = conn.execute(
            "SELECT film_id, title, description, release_year, rental_rate, length, rating::text, "
            "special_features, fulltext::text, last_update FROM film"
        ).fetchall()
        payments = conn.execute(
            "SELECT payment_id, customer_id, amount, payment_date FROM payment"
        ).fetchall()
    return {
        "film": {r[0]: (*r[:6], RATING.get(r[6], r[6]), *r[7:]) for r in films},
        "payment": {r[0]: (r[0], r[1], Decimal(r[2]), r[3]) for r in payments},
    }


def target_rows(dsn: str) -> dict[str, dict[Any, tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        try:
            films = conn.execute(
                "SELECT film_id, title, description, release_year, rental_rate, length, rating, "
                "special_features, fulltext, last_update FROM film"
            ).fetchall()
            payments = conn.execute(
                "SELECT payment_id, customer_id, amount, payment_date FROM payment"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return {"film": {}, "payment": {}}
    return {
        "film": {r[0]: tuple(r) for r in films},
        "payment": {r[0]: (r[0], r[1], Decimal(r[2]), r[3]) for r in payments},
    }


def test_sakila_postgres_to_kafka_to_postgres(
    pg_dsn: str, pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    load_postgres(pg_database)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        for month in range(1, 7):
            conn.execute(f"ALTER TABLE payment_p2007_0{month} REPLICA IDENTITY FULL")
    target_name = unique("test")
    target = create_pg_database(pg_dsn, target_name)
    slot = unique("test")
    source_cfg = write_config(
        tmp_path,
        SOURCE.format(
            name=topic_name, url=pg_database, slot=slot, bootstrap=kafka_bootstrap, registry=registry_url
        ),
        {
            "film-key.avsc": FILM_KEY,
            "film.avsc": FILM,
            "payment-key.avsc": PAYMENT_KEY,
            "payment.avsc": PAYMENT,
        },
    )
    sink_cfg = tmp_path / "sink.yaml"
    sink_cfg.write_text(
        ROUND_TRIP_SINK.format(
            name=topic_name,
            topics=f"  - {{topic: {topic_name}.film, table: film}}\n  - {{topic: {topic_name}.payment, table: payment}}",
            target=target,
            bootstrap=kafka_bootstrap,
            registry=registry_url,
        )
    )
    source = Connector(source_cfg, tmp_path / "source.log")
    stop = threading.Event()
    writer = threading.Thread(target=workload, args=(pg_database, stop), daemon=True)
    sinks: list[SinkProcess] = []
    try:
        wait_for(
            lambda: "created topic" in source.log_text() and "snapshot" in source.log_text(), 60, "source"
        )
        writer.start()
        sinks.append(SinkProcess(sink_cfg, tmp_path / "sink1.log"))
        sinks.append(SinkProcess(sink_cfg, tmp_path / "sink2.log"))  # same group: partitions split
        time.sleep(5)
        sinks[0].kill9()  # mid-stream
        sinks.append(SinkProcess(sink_cfg, tmp_path / "sink3.log"))
        time.sleep(3)
        stop.set()
        writer.join()
        want = source_rows(pg_database)
        deadline = time.monotonic() + 180
        got = target_rows(target)
        while got != want and time.monotonic() < deadline:
            time.sleep(1)
            got = target_rows(target)
        for table, rows in want.items():
            missing = [k for k in rows if k not in got[table]]
            assert not missing, f"{table}: {len(missing)} keys missing in the target"
            extra = [k for k in got[table] if k not in rows]
            assert not extra, f"{table}: {len(extra)} keys deleted in the source remain in the target"
            for key, row in rows.items():
                assert got[table][key] == row, f"{table} {key}: target {got[table][key]!r} != source {row!r}"
        assert len(want["payment"]) > 16000
        for sink in sinks[1:]:
            assert sink.terminate() == 0
        assert source.terminate()[0] == 0
    finally:
        stop.set()
        for sink in sinks:
            if sink.proc.poll() is None:
                sink.proc.kill()
        source.ensure_stopped()
        with psycopg.connect(pg_database, autocommit=True) as db:
            db.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s AND NOT active",
                (slot,),
            )
        drop_pg_database(pg_dsn, target_name)


def test_pgbench_keyless_history_is_refused_and_keyed_tables_round_trip(
    pg_dsn: str, pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    u = urlparse(pg_database)
    env = {"PGPASSWORD": u.password or "", "PATH": "/usr/bin:/bin:/usr/lib/postgresql/15/bin"}
    args = ["-h", u.hostname or "", "-p", str(u.port), "-U", u.username or "", u.path.lstrip("/")]
    subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q", *args], env=env, check=True, capture_output=True, timeout=120
    )
    key = {"type": "record", "name": "AccountKey", "fields": [{"name": "aid", "type": "int"}]}
    value = {
        "type": "record", "name": "Account",
        "fields": [{"name": "aid", "type": "int"}, {"name": "bid", "type": ["null", "int"], "default": None},
                   {"name": "abalance", "type": ["null", "int"], "default": None}],
    }  # fmt: skip
    hist_key = {
        "type": "record",
        "name": "HistKey",
        "fields": [{"name": "tid", "type": ["null", "int"], "default": None}],
    }
    hist = {
        "type": "record",
        "name": "Hist",
        "fields": [{"name": "tid", "type": ["null", "int"], "default": None}],
    }
    base = f"""
name: {topic_name}
source: {{connector: postgres_wal, url: "{pg_database}", slot: {unique("test")}, publication: {topic_name}_pub, status_interval: 1s}}
kafka: {{bootstrap_servers: "{kafka_bootstrap}"}}
schema_registry: {{url: "{registry_url}", auto_register: true}}
offsets: {{store: kafka, topic: {topic_name}.offsets, commit_interval: 200ms}}
streams:
  - {{name: accounts, topic: {topic_name}.accounts, key_schema: key.avsc, value_schema: value.avsc,
      capture: {{table: public.pgbench_accounts}}}}
"""
    refused = (
        base
        + f"""  - {{name: history, topic: {topic_name}.history, key_schema: hkey.avsc, value_schema: hist.avsc,
      capture: {{table: public.pgbench_history}}}}
"""
    )
    schemas = {"key.avsc": key, "value.avsc": value, "hkey.avsc": hist_key, "hist.avsc": hist}
    result = cdc("run", str(write_config(tmp_path, refused, schemas)), timeout=60)
    assert result.returncode == 7, result.stderr
    assert "public.pgbench_history" in result.stderr and "REPLICA IDENTITY FULL" in result.stderr

    target_name = unique("test")
    target = create_pg_database(pg_dsn, target_name)
    source_cfg = write_config(tmp_path, base, schemas)
    sink_cfg = tmp_path / "sink.yaml"
    sink_cfg.write_text(
        f"""
name: {topic_name}-sink
topics: [{{topic: {topic_name}.accounts, table: pgbench_accounts}}]
target: {{url: "{target}"}}
kafka: {{bootstrap_servers: "{kafka_bootstrap}"}}
schema_registry: {{url: "{registry_url}"}}
batch_size: 5000
batch_timeout: 200ms
"""
    )
    source = Connector(source_cfg, tmp_path / "source.log")
    sink = SinkProcess(sink_cfg, tmp_path / "sink1.log")
    try:
        wait_for(lambda: "snapshot of public.pgbench_accounts" in source.log_text(), 90, "snapshot")
        # pgbench's own workload (its history inserts are not captured, and do not fail: nothing published them)
        subprocess.run(
            ["pgbench", "-n", "-T", "4", "-c", "2", *args],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        sink.kill9()
        sink = SinkProcess(sink_cfg, tmp_path / "sink2.log")
        with psycopg.connect(pg_database) as conn:
            want = {r[0]: tuple(r) for r in conn.execute("SELECT aid, bid, abalance FROM pgbench_accounts")}

        def converged() -> bool:
            try:
                with psycopg.connect(target) as conn:
                    got = {
                        r[0]: tuple(r)
                        for r in conn.execute("SELECT aid, bid, abalance FROM pgbench_accounts")
                    }
            except psycopg.errors.UndefinedTable:
                return False
            return got == want

        wait_for(converged, 180, "the target to equal the source")
        assert len(want) == 100_000
        assert sink.terminate() == 0
        assert source.terminate()[0] == 0
    finally:
        if sink.proc.poll() is None:
            sink.proc.kill()
        source.ensure_stopped()
        with psycopg.connect(pg_database, autocommit=True) as db:
            db.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active AND database = current_database()"
            )
        drop_pg_database(pg_dsn, target_name)
