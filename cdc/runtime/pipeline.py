"""The pipeline loop: source -> eventify -> output -> delivery reports -> offsets -> acknowledge.

The rule: never acknowledge upstream before the broker acknowledged downstream. Offsets are
committed from the delivered prefix only (see AckTracker); a failed delivery stops reading and
the connector resumes from the last committed offsets.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import Protocol

from cdc.config.model import AppConfig, Delivery
from cdc.errors import DeliveryError, RowError
from cdc.offsets import jsonvalues
from cdc.offsets.base import OffsetStore
from cdc.plugin import ChangeEvent, Offsets, Op
from cdc.runtime.acks import AckTracker
from cdc.runtime.metrics import Metrics
from cdc.runtime.outputs import KafkaRecordOutput, Output
from cdc.runtime.routing import DeadLetter, Encoded, Filtered, Router
from cdc.runtime.transactions import TransactionMetadata
from cdc.schemas.eventify import Record, StreamEventifier

log = logging.getLogger(__name__)

#: while snapshot rows are in flight, delivered progress is committed at least this often
SNAPSHOT_COMMIT_INTERVAL = 0.05
_PROMPT = (Op.READ, Op.CHECKPOINT)
#: what the source hands over with its operation (a snapshot row may arrive encoded)
_WITH_OP = (ChangeEvent, Encoded)


class Feed(Protocol):
    """What the pipeline reads from: a started source, in this process or a capture process."""

    def start(self, offsets: Offsets) -> None: ...

    def poll(self, timeout: float) -> Sequence[ChangeEvent | Encoded | DeadLetter | Filtered]: ...

    def acknowledge(self, offsets: Offsets) -> None: ...

    def lag(self, offsets: Offsets) -> dict[str, float]: ...


class Pipeline:
    """Runs one connector until ``stop`` is set or an error is raised."""

    def __init__(
        self,
        app: AppConfig,
        source: Feed,
        store: OffsetStore,
        output: Output,
        eventifiers: dict[str, StreamEventifier],
        tracker: AckTracker,
        metrics: Metrics,
        stop: threading.Event,
        transactions: TransactionMetadata | None = None,
    ) -> None:
        self.app = app
        self.transactions = transactions
        self.source = source
        self.store = store
        self.output = output
        self.eventifiers = eventifiers
        self.tracker = tracker
        self.metrics = metrics
        self.stop = stop
        self.committed: Offsets = {}
        self._saving: Offsets = {}
        self._streams = {s.name: s for s in app.streams}
        self.router = Router(app, eventifiers)
        self._counts: dict[str, int] = dict.fromkeys(self._streams, 0)
        self._events_counter = {n: metrics.events.labels(app.name, n) for n in self._streams}
        self._exported = dict(self._counts)  # what the Prometheus counters already show
        #: the streams counted since the last export: a batch touches a few streams, and visiting
        #: all of them per batch made each idle stream a cost per batch (1,000 tables)
        self._changed: set[str] = set()

    # --- shared ---
    def _send(self, event: ChangeEvent | Encoded | DeadLetter | Filtered, seq: int | None) -> None:
        if isinstance(event, ChangeEvent) and event.op is Op.CHECKPOINT:
            if seq is not None:  # nothing to produce: "delivered" once everything before it is
                self.tracker.delivered(seq)
            return
        if isinstance(event, Encoded):  # eventified and serialized in the capture process
            self.output.send_encoded(event, seq)
            self._counts[event.stream] += 1
            self._changed.add(event.stream)
            return
        if isinstance(event, ChangeEvent):
            try:
                routed: Record | DeadLetter | Filtered = self.router(event)
            except RowError:
                self.metrics.errors.labels(self.app.name, "row").inc()
                raise
        else:
            routed = event
        if type(routed) is Filtered:
            # Nothing to send; the offset advances like a delivered event's (a filtered tail
            # must not pin the WAL or replay forever).
            if seq is not None:
                self.tracker.delivered(seq)
            return
        if type(routed) is DeadLetter:
            self.metrics.errors.labels(self.app.name, "row").inc()
            log.warning("dead-lettering a row: %s", routed.payload["error"])
            self.metrics.dead_letters.labels(self.app.name, routed.stream).inc()
            self.output.send_dead_letter(routed.topic, routed.key, routed.payload, seq)
            return
        assert isinstance(routed, Record)
        self.output.send(routed, seq)
        self._counts[routed.stream] += 1
        self._changed.add(routed.stream)

    def _export_counts(self) -> None:
        """Move the per-stream event counts into the Prometheus counters once per batch (an
        increment takes a lock; per event it showed in profiles of the producing process)."""
        changed, self._changed = self._changed, set()
        for stream in changed:
            count = self._counts[stream]
            added = count - self._exported[stream]
            if added:
                self._events_counter[stream].inc(added)
                self._exported[stream] = count

    def _acknowledge(self, offsets: Offsets) -> None:
        self.committed.update(offsets)
        self.metrics.last_commit.labels(self.app.name).set(time.time())
        self.metrics.committed_text = jsonvalues.dumps(self.committed)
        self.source.acknowledge(offsets)

    def _log_metrics(self) -> None:
        lag = self.source.lag(self.committed)
        for name, value in lag.items():
            self.metrics.lag.labels(self.app.name, name).set(value)
        log.info(
            "metrics events=%s in_flight=%d lag=%s committed=%s",
            json.dumps(self._counts),
            self.tracker.in_flight,
            json.dumps(lag),
            self.metrics.committed_text[:500],
        )

    # --- at least once ---
    def _commit_delivered(self) -> None:
        if self.tracker.failure:
            raise DeliveryError(f"delivery failed, reading stopped: {self.tracker.failure}")
        self.store.serve()  # acknowledges the saves that became durable
        offsets = self.tracker.take_committable()
        if offsets:
            # Saved without waiting: the source is acknowledged when the save is durable.
            self._saving.update(offsets)
            self.store.save_async(dict(self._saving), partial(self._acknowledge, offsets))

    def run_at_least_once(self) -> None:
        rt = self.app.runtime
        self.committed = self.store.load()
        self._saving = dict(self.committed)  # committed plus what is being saved
        self.source.start(self.committed)
        self.metrics.running()
        last_commit = time.monotonic()
        next_log = time.monotonic() + rt.metrics_log_interval
        # Snapshot rows (READ events) are committed as soon as they are delivered, not at the
        # commit interval: a snapshot resumes after its last committed key, and a run killed
        # before its first commit tick repeated all of its work (issue #12: kill -9 every few
        # seconds stalled a 500k-row snapshot). Streaming keeps offsets.commit_interval.
        snapshotting = False
        try:
            while not self.stop.is_set():
                if self.tracker.failure:
                    raise DeliveryError(f"delivery failed, reading stopped: {self.tracker.failure}")
                if self.tracker.in_flight >= rt.max_in_flight:
                    self.output.poll(0.05)  # back-pressure: wait for the broker
                    self._commit_delivered()
                    continue
                events = self.source.poll(0.2)
                for event in events:
                    if (
                        self.transactions is not None
                        and type(event) is ChangeEvent
                        and event.txn_order is not None
                    ):
                        self.transactions.send(event, True, self._send)
                        continue
                    self._send(event, self.tracker.add(event.partition, event.offset))
                if events:
                    self._export_counts()
                    last = events[-1]
                    snapshotting = isinstance(last, _WITH_OP) and last.op in _PROMPT
                self.output.poll(0)
                # Acknowledge upstream as soon as a save is durable, not at the next commit tick:
                # what a source releases late (the outbox deletes relayed rows) is replayed after
                # a kill -9, so this halves that window. serve() is a non-blocking poll.
                self.store.serve()
                self.metrics.in_flight.labels(self.app.name).set(self.tracker.in_flight)
                now = time.monotonic()
                interval = SNAPSHOT_COMMIT_INTERVAL if snapshotting else self.app.offsets.commit_interval
                if now >= last_commit + interval:
                    if not events:
                        self.output.flush(0)  # file output: make the trickle durable
                    self._commit_delivered()
                    last_commit = now
                if now >= next_log:
                    self._log_metrics()
                    next_log = now + rt.metrics_log_interval
        finally:
            self.metrics.ready = False
        self.drain(rt.shutdown_timeout)

    def drain(self, timeout: float) -> None:
        """Flush outstanding events and commit what was delivered (graceful stop)."""
        started = time.monotonic()
        remaining = self.output.flush(timeout)
        self._commit_delivered()
        if not self.store.flush(max(1.0, timeout - (time.monotonic() - started))):
            log.warning("the last offsets were not stored before the shutdown timeout; they will be re-read")
        if remaining:
            log.warning(
                "%d events were not acknowledged before the shutdown timeout; they will be re-read", remaining
            )

    # --- exactly once ---
    def run_exactly_once(self) -> None:
        output = self.output
        assert isinstance(output, KafkaRecordOutput)
        from cdc.offsets.kafka import KafkaOffsetStore

        store = self.store
        assert isinstance(store, KafkaOffsetStore)
        rt = self.app.runtime
        # Fence any zombie predecessor and end its open transaction before reading offsets.
        output.init_transactions()
        self.committed = store.load()
        self.source.start(self.committed)
        self.metrics.running()
        next_log = time.monotonic() + rt.metrics_log_interval
        try:
            while not self.stop.is_set():
                batch: list[ChangeEvent | Encoded | DeadLetter | Filtered] = []
                deadline = time.monotonic() + 0.5
                while len(batch) < rt.max_batch and time.monotonic() < deadline and not self.stop.is_set():
                    got = self.source.poll(0.1)
                    if not got and batch:
                        break
                    batch.extend(got)
                if not batch:
                    continue
                offsets: Offsets = {}
                output.begin()
                try:
                    for event in batch:
                        if (
                            self.transactions is not None
                            and type(event) is ChangeEvent
                            and event.txn_order is not None
                        ):
                            self.transactions.send(event, False, self._send)
                        else:
                            self._send(event, None)
                        if event.offset is not None:  # None: a later event carries it
                            offsets[event.partition] = event.offset
                    for key, value in store.records(offsets):
                        output.send_raw(store.topic, key, value)
                except BaseException:
                    output.abort()
                    raise
                output.commit()
                self._export_counts()
                self._acknowledge(offsets)
                if time.monotonic() >= next_log:
                    self._log_metrics()
                    next_log = time.monotonic() + rt.metrics_log_interval
        finally:
            self.metrics.ready = False

    def run(self) -> None:
        if self.app.delivery is Delivery.EXACTLY_ONCE:
            self.run_exactly_once()
        else:
            self.run_at_least_once()
