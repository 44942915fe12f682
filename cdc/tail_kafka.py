"""``cdc tail CONFIG``: the latest events of a connector's Kafka topics, decoded with the
registry's schemas (the file output has its own reader in :mod:`cdc.tail`)."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections import deque
from typing import Any

import typer
from fastavro import parse_schema, schemaless_reader

from cdc.config.model import AppConfig
from cdc.errors import ConfigError
from cdc.kafka_clients import read_topic
from cdc.schemas.subjects import make_client
from cdc.schemas.wire import split_header


class _Decoder:
    """Confluent wire format -> Python values, schemas fetched by id once."""

    def __init__(self, app: AppConfig) -> None:
        assert app.schema_registry is not None
        self.client = make_client(app.schema_registry.url, app.schema_registry.config)
        self.schemas: dict[int, Any] = {}

    def __call__(self, data: bytes | None) -> Any:
        if data is None:
            return None
        schema_id, body = split_header(data)
        if schema_id not in self.schemas:
            self.schemas[schema_id] = parse_schema(
                json.loads(self.client.get_schema(schema_id).schema_str or "")
            )
        return schemaless_reader(io.BytesIO(body), self.schemas[schema_id], None)


def tail_topics(app: AppConfig, streams: list[str], limit: int, wait: float) -> None:
    """Print the last ``limit`` events of each stream's topic; wait up to ``wait`` seconds for
    that many to exist (a connector that just started is still snapshotting)."""
    if app.kafka is None or app.schema_registry is None:
        raise ConfigError(["kafka/schema_registry: cdc tail CONFIG reads a Kafka output"], source="cdc tail")
    known = {s.name: s for s in app.streams}
    unknown = [s for s in streams if s not in known]
    if unknown:
        raise ConfigError(
            [f"--stream: unknown streams {unknown} (known: {', '.join(known)})"], source="cdc tail"
        )
    decode = _Decoder(app)
    for name in streams or list(known):
        topic = app.topic_of(known[name])
        deadline = time.monotonic() + wait
        while True:
            last: deque[Any] = deque(maxlen=limit)
            read_topic(app.kafka, topic, f"cdc-tail-{uuid.uuid4().hex[:8]}", last.append)
            if len(last) >= limit or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        typer.echo(f"--- {topic} (last {len(last)})")
        for msg in last:
            headers = dict(msg.headers() or [])
            op = headers.get("cdc.op", b"?").decode()
            key = json.dumps(decode(msg.key()), default=str)
            value = decode(msg.value())
            shown = "(tombstone)" if value is None else json.dumps(value, default=str)
            typer.echo(f"{op} key={key} value={shown}")
