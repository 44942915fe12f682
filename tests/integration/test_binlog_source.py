"""The MySQL/MariaDB binlog source end to end against the real MariaDB and Kafka.

For every key the last record equals the source row field by field; deleted keys (including
the old key of a primary-key change) end in a tombstone; after kill -9 in the middle of a
large transaction and while streaming, nothing is lost - resuming by GTID and by file/position.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.conftest import _mysql_connect
from tests.integration.harness import (
    Connector,
    PrivateServer,
    TopicReader,
    assert_matches,
    cdc,
    converged,
    key_of,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

KEY = {
    "type": "record",
    "name": "DocKey",
    "namespace": "test.binlog",
    "fields": [{"name": "id", "type": "long"}],
}
VALUE = {
    "type": "record",
    "name": "Doc",
    "namespace": "test.binlog",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "title", "type": "string"},
        {"name": "body", "type": ["null", "string"], "default": None},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    ],
}
CONFIG = """
name: {name}
source:
  connector: mysql_binlog
  url: {url}
  server_id: {server_id}
  resume_by: {resume_by}
  heartbeat_interval: 1s
  snapshot_chunk_size: 500
streams:
  - name: docs
    topic: {name}
    key_schema: key.avsc
    value_schema: value.avsc
    capture:
      table: docs
kafka:
  bootstrap_servers: {bootstrap}
schema_registry:
  url: {registry}
  auto_register: true
offsets:
  store: kafka
  topic: {name}.offsets
  commit_interval: 200ms
runtime:
  metrics_log_interval: 2s
