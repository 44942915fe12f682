"""Round trip on the real stack: MariaDB -> polling source -> Kafka -> database sink -> PostgreSQL.

Sakila is loaded into MariaDB with the MySQL schema's own DDL and the rows of the PostgreSQL
Sakila (tests.integration.sakila_mysql). The polling source captures customer, address, rental
and payment in timestamp+incrementing mode (last_update + the primary key) with hard-delete
detection, while a workload updates customers, inserts rentals and payments, sets return dates,
and deletes payments and rentals; the sink is killed -9 mid-stream and restarted. Afterwards, for
every key of every table, the target row equals the source row, and keys deleted in MariaDB are
gone from the target.

Normalisation (source column -> Avro -> target column, and how the two sides are compared):

- MariaDB ``TIMESTAMP`` (last_update; the connector's sessions run in UTC) -> ``timestamp-micros``
  -> ``timestamptz``. The source is read in a UTC session and given tzinfo=UTC; the target's
  aware values compare equal whatever the session zone.
- MariaDB ``DATETIME`` (create_date, rental_date, return_date, payment_date) ->
  ``local-timestamp-micros`` -> ``timestamp`` (naive wall clock, compared as is).
- ``DECIMAL(5,2)`` (payment.amount) -> ``decimal(5,2)`` -> ``numeric(5,2)``: equal Decimals.
- ``BOOLEAN`` (customer.active, a TINYINT(1) holding 0/1) -> ``boolean`` -> ``boolean``: the
  source's 0/1 is compared as bool.
- ``INT UNSIGNED`` -> ``long`` -> ``bigint``; ``INT`` (rental_id) -> ``int`` -> ``integer``;
  ``VARCHAR`` -> ``string`` -> ``text``; NULL-able columns are ``[null, X]`` and nullable columns.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import create_pg_database, drop_pg_database, unique
from tests.integration.harness import Connector, topics_exist, wait_for, write_config
from tests.integration.sakila import load_postgres
from tests.integration.sakila_mysql import load_mariadb_from_postgres, mysql_connect
from tests.integration.sink_harness import ROUND_TRIP_SINK, SinkProcess

pytestmark = pytest.mark.integration

LONG = "long"
INT = "int"
STRING = "string"
BOOLEAN = "boolean"
TS = {"type": "long", "logicalType": "timestamp-micros"}  # MySQL TIMESTAMP (aware UTC)
LOCAL_TS = {"type": "long", "logicalType": "local-timestamp-micros"}  # MySQL DATETIME
MONEY = {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}


def _null(avro: Any) -> list[Any]:
    return ["null", avro]


# table -> (primary key, [(column, Avro type, nullable)]) in MariaDB column order.
TABLES: dict[str, tuple[str, list[tuple[str, Any, bool]]]] = {
    "customer": (
        "customer_id",
        [
            ("customer_id", LONG, False),
            ("store_id", LONG, False),
            ("first_name", STRING, False),
            ("last_name", STRING, False),
            ("email", STRING, True),
            ("address_id", LONG, False),
            ("active", BOOLEAN, False),
            ("create_date", LOCAL_TS, False),
            ("last_update", TS, True),  # TIMESTAMP NULL in the schema file
        ],
    ),
    "address": (
        "address_id",
        [
            ("address_id", LONG, False),
            ("address", STRING, False),
            ("address2", STRING, True),
            ("district", STRING, False),
            ("city_id", LONG, False),
            ("postal_code", STRING, True),
            ("phone", STRING, False),
            ("last_update", TS, False),
        ],
    ),
    "rental": (
        "rental_id",
        [
            ("rental_id", INT, False),
            ("rental_date", LOCAL_TS, False),
            ("inventory_id", LONG, False),
            ("customer_id", LONG, False),
            ("return_date", LOCAL_TS, True),
            ("staff_id", LONG, False),
            ("last_update", TS, False),
        ],
    ),
    "payment": (
        "payment_id",
        [
            ("payment_id", LONG, False),
            ("customer_id", LONG, False),
            ("staff_id", LONG, False),
            ("rental_id", INT, True),
            ("amount", MONEY, False),
            ("payment_date", LOCAL_TS, False),
            ("last_update", TS, True),
        ],
    ),
}


def _record(name: str, columns: list[tuple[str, Any, bool]]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": name,
        "namespace": "test.sakila.mariadb",
        "fields": [
            {"name": c, "type": _null(t), "default": None} if nullable else {"name": c, "type": t}
            for c, t, nullable in columns
        ],
    }


def schemas() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for table, (key, columns) in TABLES.items():
        title = table.capitalize()
        out[f"{table}-key.avsc"] = _record(f"{title}Key", [c for c in columns if c[0] == key])
        out[f"{table}.avsc"] = _record(title, columns)
    return out


SOURCE = """
name: {name}
source:
  connector: polling
  url: {url}
  poll_interval: 200ms
