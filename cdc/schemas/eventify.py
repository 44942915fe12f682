"""Eventification: a captured change -> key and value records of the stream's explicit schemas.

The ``.avsc`` is the data contract, not the table: only mapped fields leave the database, under
their contract names. A row that does not fit raises RowError (stream, key, field, reason).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import orjson
from fastavro import parse_schema, schemaless_writer

from cdc.config.model import AppConfig, EventFormat, StreamConfig
from cdc.plugin import ChangeEvent, EncodedValue, Op
from cdc.schemas.avsc import envelope_schema, load_avsc
from cdc.schemas.convert import RecordConverter, compile_record
from cdc.shaping.routes import TopicRoute, base_name, is_routed
from cdc.shaping.shaper import StreamShaper

_OP_BYTES = {op: op.value.encode() for op in Op}


@dataclass(slots=True)
class Record:
    """One Kafka record before serialization."""

    stream: str
    topic: str
    key: dict[str, Any]
    value: dict[str, Any] | None  # None: a tombstone (unless encoded_value is set)
    headers: list[tuple[str, bytes]]
    encoded_value: EncodedValue | None = None  # the application encoded it: produced as is


def position_bytes(event: ChangeEvent) -> bytes:
    """The event's source position as compact JSON (orjson: this runs once per event)."""
    return orjson.dumps({"partition": event.partition, "offset": event.offset}, default=str)


def position_text(event: ChangeEvent) -> str:
    return position_bytes(event).decode()


class StreamEventifier:
    """Maps one stream's change events onto its key and value schemas."""

    def __init__(self, app: AppConfig, stream: StreamConfig) -> None:
        self.app = app
        self.stream = stream
        template = app.topic_of(stream)
        #: the topic; for a routed stream (``orders.{region}``) the template without braces,
        #: the stem of its subjects
        self.topic = base_name(template)
        self.key_schema = load_avsc(app.resolve(stream.key_schema))
        self.row_schema = load_avsc(app.resolve(stream.value_schema))
        self.value_schema = (
            envelope_schema(self.row_schema) if stream.format is EventFormat.ENVELOPE else self.row_schema
        )
        self._key = compile_record(self.key_schema, stream=stream.name, field_map=stream.fields)
        self._row: RecordConverter = compile_record(
            self.row_schema, stream=stream.name, field_map=stream.fields, symbol_maps=stream.symbol_maps
        )
        self.key_columns: tuple[str, ...] = self._key.source_columns
        self.columns: tuple[str, ...] = tuple(
            dict.fromkeys(self._key.source_columns + self._row.source_columns)
        )
        self._envelope = stream.format is EventFormat.ENVELOPE
        self._key_parsed: Any = None
        #: renders the topic of a routed stream per event (None: one fixed topic)
        self.route = (
            TopicRoute(stream.name, template, self.key_schema, self.row_schema, stream.fields)
            if is_routed(template)
            else None
        )
        #: the stream's filter and column policies (None: it has neither)
        self.shaper: StreamShaper | None = None
        if stream.policies or stream.where is not None:
            self.shaper = StreamShaper(
                stream.name, stream.policies, stream.where, self.key_schema, self.row_schema,
                stream.fields, app.base_dir,
            )  # fmt: skip

    def key_of(self, event: ChangeEvent) -> dict[str, Any]:
        return self._key(event.key, event.key)

    def key_body(self, key: dict[str, Any]) -> bytes:
        """The Avro body (no wire header) of a key given as source column values."""
        if self._key_parsed is None:
            self._key_parsed = parse_schema(self.key_schema)
        buf = io.BytesIO()
        schemaless_writer(buf, self._key_parsed, self._key(key, key))
        return buf.getvalue()

    def key_columns_of(self, record: dict[str, Any]) -> dict[str, Any]:
        """A decoded key record (Avro field names) as source column values."""
        return {self.stream.fields.get(name, name): value for name, value in record.items()}

    def __call__(self, event: ChangeEvent) -> Record:
        key = self._key(event.key, event.key)
        topic = self.topic if self.route is None else self.route(event)
        if event.encoded_value is not None:
            headers = [("cdc.op", _OP_BYTES[event.op]), ("cdc.position", position_bytes(event))]
            if event.headers:
                headers.extend(event.headers)
            return Record(self.stream.name, topic, key, None, headers, event.encoded_value)
        if self._envelope:
            value: dict[str, Any] | None = {
                "before": None if event.before is None else self._row(event.before, event.key),
                "after": None if event.after is None else self._row(event.after, event.key),
                "source": {
                    "connector": self.app.source.connector,
                    "name": self.app.name,
                    "stream": self.stream.name,
                    "ts_ms": event.ts_ms,
                    "txid": event.txid,
                    "snapshot": event.op is Op.READ,
                    "position": position_text(event),
                },
                "op": event.op.value,
                "ts_ms": int(time.time() * 1000),
            }
        elif event.op is Op.DELETE or event.after is None:
            value = None
        else:
            value = self._row(event.after, event.key)
        headers = [("cdc.op", _OP_BYTES[event.op]), ("cdc.position", position_bytes(event))]
        if event.txid is not None:
            headers.append(("cdc.txid", event.txid.encode()))
        if event.ts_ms is not None:
            headers.append(("cdc.commit_ts_ms", str(event.ts_ms).encode()))
        if event.headers:
            headers.extend(event.headers)
        return Record(self.stream.name, topic, key, value, headers)
