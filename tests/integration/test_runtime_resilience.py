"""The runtime under failure: a database that goes away and comes back, health and metrics.

Destructive: it stops and restarts its own PostgreSQL instance (scripts/services/postgres.sh with a
private state directory and port), never the shared one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.dbs import LegacyApp
from tests.integration.harness import (
    Connector,
    PrivateServer,
    TopicReader,
    cdc,
    free_port,
    key_of,
    wait_for,
    write_config,
)
from tests.integration.test_polling_to_kafka import assert_equal_field_by_field, converged, make_config

pytestmark = [pytest.mark.integration, pytest.mark.destructive]


class PrivatePostgres(PrivateServer):
    def __init__(self, state: Path) -> None:
        super().__init__("postgres.sh", "CDC_PG_PORT", state)

    @property
    def dsn(self) -> str:
        return f"postgresql://cdc:cdc@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_pg(pg_dsn: str) -> Iterator[PrivatePostgres]:
    # Not under pytest's tmp_path: the server runs as user postgres, which must reach its state.
    state = Path(tempfile.mkdtemp(prefix="cdc-test-pg-", dir="/var/tmp"))
    os.chmod(state, 0o755)  # noqa: S103 - the postgres user must traverse into its data directory
    pg = PrivatePostgres(state)
    pg.run("start")
    yield pg
    pg.run("stop")
    shutil.rmtree(state, ignore_errors=True)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_database_outage_is_retried_and_health_reports_it(
    private_pg: PrivatePostgres, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    app = LegacyApp(private_pg.dsn)
    app.insert_many(50)
    config = make_config(tmp_path, private_pg.dsn, topic_name, kafka_bootstrap, registry_url)
    port = free_port()
    config.write_text(
        config.read_text().replace("runtime:\n", f"runtime:\n  http_port: {port}\n  retry_backoff_max: 2s\n")
    )
    assert cdc("schemas", "register", str(config)).returncode == 0
    conn = Connector(config, tmp_path / "run.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    base = f"http://127.0.0.1:{port}"
    try:
        reader.wait_until(lambda s: len(s) >= 50, 60)
        wait_for(lambda: get(f"{base}/readyz")[0] == 200, 30, "readiness")
        assert get(f"{base}/healthz")[0] == 200
        status, metrics = get(f"{base}/metrics")
        assert (
            status == 200 and "cdc_events_total" in metrics and "cdc_last_commit_timestamp_seconds" in metrics
        )
        app.dispose()
        private_pg.run("stop")
        wait_for(lambda: "retrying in" in conn.log_text(), 60, "a retry after the database went away")
        assert conn.alive()
        assert get(f"{base}/healthz")[0] == 200  # alive while retrying
        time.sleep(2)
        private_pg.run("start")
        app.reconnect(private_pg.dsn)
        app.insert_many(10, start=500)
        expected = app.expected()
        state = reader.wait_until(converged(expected, set()), 90)
        assert_equal_field_by_field(state, expected, set())
        code, _ = conn.terminate()
        assert code == 0
    finally:
        conn.ensure_stopped()
        reader.close()


def test_wal_source_reconnects_after_a_server_restart(
    private_pg: PrivatePostgres, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    from tests.conftest import unique
    from tests.integration.test_wal_source import KEY, VALUE, assert_matches, expected_rows
    from tests.integration.test_wal_source import converged as wal_converged

    dsn = private_pg.dsn
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(
            "CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, body text, amount numeric(10,2) NOT NULL, "
            "changed_at timestamptz NOT NULL DEFAULT now())"
        )
        db.execute(
            "INSERT INTO docs (id, title, amount) SELECT g, 'doc ' || g, 1 FROM generate_series(1, 50) g"
        )
    text = f"""
name: {topic_name}
source: {{connector: postgres_wal, url: "{dsn}", slot: {unique("test")}, publication: p, status_interval: 1s}}
streams:
  - {{name: docs, topic: {topic_name}, key_schema: key.avsc, value_schema: value.avsc, capture: {{table: public.docs}}}}
kafka: {{bootstrap_servers: "{kafka_bootstrap}"}}
schema_registry: {{url: "{registry_url}", auto_register: true}}
offsets: {{store: kafka, topic: {topic_name}.offsets, commit_interval: 200ms}}
runtime: {{retry_backoff_max: 2s}}
"""
    config = write_config(tmp_path, text, {"key.avsc": KEY, "value.avsc": VALUE})
    conn = Connector(config, tmp_path / "run.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= 50, 60)
        private_pg.run("stop")
        wait_for(lambda: "retrying in" in conn.log_text(), 60, "a retry after the server went away")
        assert conn.alive()
        private_pg.run("start")
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("UPDATE docs SET title = 'after restart', changed_at = now() WHERE id <= 10")
            db.execute("DELETE FROM docs WHERE id = 20")
        expected = expected_rows(dsn)
        deleted = {key_of({"id": 20})}
        state = reader.wait_until(wal_converged(expected, deleted), 90)
        assert_matches(state, expected, deleted)
        assert conn.terminate()[0] == 0
    finally:
        conn.ensure_stopped()
        reader.close()