streams:
{streams}
kafka: {{bootstrap_servers: "{bootstrap}", topics: {{partitions: 2}}}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
runtime: {{shutdown_timeout: 20s}}
"""
STREAM = """  - name: {table}
    topic: {name}.{table}
    key_schema: {table}-key.avsc
    value_schema: {table}.avsc
    capture:
      table: {table}
      mode: timestamp+incrementing
      timestamp_column: last_update
      incrementing_column: {key}
      delete_detection: {{interval: 1s}}
"""


Rows = dict[str, dict[Any, tuple[Any, ...]]]


def _normalise_source(table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A MariaDB row (read in a UTC session) as it must arrive: TIMESTAMP aware UTC, BOOLEAN a bool."""
    out = []
    for (_, avro, _), value in zip(TABLES[table][1], row, strict=True):
        if avro is TS and value is not None:
            value = value.replace(tzinfo=dt.UTC)
        elif avro == BOOLEAN:
            value = bool(value)
        out.append(value)
    return tuple(out)


def source_rows(mysql_dsn: str) -> Rows:
    conn = mysql_connect(mysql_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            out: Rows = {}
            for table, (_, columns) in TABLES.items():
                cur.execute(f"SELECT {', '.join(c for c, _, _ in columns)} FROM {table}")
                out[table] = {r[0]: _normalise_source(table, r) for r in cur.fetchall()}
            return out
    finally:
        conn.close()


def target_rows(dsn: str) -> Rows:
    out: Rows = {}
    with psycopg.connect(dsn) as conn:
        for table, (_, columns) in TABLES.items():
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c, _, _ in columns), sql.Identifier(table)
            )
            try:
                out[table] = {r[0]: tuple(r) for r in conn.execute(query)}
            except psycopg.errors.UndefinedTable:
                conn.rollback()
                out[table] = {}
    return out


