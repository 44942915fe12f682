"""The sink's Prometheus metrics and health state, served like a source's (cdc.runtime.metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from cdc.runtime.metrics import Health


class SinkMetrics(Health):
    """Records/s, rows written, dead letters, fenced batches, batch latency and lag per partition."""

    def __init__(self, sink: str) -> None:
        super().__init__()
        self.registry = CollectorRegistry()
        self.sink = sink
        self.records = Counter(
            "cdc_sink_records_total",
            "messages consumed and applied",
            ["sink", "topic"],
            registry=self.registry,
        )
        self.rows = Counter("cdc_sink_rows_written_total", "rows written", ["sink"], registry=self.registry)
        self.dead_letters = Counter(
            "cdc_sink_dead_letters_total", "messages routed to a dead-letter topic", ["sink", "topic"],
            registry=self.registry,
        )  # fmt: skip
        self.fenced = Counter(
            "cdc_sink_fenced_batches_total", "batches dropped because another instance owned a partition",
            ["sink"], registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            "cdc_sink_errors_total", "errors by kind", ["sink", "kind"], registry=self.registry
        )
        self.batch_seconds = Histogram(
            "cdc_sink_batch_seconds", "decode + write + offsets commit of one batch", ["sink"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry,
        )  # fmt: skip
        self.lag = Gauge(
            "cdc_sink_lag_messages", "messages behind the partition's high watermark", ["sink", "topic", "partition"],
            registry=self.registry,
        )  # fmt: skip

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))
