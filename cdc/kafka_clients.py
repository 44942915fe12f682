"""Kafka client construction and topic management, shared by the runtime, offsets and sinks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from cdc.config.model import KafkaConfig
from cdc.errors import AuthenticationError, BrokerUnavailableError, DeliveryError
from cdc.kafka_logs import LIBRDKAFKA_LOGGER

log = logging.getLogger(__name__)

#: librdkafka error codes that mean "who you are" or "what you may do" was refused: fatal, not
#: a broker outage to wait out.
AUTH_ERROR_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)

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


def list_topics(client: Any, timeout: float, topic: str | None = None) -> Any:
    """``client.list_topics`` in slices of at most one second, so a stop signal is noticed (see
    cdc.runtime.signals.STOPPING); the last failure is raised once ``timeout`` has passed."""
    from cdc.runtime.signals import STOPPING

    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            return client.list_topics(topic, timeout=max(0.1, min(1.0, remaining)))
        except KafkaException:
            if remaining <= 1.0 or STOPPING.is_set():
                raise


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


def check_topics(kafka: KafkaConfig, specs: list[TopicSpec], timeout: float = 10.0) -> list[tuple[bool, str]]:
    """Preflight (``cdc check``): the broker answers with these client settings (TLS/SASL
    included), each topic exists with a cleanup policy that fits its stream, or this principal may
    create it (a validate-only request: nothing is created). Returns (ok, finding) pairs."""
    admin = AdminClient(client_config(kafka))
    try:
        metadata = list_topics(admin, timeout)
    except KafkaException as exc:
        return [
            (
                False,
                f"kafka at {kafka.bootstrap_servers} did not answer within {timeout:.0f}s: "
                f"{exc.args[0].str()} (check bootstrap_servers and kafka.client: security.protocol, "
                "sasl.*, ssl.*; a SASL or TLS client against a plaintext listener never connects)",
            )
        ]
    findings = [(True, f"kafka at {kafka.bootstrap_servers}: {len(metadata.brokers)} broker(s) answer")]
    missing = [s for s in specs if s.name not in metadata.topics]
    present = [s for s in specs if s.name in metadata.topics]
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in present]
        for spec, (_res, fut) in zip(present, admin.describe_configs(resources).items(), strict=True):
            try:
                policy = fut.result(timeout)["cleanup.policy"].value
            except KafkaException as exc:
                findings.append((False, f"topic {spec.name}: cannot read its config: {exc.args[0].str()}"))
                continue
            if spec.compacted and "compact" not in policy:
                findings.append(
                    (False, f"topic {spec.name}: cleanup.policy={policy}, but its entity stream needs "
                     "compact (deletes are tombstones): kafka-configs --alter --entity-type topics "
                     f"--entity-name {spec.name} --add-config cleanup.policy=compact")
                )  # fmt: skip
            elif not spec.compacted and "compact" in policy and "delete" not in policy:
                findings.append(
                    (False, f"topic {spec.name}: cleanup.policy={policy} would delete the history of an "
                     "event stream; use cleanup.policy=delete")
                )  # fmt: skip
            else:
                findings.append((True, f"topic {spec.name} exists (cleanup.policy={policy})"))
    if missing:
        new = [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                     config={**s.config, "cleanup.policy": "compact" if s.compacted else "delete"})
            for s in missing
        ]  # fmt: skip
        for name, fut in admin.create_topics(new, operation_timeout=timeout, validate_only=True).items():
            try:
                fut.result(timeout)
                findings.append(
                    (True, f"topic {name} is missing; this principal may create it (at start-up)")
                )
            except KafkaException as exc:
                findings.append(
                    (False, f"topic {name} is missing and cannot be created: {exc.args[0].str()} "
                     "(create it, or grant CREATE on it)")
                )  # fmt: skip
    return findings


#: metadata records per CreateTopics request: a KRaft controller refuses a request of more than
#: 10,000 ("Excessively large number of partitions per request"), one record per partition plus
#: the topic's own and its configs'; 1,000 topics of 16 partitions are created in several requests
MAX_RECORDS_PER_REQUEST = 5_000


def create_batches(topics: list[NewTopic], limit: int | None = None) -> list[list[NewTopic]]:
    """``topics`` in order, split into CreateTopics requests of at most ``limit`` metadata
    records each (MAX_RECORDS_PER_REQUEST; a topic larger than that alone)."""
    limit = MAX_RECORDS_PER_REQUEST if limit is None else limit
    batches: list[list[NewTopic]] = []
    size = 0
    for topic in topics:
        records = 1 + max(topic.num_partitions, 1) + len(topic.config or {})
        if not batches or size + records > limit:
            batches.append([])
            size = 0
        batches[-1].append(topic)
        size += records
    return batches


def ensure_topics(kafka: KafkaConfig, specs: list[TopicSpec], timeout: float = 30.0) -> None:
    """Create missing topics with their configs; verify the cleanup policy of existing ones."""
    admin = AdminClient(client_config(kafka))
    try:
        metadata = list_topics(admin, timeout)
    except KafkaException as exc:
        if exc.args[0].code() in AUTH_ERROR_CODES:
            raise AuthenticationError(
                f"kafka at {kafka.bootstrap_servers} refused the client: {exc.args[0].str()}",
                hint="fix kafka.client sasl.*/ssl.* settings or the principal's ACLs",
            ) from None
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
        for batch in create_batches(new):
            for name, fut in admin.create_topics(batch, operation_timeout=timeout).items():
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
        meta = list_topics(consumer, timeout, topic)
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