class Workload:
    """Changes MariaDB Sakila with foreign keys enforced; remembers what it deleted."""

    def __init__(self, mysql_dsn: str) -> None:
        self.dsn = mysql_dsn
        self.stop = threading.Event()
        self.deleted: dict[str, set[int]] = {"payment": set(), "rental": set()}
        self.counts = {"customer updates": 0, "rentals": 0, "payments": 0, "returns": 0}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        if self.error is not None:
            raise AssertionError(f"the workload failed: {self.error!r}") from self.error

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def _loop(self) -> None:
        rng = random.Random(20240611)
        conn = mysql_connect(self.dsn)
        new_rentals: list[int] = []
        base = dt.datetime(2030, 1, 1)
        i = 0
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    i += 1
                    cid = rng.randint(1, 599)
                    cur.execute(
                        "UPDATE customer SET email = %s, active = 1 - active WHERE customer_id = %s",
                        (f"w{i}.c{cid}@example.org", cid),
                    )
                    self.counts["customer updates"] += 1
                    conn.begin()  # a rental and its payment in one transaction
                    cur.execute(
                        "INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) "
                        "VALUES (%s, %s, %s, %s)",
                        (base + dt.timedelta(seconds=i), rng.randint(1, 4581), cid, rng.randint(1, 2)),
                    )
                    rental_id = cur.lastrowid
                    cur.execute(
                        "INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (
                            cid,
                            rng.randint(1, 2),
                            rental_id,
                            Decimal(rng.randint(0, 99999)) / 100,
                            base + dt.timedelta(seconds=i, microseconds=0),
                        ),
                    )
                    conn.commit()
                    new_rentals.append(rental_id)
                    self.counts["rentals"] += 1
                    self.counts["payments"] += 1
                    if i % 2 == 0:  # hard-delete an original payment
                        pid = rng.randint(1, 16049)
                        if cur.execute("DELETE FROM payment WHERE payment_id = %s", (pid,)):
                            self.deleted["payment"].add(pid)
                    if i % 3 == 0:  # a return: an update of a rental
                        cur.execute(
                            "UPDATE rental SET return_date = %s WHERE rental_id = %s",
                            (base + dt.timedelta(days=3, seconds=i), rng.choice(new_rentals)),
                        )
                        self.counts["returns"] += 1
                    if i % 5 == 0 and len(new_rentals) > 2:  # delete a new rental, its payments first
                        rid = new_rentals.pop(rng.randrange(len(new_rentals) - 1))
                        conn.begin()
                        cur.execute("SELECT payment_id FROM payment WHERE rental_id = %s", (rid,))
                        pids = [r[0] for r in cur.fetchall()]
                        cur.execute("DELETE FROM payment WHERE rental_id = %s", (rid,))
                        cur.execute("DELETE FROM rental WHERE rental_id = %s", (rid,))
                        conn.commit()
                        self.deleted["payment"].update(pids)
                        self.deleted["rental"].add(rid)
                    time.sleep(0.02)
        finally:
            conn.close()


def _committed(dsn: str) -> int:
    """Messages the sink has committed into the target (its stored offsets), 0 before the first batch."""
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute("SELECT COALESCE(SUM(next_offset), 0) FROM cdc_sink_offsets").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


# The target columns the sink creates from the Avro schemas (the normalisation's other half).
TARGET_TYPES = {
    ("payment", "amount"): ("numeric", 5, 2),
    ("payment", "last_update"): ("timestamp with time zone", None, None),
    ("rental", "last_update"): ("timestamp with time zone", None, None),
    ("payment", "payment_date"): ("timestamp without time zone", None, None),
    ("customer", "create_date"): ("timestamp without time zone", None, None),
    ("customer", "active"): ("boolean", None, None),
    ("customer", "email"): ("text", None, None),
    ("payment", "payment_id"): ("bigint", None, None),
    ("rental", "rental_id"): ("integer", None, None),
}


def _target_types(dsn: str) -> dict[tuple[str, str], tuple[str, int | None, int | None]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, "
            "CASE WHEN data_type = 'numeric' THEN numeric_precision END, "
            "CASE WHEN data_type = 'numeric' THEN numeric_scale END "
            "FROM information_schema.columns WHERE table_schema = 'public'"
        ).fetchall()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def _assert_equal(want: Rows, got: Rows) -> None:
    for table, rows in want.items():
        names = [c for c, _, _ in TABLES[table][1]]
        missing = sorted(k for k in rows if k not in got[table])
        assert not missing, f"{table}: {len(missing)} keys missing in the target, e.g. {missing[:10]}"
        extra = sorted(k for k in got[table] if k not in rows)
        assert not extra, (
            f"{table}: {len(extra)} keys deleted in MariaDB remain in the target, e.g. {extra[:10]}"
        )
        for key, row in rows.items():
            for name, expected, actual in zip(names, row, got[table][key], strict=True):
                assert actual == expected, (
                    f"{table} {key} {name}: target has {actual!r}, MariaDB has {expected!r}"
                )


