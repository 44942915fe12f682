"""The configuration models. Every model forbids unknown keys, so a typo is an error, not a default.

The connector-specific blocks (``source:`` and each stream's ``capture:``) are kept as plain
mappings here and validated by the chosen connector's own models in :mod:`cdc.config.loader`,
so that only the chosen connector's code is imported.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from cdc.config.durations import Duration
from cdc.config.secrets import DsnField
from cdc.shaping.config import Policy

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def _name_ok(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("use letters, digits, '.', '_' or '-' (at most 200)")
    return value


#: a connector, stream or sink name (it becomes part of topic, group and transactional ids)
Name = Annotated[str, AfterValidator(_name_ok)]


class Strict(BaseModel):
    """Base model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EventFormat(StrEnum):
    ENTITY = "entity"  # value = the mapped row; delete = tombstone; compacted topic
    ENVELOPE = "envelope"  # Debezium-style before/after/op/source/ts_ms


class OnError(StrEnum):
    FAIL = "fail"
    DEAD_LETTER = "dead_letter"


class Delivery(StrEnum):
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class SourceBlock(BaseModel):
    """``source:`` - ``connector`` names the plugin; every other key belongs to that connector."""

    model_config = ConfigDict(extra="allow", frozen=True)
    connector: str = Field(
        description="a registered source name (cdc connectors list) or package.module:Class"
    )

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class StreamConfig(Strict):
    """One stream: what to capture, which schemas it goes through, and where it goes."""

    name: Name = Field(description="unique stream name; also the default topic suffix")
    topic: str | None = Field(None, description="Kafka topic; default <topic_prefix>.<name>")
    key_schema: Path = Field(description="the key's .avsc, relative to the config file")
    value_schema: Path = Field(description="the value's .avsc (the row's data contract)")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="avro field -> source column, where the names differ (others map by name)",
    )
    symbol_maps: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="per enum field, source label -> Avro symbol (e.g. PG-13 -> PG_13)"
    )
    format: EventFormat = Field(EventFormat.ENTITY, description="entity (compacted) or envelope")
    on_error: OnError = Field(OnError.FAIL, description="what a row that does not fit its schema does")
    dead_letter_topic: str | None = Field(
        None,
        description="default <topic>.source-dlq when on_error=dead_letter (distinct from a sink's <topic>.sink-dlq)",
    )
    capture: dict[str, Any] = Field(default_factory=dict, description="connector-specific options")
    policies: dict[str, Policy] = Field(
        default_factory=dict,
        description="avro field -> column policy (mask, hash, truncate, null), applied to keys and images",
    )
    where: str | None = Field(
        None, description="row filter in the filter language, e.g. \"status != 'draft' and amount > 0\""
    )


class TopicDefaults(Strict):
    partitions: int = Field(1, ge=1, description="partitions of topics the service creates")
    replication_factor: int = Field(1, ge=1, description="replication factor of created topics")
    config: dict[str, str] = Field(default_factory=dict, description="extra topic configs for created topics")


class KafkaConfig(Strict):
    bootstrap_servers: str = Field(description="host:port[,host:port]")
    topic_prefix: str = Field("cdc", description="default topics are <topic_prefix>.<stream>")
    topics: TopicDefaults = Field(default_factory=lambda: TopicDefaults())
    client: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="librdkafka properties for every client (TLS/SASL: security.protocol, ssl.*, sasl.*)",
    )
    producer: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="librdkafka producer properties (override the tuned defaults)"
    )


class RegistryConfig(Strict):
    url: str = Field(description="Confluent-compatible schema registry URL")
    config: dict[str, str] = Field(
        default_factory=dict, description="client options passed through (basic.auth.user.info, ssl.*)"
    )
    auto_register: bool = Field(False, description="register schemas at start-up instead of failing")
    allow_key_schema_change: bool = Field(False, description="permit registering a changed key schema")


class FileOutput(Strict):
    kind: Literal["file"]
    directory: Path = Field(description="Avro object container files, one per topic")


class KafkaOutput(Strict):
    kind: Literal["kafka"] = "kafka"


class OffsetsConfig(Strict):
    store: Literal["kafka", "file", "database"] = Field(
        "kafka", description="where committed positions live: a compacted topic, a file, a table"
    )
    topic: str = Field("cdc-offsets", description="offsets topic (store=kafka)")
    path: Path | None = Field(None, description="offsets file (store=file)")
    url: DsnField | None = Field(None, description="SQLAlchemy URL (store=database)")
    table: str = Field("cdc_offsets", description="offsets table (store=database)")
    commit_interval: Duration = Field(1.0, description="how often delivered positions are committed")


