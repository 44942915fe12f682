"""``cdc sink status``: stored positions per partition and the lag behind the high watermark."""

from __future__ import annotations

import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaException, TopicPartition

from cdc.errors import BrokerUnavailableError
from cdc.kafka_clients import client_config
from cdc.sink.config import SinkConfig
from cdc.sink.engine import sink_engine
from cdc.sink.offsets import load_offsets, offsets_table
from cdc.sql.engines import translate


def sink_status(cfg: SinkConfig) -> list[str]:
    """One line per partition of every configured topic: next offset, high watermark, lag."""
    engine = sink_engine(cfg.target.url.secret)
    table = offsets_table(cfg.target.offsets_table)
    try:
        if not sa.inspect(engine).has_table(table.name):
            stored: dict[tuple[str, int], int] = {}
        else:
            with engine.connect() as conn:
                stored = load_offsets(conn, table, cfg.group, [t.topic for t in cfg.topics])
    except sa.exc.DBAPIError as exc:
        raise translate(exc, "target database") from None
    finally:
        engine.dispose()
    consumer = Consumer({**client_config(cfg.kafka), "group.id": cfg.group, "enable.auto.commit": False})
    lines: list[str] = []
    try:
        metadata = consumer.list_topics(timeout=30).topics
        for t in cfg.topics:
            meta = metadata.get(t.topic)
            if meta is None or meta.error is not None:
                lines.append(f"{t.topic}: topic not found")
                continue
            for p in sorted(meta.partitions):
                _low, high = consumer.get_watermark_offsets(TopicPartition(t.topic, p), timeout=30)
                position = stored.get((t.topic, p))
                if position is None:
                    lines.append(f"{t.topic}[{p}]: no stored offset, high watermark {high}")
                else:
                    lines.append(
                        f"{t.topic}[{p}]: next_offset {position}, high watermark {high}, lag {max(high - position, 0)}"
                    )
    except KafkaException as exc:
        raise BrokerUnavailableError(f"kafka at {cfg.kafka.bootstrap_servers}: {exc.args[0]}") from None
    finally:
        consumer.close()
    return lines