def test_sakila_mariadb_polling_to_kafka_to_postgres(
    pg_dsn: str,
    pg_database: str,
    mysql_database: str,
    tmp_path: Path,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
) -> None:
    started = time.monotonic()
    load_postgres(pg_database)
    loaded = load_mariadb_from_postgres(pg_database, mysql_database)
    assert loaded["payment"] == 16049 and loaded["rental"] == 16044 and loaded["customer"] == 599

    target_name = unique("test")
    target = create_pg_database(pg_dsn, target_name)
    streams = "".join(STREAM.format(name=topic_name, table=t, key=k) for t, (k, _) in TABLES.items())
    source_cfg = write_config(
        tmp_path,
        SOURCE.format(
            name=topic_name,
            url=mysql_database,
            streams=streams,
            bootstrap=kafka_bootstrap,
            registry=registry_url,
        ),
        schemas(),
    )
    topics = [f"{topic_name}.{t}" for t in TABLES]
    sink_cfg = tmp_path / "sink.yaml"
    sink_cfg.write_text(
        ROUND_TRIP_SINK.format(
            name=topic_name,
            topics="".join(f"  - {{topic: {t}, table: {t.rsplit('.', 1)[1]}}}\n" for t in topics),
            target=target,
            bootstrap=kafka_bootstrap,
            registry=registry_url,
        )
    )
    source = Connector(source_cfg, tmp_path / "source.log")
    workload = Workload(mysql_database)
    sinks: list[SinkProcess] = []
    try:
        wait_for(
            lambda: not source.alive() or topics_exist(kafka_bootstrap, topics), 60, "the source's topics"
        )
        assert source.alive(), source.log_text()[-3000:]
        workload.start()
        sinks.append(SinkProcess(sink_cfg, tmp_path / "sink1.log"))
        wait_for(lambda: _committed(target) > 0, 60, "the first sink's first committed batch")
        time.sleep(1)
        assert sinks[0].proc.poll() is None, sinks[0].log_text()[-3000:]
        sinks[0].kill9()  # mid-stream: the initial load and the workload are still arriving
        at_kill = _committed(target)
        sinks.append(SinkProcess(sink_cfg, tmp_path / "sink2.log"))
        time.sleep(4)
        workload.finish()
        changed = time.monotonic()
        assert workload.counts["rentals"] > 20, workload.counts
        assert workload.deleted["payment"] and workload.deleted["rental"], workload.deleted

        want = source_rows(mysql_database)
        deadline = time.monotonic() + 120
        got = target_rows(target)
        while got != want and time.monotonic() < deadline:
            assert source.alive(), source.log_text()[-3000:]
            assert sinks[-1].proc.poll() is None, sinks[-1].log_text()[-3000:]
            time.sleep(1)
            got = target_rows(target)
        converged = time.monotonic() - changed
        assert 0 < at_kill < _committed(target), "the kill -9 was not mid-stream"
        _assert_equal(want, got)
        types = _target_types(target)
        for column, expected_type in TARGET_TYPES.items():
            assert types.get(column) == expected_type, f"target column {column}: {types.get(column)}"
        for table, keys in workload.deleted.items():
            assert not keys & want[table].keys(), f"{table}: deleted keys still in MariaDB"
            assert not keys & got[table].keys(), f"{table}: deleted keys still in the target"
        assert len(want["payment"]) > 16000 and len(want["rental"]) > 16000
        assert sinks[-1].terminate() == 0
        code, _ = source.terminate()
        assert code == 0, source.log_text()[-3000:]
        print(  # timing, shown with pytest -s
            f"workload {workload.counts}, deleted "
            f"{ {t: len(k) for t, k in workload.deleted.items()} }; "
            f"sink killed at {at_kill} committed messages; "
            f"converged {converged:.1f}s after the workload stopped; total {time.monotonic() - started:.1f}s"
        )
    finally:
        workload.stop.set()
        for sink in sinks:
            sink.ensure_stopped()
        source.ensure_stopped()
        drop_pg_database(pg_dsn, target_name)
