"""The PostgreSQL WAL source end to end against real PostgreSQL and Kafka.

For every key the last record equals the source row field by field; deleted keys end in a
tombstone; nothing of a rolled-back transaction exists - after kill -9 in the middle of a large
transaction too.
"""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import unique
from tests.integration.harness import (
    Connector,
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
    "namespace": "test.docs",
    "fields": [{"name": "id", "type": "long"}],
}
VALUE = {
    "type": "record",
    "name": "Doc",
    "namespace": "test.docs",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "title", "type": "string"},
        {"name": "body", "type": ["null", "string"], "default": None},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "changed_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ],
}
CONFIG = """
name: {name}
source:
  connector: postgres_wal
  url: {url}
  slot: {slot}
  publication: {name}_pub
  status_interval: 1s
streams:
  - name: docs
    topic: {name}
    key_schema: key.avsc
    value_schema: value.avsc
    capture:
      table: public.docs
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


@pytest.fixture
def docs_db(pg_database: str) -> str:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, body text, amount numeric(10,2) NOT NULL, "
            "changed_at timestamptz NOT NULL DEFAULT now(), internal_note text)"
        )
        conn.execute("ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL")  # out of line, uncompressed
        conn.execute(
            "INSERT INTO docs (id, title, amount) SELECT g, 'doc ' || g, g / 100.0 FROM generate_series(1, 100) g"
        )
    return pg_database


def expected_rows(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id, title, body, amount, changed_at FROM docs").fetchall()
    return {
        key_of({"id": r[0]}): {
            "id": r[0],
            "title": r[1],
            "body": r[2],
            "amount": Decimal(r[3]),
            "changed_at": r[4],
        }
        for r in rows
    }


def make_config(tmp_path: Path, dsn: str, topic: str, bootstrap: str, registry: str) -> Path:
    text = CONFIG.format(name=topic, url=dsn, slot=unique("test"), bootstrap=bootstrap, registry=registry)
    return write_config(tmp_path, text, {"key.avsc": KEY, "value.avsc": VALUE})


def drop_slot(dsn: str, config: Path) -> None:
    slot = next(line.split(":", 1)[1].strip() for line in config.read_text().splitlines() if "slot:" in line)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(50):
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is None:
                return
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            time.sleep(0.2)


def test_snapshot_then_stream_with_toast_and_rollback(
    docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    conn = Connector(config, tmp_path / "run.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    big = "x" * 20_000 + "end"  # > 8 kB, stored out of line
    try:
        reader.wait_until(lambda s: len(s) >= 100, 60)
        with psycopg.connect(docs_db, autocommit=True) as db:
            db.execute("UPDATE docs SET body = %s, changed_at = now() WHERE id = 1", (big,))
            db.execute(
                "UPDATE docs SET title = 'renamed', changed_at = now() WHERE id = 1"
            )  # body unchanged: TOAST
            db.execute("DELETE FROM docs WHERE id = 2")
            db.execute("INSERT INTO docs (id, title, amount) VALUES (1000, 'new', 12.34)")
            with db.transaction(force_rollback=True):
                db.execute("INSERT INTO docs (id, title, amount) VALUES (2000, 'rolled back', 1)")
                db.execute("UPDATE docs SET title = 'rolled back' WHERE id = 3")
        expected = expected_rows(docs_db)
        deleted = {key_of({"id": 2})}
        state = reader.wait_until(converged(expected, deleted), 60)
        assert_matches(state, expected, deleted)
        assert state[key_of({"id": 1})]["body"] == big
        assert key_of({"id": 2000}) not in state
        assert all(v is None or v["title"] != "rolled back" for v in state.values())
        # Every update of id 1 carried the real body: the unchanged TOAST value was never emitted as a value.
        bodies = [
            v["body"]
            for k, v, _ in reader.records
            if k == {"id": 1} and v is not None and v["title"] == "renamed"
        ]
        assert bodies and all(b == big for b in bodies)
        status = cdc("status", str(config))
        assert "slot_lag_bytes" in status.stdout, status.stdout + status.stderr
        code, _ = conn.terminate()
        assert code == 0, conn.log_text()[-2000:]
    finally:
        conn.ensure_stopped()
        reader.close()
        drop_slot(docs_db, config)


def test_kill_minus_9_in_a_large_transaction(
    docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    conn = Connector(config, tmp_path / "run1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= 100, 60)
        with psycopg.connect(docs_db, autocommit=True) as db:
            db.execute(
                "INSERT INTO docs (id, title, amount) SELECT g, 'bulk ' || g, (g % 100000) / 100.0 "
                "FROM generate_series(10001, 110000) g"
            )
        wait_for(lambda: reader.written() > 20_000, 60, "part of the transaction")
        conn.kill9()
        assert len(reader.drain(1)) < 100_100, "the transaction was fully delivered before the kill"
        with psycopg.connect(docs_db, autocommit=True) as db:
            db.execute(
                "UPDATE docs SET title = 'after kill', changed_at = now() WHERE id BETWEEN 10001 AND 10010"
            )
        conn = Connector(config, tmp_path / "run2.log")
        expected = expected_rows(docs_db)
        state = reader.wait_until(converged(expected, set()), 120)
        assert_matches(state, expected, set())
    finally:
        conn.ensure_stopped()
        reader.close()
        drop_slot(docs_db, config)


def test_keyless_table_is_refused_and_the_app_keeps_working(
    pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as db:
        db.execute(
            "CREATE TABLE docs (id bigint, title text, body text, amount numeric(10,2), changed_at timestamptz)"
        )
        db.execute("INSERT INTO docs VALUES (1, 'a', NULL, 1, now())")
    config = make_config(tmp_path, pg_database, topic_name, kafka_bootstrap, registry_url)
    result = cdc("run", str(config), timeout=60)
    assert result.returncode == 7, result.stderr
    assert "public.docs" in result.stderr
    assert "REPLICA IDENTITY FULL" in result.stderr
    with psycopg.connect(pg_database, autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
        db.execute("UPDATE docs SET title = 'still works' WHERE id = 1")
        db.execute("DELETE FROM docs WHERE id = 1")
    drop_slot(pg_database, config)


def test_dropped_slot_is_a_fatal_explained_error(
    docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    conn = Connector(config, tmp_path / "run1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= 100, 60)
        with psycopg.connect(docs_db, autocommit=True) as db:
            db.execute("UPDATE docs SET title = 'streamed' WHERE id = 5")
        reader.wait_until(lambda s: (s.get(key_of({"id": 5})) or {}).get("title") == "streamed", 30)
        time.sleep(1)
        assert conn.terminate()[0] == 0
    finally:
        conn.ensure_stopped()
        reader.close()
    assert "[ok  ] committed position (stream) can be resumed from slot" in cdc("check", str(config)).stdout
    drop_slot(docs_db, config)
    check = cdc("check", str(config))
    assert check.returncode == 7 and "[FAIL] committed position (stream) can be resumed" in check.stdout
    assert "is gone but a stream position is stored" in check.stdout and "re-snapshot" in check.stdout
    result = cdc("run", str(config), timeout=60)
    assert result.returncode == 5, result.stderr
    assert "is gone" in result.stderr and "re-snapshot" in result.stderr


def test_dropping_a_mapped_column_stops_with_a_located_error(
    docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    conn = Connector(config, tmp_path / "run.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= 100, 60)
        with psycopg.connect(docs_db, autocommit=True) as db:
            db.execute("ALTER TABLE docs DROP COLUMN body")
            db.execute("INSERT INTO docs (id, title, amount) VALUES (5000, 'after ddl', 1)")
        conn.proc.wait(60)
        assert conn.proc.returncode == 3
        log = conn.log_text()
        assert "stream 'docs'" in log and "'body'" in log and "dropped" in log
        reader.drain(1)
        assert key_of({"id": 5000}) not in reader.latest()
    finally:
        conn.ensure_stopped()
        reader.close()
        drop_slot(docs_db, config)


@pytest.mark.parametrize("signal_table", [False, True])
def test_kill_minus_9_during_the_snapshot_loses_nothing(
    signal_table: bool, docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    with psycopg.connect(docs_db, autocommit=True) as db:
        db.execute(
            "INSERT INTO docs (id, title, amount) SELECT g, 'snap ' || g, (g % 100000) / 100.0 "
            "FROM generate_series(101, 150000) g"
        )
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    extra = "  snapshot_fetch_size: 2000\n" + ("  signal_table: public.cdc_signals\n" if signal_table else "")
    config.write_text(
        config.read_text().replace("  status_interval: 1s\n", "  status_interval: 1s\n" + extra)
    )
    conn = Connector(config, tmp_path / "run1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        wait_for(lambda: reader.written() > 2_000, 60, "part of the snapshot")
        conn.kill9()
        assert len(reader.drain(0.5)) < 400_000, "the snapshot finished before the kill; nothing was tested"
        with psycopg.connect(docs_db, autocommit=True) as db:  # changes while the connector is down
            db.execute(
                "UPDATE docs SET title = 'changed while down', changed_at = now() WHERE id IN (1, 399999)"
            )
            db.execute("DELETE FROM docs WHERE id = 50")
        conn = Connector(config, tmp_path / "run2.log")
        with psycopg.connect(docs_db, autocommit=True) as db:
            db.execute("UPDATE docs SET title = 'changed after restart', changed_at = now() WHERE id = 2")
        expected = expected_rows(docs_db)
        deleted = {key_of({"id": 50})}
        state = reader.wait_until(converged(expected, deleted), 180)
        assert_matches(state, expected, deleted)
        expected_path = "as an incremental snapshot" if signal_table else "without its exported snapshot"
        assert expected_path in conn.log_text()
    finally:
        conn.ensure_stopped()
        reader.close()
        drop_slot(docs_db, config)


def test_when_needed_takes_a_new_snapshot_after_the_slot_is_gone(
    docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    config.write_text(
        config.read_text().replace(
            "  status_interval: 1s\n", "  status_interval: 1s\n  snapshot_mode: when_needed\n"
        )
    )
    conn = Connector(config, tmp_path / "run1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= 100, 60)
        with psycopg.connect(docs_db, autocommit=True) as db:
            db.execute("UPDATE docs SET title = 'streamed' WHERE id = 7")
        reader.wait_until(lambda s: (s.get(key_of({"id": 7})) or {}).get("title") == "streamed", 30)
        time.sleep(1)
        assert conn.terminate()[0] == 0
        drop_slot(docs_db, config)
        with psycopg.connect(docs_db, autocommit=True) as db:  # lost with the slot: only a snapshot sees it
            db.execute("UPDATE docs SET title = 'while the slot was gone', changed_at = now() WHERE id = 8")
        conn = Connector(config, tmp_path / "run2.log")
        expected = expected_rows(docs_db)
        state = reader.wait_until(converged(expected, set()), 90)
        assert_matches(state, expected, set())
        assert "taking a new snapshot" in conn.log_text()
    finally:
        conn.ensure_stopped()
        reader.close()
        drop_slot(docs_db, config)


def _updater(dsn: str, stop: threading.Event, ids: int) -> None:
    rng = random.Random(3)
    with psycopg.connect(dsn, autocommit=True) as db:
        while not stop.is_set():
            db.execute(
                "UPDATE docs SET title = %s, changed_at = now() WHERE id = %s",
                (f"v{rng.randint(0, 10**9)}", rng.randint(1, ids)),
            )


def _windows_opened(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as db:
        row = db.execute("SELECT count(*) FROM cdc_signals WHERE type = 'snapshot-window-open'").fetchone()
        return int(row[0]) if row else 0


def test_incremental_snapshot_while_streaming_never_overwrites_newer_changes(
    docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    with psycopg.connect(docs_db, autocommit=True) as db:
        db.execute(
            "INSERT INTO docs (id, title, amount) SELECT g, 'old ' || g, 1 FROM generate_series(101, 20000) g"
        )
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    config.write_text(
        config.read_text().replace(
            "  status_interval: 1s\n",
            "  status_interval: 1s\n  snapshot_mode: never\n  signal_table: public.cdc_signals\n"
            "  incremental_chunk_size: 200\n",
        )
    )
    conn = Connector(config, tmp_path / "run1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    stop = threading.Event()
    updater = threading.Thread(target=_updater, args=(docs_db, stop, 20000), daemon=True)
    try:
        wait_for(lambda: "created slot" in conn.log_text(), 60, "the slot")
        updater.start()
        time.sleep(1)
        result = cdc("snapshot", str(config))
        assert result.returncode == 0, result.stderr
        # Kill once a few chunks are read, long before the last of its 100 chunks: its
        # progress is then only in the committed offsets.
        wait_for(lambda: _windows_opened(docs_db) >= 5, 60, "the first snapshot chunks")
        conn.kill9()
        assert "incremental snapshot of stream docs done" not in conn.log_text(), "killed too late"
        conn = Connector(config, tmp_path / "run2.log")
        time.sleep(4)
        stop.set()
        updater.join()
        expected = expected_rows(docs_db)
        state = reader.wait_until(converged(expected, set()), 180)
        assert_matches(state, expected, set())
        snapshot_reads = [k for k, _v, h in reader.records if h.get("cdc.op") == b"r"]
        assert len(snapshot_reads) >= 19_000, "the incremental snapshot did not deliver the table"
        assert "incremental snapshot of stream docs done" in conn.log_text()
    finally:
        stop.set()
        conn.ensure_stopped()
        reader.close()
        drop_slot(docs_db, config)
