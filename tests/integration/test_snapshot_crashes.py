"""An initial snapshot moves forward however often the connector is killed (issue #12).

The connector is killed with SIGKILL half a second after each run's first output (3-5 s after
its start here), from its very first start, until a run reports the snapshot complete; the
application updates and deletes rows between runs; then one last run converges and every key's
last record must equal the table's row field by field, every deleted key a tombstone.

Before the fix the WAL snapshot stalled (nothing committed before the 1 s commit tick) and the
binlog snapshot left a deleted row in the topic for good: a run killed before its first commit
had produced rows, and the next run snapshotted from a later binlog position, past the delete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from tests.conftest import unique
from tests.integration import test_binlog_source as binlog
from tests.integration import test_wal_source as wal
from tests.integration.harness import (
    Connector,
    TopicReader,
    assert_matches,
    converged,
    key_of,
    write_config,
)

pytestmark = pytest.mark.integration

ROWS = 20_000
#: a run is killed once this long has passed since its first record reached the topic and it
#: wrote at least :data:`MIN_PER_RUN` records (both shorter than the 1 s commit tick before the fix)
AFTER_FIRST_ROWS = 0.5
MIN_PER_RUN = 1_500
#: ... or once it wrote this many records
PER_RUN = 5_000
#: ... or this long after its start when it produced too little
NO_OUTPUT = 20.0
#: the kill loop gives up after this many runs: the snapshot then made no (or too little)
#: progress. Counted in runs, not seconds, so a loaded machine does not fail a sound connector:
#: 20,000 rows at >= 1,500 rows a run take about 15 runs when each run's commits hold.
MAX_RUNS = 40


def snapshot_committed(config: Path, last_key: int) -> bool:
    """Whether the connector's last committed offset covers the whole snapshot: its last key
    (plain or incremental snapshot), or streaming with no snapshot in progress."""
    settings = dict(line.strip().split(": ", 1) for line in config.read_text().splitlines() if ": " in line)
    topic = next(v for k, v in settings.items() if v.endswith(".offsets"))
    consumer = Consumer(
        {"bootstrap.servers": settings["bootstrap_servers"], "group.id": f"probe-{time.monotonic_ns()}",
         "enable.auto.commit": False, "enable.partition.eof": True}
    )  # fmt: skip
    last = None
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        while True:
            msg = consumer.poll(5)
            if msg is None or (msg.error() and msg.error().code() == KafkaError._PARTITION_EOF):
                break
            if not msg.error():
                last = json.loads(msg.value() or b"null")
    finally:
        consumer.close()
    if not last:
        return False
    progress = last.get("inc") or last
    return progress.get("after") == [last_key] or (last.get("phase") == "stream" and not last.get("inc"))


def log_of(tmp_path: Path, runs: int) -> str:
    """Every run's log so far."""
    return "".join((tmp_path / f"run{n}.log").read_text(errors="replace") for n in range(1, runs + 1))


def kill_until_done(
    config: Path, tmp_path: Path, open_reader: Any, change: Callable[[int], str], rows: int
) -> tuple[TopicReader, set[str]]:
    """Start, kill -9, repeat until the committed position covers the snapshot's last key
    (``rows``); returns the topic's reader and the keys ``change`` deleted between runs.
    Asserts that at least one run was killed mid-snapshot and the next one resumed it.

    Each run is killed once :data:`AFTER_FIRST_ROWS` passed since its first record reached the
    topic and it wrote :data:`MIN_PER_RUN` records, or as soon as it wrote :data:`PER_RUN`
    records (or after :data:`NO_OUTPUT` without enough): with this machine's start-up that is
    3-5 s after its start. Unlike a fixed delay this stays shorter than the time to the first
    checkpoint before the fix, and moves about the same number of rows per run whatever the
    machine's load; the loop fails after :data:`MAX_RUNS` runs without completing.
    """
    started = time.monotonic()
    runs = 0
    reader: TopicReader | None = None
    deleted: set[str] = set()
    while True:
        runs += 1
        conn = Connector(config, tmp_path / f"run{runs}.log")
        try:
            deadline = time.monotonic() + NO_OUTPUT
            reader = reader or open_reader()  # waits for the topic the first run creates
            base = reader.written()
            first_output: float | None = None
            while time.monotonic() < deadline:
                written = reader.written() - base
                if written >= PER_RUN:
                    break
                if written > 0 and first_output is None:
                    first_output = time.monotonic()
                if (
                    first_output is not None
                    and written >= MIN_PER_RUN
                    and time.monotonic() - first_output >= AFTER_FIRST_ROWS
                ):
                    break
                time.sleep(0.02)
        finally:
            conn.ensure_stopped()  # SIGKILL
        deleted.add(change(runs))  # the application keeps writing while the connector is down
        if snapshot_committed(config, rows):
            assert runs > 1 and "resuming an interrupted snapshot" in log_of(tmp_path, runs), (
                "no run was killed mid-snapshot: nothing was tested"
            )
            return reader, deleted
        keys = len(reader.drain(0.2) and reader.latest())
        assert runs < MAX_RUNS, (
            f"the snapshot did not complete under repeated kill -9: {runs} runs in "
            f"{time.monotonic() - started:.0f}s, {keys} of {rows} keys delivered so far"
        )


