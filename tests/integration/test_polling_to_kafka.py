"""The polling source end to end: real databases -> real Kafka with registry-encoded Avro.

For every key, the last record in the topic must equal the source row field by field, and deleted
keys must end in a tombstone - after restarts, SIGTERM and kill -9.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dbs import LegacyApp
from tests.integration.harness import ITEM_KEY, ITEM_VALUE, Connector, TopicReader, cdc, write_config

pytestmark = pytest.mark.integration

CONFIG = """
name: {name}
source:
  connector: polling
  url: {url}
  poll_interval: 200ms
  lag_window: {lag}
streams:
  - name: items
    topic: {topic}
    key_schema: key.avsc
    value_schema: value.avsc
    capture:
      table: items
      mode: timestamp+incrementing
      timestamp_column: updated_at
      incrementing_column: id
      delete_detection: {{interval: 1s}}
kafka:
  bootstrap_servers: {bootstrap}
schema_registry:
  url: {registry}
offsets:
  store: kafka
  topic: {topic}.offsets
  commit_interval: 200ms
delivery: {delivery}
runtime:
  metrics_log_interval: 2s
  shutdown_timeout: 20s
"""


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def source_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres":
        yield request.getfixturevalue("pg_database")
    elif request.param == "mysql":
        yield request.getfixturevalue("mysql_database")
    else:
        yield f"sqlite:///{tmp_path / 'legacy.db'}"


def make_config(
    tmp_path: Path, url: str, topic: str, bootstrap: str, registry: str, delivery: str = "at_least_once"
) -> Path:
    lag = "1s" if url.startswith("sqlite") else "0s"
    text = CONFIG.format(
        name=topic, url=url, topic=topic, bootstrap=bootstrap, registry=registry, delivery=delivery, lag=lag
    )
    return write_config(tmp_path, text, {"key.avsc": ITEM_KEY, "value.avsc": ITEM_VALUE})


def converged(expected: dict[str, Any], deleted: set[str]) -> Any:
    def check(state: dict[str, Any]) -> bool:
        return all(state.get(k) == v for k, v in expected.items()) and all(
            k in state and state[k] is None for k in deleted
        )

    return check


def assert_equal_field_by_field(state: dict[str, Any], expected: dict[str, Any], deleted: set[str]) -> None:
    for key, row in expected.items():
        assert key in state, f"key {key} never arrived"
        got = state[key]
        assert got is not None, f"key {key} ends in a tombstone but exists in the source"
        for field, value in row.items():
            assert got[field] == value, (
                f"key {key} field {field}: topic has {got[field]!r}, source has {value!r}"
            )
    for key in deleted:
        assert key in state and state[key] is None, f"deleted key {key} does not end in a tombstone"


def test_changes_arrive_keyed_and_equal_after_restart(
    tmp_path: Path, source_url: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    app = LegacyApp(source_url)
    ids = app.insert_many(200)
    config = make_config(tmp_path, source_url, topic_name, kafka_bootstrap, registry_url)
    assert cdc("validate", str(config)).returncode == 0
    unregistered = cdc("run", str(config))
    assert unregistered.returncode == 3, unregistered.stderr
    assert "not registered" in unregistered.stderr and "cdc schemas register" in unregistered.stderr
    reg = cdc("schemas", "register", str(config))
    assert reg.returncode == 0, reg.stderr

    reader: TopicReader | None = None
    conn = Connector(config, tmp_path / "run1.log")
    try:
        reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
        # Changes start once the initial load is in: a row deleted before it was ever captured
        # has nothing to tombstone, and the test would race the first poll.
        reader.wait_until(lambda s: len(s) >= len(ids), 60)
        app.update(ids[0], name="renamed", price=Decimal("9.99"))
        app.update(ids[1], price=Decimal("0.01"))
        app.delete(ids[2])
        time.sleep(1.5)  # let delete detection take its baseline, then delete again
        app.delete(ids[3])
        more = app.insert_many(20, start=1000)
        deleted = {f'{{"id": {ids[2]}}}', f'{{"id": {ids[3]}}}'}
        state = reader.wait_until(converged(app.expected(), deleted), timeout=60)
        assert_equal_field_by_field(state, app.expected(), deleted)
        # The contract hides the secret column.
        assert all(v is None or "secret" not in v for v in state.values())
        code, took = conn.terminate()
        assert code == 0, conn.log_text()[-3000:]
        assert took < 25
    finally:
        conn.ensure_stopped()

    # Changes while the connector is down are captured after restart.
    app.update(more[0], name="changed-while-down")
    app.insert_many(5, start=2000)
    conn = Connector(config, tmp_path / "run2.log")
    try:
        assert reader is not None
        state = reader.wait_until(converged(app.expected(), set()), timeout=60)
        assert_equal_field_by_field(state, app.expected(), set())
        status = cdc("status", str(config))
        assert status.returncode == 0, status.stderr
        assert "items:" in status.stdout and "lag items_seconds" in status.stdout
    finally:
        conn.terminate()
        conn.ensure_stopped()
        if reader is not None:
            reader.close()
        app.dispose()


def test_deletes_after_a_restart_are_detected(
    tmp_path: Path, mysql_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    """Issue 18: the key baseline after a restart comes from the topic's live keys, so rows deleted
    while the connector was stopped, and rows deleted after the restart that were not polled
    since, all end in a tombstone."""
    app = LegacyApp(mysql_database)
    ids = app.insert_many(12)
    config = make_config(tmp_path, mysql_database, topic_name, kafka_bootstrap, registry_url)
    assert cdc("schemas", "register", str(config)).returncode == 0
    conn = Connector(config, tmp_path / "run1.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) >= len(ids), 60)
        assert conn.terminate()[0] == 0, conn.log_text()[-3000:]
        for i in ids[:3]:  # while the connector is stopped
            app.delete(i)
        conn = Connector(config, tmp_path / "run2.log")
        down = {f'{{"id": {i}}}' for i in ids[:3]}
        state = reader.wait_until(converged(app.expected(), down), timeout=30)
        assert_equal_field_by_field(state, app.expected(), down)
        app.update(ids[5], name="polled after the restart")
        time.sleep(1)
        for i in ids[3:5]:  # not polled since the restart
            app.delete(i)
        deleted = down | {f'{{"id": {i}}}' for i in ids[3:5]}
        state = reader.wait_until(converged(app.expected(), deleted), timeout=30)
        assert_equal_field_by_field(state, app.expected(), deleted)
        assert "3 keys deleted while the connector was stopped" in conn.log_text()
    finally:
        conn.terminate()
        conn.ensure_stopped()
        reader.close()
        app.dispose()
