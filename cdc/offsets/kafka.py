"""Offsets in a compacted Kafka topic (Kafka Connect's model).

Key: JSON ``[connector, partition]``; value: JSON offset. Loading reads the topic to its end
with ``read_committed``, so in exactly-once mode an aborted transaction's offset never counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message, Producer

from cdc.config.model import KafkaConfig
from cdc.errors import DeliveryError
from cdc.kafka_clients import TopicSpec, ensure_topics, producer_config, read_topic
from cdc.offsets import jsonvalues
from cdc.offsets.base import OffsetStore
from cdc.plugin import Offsets


class KafkaOffsetStore(OffsetStore):
    def __init__(self, connector: str, kafka: KafkaConfig, topic: str) -> None:
        super().__init__(connector)
        self.kafka = kafka
        self.topic = topic
        self._producer: Producer | None = None
        self._outstanding = 0
        self._failure: str | None = None
        ensure_topics(
            kafka,
            [TopicSpec(topic, True, 1, kafka.topics.replication_factor, {"min.compaction.lag.ms": "0"})],
        )

    def records(self, offsets: Offsets) -> list[tuple[bytes, bytes]]:
        """The (key, value) records that store these offsets (for a transactional producer)."""
        return [
            (
                json.dumps([self.connector, partition], separators=(",", ":")).encode(),
                jsonvalues.dumps(offset).encode(),
            )
            for partition, offset in offsets.items()
        ]

    def load(self) -> Offsets:
        self._producer_now()
        offsets: Offsets = {}

        def handle(msg: Message) -> None:
            key = json.loads(msg.key() or b"null")
            if key[0] == self.connector:
                value = msg.value()
                if value is None:
                    offsets.pop(key[1], None)
                else:
                    offsets[key[1]] = json.loads(value)

        read_topic(self.kafka, self.topic, f"cdc-offsets-reader-{self.connector}", handle)
        return offsets

    def _producer_now(self) -> Producer:
        # Created with load(), not at the first save: an idempotent producer needs a broker
        # connection and a producer id first, which took about a second here; the first save
        # would otherwise wait for it.
        if self._producer is None:
            self._producer = Producer(producer_config(self.kafka, **{"linger.ms": 0}))
        return self._producer

    def save_async(self, offsets: Offsets, done: Callable[[], None]) -> None:
        """Produce the offset records; ``done`` runs once the broker acknowledged all of them.

        The pipeline does not wait for the round trip (it used to block reading for it, which
        showed as latency spikes); the source is still acknowledged only after the broker ack.
        Completions run in save order: one partition, one producer, in-order delivery reports.
        """
        producer = self._producer_now()
        records = self.records(offsets)
        remaining = [len(records)]

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                if self._failure is None:
                    self._failure = err.str()
                return
            remaining[0] -= 1
            if remaining[0] == 0:
                self._outstanding -= 1
                done()

        self._outstanding += 1
        for key, value in records:
            while True:
                try:
                    producer.produce(self.topic, value=value, key=key, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)

    def serve(self) -> None:
        if self._producer is not None:
            self._producer.poll(0)
        if self._failure is not None:
            raise DeliveryError(f"offsets not stored in {self.topic}: {self._failure}")

    def flush(self, timeout: float) -> bool:
        if self._producer is not None:
            self._producer.flush(timeout)
        self.serve()
        return self._outstanding == 0

    def save(self, offsets: Offsets) -> None:
        self.save_async(offsets, lambda: None)
        if not self.flush(60):
            raise DeliveryError(f"offsets not stored in {self.topic}: flush timed out")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
