"""The sink's consume loop: decode, reduce, write and advance offsets in ONE database transaction.

Ownership of a partition is proven by the offsets row, not by Kafka's group membership: each
batch ends with ``UPDATE cdc_sink_offsets SET next_offset = :end WHERE ... AND next_offset =
:start``. A stalled instance whose partitions moved on finds zero rows, rolls back and drops its
batch, so rebalances and zombies neither lose nor double a change.

Batch N is written by one writer thread while the loop consumes and decodes batch N+1 (the
write mostly waits on the database); which decoded messages apply is decided against the
positions once N is done, and partitions of a fenced N are dropped from N+1 (they are sought
back). A rebalance callback (inside ``consume`` or ``close``) first waits for the batch in
flight, so no batch is open when it runs: revocation has nothing to finish or roll back. SIGTERM stops after the current batch, closes the consumer
(leaving the group at once) and returns 0. Retriable errors rebuild everything with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import sqlalchemy as sa
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from cdc.config.model import OnError
from cdc.errors import AlreadyRunningError, BrokerUnavailableError, CdcError, SourceConfigError
from cdc.kafka_clients import client_config, list_topics
from cdc.runtime import gctuning
from cdc.runtime.metrics import serve
from cdc.runtime.retry import run_with_retries
from cdc.runtime.signals import install_stop_handlers
from cdc.schemas.subjects import make_client
from cdc.sink.config import SinkConfig, SinkMode
from cdc.sink.deadletter import DeadLetters
from cdc.sink.decode import DecodeError, Decoder, WriterSchema
from cdc.sink.engine import sink_engine
from cdc.sink.errors import BadMessageError, MessageRef, RejectedRowError, TableMismatchError
from cdc.sink.metrics import SinkMetrics
from cdc.sink.offsets import TopicPartitionKey, advance, ensure_offsets_table, load_offsets, offsets_table
from cdc.sink.records import Change, ChangeBuilder, FastPath, Reduced, reduce_changes
from cdc.sink.tables import TableManager
from cdc.sink.writer import TableWriter
from cdc.sql.engines import translate

log = logging.getLogger(__name__)

_DATA_ERRORS = (sa.exc.IntegrityError, sa.exc.DataError)
_FATAL_TOPIC_ERRORS = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED}


_UNLEARNT: Any = object()  # no fast path looked for yet


class _FencedError(Exception):
    """Another instance advanced a partition of this batch: roll back and drop the batch."""


class _DataProblemError(Exception):
    """A statement of the fast path was refused: redo the batch row by row to find the culprits."""


@dataclass
class Stats:
    """Counters for logs, tests and the benchmark."""

    messages: int = 0
    rows: int = 0
    batches: int = 0
    dead_letters: int = 0
    fenced: int = 0


@dataclass
class _Pending:
    """A batch being written by the writer thread, with the messages it came from."""

    batch: Batch
    messages: list[Any]
    future: futures.Future[float]


@dataclass
class Batch:
    """The messages of one ``consume`` call, as changes and poison, with their offset ranges."""

    ends: dict[TopicPartitionKey, int] = field(default_factory=dict)  # next offset after the batch
    changes: list[Change] = field(default_factory=list)
    poison: list[tuple[Any, CdcError]] = field(default_factory=list)
    # Set once the writer has handed the batch's rows to the database (or is done with it).
    rows_sent: threading.Event = field(default_factory=threading.Event)


class SinkRunner:
    """Runs one sink instance until stopped; ``before_commit`` is a test seam (a stall)."""

    def __init__(
        self,
        config: SinkConfig,
        stop: threading.Event | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.before_commit = before_commit
        self.stats = Stats()
        self.positions: dict[TopicPartitionKey, int | None] = {}
        self._callback_error: BaseException | None = None
        self._pending: _Pending | None = None  # the batch the writer thread is writing
        self._builders = {t.topic: ChangeBuilder(t) for t in config.topics}
        # (topic, key header, value header) -> the learnt path, or None for the general one
        self._fast_paths: dict[tuple[str, bytes, bytes], FastPath | None] = {}
        self.metrics = SinkMetrics(config.name)
        self.metrics.unhealthy_after = config.unhealthy_after

    def install_signal_handlers(self) -> None:
        install_stop_handlers(self.stop, "after the current batch")

    def run(self) -> int:
        """Run until stopped (returns 0) or a fatal error (raised); retriable errors back off."""
        gctuning.tune_for_streaming()
        cfg, m = self.config, self.metrics
        server = serve(m, cfg.http_host, cfg.http_port) if cfg.http_port is not None else None

        def count(exc: CdcError) -> None:
            m.errors.labels(cfg.name, type(exc).__name__).inc()
            m.failed(exc.retriable)

        try:
            return run_with_retries(
                self.run_once,
                self.stop,
                cfg.retry_backoff_max,
                resumes_from="the stored offsets",
                on_error=count,
            )
        finally:
            if server is not None:
                server.shutdown()

    def run_once(self) -> None:
        cfg = self.config
        self.engine = sink_engine(cfg.target.url.secret)
        self.offsets = offsets_table(cfg.target.offsets_table)
        self.tables = TableManager(self.engine, auto_create=cfg.auto_create, auto_evolve=cfg.auto_evolve)
        self.writer = TableWriter(self.engine.dialect.name)
        self.decoder = Decoder(make_client(cfg.schema_registry.url, cfg.schema_registry.config))
        self.dead_letters: DeadLetters | None = None
        self.consumer: Consumer | None = None
        try:
            try:
                ensure_offsets_table(self.engine, self.offsets)
            except sa.exc.DBAPIError as exc:
                raise translate(exc, "target database: offsets table") from None
            if cfg.on_error is OnError.DEAD_LETTER:
                self.dead_letters = DeadLetters(cfg)
            self.consumer = Consumer(self._consumer_config())
            self._check_topics(self.consumer)
            if self.stop.is_set():
                return
            self.consumer.subscribe(
                [t.topic for t in cfg.topics],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            log.info("sink %s: consuming %s as group %s", cfg.name, [t.topic for t in cfg.topics], cfg.group)
            self.metrics.running()
            self._loop(self.consumer)
        finally:
            if self.consumer is not None:
                self.consumer.close()  # leaves the group now: the partitions move without a timeout
            if self.dead_letters is not None:
                self.dead_letters.close()
            self.positions.clear()
            self.engine.dispose()

    def _consumer_config(self) -> dict[str, Any]:
        cfg = self.config
        return {
            **client_config(cfg.kafka),
            "group.id": cfg.group,
            "enable.auto.commit": False,  # group offsets are for lag reporting; positions live in the database
            "enable.auto.offset.store": False,
            "auto.offset.reset": cfg.auto_offset_reset,
            "max.poll.interval.ms": cfg.max_poll_interval_ms,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            **({"group.instance.id": cfg.group_instance_id} if cfg.group_instance_id else {}),
            **cfg.consumer,
        }

    def _check_topics(self, consumer: Consumer) -> None:
        """Every topic must exist; with ``wait_for_topics`` (default) wait for them, saying which."""
        told = 0.0
        while True:
            try:
                present = list_topics(consumer, 30).topics
            except KafkaException as exc:
                raise BrokerUnavailableError(
                    f"kafka at {self.config.kafka.bootstrap_servers}: {exc.args[0]}"
                ) from None
            missing = [t.topic for t in self.config.topics if t.topic not in present]
            if not missing:
                return
            if not self.config.wait_for_topics:
                raise SourceConfigError(
                    f"topic(s) {missing} do not exist",
                    hint="check the names in topics: (or set wait_for_topics)",
                )
            if time.monotonic() - told > 30:
                told = time.monotonic()
                log.info("sink %s: waiting for topic(s) %s to exist", self.config.name, missing)
            if self.stop.wait(1.0):
                return

    # -- rebalance callbacks (run inside consume/close, when no batch is open) ----------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._settle()
        try:
            with self.engine.connect() as conn:
                stored = load_offsets(conn, self.offsets, self.config.group, {p.topic for p in partitions})
        except Exception as exc:  # raised after consume() returns; the batch is then dropped
            self._callback_error = exc
            stored = {}
        reset = OFFSET_BEGINNING if self.config.auto_offset_reset == "earliest" else OFFSET_END
        for p in partitions:
            position = stored.get((p.topic, p.partition))
            self.positions[(p.topic, p.partition)] = position
            p.offset = reset if position is None else position
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]@{p.offset}" for p in partitions))
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._settle()
        for p in partitions:
            self.positions.pop((p.topic, p.partition), None)
        log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self, consumer: Consumer) -> None:
        cfg = self.config
        last_log = time.monotonic()
        # One writer thread: batch N is written (mostly waiting on the database, the GIL
        # released) while this thread consumes and decodes batch N+1.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sink-{cfg.name}-write")
        try:
            while not self.stop.is_set():
                messages = consumer.consume(num_messages=cfg.batch_size, timeout=cfg.batch_timeout)
                if self._callback_error is not None:
                    exc, self._callback_error = self._callback_error, None
                    if isinstance(exc, sa.exc.DBAPIError):
                        raise translate(exc, "target database: reading offsets") from None
                    raise exc
                if self._pending is not None and messages:
                    # Decode while the writer waits on the database, not while it formats its
                    # rows: the two threads share one GIL, and the writer is the critical path.
                    self._pending.batch.rows_sent.wait()
                decoded = self._decode(messages) if messages else []
                dropped: set[TopicPartitionKey] = set()
                if self._pending is not None:
                    dropped = self._finish(consumer)
                if decoded and not self.stop.is_set():  # stopping: after the batch in flight
                    batch = self._batch(decoded, dropped)
                    if batch.ends:
                        self._pending = _Pending(batch, messages, pool.submit(self._apply_timed, batch))
                if time.monotonic() - last_log > 10:
                    last_log = time.monotonic()
                    s = self.stats
                    log.info(
                        "sink %s: %d messages, %d rows, %d batches, %d dead letters, %d fenced batches",
                        cfg.name,
                        s.messages,
                        s.rows,
                        s.batches,
                        s.dead_letters,
                        s.fenced,
                    )
            if self._pending is not None:
                self._finish(consumer)
        finally:
            self._pending = None
            pool.shutdown(wait=True)  # never leave a write running into the engine's disposal

    def _settle(self) -> None:
        """Wait for the batch in flight (a rebalance callback must find no batch open)."""
        pending = self._pending
        if pending is not None:
            futures.wait([pending.future])

    def _decode(
        self, messages: list[Any]
    ) -> list[tuple[TopicPartitionKey, int, Any, Change | BadMessageError]]:
        """Parse every message (fatal consumer errors raise); which ones apply is decided later,
        against the positions after the batch in flight."""
        out: list[tuple[TopicPartitionKey, int, Any, Change | BadMessageError]] = []
        parse = self._parse
        paths = self._fast_paths
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() in _FATAL_TOPIC_ERRORS:
                    raise SourceConfigError(f"topic {msg.topic()!r}: {err.str()}")
                if err.code() == KafkaError.FENCED_INSTANCE_ID:
                    raise AlreadyRunningError(
                        f"another sink instance uses group.instance.id {self.config.group_instance_id!r}",
                        hint="give each running instance its own instance_id (or CDC_INSTANCE_ID)",
                    )
                if err.fatal():
                    raise BrokerUnavailableError(f"kafka consumer: {err.str()}")
                log.warning("kafka consumer: %s", err.str())
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            key_bytes, value_bytes = msg.key(), msg.value()
            if key_bytes is not None and value_bytes is not None:
                # Most messages: a path learnt for their topic and schema pair builds the change
                # in one call (None: the general path below decodes and reports it).
                pair = (topic, key_bytes[:5], value_bytes[:5])
                path = paths.get(pair, _UNLEARNT)
                if path is _UNLEARNT:
                    path = self._learn(pair)
                if path is not None:
                    change = path(msg, topic, partition, offset, key_bytes, value_bytes)
                    if change is not None:
                        out.append(((topic, partition), offset, msg, change))
                        continue
            try:
                parsed: Change | BadMessageError = parse(msg, topic, partition, offset)
            except BadMessageError as exc:
                parsed = exc
            out.append(((topic, partition), offset, msg, parsed))
        return out

    def _learn(self, pair: tuple[str, bytes, bytes]) -> FastPath | None:
        """The fast path of a (topic, key header, value header) triple, remembered once both
        schemas are known (the general path fetches them); None while they are not."""
        topic, key_header, value_header = pair
        key_writer, value_writer = self.decoder.known(key_header), self.decoder.known(value_header)
        builder = self._builders.get(topic)
        if key_writer is None or value_writer is None or builder is None:
            return None  # not remembered: known after the general path has decoded one
        path = self._fast_paths[pair] = builder.fast_path(key_writer, value_writer)
        return path

    def _batch(
        self,
        decoded: list[tuple[TopicPartitionKey, int, Any, Change | BadMessageError]],
        dropped: set[TopicPartitionKey],
    ) -> Batch:
        """The decoded messages still to apply: owned partitions, past the stored positions,
        none of a partition whose previous batch was fenced (it was re-sought)."""
        batch = Batch()
        positions, ends, changes, poison = self.positions, batch.ends, batch.changes, batch.poison
        for tp, offset, msg, parsed in decoded:
            if tp not in positions or tp in dropped:
                continue  # revoked while it was in flight, or to be fetched again after a fence
            start = positions[tp]
            if start is not None and offset < start:
                continue  # applied already (by this or another instance)
            ends[tp] = offset + 1
            if isinstance(parsed, BadMessageError):
                poison.append((msg, parsed))
            else:
                changes.append(parsed)
        return batch

    def _apply_timed(self, batch: Batch) -> float:
        started = time.monotonic()
        try:
            self._apply(batch)
        finally:
            batch.rows_sent.set()
        return time.monotonic() - started

    def _finish(self, consumer: Consumer) -> set[TopicPartitionKey]:
        """Wait for the batch in flight and account for it; the partitions to drop from the next
        batch (those of a fenced batch, sought back to the stored positions)."""
        pending, self._pending = self._pending, None
        assert pending is not None
        batch, messages = pending.batch, pending.messages
        try:
            took = pending.future.result()
        except _FencedError as exc:
            self.stats.fenced += 1
            self.metrics.fenced.labels(self.config.name).inc()
            log.warning("dropped a batch: %s moved on in the offsets table (another instance owns it)", exc)
            self._resync(consumer, batch)
            return set(batch.ends)
        except sa.exc.DBAPIError as exc:
            raise translate(exc, "target database") from None
        self.stats.messages += len(messages)
        self._observe(consumer, batch, messages, took)
        for tp, end in batch.ends.items():
            if tp in self.positions:  # not revoked meanwhile (a callback waited for this batch)
                self.positions[tp] = end
        try:  # for lag reporting only: the database holds the positions that count
            consumer.commit(
                offsets=[TopicPartition(t, p, end) for (t, p), end in batch.ends.items()], asynchronous=True
            )
        except KafkaException as exc:
            log.debug("group offset commit skipped: %s", exc)
        return set()

    def _observe(self, consumer: Consumer, batch: Batch, messages: list[Any], took: float) -> None:
        m, name = self.metrics, self.config.name
        m.batch_seconds.labels(name).observe(took)
        per_topic: dict[str, int] = {}
        for msg in messages:
            per_topic[msg.topic()] = per_topic.get(msg.topic(), 0) + 1
        for topic, n in per_topic.items():
            m.records.labels(name, topic).inc(n)
        for (topic, partition), end in batch.ends.items():
            # The high watermark of the last fetch: no broker round trip per batch.
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            if high is not None and high >= 0:
                m.lag.labels(name, topic, str(partition)).set(max(0, high - end))

    def _parse(self, msg: Any, topic: str, partition: int, offset: int) -> Change:
        key_bytes, value_bytes = msg.key(), msg.value()
        decode = self.decoder.decode
        ref_key: Any = key_bytes  # the decoded key once known: dead letters and errors name it
        try:
            key_writer: WriterSchema | None = None
            key: Any = None
            if key_bytes is not None:
                key_writer, key = decode(key_bytes)
                ref_key = key
            value_writer, value = decode(value_bytes) if value_bytes is not None else (None, None)
            ref = MessageRef(topic, partition, offset, ref_key)
            return self._builders[topic].build(ref, msg, key_writer, key, value_writer, value)
        except DecodeError as exc:
            raise BadMessageError(
                MessageRef(topic, partition, offset, ref_key), f"cannot decode: {exc}"
            ) from None

    def _apply(self, batch: Batch) -> None:
        fail = self.config.on_error is OnError.FAIL
        if batch.poison and fail:
            raise batch.poison[0][1]
        good: list[Change] = []
        # The plan depends only on the topic's config and the schema ids: look it up once per
        # batch, not per change (the table manager's cache key is a nested tuple to hash).
        plans: dict[tuple[int, tuple[int, int]], Any] = {}
        for change in batch.changes:
            if change.row is not None:
                plan_key = (id(change.sink), change.schema_ids)
                plan = plans.get(plan_key)
                if plan is None:
                    try:
                        plan = plans[plan_key] = self._plan(change)
                    except TableMismatchError as exc:
                        bad = BadMessageError(change.ref, exc.message)
                        if fail:
                            raise bad from None
                        batch.poison.append((change.raw, bad))
                        continue
                change.plan = plan
            good.append(change)
        reduced = reduce_changes(good)
        try:
            self._transaction(batch, reduced, careful=False)
        except _DataProblemError:
            self._transaction(batch, reduced, careful=True)
        self.stats.batches += 1

    def _plan(self, change: Change) -> Any:
        sink = change.sink
        assert sink is not None
        schema, name = change.table
        try:
            return self.tables.plan(
                schema,
                name,
                change.fields,
                change.key_columns,
                inserts=sink.mode is not SinkMode.UPDATE,
                cache_key=(change.table, change.schema_ids, change.key_columns, sink.mode),
            )
        except sa.exc.DBAPIError as exc:
            raise translate(exc, f"target database: DDL of table {name!r}") from None

    def _transaction(self, batch: Batch, reduced: dict[Any, dict[Any, Reduced]], *, careful: bool) -> None:
        rejected: list[tuple[Change, Exception]] = []
        with self.engine.connect() as conn, conn.begin():
            try:
                rows = self._write(conn, reduced, careful, rejected, batch.rows_sent.set)
            except _DATA_ERRORS as exc:
                raise _DataProblemError(str(exc)) from exc
            poison = list(batch.poison)
            for change, problem in rejected:
                reason = str(getattr(problem, "orig", problem)).strip().splitlines()[0]
                bad = RejectedRowError(change.ref, reason)
                if self.config.on_error is OnError.FAIL:
                    raise bad from None
                poison.append((change.raw, bad))
            if self.before_commit is not None:
                self.before_commit()
            for tp, end in batch.ends.items():
                if not advance(conn, self.offsets, self.config.group, tp, self.positions.get(tp), end):
                    raise _FencedError(f"{tp[0]}[{tp[1]}]")
            if poison:
                assert self.dead_letters is not None
                for msg, err in poison:
                    self.dead_letters.send(msg, err)
                self.dead_letters.flush()  # before the commit: a consumed poison is always dead-lettered
        self.stats.rows += rows
        self.stats.dead_letters += len(poison)
        self.metrics.rows.labels(self.config.name).inc(rows)
        for msg, _err in poison:
            self.metrics.dead_letters.labels(self.config.name, msg.topic()).inc()

    def _write(
        self,
        conn: sa.Connection,
        reduced: dict[Any, dict[Any, Reduced]],
        careful: bool,
        rejected: list[tuple[Change, Exception]],
        sent: Callable[[], None],
    ) -> int:
        """Deletes first (a key deleted earlier in the batch and re-inserted is deleted, then
        inserted), then rows grouped by plan and mode. ``careful``: each change in a savepoint."""
        written = 0
        for ident, per_key in reduced.items():
            # One pass sorts the changes into deletes and upserts by (plan, mode); a change
            # re-inserted after a delete in the batch is in both (deletes run first).
            deletes: list[Reduced] = []
            upserts: dict[tuple[int, SinkMode], list[Reduced]] = {}
            plans: dict[int, Any] = {}
            for op in per_key.values():
                change = op.change
                sink = change.sink
                if sink is None:
                    continue
                row = change.row
                if sink.deletes and (row is None or (op.deleted_before and sink.mode is not SinkMode.UPSERT)):
                    deletes.append(op)
                plan = change.plan
                if row is not None and plan is not None:
                    group = upserts.get((id(plan), sink.mode))
                    if group is None:
                        group = upserts[(id(plan), sink.mode)] = []
                        plans[id(plan)] = plan
                    group.append(op)
            table = self.tables.existing(*ident) if deletes else None
            if table is not None:
                by_keys: dict[tuple[str, ...], list[Reduced]] = {}
                for op in deletes:
                    by_keys.setdefault(op.change.key_columns, []).append(op)
                for keys, group in by_keys.items():
                    written += self._run(
                        conn,
                        group,
                        careful,
                        rejected,
                        partial(self.writer.delete, conn, table, keys),
                    )
            for (plan_id, mode), group in upserts.items():
                written += self._run(
                    conn,
                    group,
                    careful,
                    rejected,
                    partial(self.writer.upsert, conn, plans[plan_id], mode, sent=sent),
                )
        return written

    @staticmethod
    def _run(
        conn: sa.Connection,
        ops: list[Reduced],
        careful: bool,
        rejected: list[tuple[Change, Exception]],
        write: Callable[[list[Reduced]], int],
    ) -> int:
        if not careful:
            return write(ops)
        written = 0
        for op in ops:
            try:
                with conn.begin_nested():
                    written += write([op])
            except _DATA_ERRORS as exc:
                rejected.append((op.change, exc))
            except sa.exc.StatementError as exc:
                if isinstance(exc, sa.exc.DBAPIError):
                    raise
                rejected.append((op.change, exc))  # a value the driver could not bind
        return written

    def _resync(self, consumer: Consumer, batch: Batch) -> None:
        """After a fenced batch: continue from what the database says, for every partition in it."""
        try:
            with self.engine.connect() as conn:
                stored = load_offsets(conn, self.offsets, self.config.group, {t for t, _ in batch.ends})
        except sa.exc.DBAPIError as exc:
            raise translate(exc, "target database: reading offsets") from None
        for tp in batch.ends:
            if tp not in self.positions:
                continue
            position = stored.get(tp)
            self.positions[tp] = position
            try:
                consumer.seek(
                    TopicPartition(tp[0], tp[1], OFFSET_BEGINNING if position is None else position)
                )
            except KafkaException as exc:
                log.info("seek %s[%s] skipped: %s", tp[0], tp[1], exc)
