"""Delivery guarantees of the polling pipeline: late commits, kill -9, exactly-once, one instance,
rows that do not fit their schema."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cdc.sql.engines import normalize_url
from tests.integration.dbs import LegacyApp
from tests.integration.harness import Connector, TopicReader, cdc, key_of, wait_for
from tests.integration.test_polling_to_kafka import assert_equal_field_by_field, converged, make_config

pytestmark = pytest.mark.integration


def start_registered(config: Path, log: Path) -> Connector:
    reg = cdc("schemas", "register", str(config))
    assert reg.returncode == 0, reg.stderr
    return Connector(config, log)


def committed_offsets(config: Path) -> dict[str, Any]:
    out = cdc("status", str(config))
    assert out.returncode == 0, out.stderr
    for line in out.stdout.splitlines():
        if line.strip().startswith("items:"):
            return dict(json.loads(line.split(":", 1)[1]))
    return {}


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_late_committing_transaction_is_not_passed_over(
    dialect: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    topic_name: str,
    kafka_bootstrap: str,
    registry_url: str,
) -> None:
    url = request.getfixturevalue("pg_database" if dialect == "postgres" else "mysql_database")
    app = LegacyApp(url)
    early = app.insert_many(3)
    config = make_config(tmp_path, url, topic_name, kafka_bootstrap, registry_url)
    conn = start_registered(config, tmp_path / "run.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    late_engine = sa.create_engine(normalize_url(url))
    try:
        reader.wait_until(lambda s: len(s) >= 3, 60)
        # A transaction opens, writes a row stamped by the database (its start / statement time) ...
        late = late_engine.connect()
        late.begin()
        late_id = app.insert(late, "late", "1.00")
        late_stamp = late.execute(
            sa.select(app.table.c.updated_at).where(app.table.c.id == late_id)
        ).scalar_one()
        time.sleep(0.3)
        # ... while newer rows commit and get polled.
        newer = app.insert_many(5, start=100)
        time.sleep(3)  # several poll cycles while the late transaction is open
        state = reader.wait_until(lambda s: False, 1)
        offset = committed_offsets(config)
        assert offset, "nothing committed yet"
        committed_ts = offset["ts"]["datetime"]
        assert committed_ts < late_stamp.isoformat(), (
            "the committed offset passed an open transaction's start"
        )
        for i in newer:
            assert key_of({"id": i}) not in state, (
                "a row newer than an open transaction's start was delivered early"
            )
        late.commit()
        late.close()
        expected = app.expected()
        state = reader.wait_until(converged(expected, set()), 60)
        assert_equal_field_by_field(state, expected, set())
        assert key_of({"id": late_id}) in state and all(key_of({"id": i}) in state for i in early)
    finally:
        conn.terminate()
        conn.ensure_stopped()
        reader.close()
        late_engine.dispose()
        app.dispose()


class Writer(threading.Thread):
    """A legacy app under load: inserts and updates until stopped."""

    def __init__(self, app: LegacyApp, ids: list[int]) -> None:
        super().__init__(daemon=True)
        self.app, self.ids, self.stop = app, ids, threading.Event()
        self.changes = 0

    def run(self) -> None:
        n = 0
        while not self.stop.wait(0.01):
            n += 1
            if n % 3 == 0:
                self.ids.extend(self.app.insert_many(2, start=10_000 + n * 2))
            else:
                self.app.update(self.ids[n % len(self.ids)], price=Decimal(n % 5000) / 100, name=f"v{n}")
            self.changes += 1


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_kill_minus_9_loses_nothing(
    delivery: str, pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    app = LegacyApp(pg_database)
    ids = app.insert_many(300)
    config = make_config(tmp_path, pg_database, topic_name, kafka_bootstrap, registry_url, delivery)
    writer = Writer(app, ids)
    conn = start_registered(config, tmp_path / "run1.log")
    writer.start()
    try:
        time.sleep(4)
        conn.kill9()
        time.sleep(1)
        conn = Connector(config, tmp_path / "run2.log")
        time.sleep(3)
        conn.kill9()
        conn = Connector(config, tmp_path / "run3.log")
        time.sleep(2)
    finally:
        writer.stop.set()
        writer.join()
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name, isolation="read_committed")
    try:
        expected = app.expected()
        state = reader.wait_until(converged(expected, set()), 90)
        assert_equal_field_by_field(state, expected, set())
        assert writer.changes > 50
        if delivery == "exactly_once":
            # Each captured version of a row appears once; nothing from an aborted transaction.
            versions = Counter(
                (key_of(k), json.dumps(v, sort_keys=True, default=str)) for k, v, _ in reader.records
            )
            repeats = [kv for kv, n in versions.items() if n > 1]
            assert not repeats, f"{len(repeats)} records delivered twice to a read_committed consumer"
        code, _ = conn.terminate()
        assert code == 0
    finally:
        conn.ensure_stopped()
        reader.close()
        app.dispose()


def test_second_instance_is_refused(
    pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    app = LegacyApp(pg_database)
    app.insert_many(5)
    config = make_config(tmp_path, pg_database, topic_name, kafka_bootstrap, registry_url)
    first = start_registered(config, tmp_path / "first.log")
    try:
        wait_for(
            lambda: "starting connector" in first.log_text() and "metrics" in first.log_text(),
            60,
            "first run",
        )
        second = cdc("run", str(config), timeout=60)
        assert second.returncode == 6, second.stdout + second.stderr
        assert "another instance" in second.stderr
        assert first.alive()
    finally:
        first.terminate()
        first.ensure_stopped()
        app.dispose()


BAD_ROW_CONFIG_EXTRA = """    fields: {{name: secret}}
    on_error: {policy}
