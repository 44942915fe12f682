"""Acceptance of the binlog source (issue 9): Sakila's MySQL schema round trip under a mixed workload.

MariaDB (Sakila's own table DDL, rows copied from the PostgreSQL Sakila) -> mysql_binlog source
(initial snapshot, then the binlog) -> Kafka -> two database sinks -> PostgreSQL and -> MariaDB.
The connector and sink configs and the stream contracts are the user-facing example in
configs/sakila-mysql (run here as they are, with environment variables). While the source
streams, a workload inserts, updates (a primary-key change included) and deletes rows of film,
film_category, staff, customer, rental and payment, and the source is killed -9 and restarted.
Afterwards every row of every captured
table equals the source row, field by field, in both targets; deleted keys are gone.

Eight tables, chosen for MySQL's awkward types: ENUM (film.rating), SET (film.special_features,
the empty set included), YEAR (film.release_year, 1901 and 2155), DECIMAL, unsigned TINYINT /
SMALLINT / INT (their maxima), TIMESTAMP vs DATETIME, MEDIUMBLOB (staff.picture, NUL and 0xFF
bytes), BOOLEAN, CHAR, a composite key (film_category). Sakila 0.8's MySQL schema has no GEOMETRY
column (address.location came later), so no type is left out.

Comparison (both sides read in UTC sessions): the MariaDB target holds the same Sakila DDL, so its
rows must equal the source's exactly as pymysql returns them. The PostgreSQL target's tables are
created by the sink from the value schemas; the source row is mapped as the contract says:
TIMESTAMP -> aware UTC (timestamptz), BOOLEAN 0/1 -> bool, a SET 'a,b' -> ['a', 'b'] (text[]),
the rest unchanged (numeric = Decimal, bytea = bytes, YEAR = integer, ENUM label = text).
"""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql

from tests.conftest import create_pg_database, drop_pg_database, unique
from tests.integration.harness import ROOT, Connector, topics_exist, wait_for
from tests.integration.sakila import load_postgres
from tests.integration.sakila_mysql import load_mariadb_from_postgres, mysql_connect, table_ddl
from tests.integration.sink_harness import SinkProcess
from tests.integration.test_round_trip_mariadb import Workload

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "configs" / "sakila-mysql"
# table -> (key columns, columns in MariaDB order); the contracts in EXAMPLE/schemas say the same
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "language": (("language_id",), ("language_id", "name", "last_update")),
    "category": (("category_id",), ("category_id", "name", "last_update")),
    "film": (
        ("film_id",),
        (
            "film_id",
            "title",
            "description",
            "release_year",
            "language_id",
            "original_language_id",
            "rental_duration",
            "rental_rate",
            "length",
            "replacement_cost",
            "rating",
            "special_features",
            "last_update",
        ),
    ),
    "film_category": (("film_id", "category_id"), ("film_id", "category_id", "last_update")),
    "staff": (
        ("staff_id",),
        (
            "staff_id",
            "first_name",
            "last_name",
            "address_id",
            "picture",
            "email",
            "store_id",
            "active",
            "username",
            "password",
            "last_update",
        ),
    ),
    "customer": (
        ("customer_id",),
        (
            "customer_id",
            "store_id",
            "first_name",
            "last_name",
            "email",
            "address_id",
            "active",
            "create_date",
            "last_update",
        ),
    ),
    "rental": (
        ("rental_id",),
        ("rental_id", "rental_date", "inventory_id", "customer_id", "return_date", "staff_id", "last_update"),
    ),
    "payment": (
        ("payment_id",),
        ("payment_id", "customer_id", "staff_id", "rental_id", "amount", "payment_date", "last_update"),
    ),
}
TIMESTAMPS = {"last_update"}  # MySQL TIMESTAMP columns (the DATETIME ones stay naive)
BOOLEANS = {("staff", "active"), ("customer", "active")}
SETS = {("film", "special_features")}

Rows = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]


