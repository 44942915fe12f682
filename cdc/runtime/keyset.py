"""The keys an entity topic holds live: after a restart, the baseline of key-set delete detection.

A source that finds deletes by comparing key sets (polling's ``delete_detection``) only knows,
by itself, the keys it saw since it started; a row deleted while the connector was stopped, or
one not polled again since the restart, would never get its delete. The entity topic is the
record of what was emitted: its live keys (latest record per key not a tombstone) are read at
start-up, from the beginning to the current end with ``read_committed``, and handed to the
source (:meth:`cdc.plugin.SourceConnector.restore_keys`) before it starts.

Keys are compared by their Avro body under the stream's *current* key schema: every key read
from the topic is decoded with its writer schema (from the registry, by id), mapped back to
source columns, and re-encoded, so Python representations (a UUID object or its text, a
Decimal's exponent) never decide whether a key still exists. Cost: one pass over the topic
at start-up, only for streams that use key-set delete detection.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Message
from fastavro import parse_schema, schemaless_reader

from cdc.config.model import AppConfig, EventFormat
from cdc.errors import CdcError, SchemaError
from cdc.kafka_clients import read_topic
from cdc.plugin import SourceConnector
from cdc.runtime.livekeys import LiveKeys
from cdc.schemas.eventify import StreamEventifier
from cdc.schemas.subjects import make_client
from cdc.schemas.wire import split_header

log = logging.getLogger(__name__)


def streams_to_restore(app: AppConfig, source: SourceConnector) -> list[str]:
    """The source's key-set streams whose topics can be read back (entity format)."""
    wanted = set(source.key_set_streams())
    return [s.name for s in app.streams if s.name in wanted and s.format is EventFormat.ENTITY]


def unrestorable(app: AppConfig, source: SourceConnector) -> list[str]:
    """Warnings for key-set streams whose emitted keys cannot be read back at start-up."""
    restorable = set(streams_to_restore(app, source))
    return [
        f"stream {name!r}: deletes are found by comparing keys, but its emitted keys cannot be read "
        "back (envelope format): rows deleted while the connector is stopped get no delete event "
        "(use format entity)"
        for name in source.key_set_streams()
        if name not in restorable
    ]


def read_live_keys(
    app: AppConfig, eventifiers: Mapping[str, StreamEventifier], streams: list[str]
) -> LiveKeys:
    """Read each stream's topic to its end; return its live keys (see the module docstring)."""
    assert app.schema_registry is not None
    reg = app.schema_registry
    client = make_client(reg.url, reg.config)
    writers: dict[int, Any] = {}
    out: LiveKeys = {}
    for name in streams:
        started = time.monotonic()
        out[name] = _live_keys(app, eventifiers[name], client, writers)
        log.info(
            "stream %s: %d live keys read back from %s in %.1fs (delete detection baseline)",
            name,
            len(out[name]),
            eventifiers[name].topic,
            time.monotonic() - started,
        )
    return out


def _live_keys(
    app: AppConfig, ev: StreamEventifier, client: Any, writers: dict[int, Any]
) -> dict[bytes, dict[str, Any]]:
    assert app.kafka is not None
    seen: dict[bytes, tuple[bytes, dict[str, Any]]] = {}  # raw key -> (current body, columns)
    live: dict[bytes, dict[str, Any]] = {}

    def handle(msg: Message) -> None:
        raw = msg.key()
        if raw is None:
            return
        if raw not in seen:
            key = _decode(raw, client, writers, ev)
            seen[raw] = (ev.key_body(key), key)
        body, key = seen[raw]
        if msg.value() is None:
            live.pop(body, None)
        else:
            live[body] = key

    read_topic(app.kafka, ev.topic, f"cdc-keys-reader-{app.name}", handle)
    return live


def _decode(raw: bytes, client: Any, writers: dict[int, Any], ev: StreamEventifier) -> dict[str, Any]:
    try:
        schema_id, body = split_header(raw)
        if schema_id not in writers:
            writers[schema_id] = parse_schema(json.loads(client.get_schema(schema_id).schema_str))
        record = schemaless_reader(io.BytesIO(body), writers[schema_id], None)
        if not isinstance(record, dict):
            raise ValueError("not a record")
        return ev.key_columns_of(record)
    except CdcError:
        raise
    except Exception as exc:
        raise SchemaError(
            f"stream {ev.stream.name!r}: a key in topic {ev.topic!r} cannot be read back: {exc}",
            hint="the topic must hold only this connector's keys (or turn delete_detection off)",
        ) from None
