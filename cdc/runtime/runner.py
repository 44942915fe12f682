"""Build a connector from its config and run it under supervision.

Supervision: SIGTERM/SIGINT stop reading, flush, commit and return 0 within the configured
bound; retriable errors (a database or broker down) are retried with capped exponential backoff
from the last committed offsets; fatal errors propagate with their exit code.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from cdc.config.model import AppConfig, Delivery
from cdc.errors import CdcError, SchemaError
from cdc.offsets import make_offset_store
from cdc.plugin import Lease, SourceConnector
from cdc.runtime import gctuning, keyset, livekeys, transactions
from cdc.runtime.acks import AckTracker
from cdc.runtime.capture import CaptureProcess
from cdc.runtime.metrics import Metrics, serve
from cdc.runtime.outputs import FileRecordOutput, KafkaRecordOutput, make_output
from cdc.runtime.pipeline import Feed, Pipeline
from cdc.runtime.retry import run_with_retries
from cdc.runtime.signals import install_stop_handlers
from cdc.runtime.sources import build_source
from cdc.runtime.standby import take_lease
from cdc.schemas.eventify import StreamEventifier
from cdc.schemas.sourcecheck import check_fields
from cdc.shaping.columns import shaped_columns
from cdc.shaping.routes import routing_problems

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A source with its eventifiers, checked against the source's columns."""

    source: SourceConnector
    eventifiers: dict[str, StreamEventifier]
    warnings: list[str]


def prepare(app: AppConfig) -> Prepared:
    """Build the source and check every stream's schemas against its columns."""
    source, eventifiers = build_source(app)
    return checked(app, source, eventifiers)


def checked(app: AppConfig, source: SourceConnector, eventifiers: dict[str, StreamEventifier]) -> Prepared:
    """Check every stream's schemas against the source's columns (closes the source on a mismatch)."""
    described = source.describe()
    problems: list[str] = []
    warnings: list[str] = []
    transactions.check(app, source)
    keyset_streams = set(source.key_set_streams())
    for s in app.streams:
        ev = eventifiers[s.name]
        columns = described[s.name]
        if ev.route is not None:
            problems += routing_problems(app, s.name, s.name in keyset_streams)
        if ev.shaper is not None:
            if source.encodes_values and (s.where is not None or ev.shaper.shapes_value):
                problems.append(
                    f"stream {s.name!r}: this source's values arrive encoded by the application (outbox), "
                    "so a row filter or a policy on a value field cannot apply; shape the payload where it is written"
                )
            columns = shaped_columns(s, columns)
            if ev.shaper.shapes_key and s.name in keyset_streams:
                problems.append(
                    f"stream {s.name!r}: a column policy on a key field cannot be combined with this "
                    "source's key-set delete detection (it compares raw keys with the topic's keys)"
                )
        checked = [("key", ev.key_schema)] + ([] if source.encodes_values else [("value", ev.row_schema)])
        for what, schema in checked:
            found, warned = check_fields(
                s.name, schema, s.fields, columns, what=what, symbol_maps=s.symbol_maps
            )
            problems += found
            warnings += warned
    warnings += keyset.unrestorable(app, source)
    for warning in warnings:
        log.warning("%s", warning)
    if problems:
        source.close()
        raise SchemaError(
            "the streams' schemas do not fit the source:\n" + "\n".join(f"  - {p}" for p in problems),
            hint="fix the .avsc, the fields: mapping, or the source; nothing was produced",
        )
    return Prepared(source, eventifiers, warnings)