class FilmWorkload(threading.Thread):
    """Films with extreme values, their categories (a key change among them), staff pictures."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.counts = {"films": 0, "film updates": 0, "film deletes": 0, "key changes": 0, "staff": 0}

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.join(60)
        if self.error is not None:
            raise AssertionError(f"the film workload failed: {self.error!r}") from self.error

    def _loop(self) -> None:
        rng = random.Random(9)
        conn = mysql_connect(self.dsn, charset="utf8mb4")
        films: list[int] = []
        features = [None, "", "Trailers", "Commentaries,Behind the Scenes",
                    "Trailers,Commentaries,Deleted Scenes,Behind the Scenes"]  # fmt: skip
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO staff (first_name, last_name, address_id, picture, email, store_id, active, "
                    "username, password) VALUES ('Zoë', 'Ørsted', 3, %s, NULL, 1, 0, 'zoe', NULL)",
                    (bytes(range(256)) * 8,),
                )
                staff_id = cur.lastrowid
                i = 0
                while not self.stop.is_set():
                    i += 1
                    conn.begin()  # a film and its category in one transaction
                    cur.execute(
                        "INSERT INTO film (title, description, release_year, language_id, original_language_id, "
                        "rental_duration, rental_rate, length, replacement_cost, rating, special_features) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            f"FILM {i} — Ça tourne ✓ (utf8mb3: no emoji)", rng.choice([None, "", "A \"quoted\"\nline ✓", "x" * 3000]),
                            rng.choice([None, 1901, 2155, 2006]), rng.randint(1, 6), rng.choice([None, 2]),
                            rng.choice([0, 255, 7]), Decimal(rng.randint(0, 9999)).scaleb(-2),
                            rng.choice([None, 0, 65535]), Decimal(rng.randint(0, 99999)).scaleb(-2),
                            rng.choice([None, "G", "PG-13", "NC-17"]), rng.choice(features),
                        ),
                    )  # fmt: skip
                    film = cur.lastrowid
                    cur.execute(
                        "INSERT INTO film_category (film_id, category_id) VALUES (%s, %s)", (film, 1 + i % 16)
                    )
                    conn.commit()
                    films.append(film)
                    self.counts["films"] += 1
                    cur.execute(
                        "UPDATE film SET rating = %s, special_features = %s, release_year = %s, "
                        "replacement_cost = replacement_cost + 1 WHERE film_id = %s",
                        (rng.choice(["G", "PG", "R", "NC-17"]), rng.choice(features[1:]), rng.choice([1901, 2155]),
                         rng.randint(1, 1000)),
                    )  # fmt: skip
                    self.counts["film updates"] += 1
                    if i % 4 == 0:  # a primary-key change: the old key must vanish from the targets
                        cur.execute(
                            "UPDATE film_category SET category_id = %s WHERE film_id = %s",
                            (1 + (i + 5) % 16, rng.choice(films)),
                        )
                        self.counts["key changes"] += 1
                    if i % 3 == 0 and len(films) > 2:
                        doomed = films.pop(rng.randrange(len(films) - 1))
                        conn.begin()
                        cur.execute("DELETE FROM film_category WHERE film_id = %s", (doomed,))
                        cur.execute("DELETE FROM film WHERE film_id = %s", (doomed,))
                        conn.commit()
                        self.counts["film deletes"] += 1
                    if i % 5 == 0:
                        cur.execute(
                            "UPDATE staff SET picture = %s, active = 1 - active, password = %s WHERE staff_id = %s",
                            (
                                bytes([0, 255, i % 256]) * rng.randint(0, 40),
                                rng.choice([None, f"p{i}"]),
                                staff_id,
                            ),
                        )
                        self.counts["staff"] += 1
                    time.sleep(0.02)
        finally:
            conn.close()


def read(conn: Any, table: str, *, mysql: bool) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    key, columns = TABLES[table]
    if mysql:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(columns)} FROM `{table}`")
            rows = cur.fetchall()
    else:
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)
        )
        try:
            rows = conn.execute(query).fetchall()
        except psycopg.errors.UndefinedTable:
            conn.rollback()
            return {}
    positions = [columns.index(k) for k in key]
    return {tuple(r[p] for p in positions): tuple(r) for r in rows}


def mysql_rows(dsn: str) -> Rows:
    conn = mysql_connect(dsn, charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
        return {table: read(conn, table, mysql=True) for table in TABLES}
    finally:
        conn.close()


def pg_rows(dsn: str) -> Rows:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {table: read(conn, table, mysql=False) for table in TABLES}


def as_postgres(source: Rows) -> Rows:
    """The source rows as the PostgreSQL target must hold them (see the module doc)."""
    out: Rows = {}
    for table, rows in source.items():
        columns = TABLES[table][1]
        mapped: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for key, row in rows.items():
            values = []
            for name, value in zip(columns, row, strict=True):
                if value is not None:
                    if name in TIMESTAMPS:
                        value = value.replace(tzinfo=dt.UTC)
                    elif (table, name) in BOOLEANS:
                        value = bool(value)
                    elif (table, name) in SETS:
                        value = value.split(",") if value else []
                values.append(value)
            mapped[key] = tuple(values)
        out[table] = mapped
    return out


def differences(want: Rows, got: Rows, target: str) -> list[str]:
    """Every mismatch, field by field (empty when the target equals the source)."""
    problems: list[str] = []
    for table, rows in want.items():
        columns = TABLES[table][1]
        have = got.get(table, {})
        missing = [k for k in rows if k not in have]
        extra = [k for k in have if k not in rows]
        if missing:
            problems.append(f"{target} {table}: {len(missing)} keys missing, e.g. {missing[:5]}")
        if extra:
            problems.append(
                f"{target} {table}: {len(extra)} keys deleted at the source remain, e.g. {extra[:5]}"
            )
        for key, row in rows.items():
            if key in have:
                for name, expected, actual in zip(columns, row, have[key], strict=True):
                    if actual != expected:
                        problems.append(f"{target} {table} {key} {name}: {actual!r} != source {expected!r}")
    return problems


def written(bootstrap: str, topics: list[str]) -> int:
    """Records the broker holds for the topics (their high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sakila-watermarks"})
    try:
        total = 0
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                total += consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        return total
    finally:
        consumer.close()


def create_mariadb_target(dsn: str) -> None:
    """Sakila's own DDL of the captured tables, without foreign keys (the sink writes each topic's
    batches on their own, so a child may arrive before its parent)."""
    conn = mysql_connect(dsn)
    try:
        with conn.cursor() as cur:
            for statement in table_ddl(TABLES).values():
                lines = [line for line in statement.splitlines() if not line.strip().startswith("CONSTRAINT")]
                cur.execute(re.sub(r",\s*\n\)ENGINE", "\n)ENGINE", "\n".join(lines)))
    finally:
        conn.close()


def test_sakila_mysql_binlog_round_trip_to_postgres_and_mariadb(
    pg_dsn: str,
    pg_database: str,
    mysql_database: str,
    mysql_target: str,
    tmp_path: Path,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = time.monotonic()
    load_postgres(pg_database)
    loaded = load_mariadb_from_postgres(pg_database, mysql_database)
    create_mariadb_target(mysql_target)
    pg_target_name = unique("test")
    pg_target = create_pg_database(pg_dsn, pg_target_name)
    env = {
        "SAKILA_NAME": topic_name, "SAKILA_TOPIC_PREFIX": topic_name, "SAKILA_MYSQL_URL": mysql_database,
        "SAKILA_SERVER_ID": str(random.randint(10_000, 2**31)), "SAKILA_PG_URL": pg_target,
        "SAKILA_MARIADB_URL": mysql_target, "KAFKA_BOOTSTRAP": kafka_bootstrap, "SCHEMA_REGISTRY_URL": registry_url,
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the example configs read them (the children inherit them)
    source = Connector(EXAMPLE / "connector.yaml", tmp_path / "source.log")
    sales, films = Workload(mysql_database), FilmWorkload(mysql_database)
    sinks: list[SinkProcess] = []
    try:
        wait_for(
            lambda: "snapshot at binlog position" in source.log_text() or not source.alive(), 60, "snapshot"
        )
        assert source.alive(), source.log_text()[-3000:]
        sales.start()  # while the snapshot is read: those changes arrive from the binlog
        films.start()
        topics = [f"{topic_name}.{t}" for t in TABLES]
        wait_for(lambda: topics_exist(kafka_bootstrap, topics), 60, "the source's topics")
        for target in ("postgres", "mariadb"):
            sinks.append(SinkProcess(EXAMPLE / f"sink-{target}.yaml", tmp_path / f"sink-{target}.log"))
        # Past the snapshot by 300 changes: the stored offsets are stream positions now.
        snapshot_rows = sum(loaded[t] for t in TABLES)
        wait_for(lambda: written(kafka_bootstrap, topics) >= snapshot_rows + 300, 90, "streamed changes")
        time.sleep(1.5)  # (commits every 200 ms)
        source.kill9()  # mid-stream, while both workloads write: the restart must lose nothing
        source = Connector(EXAMPLE / "connector.yaml", tmp_path / "source2.log")
        time.sleep(4)
        sales.finish()
        films.finish()
        assert films.counts["key changes"] and films.counts["film deletes"] and sales.deleted["rental"]

        source_now = mysql_rows(mysql_database)
        want_pg = as_postgres(source_now)
        deadline = time.monotonic() + 90
        while True:
            problems = differences(source_now, mysql_rows(mysql_target), "mariadb") + differences(
                want_pg, pg_rows(pg_target), "postgres"
            )
            if not problems or time.monotonic() > deadline:
                break
            for process in (source, *sinks):
                assert process.proc.poll() is None, process.log_text()[-3000:]
            time.sleep(1)
        assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])
        assert len(source_now["payment"]) > 16000 and len(source_now["film"]) > 1000
        for sink in sinks:
            assert sink.terminate() == 0
        assert source.terminate()[0] == 0
        print(f"workloads {sales.counts} {films.counts}; total {time.monotonic() - started:.1f}s")
    finally:
        sales.stop.set()
        films.stop.set()
        for sink in sinks:
            sink.ensure_stopped()
        source.ensure_stopped()
        drop_pg_database(pg_dsn, pg_target_name)
