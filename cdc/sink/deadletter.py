"""The dead-letter producer: a poison message goes, byte for byte, to ``<topic>.sink-dlq``.

Dead letters are flushed before the batch's database transaction commits, so a message whose
offset is committed as consumed is always in its dead-letter topic (a crash in between may
dead-letter it twice, never zero times).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from cdc.errors import BrokerUnavailableError, DeliveryError
from cdc.kafka_clients import TopicSpec, ensure_topics, producer_config
from cdc.sink.config import SinkConfig

log = logging.getLogger(__name__)


class DeadLetters:
    """Produces raw poison messages with error headers; ``flush`` raises if any was not delivered."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        kafka = config.kafka
        ensure_topics(
            kafka,
            [
                TopicSpec(
                    config.dead_letter_topic(t.topic),
                    compacted=False,
                    partitions=kafka.topics.partitions,
                    replication_factor=kafka.topics.replication_factor,
                    config=dict(kafka.topics.config),
                )
                for t in config.topics
            ],
        )
        self._producer = Producer(producer_config(kafka, **{"linger.ms": 5}))
        self._failures: list[str] = []

    def send(self, msg: Any, error: Exception) -> None:
        """Queue the original message with headers naming where it came from and why it failed."""
        headers = list(msg.headers() or [])
        headers += [
            ("cdc.error.class", type(error).__name__.encode()),
            ("cdc.error.message", str(error).encode("utf-8", "replace")[:8000]),
            ("cdc.source.topic", msg.topic().encode()),
            ("cdc.source.partition", str(msg.partition()).encode()),
            ("cdc.source.offset", str(msg.offset()).encode()),
            ("cdc.sink.name", self.config.name.encode()),
        ]
        topic = self.config.dead_letter_topic(msg.topic())
        try:
            self._producer.produce(
                topic, msg.value(), msg.key(), headers=headers, on_delivery=self._delivered
            )
        except BufferError:
            self._producer.flush(30)
            self._producer.produce(
                topic, msg.value(), msg.key(), headers=headers, on_delivery=self._delivered
            )
        except KafkaException as exc:
            raise DeliveryError(f"dead-letter topic {topic!r}: {exc.args[0]}") from None
        log.warning(
            "dead-lettered %s[%s]@%s to %s: %s", msg.topic(), msg.partition(), msg.offset(), topic, error
        )

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err.str()}")

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every queued dead letter; raise (the batch then rolls back) if one failed."""
        left = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if left:
            raise BrokerUnavailableError(f"{left} dead letter(s) not delivered within {timeout:.0f}s")
        if failures:
            raise DeliveryError(f"dead letter(s) refused: {'; '.join(failures[:3])}")

    def close(self) -> None:
        self._producer.flush(10)