"""


@pytest.mark.parametrize("policy", ["fail", "dead_letter"])
def test_row_that_does_not_fit_its_schema(
    policy: str, pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    app = LegacyApp(pg_database)
    good = app.insert_many(3)
    with app.engine.begin() as c:
        bad = int(
            c.execute(
                sa.text("INSERT INTO items (name, price, secret) VALUES ('x', 1, NULL) RETURNING id")
            ).scalar_one()
        )
    with app.engine.begin() as c:
        c.execute(sa.text("UPDATE items SET secret = 'ok-' || id WHERE id <> :b"), {"b": bad})
    config = make_config(tmp_path, pg_database, topic_name, kafka_bootstrap, registry_url)
    text = config.read_text().replace(
        "    value_schema: value.avsc\n",
        "    value_schema: value.avsc\n" + BAD_ROW_CONFIG_EXTRA.format(policy=policy),
    )
    config.write_text(text)
    assert cdc("schemas", "register", str(config)).returncode == 0
    if policy == "fail":
        result = cdc("run", str(config), timeout=90)
        assert result.returncode == 4, result.stderr
        assert "stream 'items'" in result.stderr
        assert f"'id': {bad}" in result.stderr
        assert "field 'name'" in result.stderr
        assert "null" in result.stderr
        return
    conn = Connector(config, tmp_path / "run.log")
    dlq = None
    try:
        reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
        state = reader.wait_until(lambda s: all(key_of({"id": i}) in s for i in good), 60)
        assert all(key_of({"id": i}) in state for i in good)
        assert key_of({"id": bad}) not in state
        from confluent_kafka import Consumer, TopicPartition

        dlq = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"dlq-{topic_name}"})
        dlq.assign([TopicPartition(f"{topic_name}.source-dlq", 0, 0)])
        msg = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = dlq.poll(1)
            if msg is not None and not msg.error():
                break
        assert msg is not None and not msg.error()
        payload = json.loads(msg.value())
        assert payload["stream"] == "items"
        assert payload["field"] == "name"
        assert payload["key"] == {"id": bad}
        assert payload["row"]["id"] == bad
        assert conn.alive()
        reader.close()
    finally:
        if dlq is not None:
            dlq.close()
        conn.terminate()
        conn.ensure_stopped()
        app.dispose()
