"""Offsets in a compacted Kafka topic (Kafka Connect's model).

Key: JSON ``[connector, partition]``; value: JSON offset. Loading reads the topic to its end
with ``read_committed``, so in exactly-once mode an aborted transaction's offset never counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from cdc.config.model import KafkaConfig
from cdc.errors import BrokerUnavailableError, DeliveryError
from cdc.kafka_clients import TopicSpec, client_config, ensure_topics, list_topics, producer_config
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
        conf: dict[str, Any] = {
            **client_config(self.kafka),
            "group.id": f"cdc-offsets-reader-{self.connector}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
        consumer = Consumer(conf)
        offsets: Offsets = {}
        try:
            meta = list_topics(consumer, 30, self.topic)
            parts = list(meta.topics[self.topic].partitions)
            ends = {}
            for p in parts:
                _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)
                ends[p] = high
            pending = {p for p in parts if ends[p] > 0}
            consumer.assign([TopicPartition(self.topic, p, 0) for p in pending])
            while pending:
                msg = consumer.poll(5.0)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.name() == "_PARTITION_EOF":
                        pending.discard(msg.partition())
                        continue
                    raise BrokerUnavailableError(f"reading offsets topic {self.topic}: {err.str()}")
                key = json.loads(msg.key() or b"null")
                if key[0] == self.connector:
                    value = msg.value()
                    if value is None:
                        offsets.pop(key[1], None)
                    else:
                        offsets[key[1]] = json.loads(value)
        except KafkaException as exc:
            raise BrokerUnavailableError(f"reading offsets topic {self.topic}: {exc.args[0]}") from None
        finally:
            consumer.close()
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
