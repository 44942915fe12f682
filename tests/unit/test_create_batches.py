"""CreateTopics requests stay under a KRaft controller's limit of metadata records per request."""

from __future__ import annotations

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from cdc.kafka_clients import MAX_RECORDS_PER_REQUEST, create_batches


def _topics(n: int, partitions: int, config: dict[str, str] | None = None) -> list[NewTopic]:
    return [
        NewTopic(f"t{i}", num_partitions=partitions, replication_factor=1, config=config or {})
        for i in range(n)
    ]


def test_a_thousand_topics_of_sixteen_partitions_take_several_requests_in_order() -> None:
    topics = _topics(1000, 16, {"cleanup.policy": "compact"})
    batches = create_batches(topics)
    assert len(batches) > 1
    assert [t.topic for b in batches for t in b] == [t.topic for t in topics]  # all, once, in order
    for batch in batches:
        assert sum(1 + t.num_partitions + len(t.config) for t in batch) <= MAX_RECORDS_PER_REQUEST


def test_few_topics_take_one_request() -> None:
    topics = _topics(50, 1)
    assert create_batches(topics) == [topics]
    assert create_batches([]) == []


def test_a_topic_larger_than_the_limit_goes_alone() -> None:
    topics = _topics(3, 6)
    assert [[t.topic for t in b] for b in create_batches(topics, limit=5)] == [["t0"], ["t1"], ["t2"]]
    assert [[t.topic for t in b] for b in create_batches(topics, limit=16)] == [["t0", "t1"], ["t2"]]
