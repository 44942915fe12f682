"""Transaction metadata: BEGIN and END records on ``<topic_prefix>.transactions``, and each
event's order within its transaction in a header, so consumers can reassemble transactions.

Only sources that number a transaction's changes (``SourceConnector.transaction_metadata``) take
part. BEGIN goes out before a transaction's first event; END after its last, with the commit
position and time and the transaction's event count per stream (as the source counted them, so a
restart after a crash repeats the same END). Delivery: the last event's offset is committed only
once END is acknowledged, so a kill -9 never loses an END; BEGIN and END may repeat after a
crash (at least once, like every record): consumers key them by transaction id.

Records are JSON (key ``{"id": txid}``), one partition so transactions keep their commit order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from cdc.config.model import AppConfig, KafkaOutput
from cdc.errors import ConfigError
from cdc.kafka_clients import TopicSpec, ensure_topics
from cdc.plugin import ChangeEvent, SourceConnector
from cdc.runtime.acks import AckTracker
from cdc.schemas.eventify import position_bytes

#: sends a metadata record: (topic, key, value, seq or None)
Produce = Callable[[str, bytes, bytes, int | None], None]


def topic_of(app: AppConfig) -> str:
    assert app.transactions is not None
    prefix = app.kafka.topic_prefix if app.kafka else "cdc"
    return app.transactions.topic or f"{prefix}.transactions"


def check(app: AppConfig, source: type[SourceConnector] | SourceConnector) -> None:
    """Start-up problems of ``transactions:`` as one ConfigError."""
    if app.transactions is None:
        return
    problems = []
    if not source.transaction_metadata:
        problems.append(
            f"transactions: the {app.source.connector} source does not report transaction boundaries "
            "(supported: postgres_wal)"
        )
    if not isinstance(app.output, KafkaOutput):
        problems.append("transactions: needs output.kind: kafka")
    problems += [
        f"transactions: stream {s.name!r} has a row filter (where:), so END's counts would include "
        "rows the filter drops; remove one of the two"
        for s in app.streams
        if s.where is not None
    ]
    if problems:
        raise ConfigError(problems)


class TransactionMetadata:
    """Wraps the sending of transaction-numbered events with BEGIN and END records."""

    def __init__(self, app: AppConfig, tracker: AckTracker, produce: Produce) -> None:
        self.topic = topic_of(app)
        self.tracker = tracker
        self.produce = produce
        self.topics = {s.name: app.topic_of(s) for s in app.streams}
        self._open: str | None = None

    def ensure_topic(self, app: AppConfig) -> None:
        assert app.kafka is not None
        ensure_topics(app.kafka, [TopicSpec(self.topic, False, 1, app.kafka.topics.replication_factor, {})])

    def send(
        self, event: ChangeEvent, tracked: bool, send: Callable[[ChangeEvent, int | None], None]
    ) -> None:
        """BEGIN if the event opens a transaction, the event (with its order header), END if the
        source marked it the transaction's last. ``tracked``: at-least-once (sequence numbers)."""
        txid = event.txid or ""
        key = orjson.dumps({"id": txid})
        if txid != self._open:
            self._open = txid
            begin = {
                "status": "BEGIN",
                "id": txid,
                "ts_ms": event.ts_ms,
                "position": orjson.Fragment(position_bytes(event)),
            }
            self.produce(self.topic, key, orjson.dumps(begin), self.tracker.add_marker() if tracked else None)
        order = ("cdc.txn.order", str(event.txn_order).encode())
        event.headers = [*event.headers, order] if event.headers else [order]
        end = event.txn_end
        if end is None:
            send(event, self.tracker.add(event.partition, event.offset) if tracked else None)
            return
        # The transaction's last offset commits with END, not before it.
        send(event, self.tracker.add_marker() if tracked else None)
        record: dict[str, Any] = {
            "status": "END",
            "id": end.txid,
            "ts_ms": end.ts_ms,
            "commit_position": end.position,
            "event_count": sum(end.counts.values()),
            "data_collections": [
                {"stream": stream, "topic": self.topics.get(stream), "event_count": n}
                for stream, n in sorted(end.counts.items())
            ],
        }
        seq = self.tracker.add(event.partition, event.offset) if tracked else None
        self.produce(self.topic, key, orjson.dumps(record), seq)
        self._open = None