"""


def db(dsn: str) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return _mysql_connect(dsn, dsn.rpartition("/")[2])


def run_sql(dsn: str, *statements: str) -> None:
    conn = db(dsn)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def docs_db(mysql_database: str) -> str:
    run_sql(
        mysql_database,
        "CREATE TABLE docs (id bigint PRIMARY KEY, title varchar(200) NOT NULL, body text, "
        "amount decimal(10,2) NOT NULL, internal_note text)",
        "INSERT INTO docs (id, title, amount) SELECT seq, CONCAT('doc ', seq), seq / 100 FROM seq_1_to_100",
    )
    return mysql_database


def expected_rows(dsn: str) -> dict[str, dict[str, Any]]:
    conn = db(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, title, body, amount FROM docs")
            rows = cur.fetchall()
    finally:
        conn.close()
    return {
        key_of({"id": r[0]}): {"id": r[0], "title": r[1], "body": r[2], "amount": Decimal(r[3])} for r in rows
    }


def make_config(
    tmp_path: Path, dsn: str, topic: str, bootstrap: str, registry: str, resume_by: str = "gtid"
) -> Path:
    text = CONFIG.format(
        name=topic, url=dsn, server_id=random.randint(10_000, 2**31), resume_by=resume_by,
        bootstrap=bootstrap, registry=registry,
    )  # fmt: skip
    return write_config(tmp_path, text, {"key.avsc": KEY, "value.avsc": VALUE})


def test_snapshot_then_stream_with_a_primary_key_change(
    docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    conn = Connector(config, tmp_path / "run.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= 100, 60)
        run_sql(
            docs_db,
            "UPDATE docs SET body = 'a body', title = 'renamed' WHERE id = 1",
            "DELETE FROM docs WHERE id = 2",
            "INSERT INTO docs (id, title, amount) VALUES (1000, 'new', 12.34)",
            "UPDATE docs SET id = 3000 WHERE id = 3",  # a key change: delete of 3, then 3000
            "UPDATE docs SET internal_note = 'unmapped column only' WHERE id = 4",
            "BEGIN",
            "INSERT INTO docs (id, title, amount) VALUES (2000, 'rolled back', 1)",
            "ROLLBACK",
        )
        expected = expected_rows(docs_db)
        deleted = {key_of({"id": 2}), key_of({"id": 3})}
        state = reader.wait_until(converged(expected, deleted), 60)
        assert_matches(state, expected, deleted)
        assert key_of({"id": 2000}) not in state
        # The key change is a delete of the old key followed by the new row, in that order.
        keys = [k for k, _, _ in reader.records]
        assert keys.index({"id": 3000}) > max(i for i, k in enumerate(keys) if k == {"id": 3})
        status = cdc("status", str(config))
        assert "binlog_transactions_behind" in status.stdout, status.stdout + status.stderr
        code, _ = conn.terminate()
        assert code == 0, conn.log_text()[-2000:]
    finally:
        conn.ensure_stopped()
        reader.close()


@pytest.mark.parametrize("resume_by", ["gtid", "file"])
def test_kill_minus_9_in_a_large_transaction_and_while_streaming(
    resume_by: str, docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url, resume_by)
    conn = Connector(config, tmp_path / "run1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= 100, 60)
        run_sql(
            docs_db,
            "INSERT INTO docs (id, title, amount) SELECT seq, CONCAT('bulk ', seq), (seq % 100000) / 100 "
            "FROM seq_10001_to_110000",
        )
        wait_for(lambda: reader.written() > 20_000, 60, "part of the transaction")
        conn.kill9()
        assert len(reader.drain(1)) < 100_100, "the transaction was fully delivered before the kill"
        run_sql(docs_db, "UPDATE docs SET title = 'after kill' WHERE id BETWEEN 10001 AND 10010")
        conn = Connector(config, tmp_path / "run2.log")
        expected = expected_rows(docs_db)
        state = reader.wait_until(converged(expected, set()), 240)
        assert_matches(state, expected, set())
        # kill -9 while streaming many small transactions
        sql = [f"UPDATE docs SET title = 'small {i}' WHERE id = {10_000 + i}" for i in range(1, 2001)]
        run_sql(docs_db, *sql[:1000])
        conn.kill9()
        run_sql(docs_db, *sql[1000:], "DELETE FROM docs WHERE id = 10500")
        conn = Connector(config, tmp_path / "run3.log")
        expected = expected_rows(docs_db)
        deleted = {key_of({"id": 10500})}
        state = reader.wait_until(converged(expected, deleted), 240)
        assert_matches(state, expected, deleted)
        assert "streaming the binlog from" in conn.log_text()
    finally:
        conn.ensure_stopped()
        reader.close()


def test_ddl_added_column_ignored_dropped_mapped_column_stops(
    docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    conn = Connector(config, tmp_path / "run.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= 100, 60)
        run_sql(
            docs_db,
            "ALTER TABLE docs ADD COLUMN extra int",
            "INSERT INTO docs (id, title, amount, extra) VALUES (4000, 'with extra', 1, 7)",
        )
        reader.wait_until(lambda s: (s.get(key_of({"id": 4000})) or {}).get("title") == "with extra", 30)
        run_sql(
            docs_db,
            "ALTER TABLE docs DROP COLUMN body",
            "INSERT INTO docs (id, title, amount) VALUES (5000, 'after ddl', 1)",
        )
        conn.proc.wait(60)
        assert conn.proc.returncode == 3, conn.log_text()[-2000:]
        log = conn.log_text()
        assert "stream 'docs'" in log and "'body'" in log and "dropped" in log
        reader.drain(1)
        assert key_of({"id": 5000}) not in reader.latest()
    finally:
        conn.ensure_stopped()
        reader.close()


def test_cdc_check_names_each_setting_and_its_fix(docs_db: str, tmp_path: Path, topic_name: str) -> None:
    config = make_config(tmp_path, docs_db, topic_name, "127.0.0.1:1", "http://127.0.0.1:1")
    result = cdc("check", str(config), timeout=60)
    out = result.stdout + result.stderr
    for finding in ("log_bin = ON", "binlog_format = ROW", "binlog_row_image = FULL", "binlog_row_metadata = FULL",
                    "MariaDB GTID position", "BINLOG MONITOR", "binlog retention"):  # fmt: skip
        assert f"[ok  ] {finding}" in out or f"[ok  ] privileges: REPLICATION SLAVE, {finding}" in out, out
    # the server's own server_id (1 on the test server) is refused, naming the fix
    config.write_text(re.sub(r"server_id: \d+", "server_id: 1", config.read_text()))
    out = cdc("check", str(config), timeout=60).stdout
    assert "[FAIL] server_id 1 is distinct" in out and "set source.server_id to an unused value" in out, out


class PrivateMariadb(PrivateServer):
    """A throwaway MariaDB: its binlogs may be purged."""

    def __init__(self, state: Path) -> None:
        super().__init__("mariadb.sh", "CDC_MYSQL_PORT", state)

    def dsn(self, database: str) -> str:
        return f"mysql://cdc:cdc@127.0.0.1:{self.port}/{database}"


@pytest.fixture
def private_mariadb(mysql_dsn: str) -> Iterator[PrivateMariadb]:
    state = Path(tempfile.mkdtemp(prefix="cdc-test-mariadb-", dir="/var/tmp"))
    os.chmod(state, 0o755)  # noqa: S103 - the mysql user must traverse into its data directory
    server = PrivateMariadb(state)
    server.run("start")
    yield server
    server.run("stop")
    shutil.rmtree(state, ignore_errors=True)


def purge_all_but_the_current_binlog(dsn: str) -> None:
    """PURGE BINARY LOGS keeps a file until its binlog checkpoint passed: retry until it is gone."""
    conn = db(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW MASTER STATUS")
            (last, *_) = cur.fetchone()

            def purged() -> bool:
                cur.execute("PURGE BINARY LOGS TO %s", (last,))
                cur.execute("SHOW BINARY LOGS")
                return len(cur.fetchall()) == 1

            wait_for(purged, 30, "the purge of the older binary logs")
    finally:
        conn.close()


@pytest.mark.destructive
@pytest.mark.parametrize("resume_by", ["gtid", "file"])
def test_a_purged_binlog_is_a_fatal_explained_error(
    resume_by: str, private_mariadb: PrivateMariadb, tmp_path: Path, topic_name: str, kafka_bootstrap: str,
    registry_url: str,
) -> None:  # fmt: skip
    admin = private_mariadb.dsn("mysql")
    run_sql(admin, "CREATE DATABASE shop")
    dsn = private_mariadb.dsn("shop")
    run_sql(
        dsn,
        "CREATE TABLE docs (id bigint PRIMARY KEY, title varchar(200) NOT NULL, body text, "
        "amount decimal(10,2) NOT NULL, internal_note text)",
        "INSERT INTO docs (id, title, amount) VALUES (1, 'one', 1)",
    )
    config = make_config(tmp_path, dsn, topic_name, kafka_bootstrap, registry_url, resume_by)
    conn = Connector(config, tmp_path / "run1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= 1, 60)
        run_sql(dsn, "INSERT INTO docs (id, title, amount) VALUES (2, 'streamed', 2)")
        reader.wait_until(lambda s: key_of({"id": 2}) in s, 30)
        time.sleep(1)  # the offset commit
        assert conn.terminate()[0] == 0
    finally:
        conn.ensure_stopped()
        reader.close()
    # changes the stopped connector has not seen, then their binlogs purged
    run_sql(dsn, "INSERT INTO docs (id, title, amount) VALUES (3, 'lost', 3)", "FLUSH BINARY LOGS")
    run_sql(dsn, "INSERT INTO docs (id, title, amount) VALUES (4, 'lost', 4)", "FLUSH BINARY LOGS")
    assert "lag binlog_position_on_server: 1.000" in cdc("status", str(config)).stdout
    found = cdc("check", str(config), timeout=60).stdout
    assert re.search(r"\[ok  \] committed position \S+ \(stream\) is in the server's binary logs", found), (
        found
    )
    purge_all_but_the_current_binlog(dsn)
    status = cdc("status", str(config))
    assert "lag binlog_position_on_server: 0.000" in status.stdout, status.stdout + status.stderr
    check = cdc("check", str(config), timeout=60)
    assert check.returncode == 7, check.stdout
    assert re.search(
        r"\[FAIL\] committed position .* binary logs: no: .*purged.*re-snapshot", check.stdout
    ), check.stdout
    result = cdc("run", str(config), timeout=90)
    assert result.returncode == 5, result.stderr[-3000:]
    assert "is no longer on the server" in result.stderr and "purged" in result.stderr
    assert "re-snapshot" in result.stderr
    if resume_by != "gtid":
        return
    # snapshot_mode: when_needed takes a new snapshot instead of stopping
    config.write_text(
        config.read_text().replace(
            "  heartbeat_interval: 1s\n", "  heartbeat_interval: 1s\n  snapshot_mode: when_needed\n"
        )
    )
    conn = Connector(config, tmp_path / "run3.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        expected = expected_rows(dsn)
        state = reader.wait_until(converged(expected, set()), 60)
        assert_matches(state, expected, set())
        assert "taking a new snapshot" in conn.log_text()
    finally:
        conn.ensure_stopped()
        reader.close()


def test_kill_minus_9_during_the_snapshot_loses_nothing(
    docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    run_sql(
        docs_db,
        "INSERT INTO docs (id, title, amount) SELECT seq, CONCAT('snap ', seq), (seq % 100000) / 100 "
        "FROM seq_101_to_150000",
    )
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    conn = Connector(config, tmp_path / "run1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        wait_for(lambda: reader.written() > 2_000, 60, "part of the snapshot")
        # Kill only once a snapshot position is durable: before that a restart rightly takes a new
        # snapshot instead, and this test would not test the resume (a loaded machine gets there).
        wait_for(
            lambda: _committed(kafka_bootstrap, f"{topic_name}.offsets"), 60, "a committed snapshot position"
        )
        conn.kill9()
        assert len(reader.drain(0.5)) < 150_000, "the snapshot finished before the kill; nothing was tested"
        run_sql(  # changes while the connector is down
            docs_db,
            "UPDATE docs SET title = 'changed while down' WHERE id IN (1, 149999)",
            "DELETE FROM docs WHERE id = 50",
        )
        conn = Connector(config, tmp_path / "run2.log")
        run_sql(docs_db, "UPDATE docs SET title = 'changed after restart' WHERE id = 2")
        expected = expected_rows(docs_db)
        deleted = {key_of({"id": 50})}
        state = reader.wait_until(converged(expected, deleted), 180)
        assert_matches(state, expected, deleted)
        assert "resuming an interrupted snapshot" in conn.log_text()
    finally:
        conn.ensure_stopped()
        reader.close()


def _committed(bootstrap: str, topic: str) -> bool:
    """Whether the connector's offsets topic holds a committed position yet."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{time.monotonic_ns()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        msg = consumer.poll(1.0)
        return msg is not None and msg.error() is None and b"snapshot" in (msg.value() or b"")
    finally:
        consumer.close()
