"""The sink's configuration models. Every model forbids unknown keys, so a typo is an error."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from cdc.config.durations import Duration
from cdc.config.model import EventFormat, KafkaConfig, Name, OnError, RegistryConfig, Strict
from cdc.config.secrets import DsnField

_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]")


class SinkMode(StrEnum):
    INSERT = "insert"  # a key that exists already is a constraint violation (see on_error)
    UPSERT = "upsert"  # insert or update by key (idempotent: the default)
    UPDATE = "update"  # update existing keys only; unknown keys are ignored


class SinkTopic(Strict):
    """One consumed topic and the table it is written to."""

    topic: str = Field(description="the Kafka topic (keyed, Confluent-Avro)")
    table: str | None = Field(None, description="target table; default: the topic with non [A-Za-z0-9_] -> _")
    table_schema: str | None = Field(
        None, alias="schema", description="database schema of the table (MySQL: the database); default none"
    )
    mode: SinkMode = Field(SinkMode.UPSERT, description="insert, upsert or update")
    format: EventFormat = Field(
        EventFormat.ENTITY,
        description="entity (value = row, tombstone = delete; also plain Confluent-Avro topics) or envelope",
    )
    key: list[str] | None = Field(
        None,
        min_length=1,
        description="primary-key columns, taken from the value; default: the fields of the record key",
    )
    deletes: bool = Field(True, description="apply tombstones / delete ops (false: ignore them)")

    @property
    def table_name(self) -> str:
        return self.table or _NOT_IDENT.sub("_", self.topic)


class TargetConfig(Strict):
    url: DsnField = Field(description="SQLAlchemy URL: postgresql://, mysql://, sqlite:///path")
    offsets_table: str = Field("cdc_sink_offsets", description="the sink-owned table of consumed positions")


class SinkConfig(Strict):
    """A whole sink: which topics go into which tables of one target database."""

    name: Name = Field(description="sink name; the consumer group defaults to cdc-sink-<name>")
    topics: list[SinkTopic] = Field(min_length=1)
    target: TargetConfig
    kafka: KafkaConfig
    schema_registry: RegistryConfig
    group_id: str | None = Field(None, description="consumer group; default cdc-sink-<name>")
    consumer: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="extra librdkafka consumer properties"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a partition without a stored offset starts"
    )
    batch_size: int = Field(5000, ge=1, description="messages per database transaction (at most)")
    batch_timeout: Duration = Field(0.5, description="how long to wait to fill a batch")
    max_poll_interval_ms: int = Field(
        300_000, ge=1, description="max.poll.interval.ms: a slower batch loses the partitions"
    )
    on_error: OnError = Field(
        OnError.FAIL,
        description="a poison message: fail (stop) or dead_letter (to <topic>.sink-dlq, continue)",
    )
    dead_letter_suffix: str = Field(
        ".sink-dlq",
        description="dead-letter topic = <topic><suffix> (sources default to <topic>.source-dlq: never the same topic)",
    )
    auto_create: bool = Field(True, description="create missing tables from the Avro schema")
    auto_evolve: bool = Field(True, description="add a nullable column for a new optional field")
    retry_backoff_max: Duration = Field(30.0, description="cap of exponential retry backoff")

    @model_validator(mode="after")
    def _coherent(self) -> SinkConfig:
        names = [t.topic for t in self.topics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"topics: duplicate topics {dupes}")
        return self

    @property
    def group(self) -> str:
        return self.group_id or f"cdc-sink-{self.name}"

    def topic(self, name: str) -> SinkTopic:
        return next(t for t in self.topics if t.topic == name)

    def dead_letter_topic(self, topic: str) -> str:
        return f"{topic}{self.dead_letter_suffix}"
