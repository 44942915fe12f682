"""The real Kafka broker (KRaft, auto.create.topics.enable=false) through confluent-kafka.

Pins the broker behaviour the connector relies on: idempotent keyed produce keeps a key on
one partition, transactions are honoured by read_committed consumers, and producing to a
missing topic fails instead of creating it.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=15
    )
    futures[name].result(timeout=20)
    # The broker answers CreateTopics before every metadata cache has the partitions.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if md is not None and md.error is None and len(md.partitions) == partitions:
            return
        time.sleep(0.1)
    pytest.fail(f"topic {name} did not appear in the metadata within 10s")


def topic_exists(bootstrap: str, name: str) -> bool:
    return name in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics


def read_all(
    bootstrap: str, topic: str, partitions: int = 1, isolation: str = "read_uncommitted"
) -> list[Message]:
    """Every record of the topic, from the beginning up to the end of each partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        pending = set(range(partitions))
        records: list[Message] = []
        deadline = time.monotonic() + 15
        while pending:
            assert time.monotonic() < deadline, f"partitions {pending} of {topic} not read to the end"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise KafkaException(err)
            records.append(msg)
        return records
    finally:
        consumer.close()


def test_idempotent_keyed_produce_round_trips(kafka_bootstrap: str, topic_name: str) -> None:
    create_topic(kafka_bootstrap, topic_name, partitions=3)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    assert producer.list_topics(timeout=10).topics[topic_name].error is None

    sent: list[tuple[bytes, bytes]] = []
    delivered: list[tuple[bytes | None, bytes | None, int | None, int | None]] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.key(), msg.value(), msg.partition(), msg.offset()))

    for round_no in range(3):
        for k in range(8):
            key, value = f"key-{k}".encode(), f"value-{k}-{round_no}".encode()
            sent.append((key, value))
            producer.produce(topic_name, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(15) == 0
    assert errors == []
    assert len(delivered) == len(sent)

    # Same key -> same partition, on the producer side ...
    partition_of: dict[bytes | None, set[int | None]] = {}
    for dkey, _, partition, _ in delivered:
        partition_of.setdefault(dkey, set()).add(partition)
    assert all(len(p) == 1 for p in partition_of.values()), partition_of
    # ... and the keys really spread over more than one partition (the keying is not a no-op).
    assert len({next(iter(p)) for p in partition_of.values()}) > 1

    records = read_all(kafka_bootstrap, topic_name, partitions=3)
    got = sorted((m.key(), m.value()) for m in records)
    assert got == sorted(sent)
    for m in records:
        assert partition_of[m.key()] == {m.partition()}
    # Within a partition the records of one key keep their produce order.
    for k in range(8):
        key = f"key-{k}".encode()
        assert [m.value() for m in records if m.key() == key] == [f"value-{k}-{r}".encode() for r in range(3)]
    # Idempotence: exactly one copy of each record, at the offsets the delivery reports named.
    assert sorted((m.partition(), m.offset()) for m in records) == sorted((p, o) for _, _, p, o in delivered)


def test_transactions_visible_only_when_committed(kafka_bootstrap: str, topic_name: str) -> None:
    create_topic(kafka_bootstrap, topic_name)
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "transactional.id": f"{topic_name}-txn",
            "enable.idempotence": True,
            "acks": "all",
            "transaction.timeout.ms": 10000,
        }
    )
    producer.init_transactions(15)

    committed = [b"committed-1", b"committed-2"]
    aborted = [b"aborted-1", b"aborted-2"]

    producer.begin_transaction()
    for v in committed:
        producer.produce(topic_name, key=b"k", value=v)
    producer.commit_transaction(15)

    producer.begin_transaction()
    for v in aborted:
        producer.produce(topic_name, key=b"k", value=v)
    # abort_transaction() purges messages not yet sent; flush first so the aborted records are
    # really written to the log (otherwise read_uncommitted would not see them either).
    assert producer.flush(15) == 0
    producer.abort_transaction(15)

    uncommitted = read_all(kafka_bootstrap, topic_name, isolation="read_uncommitted")
    assert [m.value() for m in uncommitted] == committed + aborted

    read_committed = read_all(kafka_bootstrap, topic_name, isolation="read_committed")
    assert [m.value() for m in read_committed] == committed


def test_produce_to_missing_topic_fails_and_does_not_create_it(kafka_bootstrap: str, topic_name: str) -> None:
    missing = f"{topic_name}_missing"
    assert not topic_exists(kafka_bootstrap, missing)

    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": 3000,
        }
    )
    reports: list[tuple[KafkaError | None, Message]] = []
    t0 = time.monotonic()
    producer.produce(missing, key=b"k", value=b"v", on_delivery=lambda err, msg: reports.append((err, msg)))
    assert producer.flush(15) == 0
    elapsed = time.monotonic() - t0

    assert len(reports) == 1
    err, _ = reports[0]
    assert err is not None, "a record for a missing topic was acknowledged"
    assert err.code() in (
        KafkaError._MSG_TIMED_OUT,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    ), err
    assert elapsed < 10
    # The producer's metadata requests asked for auto-creation; the broker must have refused.
    assert not topic_exists(kafka_bootstrap, missing)
