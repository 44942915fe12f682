"""Kafka client construction and topic management, shared by the runtime, offsets and sinks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from cdc.config.model import KafkaConfig
from cdc.errors import BrokerUnavailableError, DeliveryError
from cdc.kafka_logs import LIBRDKAFKA_LOGGER

log = logging.getLogger(__name__)

# Tuned producer defaults: idempotent, fully acknowledged, compressed, batched, and a bounded
# local queue (librdkafka's default is about 1 GiB; a full queue is back-pressure here).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "queue.buffering.max.kbytes": 65_536,
    "queue.buffering.max.messages": 200_000,
    "message.timeout.ms": 120_000,
    # Java's default partitioner hashes keys with murmur2; librdkafka's default is CRC32. The
    # same key must land on the same partition as from Debezium, Kafka Streams or any Java
    # producer (co-partitioned joins), so murmur2 it is. Override with kafka.producer.partitioner.
    "partitioner": "murmur2_random",
}


def client_config(kafka: KafkaConfig) -> dict[str, Any]:
    """Settings of every client; librdkafka's log lines go through Python logging (cdc.kafka_logs)."""
    return {"bootstrap.servers": kafka.bootstrap_servers, **kafka.client, "logger": LIBRDKAFKA_LOGGER}


def producer_config(kafka: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    return {**client_config(kafka), **PRODUCER_DEFAULTS, **kafka.producer, **overrides}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    compacted: bool
    partitions: int
    replication_factor: int
    config: dict[str, str]


def ensure_topics(kafka: KafkaConfig, specs: list[TopicSpec], timeout: float = 30.0) -> None:
    """Create missing topics with their configs; verify the cleanup policy of existing ones."""
    admin = AdminClient(client_config(kafka))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"kafka at {kafka.bootstrap_servers}: {exc.args[0]}") from None
    missing = [s for s in specs if s.name not in metadata.topics]
    if missing:
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication_factor,
                config={**s.config, "cleanup.policy": "compact" if s.compacted else "delete"},
            )
            for s in missing
        ]
        for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
            try:
                fut.result()
                log.info("created topic %s", name)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another instance won the race
                    raise DeliveryError(f"cannot create topic {name!r}: {exc.args[0].str()}") from None
    existing = [s for s in specs if s not in missing and s.compacted]
    if existing:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in existing]
        for res, fut in admin.describe_configs(resources).items():
            policy = fut.result()["cleanup.policy"].value
            if "compact" not in policy:
                raise DeliveryError(
                    f"topic {res.name!r} has cleanup.policy={policy}, but its stream is an entity stream "
                    "whose deletes are tombstones",
                    hint=f"kafka-configs --alter --entity-type topics --entity-name {res.name} "
                    "--add-config cleanup.policy=compact (or use format: envelope)",
                )
