"""Round trips through trigger audit capture: Sakila (PostgreSQL film; MariaDB customer, address,
rental, payment) -> audit triggers -> `audit` relay -> Kafka -> database sink -> PostgreSQL, with
the sink killed -9 mid-stream. The existing rows are recorded as reads by
``cdc migrations audit backfill`` and a workload then changes the database; afterwards every row of the target equals the source's, field by field
(the normalisation is the polling round trip's: tests.integration.test_round_trip_mariadb)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from cdc.audit import generator
from tests.conftest import create_pg_database, drop_pg_database, unique
from tests.integration import test_round_trip as pg_trip
from tests.integration import test_round_trip_mariadb as my_trip
from tests.integration.harness import Connector, wait_for, write_config
from tests.integration.sakila import load_postgres
from tests.integration.sakila_mysql import load_mariadb_from_postgres
from tests.integration.sink_harness import ROUND_TRIP_SINK, SinkProcess
from tests.integration.test_wal_sakila import FILM, FILM_KEY, workload

pytestmark = pytest.mark.integration

SOURCE = """
name: {name}
source: {{connector: audit, url: "{url}", poll_interval: 100ms}}
streams:
{streams}
kafka: {{bootstrap_servers: "{bootstrap}", topics: {{partitions: 2}}}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
runtime: {{shutdown_timeout: 20s}}
"""
STREAM = """  - {{name: {table}, topic: {name}.{table}, key_schema: {table}-key.avsc, value_schema: {table}.avsc,
     capture: {{table: {table}}}{extra}}}
"""


def _run_round_trip(tmp_path: Path, source_cfg: Path, target: str, tables: list[str], topic: str,
                    bootstrap: str, registry: str, start_workload: object, stop_workload: object,
                    want: object, got: object, compare: object) -> None:  # fmt: skip
    """Source + sink processes, the sink killed -9 once, then wait until the target equals the source."""
    sink_cfg = tmp_path / "sink.yaml"
    sink_cfg.write_text(
        ROUND_TRIP_SINK.format(
            name=topic,
            topics="".join(f"  - {{topic: {topic}.{t}, table: {t}}}\n" for t in tables),
            target=target,
            bootstrap=bootstrap,
            registry=registry,
        )
    )
    source = Connector(source_cfg, tmp_path / "source.log")
    sinks: list[SinkProcess] = []
    try:
        # the source creates its topics before it starts capturing; the sink needs them
        wait_for(
            lambda: not source.alive() or "capture process started" in source.log_text(), 60, "the source"
        )
        assert source.alive(), source.log_text()[-3000:]
        start_workload()  # type: ignore[operator]
        sinks.append(SinkProcess(sink_cfg, tmp_path / "sink1.log"))
        wait_for(lambda: my_trip._committed(target) > 0, 90, "the first sink's first committed batch")
        sinks[0].kill9()  # mid-stream: the seeded rows and the workload are still arriving
        sinks.append(SinkProcess(sink_cfg, tmp_path / "sink2.log"))
        time.sleep(3)
        stop_workload()  # type: ignore[operator]
        expected = want()  # type: ignore[operator]
        deadline = time.monotonic() + 150
        actual = got()  # type: ignore[operator]
        while actual != expected and time.monotonic() < deadline:
            assert source.alive(), source.log_text()[-3000:]
            time.sleep(1)
            actual = got()  # type: ignore[operator]
        compare(expected, actual)  # type: ignore[operator]
        assert sinks[-1].terminate() == 0
        assert source.terminate()[0] == 0, source.log_text()[-3000:]
    finally:
        for sink in sinks:
            sink.ensure_stopped()
        source.ensure_stopped()


def _target_films(dsn: str) -> dict[object, object]:
    """The target's films (test_round_trip.target_rows also reads payment, not captured here)."""
    with psycopg.connect(dsn) as conn:
        try:
            rows = conn.execute(
                "SELECT film_id, title, description, release_year, rental_rate, length, rating, "
                "special_features, fulltext, last_update FROM film"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {r[0]: tuple(r) for r in rows}


def test_sakila_postgres_audit_round_trip(
    pg_dsn: str, pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    load_postgres(pg_database)
    generator.apply(pg_database, ["film"])
    target_name = unique("test")
    target = create_pg_database(pg_dsn, target_name)
    streams = STREAM.format(
        name=topic_name, table="film", extra=", symbol_maps: {rating: {PG-13: PG_13, NC-17: NC_17}}"
    )
    source_cfg = write_config(
        tmp_path,
        SOURCE.format(
            name=topic_name,
            url=pg_database,
            streams=streams,
            bootstrap=kafka_bootstrap,
            registry=registry_url,
        ),
        {"film-key.avsc": FILM_KEY, "film.avsc": FILM},
    )
    stop = threading.Event()
    writer = threading.Thread(target=workload, args=(pg_database, stop), daemon=True)

    def start() -> None:
        generator.backfill(pg_database, ["film"])  # the initial copy, through the relay
        writer.start()

    def finish() -> None:
        stop.set()
        writer.join()

    def film_only(rows: dict[str, dict[object, object]]) -> dict[object, object]:
        return rows["film"]

    def compare(want: dict[object, object], got: dict[object, object]) -> None:
        assert len(want) == 1000 and got.keys() == want.keys()
        for key, row in want.items():
            assert got[key] == row, f"film {key}: target {got[key]!r} != source {row!r}"

    try:
        _run_round_trip(
            tmp_path, source_cfg, target, ["film"], topic_name, kafka_bootstrap, registry_url, start, finish,
            lambda: film_only(pg_trip.source_rows(pg_database)), lambda: _target_films(target), compare,
        )  # fmt: skip
    finally:
        stop.set()
        drop_pg_database(pg_dsn, target_name)


def test_sakila_mariadb_audit_round_trip(
    pg_dsn: str,
    pg_database: str,
    mysql_database: str,
    tmp_path: Path,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
) -> None:
    load_postgres(pg_database)
    load_mariadb_from_postgres(pg_database, mysql_database)
    tables = list(my_trip.TABLES)
    generator.apply(mysql_database, tables)
    target_name = unique("test")
    target = create_pg_database(pg_dsn, target_name)
    streams = "".join(STREAM.format(name=topic_name, table=t, extra="") for t in tables)
    source_cfg = write_config(
        tmp_path,
        SOURCE.format(
            name=topic_name,
            url=mysql_database,
            streams=streams,
            bootstrap=kafka_bootstrap,
            registry=registry_url,
        ),
        my_trip.schemas(),
    )
    work = my_trip.Workload(mysql_database)

    def start() -> None:
        counts = generator.backfill(mysql_database, tables)  # the initial copy, through the relay
        assert counts[f"{mysql_database.rsplit('/', 1)[1]}.payment"] == 16049, counts
        work.start()

    try:
        _run_round_trip(
            tmp_path, source_cfg, target, tables, topic_name, kafka_bootstrap, registry_url, start, work.finish,
            lambda: my_trip.source_rows(mysql_database), lambda: my_trip.target_rows(target), my_trip._assert_equal,
        )  # fmt: skip
        assert work.deleted["payment"] and work.deleted["rental"], work.deleted
    finally:
        work.stop.set()
        drop_pg_database(pg_dsn, target_name)