def crash_loop_then_compare(
    config: Path, tmp_path: Path, topic: str, kafka: tuple[str, str], change: Callable[[int], str],
    rows: int, expected: Callable[[], dict[str, Any]],
) -> None:  # fmt: skip
    """:func:`kill_until_done`, then one last run: every key equals its row field by field."""
    reader: TopicReader | None = None
    conn = None
    try:
        reader, deleted = kill_until_done(config, tmp_path, lambda: TopicReader(*kafka, topic), change, rows)
        conn = Connector(config, tmp_path / "final.log")
        want = expected()
        state = reader.wait_until(converged(want, deleted), 120)
        assert_matches(state, want, deleted)
    finally:
        if conn is not None:
            conn.ensure_stopped()
        if reader is not None:
            reader.close()


def test_wal_snapshot_completes_under_kill_9_every_few_seconds(
    pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as db:
        db.execute(
            "CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, body text, "
            "amount numeric(10,2) NOT NULL, changed_at timestamptz NOT NULL DEFAULT now())"
        )
        db.execute(
            "INSERT INTO docs (id, title, amount) SELECT g, 'doc ' || g, (g %% 100000) / 100.0 "
            "FROM generate_series(1, %s) g",
            (ROWS,),
        )
    # Not named test_*: other test sessions on the same server drop inactive test_* slots at
    # their start, and between two runs of this test the slot is inactive. The default commit
    # interval (1 s), as users run it.
    text = wal.CONFIG.format(
        name=topic_name, url=pg_database, slot=unique("crashes"), bootstrap=kafka_bootstrap, registry=registry_url
    ).replace("  commit_interval: 200ms\n", "").replace(
        "  status_interval: 1s\n", "  signal_table: public.cdc_signals\n"
    )  # fmt: skip
    config = write_config(tmp_path, text, {"key.avsc": wal.KEY, "value.avsc": wal.VALUE})

    def change(run: int) -> str:
        with psycopg.connect(pg_database, autocommit=True) as db:
            db.execute(
                "UPDATE docs SET title = %s, changed_at = now() WHERE id IN (%s, %s)",
                (f"changed in pause {run}", run * 7, ROWS - run * 11),
            )
            db.execute("DELETE FROM docs WHERE id = %s", (run * 13 + 5,))
        return key_of({"id": run * 13 + 5})

    try:
        crash_loop_then_compare(
            config, tmp_path, topic_name, (kafka_bootstrap, registry_url), change, ROWS,
            lambda: wal.expected_rows(pg_database),
        )  # fmt: skip
    finally:
        wal.drop_slot(pg_database, config)


@pytest.mark.parametrize("signal_table", [False, True])
def test_binlog_snapshot_completes_under_kill_9_every_few_seconds(
    signal_table: bool,
    mysql_database: str,
    tmp_path: Path,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
) -> None:
    """With a signal table the remaining chunks of an interrupted snapshot are read between
    watermarks (as an incremental snapshot); without one, anew from the current data."""
    binlog.run_sql(
        mysql_database,
        "CREATE TABLE docs (id bigint PRIMARY KEY, title varchar(200) NOT NULL, body text, "
        "amount decimal(10,2) NOT NULL)",
        "INSERT INTO docs (id, title, amount) SELECT seq, CONCAT('doc ', seq), (seq % 100000) / 100 "
        f"FROM seq_1_to_{ROWS}",
    )
    config = binlog.make_config(tmp_path, mysql_database, topic_name, kafka_bootstrap, registry_url)
    text = config.read_text().replace("  commit_interval: 200ms\n", "")
    if signal_table:
        text = text.replace(
            "  heartbeat_interval: 1s\n", "  heartbeat_interval: 1s\n  signal_table: cdc_signals\n"
        )
    config.write_text(text)

    def change(run: int) -> str:
        binlog.run_sql(
            mysql_database,
            f"UPDATE docs SET title = 'changed in pause {run}' WHERE id IN ({run * 7}, {ROWS - run * 11})",
            f"DELETE FROM docs WHERE id = {run * 13 + 5}",
        )
        return key_of({"id": run * 13 + 5})

    crash_loop_then_compare(
        config, tmp_path, topic_name, (kafka_bootstrap, registry_url), change, ROWS,
        lambda: binlog.expected_rows(mysql_database),
    )  # fmt: skip
