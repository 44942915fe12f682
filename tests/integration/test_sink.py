"""The database sink end to end: Kafka topics -> PostgreSQL, MariaDB and SQLite tables.

For every key, the target row must equal the last record field by field and deleted keys must
be gone - after kill -9 and restarts, with two instances splitting partitions, with a stalled
instance, and with poison messages dead-lettered or failing the sink with its exit code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition

from cdc.sink.loader import load_sink_config
from cdc.sink.runner import SinkRunner
from tests.integration.harness import cdc, wait_for
from tests.integration.sink_harness import (
    VALUE,
    Feed,
    SinkProcess,
    Target,
    assert_table_matches,
    make_config,
    thing,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres":
        yield request.getfixturevalue("pg_database")
    elif request.param == "mysql":
        yield request.getfixturevalue("mysql_database")
    else:
        yield f"sqlite:///{tmp_path / 'target.db'}"


def produce_workload(feed: Feed, keys: int, rounds: int, start_version: int = 0) -> None:
    """Each round updates every key (several versions of a key land in one batch) and deletes some."""
    for r in range(rounds):
        version = start_version + r
        for i in range(keys):
            if (i + version) % 11 == 0:
                feed.delete(i)
            else:
                feed.upsert(thing(i, version))
    feed.flush()


def test_upserts_and_tombstones_arrive_and_survive_kill9(
    tmp_path: Path, target_url: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    feed = Feed(kafka_bootstrap, registry_url, topic_name)
    config = make_config(
        tmp_path,
        name=topic_name,
        topic=topic_name,
        url=target_url,
        bootstrap=kafka_bootstrap,
        registry=registry_url,
        batch_size=200,
    )
    assert cdc("sink", "validate", str(config)).returncode == 0
    target = Target(target_url)
    produce_workload(feed, keys=300, rounds=3)
    sink = SinkProcess(config, tmp_path / "run1.log")
    try:
        wait_for(lambda: target.consumed(topic_name) >= feed.count, 90, "the first load")
        assert_table_matches(target, "things", feed)
        # More changes while it runs, then kill -9 in the middle of them.
        produce_workload(feed, keys=300, rounds=20, start_version=3)
        wait_for(lambda: target.consumed(topic_name) > 900 + 300, 60, "progress on the second load")
        sink.kill9()
        assert target.consumed(topic_name) < feed.count, "the sink finished before the kill: not mid-stream"
    finally:
        sink.ensure_stopped()
    produce_workload(feed, keys=300, rounds=2, start_version=23)
    sink = SinkProcess(config, tmp_path / "run2.log")
    try:
        wait_for(lambda: target.consumed(topic_name) >= feed.count, 90, "catching up after kill -9")
        assert_table_matches(target, "things", feed)
        status = cdc("sink", "status", str(config))
        assert status.returncode == 0, status.stderr
        assert (
            f"{topic_name}[0]: next_offset {feed.count}, high watermark {feed.count}, lag 0" in status.stdout
        )
        assert sink.terminate() == 0, sink.log_text()[-3000:]
    finally:
        sink.ensure_stopped()
        target.dispose()


def test_two_instances_split_partitions_and_a_killed_one_loses_nothing(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    feed = Feed(kafka_bootstrap, registry_url, topic_name, partitions=2)
    config = make_config(
        tmp_path,
        name=topic_name,
        topic=topic_name,
        url=pg_database,
        bootstrap=kafka_bootstrap,
        registry=registry_url,
        batch_size=100,
    )
    target = Target(pg_database)
    a = SinkProcess(config, tmp_path / "a.log")
    b = SinkProcess(config, tmp_path / "b.log")
    try:

        def split() -> bool:
            return all(
                f'"assigned {topic_name}[' in s.log_text() and "," not in _last_assignment(s, topic_name)
                for s in (a, b)
            )

        wait_for(split, 60, "both instances to own one partition each")
        produce_workload(feed, keys=400, rounds=5)
        wait_for(lambda: target.consumed(topic_name) >= feed.count, 90, "the first load")
        assert_table_matches(target, "things", feed)
        produce_workload(feed, keys=400, rounds=30, start_version=5)
        wait_for(lambda: target.consumed(topic_name) > 2000 + 2000, 60, "progress on the second load")
        a.kill9()  # b takes a's partition over after the session timeout
        wait_for(lambda: target.consumed(topic_name) >= feed.count, 120, "b to finish a's partition")
        assert_table_matches(target, "things", feed)
        assert b.terminate() == 0, b.log_text()[-3000:]
    finally:
        a.ensure_stopped()
        b.ensure_stopped()
        target.dispose()


def _last_assignment(sink: SinkProcess, topic: str) -> str:
    lines = [line for line in sink.log_text().splitlines() if f'"assigned {topic}[' in line]
    return lines[-1].split('"assigned ', 1)[1].split('"', 1)[0] if lines else ","


@pytest.mark.parametrize("which", ["postgres", "mysql"])
def test_a_stalled_instance_rolls_its_batch_back(
    which: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
) -> None:
    """Another instance advances the stored offset while this one holds an uncommitted batch:
    the conditional update finds no row, the batch rolls back, and no stale row is committed."""
    url = request.getfixturevalue("pg_database" if which == "postgres" else "mysql_database")
    feed = Feed(kafka_bootstrap, registry_url, topic_name)
    for i in range(50):
        feed.upsert(thing(i))
    feed.flush()
    config = load_sink_config(
        make_config(
            tmp_path,
            name=topic_name,
            topic=topic_name,
            url=url,
            bootstrap=kafka_bootstrap,
            registry=registry_url,
            batch_size=1000,
        )
    )
    target = Target(url)
    with target.engine.begin() as conn:  # a position stored by an earlier owner
        conn.execute(
            sa.text(
                "CREATE TABLE cdc_sink_offsets (group_id varchar(255), topic varchar(255), "
                "`partition` int, next_offset bigint, PRIMARY KEY (group_id, topic, `partition`))"
                if target.dialect == "mysql"
                else "CREATE TABLE cdc_sink_offsets (group_id varchar(255), topic varchar(255), "
                "partition int, next_offset bigint, PRIMARY KEY (group_id, topic, partition))"
            )
        )
        conn.execute(
            sa.text("INSERT INTO cdc_sink_offsets VALUES (:g, :t, 0, 0)"),
            {"g": config.group, "t": topic_name},
        )
    stalls: list[int] = []

    def other_instance_moves_on() -> None:
        # Runs inside the stalled instance's open transaction, after its rows were written.
        stalls.append(1)
        if len(stalls) == 1:
            with target.engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE cdc_sink_offsets SET next_offset = 50 WHERE topic = :t"),
                    {"t": topic_name},
                )

    runner = SinkRunner(config, before_commit=other_instance_moves_on)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: runner.stats.fenced == 1, 60, "the stalled batch to be fenced")
        time.sleep(2)  # it re-seeks to 50: nothing more to apply
    finally:
        runner.stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert stalls == [1], "the batch was retried instead of dropped"
    assert target.rows("things") == {}, "a stale batch committed rows"
    assert target.consumed(topic_name) == 50
    target.dispose()


def _dead_letters(
    bootstrap: str, topic: str, expected: int
) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-{time.monotonic_ns()}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
    deadline = time.monotonic() + 30
    while len(found) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            found.append((msg.key(), msg.value(), dict(msg.headers() or [])))
    time.sleep(1)
    extra = consumer.poll(1)
    assert extra is None or extra.error() is not None, "more dead letters than expected"
    consumer.close()
    return found


PRECREATED = """CREATE TABLE things (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2),
    seen_at timestamptz, local_at timestamp, day date, ref uuid, active boolean, score double precision,
    tags text[], note text NOT NULL)"""


def test_dead_letters_for_undecodable_and_refused_messages(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    feed = Feed(kafka_bootstrap, registry_url, topic_name)
    target = Target(pg_database)
    with target.engine.begin() as conn:
        conn.execute(sa.text(PRECREATED))
    for i in range(20):
        feed.upsert({**thing(i), "note": f"n{i}"})
    garbage_key = feed.key.encode({"id": 100})
    feed.send(garbage_key, b"raw bytes without the magic byte")
    refused = {**thing(101), "note": None}  # NOT NULL in the pre-created table
    refused_bytes = feed.value.encode(refused)
    feed.send(feed.key.encode({"id": 101}), refused_bytes)
    # Valid Avro whose timestamp-micros and date no Python datetime can hold (year ~146,000):
    # a poison message like the garbage above, never a crashed sink (issue 11, item 1).
    unrepresentable = feed.value.encode({**thing(102), "seen_at": 2**62, "day": 10**7})
    feed.send(feed.key.encode({"id": 102}), unrepresentable)
    for i in range(20, 40):
        feed.upsert({**thing(i), "note": f"n{i}"})
    feed.flush()
    config = make_config(
        tmp_path,
        name=topic_name,
        topic=topic_name,
        url=pg_database,
        bootstrap=kafka_bootstrap,
        registry=registry_url,
        on_error="dead_letter",
    )
    sink = SinkProcess(config, tmp_path / "dlq.log")
    try:
        wait_for(lambda: target.consumed(topic_name) >= feed.count, 60, "everything consumed")
        assert_table_matches(target, "things", feed)
        letters = _dead_letters(kafka_bootstrap, f"{topic_name}.sink-dlq", 3)
        # poison bytes are dead-lettered as they are parsed, a refused row after its batch failed
        letters.sort(key=lambda letter: int(letter[2]["cdc.source.offset"]))
        assert [(k, v) for k, v, _ in letters] == [
            (garbage_key, b"raw bytes without the magic byte"),
            (feed.key.encode({"id": 101}), refused_bytes),
            (feed.key.encode({"id": 102}), unrepresentable),
        ]
        first, second, third = (h for _, _, h in letters)
        assert first["cdc.source.offset"] == b"20" and first["cdc.source.topic"] == topic_name.encode()
        assert (
            first["cdc.error.class"] == b"BadMessageError"
            and b"Confluent wire format" in first["cdc.error.message"]
        )
        assert second["cdc.source.offset"] == b"21" and second["cdc.error.class"] == b"RejectedRowError"
        assert b"note" in second["cdc.error.message"]
        assert third["cdc.source.offset"] == b"22" and third["cdc.error.class"] == b"BadMessageError"
        assert b"does not fit schema id" in third["cdc.error.message"]
        # the error without its hint (it would say to set on_error: dead_letter, which sent it here)
        assert not any(b"on_error" in h["cdc.error.message"] for h in (first, second, third))
        assert sink.terminate() == 0
    finally:
        sink.ensure_stopped()
        target.dispose()


def test_a_refused_row_in_a_copied_batch_is_dead_lettered_and_the_rest_written(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    """Large batches go through COPY + INSERT ... SELECT; a row the table refuses fails that
    statement, and the batch is redone row by row so only the culprit is dead-lettered."""
    feed = Feed(kafka_bootstrap, registry_url, topic_name)
    target = Target(pg_database)
    with target.engine.begin() as conn:
        conn.execute(sa.text(PRECREATED))
    refused_bytes = feed.value.encode({**thing(250), "note": None})  # NOT NULL in the table
    config = load_sink_config(
        make_config(
            tmp_path,
            name=topic_name,
            topic=topic_name,
            url=pg_database,
            bootstrap=kafka_bootstrap,
            registry=registry_url,
            on_error="dead_letter",
            batch_size=1000,
        )
    )

    def run_until_consumed(what: str) -> SinkRunner:
        runner = SinkRunner(config)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: target.consumed(topic_name) >= feed.count, 60, what)
        finally:
            runner.stop.set()
            thread.join(30)
        return runner

    try:
        # Produced before the sink starts, so they arrive in batches large enough for COPY.
        for i in range(200):
            feed.upsert({**thing(i, version=i % 4), "note": f"n{i}"})
        feed.flush()
        first = run_until_consumed("the first rows").writer
        assert first.copied_rows > 0, "nothing went through COPY"
        assert first.binary_rows == first.copied_rows, "every column type here has a binary COPY"
        for i in range(200, 300):  # one refused row in the next batch: COPY fails, rows retried
            if i == 250:
                feed.send(feed.key.encode({"id": 250}), refused_bytes)
            else:
                feed.upsert({**thing(i, version=i % 4), "note": f"n{i}"})
        feed.flush()
        run_until_consumed("everything")
        assert_table_matches(target, "things", feed)
        letters = _dead_letters(kafka_bootstrap, f"{topic_name}.sink-dlq", 1)
        assert letters[0][1] == refused_bytes and letters[0][2]["cdc.source.offset"] == b"250"
        assert letters[0][2]["cdc.error.class"] == b"RejectedRowError"
    finally:
        target.dispose()

    # The statement path and the COPY path write the same values: a second table through the
    # statement path (small batches) must equal the first row for row.
    small = load_sink_config(
        make_config(
            tmp_path,
            file="small.yaml",
            name=f"{topic_name}_small",
            topic=topic_name,
            table="things_small",
            url=pg_database,
            bootstrap=kafka_bootstrap,
            registry=registry_url,
            on_error="dead_letter",
            batch_size=10,
        )
    )
    runner = SinkRunner(small)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    target = Target(pg_database)
    try:
        wait_for(lambda: target.consumed(topic_name) >= 2 * feed.count, 60, "the second sink")
        assert runner.writer.copied_rows == 0
        copied, stated = target.rows("things"), target.rows("things_small")
        # The auto-created table takes the refused row (its note column is nullable).
        assert len(copied) == 299 and set(copied) == set(stated) - {250}
        for key, row in copied.items():
            assert stated[key] == row, f"key {key}: COPY wrote {row!r}, statements wrote {stated[key]!r}"
    finally:
        runner.stop.set()
        thread.join(30)
        target.dispose()


def test_on_error_fail_stops_with_the_exit_code_and_names_the_message(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    feed = Feed(kafka_bootstrap, registry_url, topic_name)
    target = Target(pg_database)
    with target.engine.begin() as conn:
        conn.execute(sa.text(PRECREATED))
    for i in range(5):
        feed.upsert({**thing(i), "note": "ok"})
    feed.send(feed.key.encode({"id": 100}), b"garbage")
    feed.flush()
    config = make_config(
        tmp_path,
        name=topic_name,
        topic=topic_name,
        url=pg_database,
        bootstrap=kafka_bootstrap,
        registry=registry_url,
        batch_size=3,
    )
    run = cdc("sink", "run", str(config), timeout=120)
    assert run.returncode == 3, run.stderr[-2000:]
    assert f"topic '{topic_name}' partition 0 offset 5 key {{'id': 100}}: cannot decode" in run.stderr
    assert target.consumed(topic_name) == 3 and len(target.rows("things")) == 3  # the full batch before it

    # A refused row (NOT NULL violated) exits 4 and commits nothing of its batch.
    with target.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cdc_sink_offsets SET next_offset = 6"))
    feed.upsert({**thing(200), "note": "fine"})
    feed.upsert({**thing(201), "note": None})
    feed.flush()
    run = cdc("sink", "run", str(config), timeout=120)
    assert run.returncode == 4, run.stderr[-2000:]
    assert (
        f"topic '{topic_name}' partition 0 offset 7 key {{'id': 201}}: the target database refused"
        in run.stderr
    )
    assert 200 not in target.rows("things") and target.consumed(topic_name) == 6
    target.dispose()


def test_a_new_optional_field_adds_a_nullable_column(
    tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    from cdc.schemas.wire import WireEncoder

    url = f"sqlite:///{tmp_path / 'evolve.db'}"
    feed = Feed(kafka_bootstrap, registry_url, topic_name)
    for i in range(10):
        feed.upsert(thing(i))
    v2 = {
        **VALUE,
        "fields": [*VALUE["fields"], {"name": "color", "type": ["null", "string"], "default": None}],
    }
    enc2 = WireEncoder(v2, feed.register(f"{topic_name}-value", v2))
    for i in range(5, 15):
        feed.upsert({**thing(i, 1), "color": f"c{i}"}, enc2)
    feed.flush()
    config = make_config(
        tmp_path, name=topic_name, topic=topic_name, url=url, bootstrap=kafka_bootstrap, registry=registry_url
    )
    sink = SinkProcess(config, tmp_path / "evolve.log")
    target = Target(url)
    try:
        wait_for(lambda: target.consumed(topic_name) >= feed.count, 60, "everything consumed")
        rows = target.rows("things")
        assert [rows[i]["color"] for i in range(15)] == [None] * 5 + [f"c{i}" for i in range(5, 15)]
        assert rows[9]["name"] == "thing-9-v1" and rows[4]["name"] == "thing-4-v0"
        assert sink.terminate() == 0
    finally:
        sink.ensure_stopped()
        target.dispose()
