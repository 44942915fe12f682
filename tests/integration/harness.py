"""Helpers for end-to-end tests: write configs, run `cdc` as a real process, read topics back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from fastavro import parse_schema, schemaless_reader

from cdc.schemas.wire import split_header

ROOT = Path(__file__).resolve().parents[2]

ITEM_KEY = {
    "type": "record",
    "name": "ItemKey",
    "namespace": "test.items",
    "fields": [{"name": "id", "type": "long"}],
}
ITEM_VALUE = {
    "type": "record",
    "name": "Item",
    "namespace": "test.items",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "updated_at", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    ],
}


def write_config(tmp: Path, text: str, schemas: dict[str, dict[str, Any]]) -> Path:
    for name, schema in schemas.items():
        (tmp / name).write_text(json.dumps(schema))
    path = tmp / "connector.yaml"
    path.write_text(text)
    return path


def cdc(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion."""
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CDC_LOG_FORMAT": "json", **(env or {})},
        cwd=ROOT,
        check=False,
    )


class Connector:
    """`cdc run CONFIG` as a child process (so tests can SIGTERM or kill -9 it)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop paths
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdc.cli", "run", str(config), "--log-format", "json"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def terminate(self, timeout: float = 60) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code, time.monotonic() - started

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ensure_stopped(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if not self._log.closed:
            self._log.close()


class TopicReader:
    """Reads a topic from the start and decodes keys/values with the registry's schemas."""

    def __init__(
        self, bootstrap: str, registry_url: str, topic: str, isolation: str = "read_committed"
    ) -> None:
        self.topic = topic
        self.registry = SchemaRegistryClient({"url": registry_url})
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"test-reader-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "isolation.level": isolation,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in self._partitions()])
        self.records: list[tuple[Any, Any, dict[str, bytes]]] = []
        self._schemas: dict[int, Any] = {}

    def _partitions(self) -> list[int]:
        for _ in range(60):
            meta = self.consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if meta is not None and meta.error is None and meta.partitions:
                return list(meta.partitions)
            time.sleep(0.5)
        raise AssertionError(f"topic {self.topic} never appeared")

    def _decode(self, data: bytes | None) -> Any:
        if data is None:
            return None
        schema_id, body = split_header(data)
        if schema_id not in self._schemas:
            text = self.registry.get_schema(schema_id).schema_str
            self._schemas[schema_id] = parse_schema(json.loads(text))
        return schemaless_reader(BytesIO(body), self._schemas[schema_id], None)

    def drain(self, idle: float = 1.0) -> list[tuple[Any, Any, dict[str, bytes]]]:
        """Read until nothing arrives for ``idle`` seconds; returns all records so far."""
        while True:
            msg = self.consumer.poll(idle)
            if msg is None:
                return self.records
            if msg.error():
                continue
            headers = dict(msg.headers() or [])
            self.records.append((self._decode(msg.key()), self._decode(msg.value()), headers))

    def written(self) -> int:
        """How many records the broker holds for the topic (its high watermarks), read without consuming.

        Tests that must kill a producer mid-stream time the kill with this: draining blocks until the
        stream is idle, so a reader that drains can only see a stream that has already ended.
        """
        total = 0
        for tp in self.consumer.assignment():
            _, high = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            total += high
        return total

    def latest(self) -> dict[Any, Any]:
        """The last value per key (None for a tombstone)."""
        out: dict[Any, Any] = {}
        for key, value, _ in self.records:
            out[json.dumps(key, sort_keys=True, default=str)] = value
        return out

    def wait_until(self, predicate: Callable[[dict[Any, Any]], bool], timeout: float = 60) -> dict[Any, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.drain(0.5)
            state = self.latest()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                return state
            time.sleep(0.2)

    def close(self) -> None:
        self.consumer.close()


def key_of(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def topics_exist(bootstrap: str, topics: list[str]) -> bool:
    present = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return all(t in present for t in topics)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def converged(expected: dict[str, Any], deleted: set[str]) -> Callable[[dict[str, Any]], bool]:
    """A TopicReader.wait_until predicate: every expected key holds its row, every deleted key a tombstone."""

    def check(state: dict[str, Any]) -> bool:
        return all(state.get(k) == v for k, v in expected.items()) and all(
            state.get(k, 1) is None for k in deleted
        )

    return check


def assert_matches(state: dict[str, Any], expected: dict[str, Any], deleted: set[str]) -> None:
    """Field by field per key: the topic's last record of each key equals the source row."""
    for key, row in expected.items():
        assert state.get(key) is not None, f"key {key} missing or deleted in the topic"
        for field, value in row.items():
            assert state[key][field] == value, f"key {key} field {field}: {state[key][field]!r} != {value!r}"
    for key in deleted:
        assert key in state and state[key] is None, f"deleted key {key} does not end in a tombstone"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """A throwaway instance of a test service (``scripts/services/<script> start|stop``) on a free
    port with its own state directory: for tests that restart, break or purge a server."""

    def __init__(self, script: str, port_variable: str, state: Path) -> None:
        self.script = script
        self.port = free_port()
        self.env = {**os.environ, "CDC_SERVICES_DIR": str(state), port_variable: str(self.port)}

    def run(self, action: str) -> None:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts/services" / self.script), action],
            env=self.env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