class Runner:
    """Runs one connector with retries; ``stop`` ends it gracefully."""

    def __init__(self, app: AppConfig, stop: threading.Event | None = None) -> None:
        self.app = app
        self.stop = stop or threading.Event()
        self.metrics = Metrics(app.name)

    def install_signal_handlers(self) -> None:
        install_stop_handlers(self.stop, "flush, commit, exit")

    def run_once(self) -> None:
        source, eventifiers = build_source(self.app)
        lease: Lease | None = None
        store = None
        output = None
        capture: CaptureProcess | None = None
        try:
            # Exactly-once fences a second producer through its transactional.id and needs no
            # lease, but a standby must not start (and fence the active one): it waits for it.
            if self.app.delivery is Delivery.AT_LEAST_ONCE or self.app.runtime.standby:
                # Before reading the source's columns: a standby may wait for hours, and takes
                # over with the tables as they are then.
                lease = take_lease(
                    source, self.app.name, self.stop, self.metrics, standby=self.app.runtime.standby
                )
                if lease is None:
                    return  # stopped while standing by
            prepared = checked(self.app, source, eventifiers)
            store = make_offset_store(self.app)
            tracker = AckTracker()
            txn_id = f"cdc-{self.app.name}" if self.app.delivery is Delivery.EXACTLY_ONCE else None
            output = make_output(self.app, prepared.eventifiers, tracker, txn_id, source.encodes_values)
            if isinstance(output, KafkaRecordOutput) and self._capture_process(source):
                # Spawned before the registry is asked: the child's interpreter, imports, source
                # and table descriptions (seconds with 1,000 tables) overlap those round trips.
                capture = CaptureProcess(self.app, self.stop)
                capture.spawn()
            output.prepare()
            feed: Feed = source
            live: livekeys.LiveKeys = {}
            if isinstance(output, KafkaRecordOutput):
                # the baseline of key-set delete detection: what the entity topics still hold
                live = keyset.read_live_keys(
                    self.app, prepared.eventifiers, keyset.streams_to_restore(self.app, source)
                )
            elif isinstance(output, FileRecordOutput):  # likewise from the topic files
                live = {
                    name: output.live_keys(prepared.eventifiers[name])
                    for name in keyset.streams_to_restore(self.app, source)
                }
            if capture is not None:
                assert isinstance(output, KafkaRecordOutput)
                encodes = source.encode_in_capture or source.encode_snapshot_in_capture
                capture.schema_ids = output.schema_ids if encodes else None
                capture.snapshots_only = not source.encode_in_capture
                capture.live_keys = live
                feed = capture
            else:
                livekeys.restore(source, prepared.eventifiers, live)
            txn_meta = None
            if self.app.transactions is not None and isinstance(output, KafkaRecordOutput):
                txn_meta = transactions.TransactionMetadata(self.app, tracker, output.send_raw)
                txn_meta.ensure_topic(self.app)
            Pipeline(
                _commit_at_least(self.app, source.max_commit_interval),
                feed, store, output, prepared.eventifiers, tracker, self.metrics, self.stop, txn_meta,
            ).run()  # fmt: skip
        finally:
            if capture is not None:
                capture.close()
            if output is not None:
                output.close()
            if store is not None:
                store.close()
            if lease is not None:
                lease.release()
            source.close()

    def _capture_process(self, source: SourceConnector) -> bool:
        """``auto``: a capture process unless the source's events arrive encoded (the outbox
        relay), where moving them between processes costs more than the work it spreads."""
        mode = self.app.runtime.capture
        return mode == "process" or (mode == "auto" and not source.encodes_values)

    def run(self) -> int:
        """Run until stopped (returns 0) or a fatal error (raised)."""
        gctuning.tune_for_streaming()
        rt = self.app.runtime
        server = serve(self.metrics, rt.http_host, rt.http_port) if rt.http_port is not None else None

        self.metrics.unhealthy_after = rt.unhealthy_after

        def count(exc: CdcError) -> None:
            self.metrics.errors.labels(self.app.name, type(exc).__name__).inc()
            self.metrics.failed(exc.retriable)

        try:
            return run_with_retries(
                self.run_once, self.stop, rt.retry_backoff_max,
                resumes_from="the last committed position", on_error=count,
            )  # fmt: skip
        finally:
            if server is not None:
                server.shutdown()


def _commit_at_least(app: AppConfig, interval: float | None) -> AppConfig:
    """The config with offsets.commit_interval no longer than the source asks for."""
    if interval is None or app.offsets.commit_interval <= interval:
        return app
    offsets = app.offsets.model_copy(update={"commit_interval": interval})
    return app.model_copy(update={"offsets": offsets})
