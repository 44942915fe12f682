"""The built image run for real with podman, against the real services (make container-test).

Non-root with ``cdc`` as PID 1; ``cdc demo`` inside; a WAL connector container streaming Sakila
tables into Kafka that loses nothing to ``podman kill --signal KILL`` + ``podman start`` (field by
field); ``podman stop`` exiting 0 within the grace period with its offsets committed; JSON logs,
one object per stdout line; the HEALTHCHECK turning unhealthy once the source database has been
unreachable for longer than runtime.unhealthy_after; a standby container taking over from a
killed one. Timings are printed (``-s``) for the README.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import threading
import time

import psycopg
import pytest

from tests.conftest import unique
from tests.container.podman import (
    IMAGE,
    Container,
    config_dir,
    image_healthcheck,
    podman,
    require_image,
    status_of,
)
from tests.integration.dbs import LegacyApp
from tests.integration.harness import (
    TopicReader,
    assert_matches,
    cdc,
    converged,
    free_port,
    wait_for,
    write_config,
)
from tests.integration.sakila import load_postgres
from tests.integration.test_polling_to_kafka import make_config as polling_config
from tests.integration.test_runtime_resilience import PrivatePostgres
from tests.integration.test_runtime_resilience import private_pg as private_pg  # a fixture, re-exported
from tests.integration.test_standby import Workload, replica
from tests.integration.test_wal_sakila import (
    CONFIG,
    FILM,
    FILM_KEY,
    PAYMENT,
    PAYMENT_KEY,
    STAFF,
    STAFF_KEY,
    expected,
    workload,
)
from tests.integration.test_wal_source import docs_db as docs_db  # a fixture, re-exported
from tests.integration.test_wal_source import drop_slot, expected_rows
from tests.integration.test_wal_source import make_config as wal_docs_config

pytestmark = [pytest.mark.integration, pytest.mark.container]

STREAMS = ("film", "payment", "staff")
SCHEMAS = {
    "film-key.avsc": FILM_KEY,
    "film.avsc": FILM,
    "payment-key.avsc": PAYMENT_KEY,
    "payment.avsc": PAYMENT,
    "staff-key.avsc": STAFF_KEY,
    "staff.avsc": STAFF,
}
GRACE = 45  # podman stop -t: docker-compose.yml's stop_grace_period, above runtime.shutdown_timeout


def test_demo_runs_inside_the_image() -> None:
    require_image()
    result = podman("run", "--rm", "--no-healthcheck", IMAGE, "demo", "--dir", "/tmp/demo", "--seconds", "3")
    assert "customers" in result.stdout + result.stderr


def sakila_source(dsn: str) -> None:
    load_postgres(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for month in range(1, 7):  # keyless inheritance children need a full replica identity
            conn.execute(f"ALTER TABLE payment_p2007_0{month} REPLICA IDENTITY FULL")


def assert_all_rows_arrived(readers: dict[str, TopicReader], dsn: str) -> None:
    """For each stream, every source row is the last record of its key, field by field."""
    want = expected(dsn)
    for stream, reader in readers.items():
        state = reader.wait_until(converged(want[stream], set()), 120)
        assert_matches(state, want[stream], set())


def test_wal_connector_container_survives_kill_and_stops_cleanly(
    pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    require_image()
    sakila_source(pg_database)
    directory = config_dir()
    port = free_port()
    # Not test_*: each pytest session (other suites sharing this server) drops inactive test_*
    # slots when it starts, and this slot is inactive while the container is stopped.
    slot = unique("ctr")
    text = (
        CONFIG.format(
            name=topic_name, url=pg_database, slot=slot, bootstrap=kafka_bootstrap, registry=registry_url
        )
        + f"runtime: {{http_port: {port}, metrics_log_interval: 2s}}\n"
    )
    config = write_config(directory, text, SCHEMAS)
    readers: dict[str, TopicReader] = {}
    stop = threading.Event()
    writer = threading.Thread(target=workload, args=(pg_database, stop), daemon=True)
    box = Container(config)
    ready = f"http://127.0.0.1:{port}/readyz"
    try:
        readers = {s: TopicReader(kafka_bootstrap, registry_url, f"{topic_name}.{s}") for s in STREAMS}
        wait_for(lambda: readers["staff"].written() > 0, 120, "the first event")
        print(f"\npodman run -> first event: {time.monotonic() - box.started:.1f}s")
        # Non-root, and cdc itself is PID 1 (SIGTERM from podman stop reaches it directly).
        assert box.exec("id", "-u").strip() == "10001"
        pid1 = box.exec("cat", "/proc/1/cmdline").split("\0")
        assert any(arg.endswith("/bin/cdc") for arg in pid1[:2]) and "run" in pid1, pid1

        wait_for(lambda: readers["payment"].written() >= 16049, 120, "the payment snapshot")
        writer.start()
        before = readers["payment"].written()
        wait_for(lambda: readers["payment"].written() > before + 30, 60, "the workload to stream")
        box.kill9()
        assert box.exit_code() == 137
        time.sleep(1)  # changes while it is down
        box.start()
        wait_for(lambda: status_of(ready) == 200, 120, "readiness after podman start")
        time.sleep(2)
        stop.set()
        writer.join(30)
        assert_all_rows_arrived(readers, pg_database)

        took = box.stop(GRACE)
        assert box.exit_code() == 0, box.logs()
        assert took < GRACE, f"podman stop took {took:.1f}s (the grace period is {GRACE}s)"
        print(f"podman stop: {took:.1f}s")
        # Offsets were committed at the stop: a restart re-delivers nothing.
        held = {s: r.written() for s, r in readers.items()}
        box.start()
        wait_for(lambda: status_of(ready) == 200, 120, "readiness after the clean stop")
        time.sleep(3)
        assert {s: r.written() for s, r in readers.items()} == held, "records re-delivered after a clean stop"
        assert box.stop(GRACE) < GRACE and box.exit_code() == 0

        out, err = box.logs()
        assert err.strip() == "", err[:2000]
        records = box.log_records()  # every stdout line is one JSON object
        assert all({"level", "message", "name"} <= r.keys() for r in records)
        assert sum(r["message"].startswith("starting connector") for r in records) == 3, out[-3000:]
    finally:
        stop.set()
        box.remove()
        for reader in readers.values():
            reader.close()
        shutil.rmtree(directory, ignore_errors=True)
        with psycopg.connect(pg_database, autocommit=True) as db:
            db.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s AND NOT active",
                (slot,),
            )


def test_healthcheck_turns_unhealthy_when_the_source_stays_unreachable(
    private_pg: PrivatePostgres,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
) -> None:
    require_image()
    # The image's HEALTHCHECK asks the endpoint the connector announced, so any port works: a
    # free one, not the 8080 of configs/compose (the container shares the host's network).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    limit = 8.0
    app = LegacyApp(private_pg.dsn)
    app.insert_many(20)
    directory = config_dir()
    config = polling_config(directory, private_pg.dsn, topic_name, kafka_bootstrap, registry_url)
    config.write_text(
        config.read_text().replace(
            "runtime:\n",
            f"runtime:\n  http_port: {port}\n  unhealthy_after: {limit:.0f}s\n  retry_backoff_max: 1s\n",
        )
    )
    assert cdc("schemas", "register", str(config)).returncode == 0
    # The image's check as built (command, timeout, retries), only without its 60 s start period.
    # podman 4.3 applies a --health-* option only together with --health-cmd, so all are given;
    # the same argv, through sh (its --health-cmd splits a JSON array at spaces).
    command, timeout, retries = image_healthcheck()
    assert command[:3] == ["CMD", "cdc", "health"], command
    options = ["--health-cmd", shlex.join(command[1:]), "--health-timeout", f"{timeout}s"]
    options += ["--health-retries", str(retries), "--health-start-period", "1s"]
    box = Container(config, *options, health=True)
    try:
        wait_for(lambda: box.health() == (0, "healthy"), 90, "a healthy container")
        app.dispose()
        private_pg.run("stop")
        wait_for(lambda: "retrying in" in box.logs()[0], 60, "a retry after the database went away")
        down = time.monotonic()
        assert box.health()[0] == 0, "unhealthy before runtime.unhealthy_after"
        time.sleep(max(0.0, limit + 1 - (time.monotonic() - down)))
        results = [box.health() for _ in range(retries)]
        assert all(code == 1 for code, _ in results), results
        assert results[-1][1] == "unhealthy", results
        assert box.running()  # unhealthy is for the orchestrator to act on; the connector keeps retrying
        private_pg.run("start")
        wait_for(lambda: box.health() == (0, "healthy"), 90, "healthy again after the database came back")
        assert box.stop(GRACE) < GRACE and box.exit_code() == 0
    finally:
        box.remove()
        shutil.rmtree(directory, ignore_errors=True)


def test_standby_container_takes_over_after_podman_kill(
    docs_db: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    """Two replicas as containers (runtime.standby): the standby takes over from a killed one."""
    require_image()
    directory = config_dir()
    config = wal_docs_config(directory, docs_db, topic_name, kafka_bootstrap, registry_url)
    first, _ = replica(config, "a", "at_least_once")
    second, _ = replica(config, "b", "at_least_once")
    active = Container(first)
    standby: Container | None = None
    load: Workload | None = None
    reader: TopicReader | None = None
    try:
        reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
        reader.wait_until(lambda s: len(s) >= 100, 90)
        standby = Container(second)
        box = standby
        wait_for(lambda: "standing by" in box.logs()[0], 60, "the second container to stand by")
        load = Workload(docs_db)
        before = reader.written()
        wait_for(lambda: reader.written() > before + 200, 60, "the workload to stream")
        active.kill9()
        killed = time.monotonic()
        wait_for(lambda: "took the lease" in box.logs()[0], 30, "the standby container to take over")
        print(f"\npodman kill -> standby container took the lease: {time.monotonic() - killed:.1f}s")
        time.sleep(2)
        load.finish()
        want = expected_rows(docs_db)
        state = reader.wait_until(converged(want, set()), 90)
        assert_matches(state, want, set())
        assert box.stop(GRACE) < GRACE and box.exit_code() == 0
    finally:
        if load is not None:
            load.finish()
        active.remove()
        if standby is not None:
            standby.remove()
        if reader is not None:
            reader.close()
        drop_slot(docs_db, config)
        shutil.rmtree(directory, ignore_errors=True)
