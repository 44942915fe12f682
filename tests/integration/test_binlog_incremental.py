"""Incremental snapshots of the MySQL/MariaDB binlog source (DBLog watermarks in a signal table
of the captured database), against real MariaDB and Kafka.

`cdc snapshot CONFIG` while the application updates and deletes rows; the connector is killed
with SIGKILL a few chunks in and restarted; every key's last record must equal the table's row
field by field and every deleted key must end in a tombstone.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    Connector,
    TopicReader,
    assert_matches,
    cdc,
    converged,
    key_of,
    wait_for,
)
from tests.integration.test_binlog_source import db, expected_rows, make_config, run_sql
from tests.integration.test_binlog_source import docs_db as docs_db  # the fixture

pytestmark = pytest.mark.integration

ROWS = 20_000


def _writer(dsn: str, stop: threading.Event, deleted: set[str], touched: set[str]) -> None:
    """Updates random rows and deletes some while the snapshot runs."""
    rng = random.Random(5)
    conn = db(dsn)
    try:
        with conn.cursor() as cur:
            n = 0
            while not stop.is_set():
                n += 1
                # half of the changes go to the rows of the first chunks, so some land inside
                # their windows
                ident = rng.randint(101, 1_100) if n % 2 else rng.randint(101, ROWS)
                touched.add(key_of({"id": ident}))
                if n % 10 == 0:
                    cur.execute("DELETE FROM docs WHERE id = %s", (ident,))
                    deleted.add(key_of({"id": ident}))
                else:
                    cur.execute(
                        "UPDATE docs SET title = %s WHERE id = %s", (f"v{rng.randint(0, 10**9)}", ident)
                    )
    finally:
        conn.close()


def assert_reads_never_older(records: list[tuple[Any, Any, dict[str, bytes]]]) -> None:
    """A snapshot row equals the key's previous record: a change inside its window supersedes it,
    one before its window was read by it, so it can never carry an older value."""
    last: dict[str, Any] = {}
    for key, value, headers in records:
        k = key_of(key)
        if headers.get("cdc.op") == b"r" and k in last:
            assert value == last[k], (
                f"snapshot row of {k} older than its previous record: {value} after {last[k]}"
            )
        last[k] = value


def _windows_opened(dsn: str) -> int:
    conn = db(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM cdc_signals WHERE type = 'snapshot-window-open'")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def test_incremental_snapshot_with_concurrent_changes_and_a_kill_9(
    docs_db: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    run_sql(
        docs_db,
        "INSERT INTO docs (id, title, amount) SELECT seq, CONCAT('old ', seq), 1 FROM seq_101_to_20000",
    )
    config = make_config(tmp_path, docs_db, topic_name, kafka_bootstrap, registry_url)
    config.write_text(
        config.read_text().replace(
            "  snapshot_chunk_size: 500\n",
            "  snapshot_mode: never\n  signal_table: cdc_signals\n  incremental_chunk_size: 200\n",
        )
    )
    conn = Connector(config, tmp_path / "run1.log")
    reader: TopicReader | None = None
    stop = threading.Event()
    deleted: set[str] = set()
    touched: set[str] = set()
    writer = threading.Thread(target=_writer, args=(docs_db, stop, deleted, touched), daemon=True)
    try:
        wait_for(lambda: "streaming the binlog from" in conn.log_text(), 60, "streaming")
        writer.start()
        time.sleep(1)
        result = cdc("snapshot", str(config), "--stream", "docs")
        assert result.returncode == 0, result.stderr
        # Killed a few chunks in, long before the last of its 100: its progress is then only
        # in the committed offsets.
        wait_for(lambda: _windows_opened(docs_db) >= 5, 60, "the first snapshot chunks")
        conn.kill9()
        assert "incremental snapshot of stream docs done" not in conn.log_text(), "killed too late"
        conn = Connector(config, tmp_path / "run2.log")
        time.sleep(4)
        stop.set()
        writer.join()
        reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
        expected = expected_rows(docs_db)
        deleted -= set(expected)  # a key deleted, then never re-inserted (ids are never reused)
        state = reader.wait_until(converged(expected, deleted), 180)
        assert_matches(state, expected, deleted)
        snapshot_reads = {key_of(k) for k, _v, h in reader.records if h.get("cdc.op") == b"r"}
        assert_reads_never_older(reader.records)
        # A row the application left alone is only in the topic through the snapshot.
        untouched = set(expected) - touched
        assert untouched and untouched <= snapshot_reads, (
            f"{len(untouched - snapshot_reads)} rows never snapshotted"
        )
        assert "incremental snapshot of stream docs done" in conn.log_text()
    finally:
        stop.set()
        conn.ensure_stopped()
        if reader is not None:
            reader.close()
