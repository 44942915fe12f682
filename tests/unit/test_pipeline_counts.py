"""The per-stream event counters: exported per batch for the streams a batch touched only (with
1,000 streams, visiting every stream per batch made idle streams a cost), with the same totals."""

from __future__ import annotations

import itertools
from typing import Any

from cdc.plugin import Op
from cdc.runtime.metrics import Metrics
from cdc.runtime.pipeline import Pipeline
from cdc.runtime.routing import Encoded

STREAMS = [f"s{i}" for i in range(50)]


class _Output:
    """Takes pre-serialized records (what a capture process hands over) and drops them."""

    def __init__(self) -> None:
        self.sent = 0

    def send_encoded(self, record: Encoded, seq: int | None) -> None:
        self.sent += 1


def _pipeline() -> tuple[Pipeline, Metrics]:
    # only what _send and _export_counts use: the counters' bookkeeping, the output, the metrics
    pipeline = Pipeline.__new__(Pipeline)
    metrics = Metrics("c")
    pipeline.metrics = metrics
    pipeline.output = _Output()  # type: ignore[assignment]
    pipeline._counts = dict.fromkeys(STREAMS, 0)
    pipeline._exported = dict(pipeline._counts)
    pipeline._changed = set()
    pipeline._events_counter = {n: metrics.events.labels("c", n) for n in STREAMS}
    return pipeline, metrics


def _event(stream: str) -> Encoded:
    return Encoded(stream, f"t.{stream}", b"k", b"v", [], "p", {}, Op.CREATE)


def _exported(metrics: Metrics) -> dict[str, float]:
    return {n: metrics.events.labels("c", n)._value.get() for n in STREAMS}


def test_counters_equal_the_events_sent_per_stream_after_every_batch() -> None:
    pipeline, metrics = _pipeline()
    expected = dict.fromkeys(STREAMS, 0)
    cycle = itertools.cycle([STREAMS[0], STREAMS[0], STREAMS[7], STREAMS[49]])
    for size in [1, 3, 0, 10, 2, 100, 0, 1]:
        batch: list[Any] = [_event(next(cycle)) for _ in range(size)]
        for event in batch:
            pipeline._send(event, None)
            expected[event.stream] += 1
        pipeline._export_counts()
        assert _exported(metrics) == expected
        assert not pipeline._changed
    assert pipeline._counts == expected


def test_an_export_visits_only_the_streams_of_its_batch() -> None:
    pipeline, _ = _pipeline()
    pipeline._send(_event("s3"), None)
    pipeline._send(_event("s3"), None)
    pipeline._send(_event("s9"), None)
    assert pipeline._changed == {"s3", "s9"}
    pipeline._export_counts()
    assert pipeline._changed == set()
