"""Where eventified records go: Kafka (Confluent wire format) or local Avro files (embedded demo).

An output reports each record's fate to the AckTracker by sequence number; nothing upstream is
acknowledged until the tracker says the record is delivered.
"""

from __future__ import annotations

import abc
import json
import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from fastavro import parse_schema, writer
from fastavro import reader as fastavro_reader

from cdc.config.model import AppConfig, EventFormat, KafkaOutput, StreamConfig
from cdc.errors import AuthenticationError, BrokerUnavailableError, DeliveryError
from cdc.kafka_clients import AUTH_ERROR_CODES, TopicSpec, ensure_topics, producer_config
from cdc.runtime.acks import AckTracker
from cdc.runtime.encoding import RecordEncoder, SchemaIds
from cdc.runtime.routing import Encoded
from cdc.schemas.eventify import Record, StreamEventifier
from cdc.schemas.subjects import SubjectSchema, for_each_subject, make_client, register, resolve_id

log = logging.getLogger(__name__)


def subjects_of(eventifiers: dict[str, StreamEventifier]) -> list[tuple[str, SubjectSchema, SubjectSchema]]:
    """Each stream's key and value subjects (TopicNameStrategy: <topic>-key, <topic>-value)."""
    return [
        (
            name,
            SubjectSchema(f"{ev.topic}-key", ev.key_schema, True),
            SubjectSchema(f"{ev.topic}-value", ev.value_schema, False),
        )
        for name, ev in eventifiers.items()
    ]


class Output(abc.ABC):
    """A destination for records."""

    def __init__(self, app: AppConfig, eventifiers: dict[str, StreamEventifier], tracker: AckTracker) -> None:
        self.app = app
        self.eventifiers = eventifiers
        self.tracker = tracker

    @abc.abstractmethod
    def prepare(self) -> None:
        """Create topics/files and resolve schemas; fail before the first event is read."""

    @abc.abstractmethod
    def send(self, record: Record, seq: int | None) -> None: ...

    @abc.abstractmethod
    def send_dead_letter(self, topic: str, key: Any, payload: dict[str, Any], seq: int | None) -> None: ...

    def send_encoded(self, record: Encoded, seq: int | None) -> None:
        """Send a record a capture process already serialized (Kafka outputs only)."""
        raise DeliveryError(f"{type(self).__name__} cannot send pre-serialized records")

    @abc.abstractmethod
    def poll(self, timeout: float) -> None:
        """Serve delivery reports."""

    @abc.abstractmethod
    def flush(self, timeout: float) -> int:
        """Wait for outstanding deliveries; return how many are still outstanding."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def stream_topic_spec(app: AppConfig, stream: StreamConfig, topic: str, *, event_streams: bool) -> TopicSpec:
    """How a stream's topic is created: compacted for entity streams, unless they carry events."""
    assert app.kafka is not None
    t = app.kafka.topics
    compacted = stream.format is EventFormat.ENTITY and not event_streams
    return TopicSpec(topic, compacted, t.partitions, t.replication_factor, dict(t.config))


def topic_specs_of(
    app: AppConfig, eventifiers: dict[str, StreamEventifier], *, event_streams: bool
) -> list[TopicSpec]:
    """The topics a connector writes: its streams' (compacted for entity streams, unless they carry
    events) and their dead-letter topics. The offsets topic is the offset store's own."""
    assert app.kafka is not None
    t = app.kafka.topics
    specs: dict[str, TopicSpec] = {}
    for stream in app.streams:
        ev = eventifiers[stream.name]
        if ev.route is None:  # a routed stream's topics are created as they appear
            specs[ev.topic] = stream_topic_spec(app, stream, ev.topic, event_streams=event_streams)
        if stream.on_error.value == "dead_letter":
            dlq = app.dead_letter_topic_of(stream)
            specs[dlq] = TopicSpec(dlq, False, 1, t.replication_factor, {})
    return list(specs.values())


