"""Keys land on the partition a Java producer (Debezium, Kafka Streams) would choose.

The producer defaults use librdkafka's murmur2 partitioner; Java's partitioner is run from the
kafka-clients jar that `make services` fetched, on the very key bytes the broker stored.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from cdc.config.model import KafkaConfig
from cdc.kafka_clients import TopicSpec, ensure_topics, producer_config
from tests.conftest import unavailable

PARTITIONS = 16
JAVA_PROGRAM = Path(__file__).parent / "java" / "JavaPartitions.java"


def _java_partitions(keys: list[bytes]) -> list[int]:
    services = os.environ.get("CDC_SERVICES_DIR", "/var/tmp/cdc-services")
    libs = f"{services}/kafka/libs"
    java = shutil.which("java")
    if not glob.glob(f"{libs}/kafka-clients-*.jar") or java is None:
        unavailable("kafka", f"no java or kafka-clients jar under {libs} (run make services)")
    out = subprocess.run(
        [java, "-cp", f"{libs}/*", str(JAVA_PROGRAM), str(PARTITIONS)],
        input="\n".join(k.hex() for k in keys) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [int(line) for line in out.stdout.split()]


def test_keys_are_partitioned_like_java(kafka_bootstrap: str, topic_name: str) -> None:
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, [TopicSpec(topic_name, False, PARTITIONS, 1, {})])
    keys = [f"key-{i}".encode() for i in range(300)] + [bytes([0, 0, 0, 0, 7, i]) for i in range(100)]
    producer = Producer(producer_config(kafka))
    for key in keys:
        producer.produce(topic_name, key=key, value=b"v")
    assert producer.flush(30) == 0

    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": topic_name, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic_name, p, 0) for p in range(PARTITIONS)])
    stored: dict[bytes, int] = {}
    try:
        while len(stored) < len(keys):
            msg = consumer.poll(10)
            assert msg is not None, f"only {len(stored)} of {len(keys)} messages read back"
            assert msg.error() is None, msg.error()
            stored[msg.key()] = msg.partition()
    finally:
        consumer.close()
    expected = dict(zip(keys, _java_partitions(keys), strict=True))
    differ = {k: (stored[k], expected[k]) for k in keys if stored[k] != expected[k]}
    assert not differ, f"{len(differ)} keys on another partition than Java's: {list(differ.items())[:5]}"
    assert len(set(stored.values())) == PARTITIONS  # the keys really spread over every partition