class RuntimeConfig(Strict):
    http_host: str = Field("127.0.0.1", description="health and metrics endpoint host")
    http_port: int | None = Field(None, ge=0, le=65535, description="health/metrics port; none disables")
    metrics_log_interval: Duration = Field(30.0, description="period of the one-line metrics log")
    shutdown_timeout: Duration = Field(30.0, description="bound on flush+commit after SIGTERM")
    max_batch: int = Field(5000, ge=1, description="events per produce batch / transaction")
    max_in_flight: int = Field(100_000, ge=1, description="undelivered events before reading pauses")
    retry_backoff_max: Duration = Field(30.0, description="cap of exponential retry backoff")
    unhealthy_after: Duration = Field(
        300.0,
        description="/healthz answers 503 once retriable failures (a database or broker down) have lasted this long",
    )
    standby: bool = Field(
        False,
        description="hot standby: when another instance of this connector holds the lease, wait for "
        "it (checking every second; /healthz alive, /readyz 503 'standby') and take over from the "
        "committed offsets once that instance stops or dies, instead of exiting with code 6",
    )
    capture: Literal["auto", "process", "inline"] = Field(
        "auto",
        description="where the source reads, converts and Avro-encodes: 'process' (a child process, "
        "so reading and producing use two cores), 'inline' (one process), 'auto' (process with a "
        "Kafka output, except for sources whose events arrive encoded, e.g. the outbox relay; "
        "inline with the file output)",
    )


class TransactionsConfig(Strict):
    topic: str | None = Field(None, description="default <kafka.topic_prefix>.transactions")


class AppConfig(Strict):
    """A whole connector: one source, its streams, and where the events go."""

    name: Name = Field(description="connector name: lease, offsets and transactional.id derive from it")
    source: SourceBlock
    streams: list[StreamConfig] = Field(min_length=1)
    kafka: KafkaConfig | None = None
    schema_registry: RegistryConfig | None = None
    output: KafkaOutput | FileOutput = Field(default_factory=KafkaOutput, discriminator="kind")
    offsets: OffsetsConfig = Field(default_factory=lambda: OffsetsConfig())
    delivery: Delivery = Delivery.AT_LEAST_ONCE
    runtime: RuntimeConfig = Field(default_factory=lambda: RuntimeConfig())
    transactions: TransactionsConfig | None = Field(
        None, description="publish BEGIN/END transaction metadata records (sources that report transactions)"
    )
    # Set by the loader: the directory relative paths are resolved against.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _coherent(self) -> AppConfig:
        problems: list[str] = []
        names = [s.name for s in self.streams]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"streams: duplicate stream names {dupes}")
        if isinstance(self.output, KafkaOutput):
            if self.kafka is None:
                problems.append("kafka: required when output.kind is kafka")
            if self.schema_registry is None:
                problems.append("schema_registry: required when output.kind is kafka")
        if self.delivery is Delivery.EXACTLY_ONCE:
            if self.offsets.store != "kafka":
                problems.append(
                    "delivery: exactly_once needs offsets.store: kafka (events and offsets commit "
                    "in one Kafka transaction; a file or database store cannot join it)"
                )
            if not isinstance(self.output, KafkaOutput):
                problems.append("delivery: exactly_once needs output.kind: kafka")
        if self.offsets.store == "kafka" and self.kafka is None:
            problems.append("offsets.store: kafka needs a kafka: block (or use store: file)")
        if self.offsets.store == "file" and self.offsets.path is None:
            problems.append("offsets.path: required when offsets.store is file")
        if self.offsets.store == "database" and self.offsets.url is None:
            problems.append("offsets.url: required when offsets.store is database")
        for s in self.streams:
            if s.on_error is OnError.DEAD_LETTER and not isinstance(self.output, KafkaOutput):
                problems.append(f"streams[{s.name}].on_error: dead_letter needs output.kind: kafka")
        if problems:
            raise ValueError("\n".join(problems))  # one problem a line: a problem may contain "; "
        return self

    def topic_of(self, stream: StreamConfig) -> str:
        prefix = self.kafka.topic_prefix if self.kafka else "cdc"
        return stream.topic or f"{prefix}.{stream.name}"

    def dead_letter_topic_of(self, stream: StreamConfig) -> str:
        # a routed topic ("orders.{region}") without its braces
        base = self.topic_of(stream).replace("{", "").replace("}", "")
        return stream.dead_letter_topic or f"{base}.source-dlq"

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path).resolve()