class KafkaRecordOutput(Output):
    """Produces keyed records in the Confluent wire format to Kafka."""

    def __init__(
        self,
        app: AppConfig,
        eventifiers: dict[str, StreamEventifier],
        tracker: AckTracker,
        transactional_id: str | None = None,
        event_streams: bool = False,
    ) -> None:
        super().__init__(app, eventifiers, tracker)
        assert app.kafka is not None and app.schema_registry is not None
        # Event streams (outbox events) are facts, not entity state: compaction by key would
        # delete an aggregate's history, so their topics use the delete policy.
        self.event_streams = event_streams
        self.kafka = app.kafka
        extra: dict[str, Any] = {}
        if transactional_id:
            # A transaction must finish well inside transaction.timeout.ms; librdkafka requires
            # message.timeout.ms <= transaction.timeout.ms.
            extra = {
                "transactional.id": transactional_id,
                "transaction.timeout.ms": 60_000,
                "message.timeout.ms": 55_000,
            }
        try:
            self.producer = Producer(producer_config(self.kafka, **extra, error_cb=self._on_error))
        except KafkaException as exc:
            raise DeliveryError(
                f"cannot create the Kafka producer: {exc.args[0].str()}",
                hint="check kafka.producer/kafka.client",
            ) from None
        self.encoder: RecordEncoder | None = None
        self._topics: set[str] = set()  # topics known to exist (created or checked)
        self._fatal: str | None = None
        self._auth = False

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() in AUTH_ERROR_CODES:
            self._fatal = err.str()
            self._auth = err.code() in AUTH_ERROR_CODES
        else:
            log.warning("kafka: %s", err.str())

    def topic_specs(self) -> list[TopicSpec]:
        return topic_specs_of(self.app, self.eventifiers, event_streams=self.event_streams)

    def prepare(self) -> None:
        reg = self.app.schema_registry
        assert reg is not None
        client = make_client(reg.url, reg.config)
        subjects = subjects_of(self.eventifiers)
        resolve: Callable[[SubjectSchema], int] = (
            partial(register, client, allow_key_change=reg.allow_key_schema_change)
            if reg.auto_register
            else partial(resolve_id, client)
        )
        # concurrently: with a thousand streams, one subject after another took most of start-up
        found = for_each_subject(resolve, [item for _, key, value in subjects for item in (key, value)])
        ids: SchemaIds = {name: (found[2 * i], found[2 * i + 1]) for i, (name, _, _) in enumerate(subjects)}
        self.encoder = RecordEncoder(self.eventifiers, ids, lambda: client)
        specs = self.topic_specs()
        ensure_topics(self.kafka, specs)
        self._topics = {spec.name for spec in specs}

    def _report(self, seq: int, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.tracker.delivered(seq)
        else:
            self.tracker.failed(seq, err.str())

    def _produce(self, topic: str, key: bytes, value: bytes | None, headers: Any, seq: int | None) -> None:
        cb = None if seq is None else partial(self._report, seq)
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=cb)
                return
            except BufferError:
                # The bounded local queue is full: back-pressure. Serve reports and retry.
                self.producer.poll(0.05)
            except KafkaException as exc:
                raise DeliveryError(f"producing to {topic!r}: {exc.args[0].str()}") from None

    @property
    def schema_ids(self) -> SchemaIds:
        """Per stream (key id, value id); known after prepare()."""
        assert self.encoder is not None, "prepare() first"
        return self.encoder.ids

    def send(self, record: Record, seq: int | None) -> None:
        assert self.encoder is not None, "prepare() first"
        key, value = self.encoder.encode(record)
        if record.topic not in self._topics:
            self._new_topic(record.stream, record.topic)
        self._produce(record.topic, key, value, record.headers, seq)

    def send_encoded(self, record: Encoded, seq: int | None) -> None:
        if record.topic not in self._topics:
            self._new_topic(record.stream, record.topic)
        self._produce(record.topic, record.key, record.value, record.headers, seq)

    def _new_topic(self, stream: str, topic: str) -> None:
        """A routed stream's first record for a topic: create it like the stream's own topics."""
        config = next(s for s in self.app.streams if s.name == stream)
        ensure_topics(
            self.kafka, [stream_topic_spec(self.app, config, topic, event_streams=self.event_streams)]
        )
        self._topics.add(topic)

    def send_dead_letter(self, topic: str, key: Any, payload: dict[str, Any], seq: int | None) -> None:
        body = json.dumps(payload, default=str).encode()
        headers = [("cdc.error", str(payload.get("error", "")).encode()[:1000])]
        self._produce(topic, json.dumps(key, default=str).encode(), body, headers, seq)

    def send_raw(self, topic: str, key: bytes, value: bytes, seq: int | None = None) -> None:
        self._produce(topic, key, value, None, seq)

    def poll(self, timeout: float) -> None:
        self.producer.poll(timeout)
        if self._fatal:
            if self._auth:
                raise AuthenticationError(
                    f"kafka refused the client's credentials or rights: {self._fatal}",
                    hint="fix kafka.client sasl.*/ssl.* settings or the principal's ACLs",
                )
            raise DeliveryError(f"kafka producer fatal error: {self._fatal}")

    def flush(self, timeout: float) -> int:
        return int(self.producer.flush(timeout))

    # --- transactions (delivery: exactly_once) ---
    def init_transactions(self, timeout: float = 60.0) -> None:
        try:
            self.producer.init_transactions(timeout)
        except KafkaException as exc:
            raise BrokerUnavailableError(f"init_transactions: {exc.args[0].str()}") from None

    def begin(self) -> None:
        self.producer.begin_transaction()

    def commit(self, timeout: float = 60.0) -> None:
        try:
            self.producer.commit_transaction(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if err.txn_requires_abort():
                self.producer.abort_transaction(timeout)
            raise DeliveryError(f"transaction commit failed: {err.str()}") from None

    def abort(self, timeout: float = 30.0) -> None:
        try:
            self.producer.abort_transaction(timeout)
        except KafkaException as exc:
            log.warning("abort_transaction: %s", exc.args[0].str())


def _event_file_schema(ev: StreamEventifier) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "CapturedEvent",
        "namespace": "io.liberator.cdc.file",
        "fields": [
            {"name": "key", "type": ev.key_schema},
            {"name": "value", "type": ["null", ev.value_schema]},
            {"name": "headers", "type": {"type": "map", "values": "string"}},
        ],
    }


