"""Kafka client construction and topic management, shared by the runtime, offsets and sinks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from cdc.config.model import KafkaConfig
from cdc.errors import BrokerUnavailableError, DeliveryError

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
}


def client_config(kafka: KafkaConfig) -> dict[str, Any]:
    return {"bootstrap.servers": kafka.bootstrap_servers, **kafka.client}


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


def read_topic(
    kafka: KafkaConfig, topic: str, group: str, handle: Callable[[Message], None], timeout: float = 30.0
) -> None:
    """Pass every committed record of ``topic``, from its start to its end as of now, to ``handle``
    (in offset order per partition; read_committed, so aborted transactions are skipped)."""
    conf: dict[str, Any] = {
        **client_config(kafka),
        "group.id": group,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    }
    consumer = Consumer(conf)
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
        parts = list(meta.topics[topic].partitions)
        pending = {
            p
            for p in parts
            if consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] > 0
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        while pending:
            msg = consumer.poll(5.0)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.name() == "_PARTITION_EOF":
                    pending.discard(msg.partition())
                    continue
                raise BrokerUnavailableError(f"reading topic {topic}: {err.str()}")
            handle(msg)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"reading topic {topic}: {exc.args[0]}") from None
    finally:
        consumer.close()
