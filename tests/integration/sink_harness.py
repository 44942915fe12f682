"""Helpers for the sink's end-to-end tests: produce registry-encoded records, run `cdc sink run`,
read the target tables back in a dialect-neutral form."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from cdc.schemas.wire import WireEncoder
from cdc.sql.engines import normalize_url
from tests.integration.harness import ROOT

KEY = {
    "type": "record",
    "name": "ThingKey",
    "namespace": "test.sink",
    "fields": [{"name": "id", "type": "long"}],
}
VALUE = {
    "type": "record",
    "name": "Thing",
    "namespace": "test.sink",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "seen_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local_at", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "active", "type": "boolean"},
        {"name": "score", "type": "double"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}

CONFIG = """
name: {name}
topics:
  - topic: {topic}
    table: {table}
    format: {format}
target:
  url: "{url}"
kafka:
  bootstrap_servers: "{bootstrap}"
schema_registry:
  url: "{registry}"
batch_size: {batch_size}
batch_timeout: 100ms
on_error: {on_error}
consumer:
  session.timeout.ms: 6000
  heartbeat.interval.ms: 500
"""


#: the sink side of the round-trip tests; ``topics`` is YAML list items
ROUND_TRIP_SINK = """
name: {name}-sink
topics:
{topics}
target: {{url: "{target}"}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}"}}
batch_size: 2000
batch_timeout: 200ms
on_error: fail
consumer: {{session.timeout.ms: 6000, heartbeat.interval.ms: 500}}
"""


def make_config(tmp: Path, file: str = "sink.yaml", **values: Any) -> Path:
    defaults: dict[str, Any] = {"table": "things", "format": "entity", "batch_size": 500, "on_error": "fail"}
    path = tmp / file
    path.write_text(CONFIG.format(**{**defaults, **values}))
    return path


def thing(i: int, version: int = 0) -> dict[str, Any]:
    """A value with every column type, different per key and version."""
    return {
        "id": i,
        "name": f"thing-{i}-v{version}",
        "price": Decimal(f"{(i * 7 + version) % 100000}.{(i + version) % 100:02d}"),
        "seen_at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i, microseconds=version + 1),
        "local_at": dt.datetime(2023, 6, 1, 12, 0) + dt.timedelta(minutes=i, microseconds=version),
        "day": dt.date(2020, 1, 1) + dt.timedelta(days=i % 1000),
        "ref": uuid.UUID(int=i * 1000 + version),
        "active": (i + version) % 2 == 0,
        "score": i / 8 + version,
        "tags": [f"t{version}", f"k{i % 5}"],
        "note": None if (i + version) % 3 == 0 else f"note {version}",
    }


class Feed:
    """A topic with registered key/value schemas and a producer of wire-format records."""

    def __init__(
        self,
        bootstrap: str,
        registry: str,
        topic: str,
        partitions: int = 1,
        key_schema: dict[str, Any] = KEY,
        value_schema: dict[str, Any] = VALUE,
    ) -> None:
        self.topic = topic
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for fut in admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        ).values():
            fut.result()
        self.client = SchemaRegistryClient({"url": registry})
        self.key = WireEncoder(key_schema, self.register(f"{topic}-key", key_schema))
        self.value = WireEncoder(value_schema, self.register(f"{topic}-value", value_schema))
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        self.expected: dict[int, dict[str, Any] | None] = {}
        self.count = 0

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        return int(self.client.register_schema(subject, Schema(json.dumps(schema), "AVRO")))

    def upsert(self, value: dict[str, Any], encoder: WireEncoder | None = None) -> None:
        self.send(self.key.encode({"id": value["id"]}), (encoder or self.value).encode(value))
        self.expected[value["id"]] = value

    def delete(self, i: int) -> None:
        self.send(self.key.encode({"id": i}), None)
        self.expected[i] = None

    def send(self, key: bytes | None, value: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value, key)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.count += 1

    def flush(self) -> None:
        assert self.producer.flush(60) == 0

    def live(self) -> dict[int, dict[str, Any]]:
        return {k: v for k, v in self.expected.items() if v is not None}


class SinkProcess:
    """`cdc sink run CONFIG` as a child process (so tests can SIGTERM or kill -9 it)."""

    def __init__(self, config: Path, log: Path, instance: str | None = None) -> None:
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop paths
        # Each instance its own static group member (the default, the host name, is shared here).
        env = {**os.environ, "CDC_INSTANCE_ID": instance or log.stem}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdc.cli", "sink", "run", str(config), "--log-format", "json"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def ensure_stopped(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if not self._log.closed:
            self._log.close()


class Target:
    """Reads the target database back: stored offsets and rows, normalized for comparison."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(normalize_url(url))
        self.dialect = "mysql" if self.engine.dialect.name == "mariadb" else self.engine.dialect.name

    def consumed(self, topic: str) -> int:
        """Sum of next_offset over the topic's partitions (0 before the first batch)."""
        if not sa.inspect(self.engine).has_table("cdc_sink_offsets"):
            return 0
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.text("SELECT SUM(next_offset) FROM cdc_sink_offsets WHERE topic = :t"), {"t": topic}
            ).scalar()
        return int(total or 0)

    def rows(self, table: str) -> dict[int, dict[str, Any]]:
        t = sa.Table(table, sa.MetaData(), autoload_with=self.engine)
        with self.engine.connect() as conn:
            return {int(r.id): dict(r._mapping) for r in conn.execute(sa.select(t))}

    def expect(self, value: dict[str, Any]) -> dict[str, Any]:
        """A produced value as this dialect stores it (UTC wall clock, uuid and JSON text elsewhere)."""
        out = dict(value)
        if self.dialect != "postgresql":
            out["seen_at"] = value["seen_at"].astimezone(dt.UTC).replace(tzinfo=None)
            out["ref"] = str(value["ref"])
            out["tags"] = json.dumps(value["tags"], separators=(",", ":"))
        return out

    def dispose(self) -> None:
        self.engine.dispose()


def assert_table_matches(target: Target, table: str, feed: Feed) -> None:
    """Every live key's row equals its last record field by field; deleted keys are gone."""
    rows = target.rows(table)
    for key, value in feed.expected.items():
        if value is None:
            assert key not in rows, f"deleted key {key} is still in {table}"
            continue
        assert key in rows, f"key {key} is missing from {table}"
        want = target.expect(value)
        for field, expected in want.items():
            got = rows[key][field]
            if isinstance(expected, bool):
                got = bool(got)
            assert got == expected, (
                f"key {key} field {field}: table has {got!r}, last record has {expected!r}"
            )
    assert len(rows) == len(feed.live()), f"{len(rows)} rows, {len(feed.live())} live keys"