class FileRecordOutput(Output):
    """Appends records to one Avro object container file per topic; delivered once fsynced."""

    def __init__(
        self, app: AppConfig, eventifiers: dict[str, StreamEventifier], tracker: AckTracker, directory: Path
    ) -> None:
        super().__init__(app, eventifiers, tracker)
        self.directory = directory
        self._pending: dict[str, list[tuple[dict[str, Any], int]]] = {}
        self._pending_count = 0
        self._schemas: dict[str, Any] = {}

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for ev in self.eventifiers.values():
            self._schemas[ev.topic] = parse_schema(_event_file_schema(ev), _write_hint=False)

    def path_of(self, topic: str) -> Path:
        return self.directory / f"{topic}.avro"

    def live_keys(self, ev: StreamEventifier) -> dict[bytes, dict[str, Any]]:
        """The keys the stream's file holds live (last record per key not a tombstone), as
        key body -> source columns: the baseline of key-set delete detection after a restart."""
        live: dict[bytes, dict[str, Any]] = {}
        path = self.path_of(ev.topic)
        if not path.is_file():
            return live
        with open(path, "rb") as fh:
            for row in fastavro_reader(fh):
                assert isinstance(row, dict)
                columns = ev.key_columns_of(row["key"])
                body = ev.key_body(columns)
                if row["value"] is None:
                    live.pop(body, None)
                else:
                    live[body] = columns
        return live

    def send(self, record: Record, seq: int | None) -> None:
        if record.encoded_value is not None:
            raise DeliveryError("pre-encoded values (outbox) need output.kind: kafka")
        headers = {k: v.decode() for k, v in record.headers}
        row = {"key": record.key, "value": record.value, "headers": headers}
        self._pending.setdefault(record.topic, []).append((row, -1 if seq is None else seq))
        self._pending_count += 1

    def send_dead_letter(self, topic: str, key: Any, payload: dict[str, Any], seq: int | None) -> None:
        raise DeliveryError("dead-letter routing needs output.kind: kafka")

    def poll(self, timeout: float) -> None:
        if self._pending_count >= 1000:
            self.flush(timeout)

    def flush(self, timeout: float) -> int:
        for topic, rows in self._pending.items():
            if not rows:
                continue
            path = self.path_of(topic)
            with open(path, "a+b") as fh:
                writer(fh, self._schemas[topic], [r for r, _ in rows])
                fh.flush()
                os.fsync(fh.fileno())
            for _, seq in rows:
                if seq >= 0:
                    self.tracker.delivered(seq)
            rows.clear()
        self._pending_count = 0
        return 0


def make_output(
    app: AppConfig,
    eventifiers: dict[str, StreamEventifier],
    tracker: AckTracker,
    transactional_id: str | None,
    event_streams: bool = False,
) -> Output:
    if isinstance(app.output, KafkaOutput):
        return KafkaRecordOutput(app, eventifiers, tracker, transactional_id, event_streams)
    return FileRecordOutput(app, eventifiers, tracker, app.resolve(app.output.directory))
