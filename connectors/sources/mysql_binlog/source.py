"""The MySQL/MariaDB binlog source connector.

One reader thread registers as a replica (``server_id``), snapshots when asked, then streams row
events with ``pymysqlreplication`` and hands decoded change events to the pipeline through a
bounded queue. Heartbeats (MASTER_HEARTBEAT_PERIOD) keep an idle stream alive and tell the
reader it is caught up.

Positions (partition ``binlog``): see :mod:`.positions`. While snapshotting, offsets carry the
snapshot's binlog position (``start``) plus the table, last key and finished tables, so a
restart finishes the remaining rows (from a new consistent read) and then streams from the
first snapshot's position: nothing is lost; a key may briefly show an older value until the
stream catches up.

A transaction is assembled between its GTID (or BEGIN) event and its XID/COMMIT (or its DDL
statement); events are handed over in chunks, at transaction ends when no more bytes wait on
the socket, so many small transactions travel together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import pymysql
import sqlalchemy as sa
from pydantic import BaseModel
from pymysqlreplication import BinLogStreamReader

from cdc.errors import CdcError, PositionLostError, SourceConfigError, SourceUnavailableError
from cdc.handoff import pause_caught_up
from cdc.logsource import CHUNK, ReaderThread, SnapshotMode, SnapshotTable, run_snapshot
from cdc.masking import mask_dsn
from cdc.mysql import catalog as mysql_catalog
from cdc.mysql import rowevents, server
from cdc.mysql import stream as binlog
from cdc.mysql.decoding import RowMapper, build_mapper
from cdc.mysql.positions import (
    MariadbGtids,
    PositionTracker,
    Resume,
    resume_of,
)
from cdc.mysql.preflight import preflight
from cdc.mysql.reader import FastStreamReader
from cdc.mysql.stream import Seen
from cdc.mysql.types import row_normalizer
from cdc.plugin import (
    ChangeEvent,
    CheckResult,
    ColumnInfo,
    Offset,
    Offsets,
    Op,
    SourceConnector,
    StreamSpec,
)
from cdc.sql import engines
from cdc.watermarks import Chunk, WatermarkSnapshot, interrupted_snapshot_state, requested_streams
from connectors.sources.mysql_binlog import incremental
from connectors.sources.mysql_binlog.config import BinlogConfig, BinlogStream, ResumeBy

log = logging.getLogger(__name__)

PARTITION = "binlog"


class _Table:
    """A captured table: its stream and its columns as start-up read them (information_schema)."""

    def __init__(self, stream: str, db: str, name: str, columns: dict[str, ColumnInfo]) -> None:
        self.stream = stream
        self.db = db
        self.name = name
        self.qualified = f"{db}.{name}"
        self.columns = columns


class MysqlBinlogSource(ReaderThread, SourceConnector):
    """Streams committed row changes from a MySQL/MariaDB binary log (ROW format, FULL metadata)."""

    config_model: ClassVar[type[BaseModel]] = BinlogConfig
    stream_model: ClassVar[type[BaseModel]] = BinlogStream
    #: the snapshot reads like a query, as the WAL source's does: its rows are eventified in
    #: the capture process (measured on the WAL source, bench_polling_initial_load.py --source
    #: wal: pickling each row's values and offset and unpickling them cost more CPU than
    #: eventifying them; a binlog snapshot row crosses the same way)
    encode_snapshot_in_capture: ClassVar[bool] = True

    def __init__(self, config: BaseModel, streams: Sequence[StreamSpec]) -> None:
        super().__init__(config, streams)
        assert isinstance(config, BinlogConfig)
        self.cfg = config
        self.dsn = config.url.secret
        self.settings = server.Settings.parse(self.dsn)
        self.captures = {s.name: BinlogStream.model_validate(s.capture) for s in streams}
        self.specs = {s.name: s for s in streams}
        self.tables: dict[str, _Table] = {}
        self._init_reader(config.queue_events)
        self._last_event_ts: float | None = None  # binlog timestamp of the newest event read
        self._caught_up = False
        self.mariadb = True
        self.signal_table = (
            server.split_table(config.signal_table, self.settings.database) if config.signal_table else None
        )
        self.incremental: WatermarkSnapshot | None = None
        self._inc_state: dict[str, Any] | None = None

    def _connect(self) -> Any:
        return server.connect(self.settings, self.dsn)

    # --- catalog ---
    def _load_tables(self) -> None:
        engine = engines.create_engine(self.dsn, pool_size=1)
        try:
            with engine.connect() as conn:
                self.mariadb = "mariadb" in str(conn.exec_driver_sql("SELECT VERSION()").scalar()).lower()
                for name, cap in self.captures.items():
                    db, table = server.split_table(cap.table, self.settings.database)
                    columns = mysql_catalog.describe_table(conn, db, table)
                    if not columns:
                        raise SourceConfigError(
                            f"stream {name!r}: table {db}.{table} not found (or no SELECT on it)"
                        )
                    missing = [c for c in self.specs[name].columns if c not in columns]
                    if missing:
                        raise SourceConfigError(
                            f"stream {name!r}: columns {missing} not found in {db}.{table}"
                        )
                    self.tables[name] = _Table(name, db, table, columns)
        except sa.exc.SQLAlchemyError as exc:
            raise engines.translate(exc, "describe") from None
        finally:
            engine.dispose()

    def describe(self) -> dict[str, dict[str, ColumnInfo]]:
        self._load_tables()
        return {name: dict(t.columns) for name, t in self.tables.items()}

    def check(self) -> list[CheckResult]:
        self.describe()
        results = [CheckResult(True, "database reachable; every stream's table and columns resolve")]
        conn = self._connect()
        try:
            results += preflight(
                conn,
                server_id=self.cfg.server_id,
                by_gtid=self.cfg.resume_by is ResumeBy.GTID,
                mariadb=self.mariadb,
                signal_table=self.signal_table,
            )
        finally:
            conn.close()
        return results

    def check_position(self, offsets: Offsets) -> list[CheckResult]:
        """Whether the binary logs still on the server reach back to the committed position."""
        offset = offsets.get(PARTITION)
        if not offset or "start" not in offset:
            return []
        start = str(offset["start"])
        conn = self._connect()
        try:
            by_file = self.cfg.resume_by is ResumeBy.FILE
            present = server.position_on_server(conn, start, server.is_mariadb(conn), by_file)
        finally:
            conn.close()
        what = f"committed position {start} ({offset.get('phase', 'stream')}) is in the server's binary logs"
        if present:
            return [CheckResult(True, what)]
        if self.cfg.snapshot_mode is SnapshotMode.WHEN_NEEDED:
            return [
                CheckResult(
                    False, what, "no: the next start takes a new snapshot (when_needed)", warning=True
                )
            ]
        lost = binlog.position_lost(start, "purged")
        return [CheckResult(False, what, f"no: {lost.hint}")]

    # --- start ---
    def start(self, offsets: Offsets) -> None:
        offset = offsets.get(PARTITION)
        if not self.tables:
            self._load_tables()
        if self.signal_table is not None:
            conn = self._connect()
            try:
                incremental.create_signal_table(conn, *self.signal_table)
            except pymysql.MySQLError as exc:
                raise SourceConfigError(
                    f"cannot create the signal table {'.'.join(self.signal_table)}: {exc}",
                    hint="create it (id VARCHAR(100) PRIMARY KEY, type VARCHAR(64) NOT NULL, data TEXT) "
                    "and grant INSERT on it, or unset signal_table",
                ) from None
            finally:
                conn.close()
        self._inc_state = offset.get("inc") if offset else None
        self._start_reader(self._run, (offset,), "cdc-binlog")

    def signal(self, action: str, args: dict[str, Any]) -> str:
        """``execute-snapshot``: queue an incremental snapshot of the given streams (default all)."""
        streams = requested_streams(action, args, self.captures, self.cfg.signal_table, "cdc_signals")
        assert self.signal_table is not None
        conn = self._connect()
        try:
            return incremental.request_snapshot(conn, *self.signal_table, streams)
        finally:
            conn.close()

    def _run(self, offset: Offset | None) -> None:
        try:
            mode = self.cfg.snapshot_mode
            phase = offset.get("phase") if offset else None
            start: str | None = str(offset["start"]) if offset else None
            resumable = mode.snapshots and mode is not SnapshotMode.INITIAL_ONLY and self.signal_table
            if resumable and phase != "stream" and offset is not None:
                # The consistent read died with the previous process: the remaining chunks are
                # read between watermarks while streaming from the snapshot's position.
                log.warning("resuming an interrupted snapshot as an incremental snapshot (watermarks)")
                streams = {n: t.qualified for n, t in self.tables.items() if self.captures[n].snapshot}
                self._inc_state = interrupted_snapshot_state(offset, streams)
            elif mode.snapshots and phase != "stream":
                if offset is not None:
                    log.warning("resuming an interrupted snapshot: the remaining rows are read anew")
                taken = self._snapshot(offset)
                if taken is None:
                    return
                start = start or taken
                if mode is SnapshotMode.INITIAL_ONLY:
                    log.info("initial_only: snapshot done; not streaming")
                    self._put([])
                    return
            try:
                self._stream(start, resume_of(offset))
            except PositionLostError:
                if mode is not SnapshotMode.WHEN_NEEDED:
                    raise
                log.warning(
                    "the stored position is gone from the server: taking a new snapshot (when_needed)"
                )
                taken = self._snapshot(None)
                if taken is not None:
                    self._stream(taken, None)
        except CdcError as exc:
            self._handoff.fail(exc)
        except pymysql.MySQLError as exc:
            self._handoff.fail(SourceUnavailableError(f"binlog: {mask_dsn(str(exc))}"))
        except Exception as exc:  # surfaced by poll(), never swallowed
            self._handoff.fail(exc)

    # --- snapshot ---
    def _snapshot(self, resume: Offset | None) -> str | None:
        """Read every table from one consistent snapshot; return the binlog position it is at
        (None when stopping). A resumed snapshot keeps its first position (in ``resume``)."""
        conn = self._connect()
        try:
            position = binlog.open_snapshot(
                conn, mariadb=self.mariadb, by_file=self.cfg.resume_by is ResumeBy.FILE
            )
            start = str(resume["start"]) if resume and "start" in resume else position
            log.info("snapshot at binlog position %s (streaming starts at %s)", position, start)
            plan = [
                SnapshotTable(
                    name, t.qualified, tuple(self.specs[name].key_columns), self._reader(conn, name)
                )
                for name, t in self.tables.items()
                if self.captures[name].snapshot
            ]
            tables = [(t.db, t.name) for t in self.tables.values()]
            if resume is None:
                # The snapshot's position is made durable before its first row: rows produced by
                # a run killed before its first commit would otherwise be orphaned, since the
                # next run would snapshot from a later position and never see their deletes.
                resume = {"phase": "snapshot", "start": start, "total": server.count_rows(conn, tables),
                          "relation": None, "after": None, "done": []}  # fmt: skip
                if not self._checkpoint(PARTITION, resume):
                    return None
            ok = run_snapshot(plan, PARTITION, resume, self._put, extra={"start": start})
            with conn.cursor() as cur:
                cur.execute("COMMIT")
            return start if ok else None
        finally:
            conn.close()

    def _reader(self, conn: Any, stream: str) -> Callable[[list[Any] | None], Iterable[dict[str, Any]]]:
        table = self.tables[stream]
        spec = self.specs[stream]

        columns = {c: table.columns[c] for c in spec.columns}
        # The same driver values as the polling source reads, made canonical by the same code.
        normalize = row_normalizer(columns, self.cfg.zero_dates)

        def read(after: list[Any] | None) -> Iterable[dict[str, Any]]:
            rows = server.read_chunks(
                conn,
                table.db,
                table.name,
                columns,
                tuple(spec.key_columns),
                after,
                self.cfg.snapshot_chunk_size,
            )
            return (normalize(row) for row in rows)

        return read

    # --- streaming ---
    def _tracker(self, start: str) -> PositionTracker:
        return binlog.tracker(start, by_file=self.cfg.resume_by is ResumeBy.FILE, mariadb=self.mariadb)

    def _current_start(self) -> str:
        conn = self._connect()
        try:
            return binlog.current_start(
                conn, by_file=self.cfg.resume_by is ResumeBy.FILE, mariadb=self.mariadb
            )
        finally:
            conn.close()

    def _open(self, start: str) -> BinLogStreamReader:
        return binlog.open_reader(
            self.settings,
            server_id=self.cfg.server_id,
            start=start,
            by_file=self.cfg.resume_by is ResumeBy.FILE,
            mariadb=self.mariadb,
            heartbeat=float(self.cfg.heartbeat_interval),
            schemas=[t.db for t in self.tables.values()]
            + ([self.signal_table[0]] if self.signal_table else []),
            tables=[t.name for t in self.tables.values()]
            + ([self.signal_table[1]] if self.signal_table else []),
        )

    def _stream(self, start: str | None, resume: Resume | None) -> None:
        if start is None:
            start = self._current_start()
            log.info("no stored position: streaming from the server's current position %s", start)
        tracker = self._tracker(start)
        reader = self._open(start)
        log.info("streaming the binlog from %s as replica server_id %d", start, self.cfg.server_id)
        handler = _TxnAssembler(self, tracker, resume, reader)
        if isinstance(reader, FastStreamReader):
            reader.deliver_to(handler)  # GTID, rows and XID events straight to the assembler
        inc_conn = self._start_incremental()
        try:
            while not self._stop.is_set():
                event = binlog.fetch(reader, start)  # a return per transaction (the sink above)
                if event is not None:
                    handler.handle(event)
        finally:
            reader.close()
            if inc_conn is not None:
                inc_conn.close()

    def _start_incremental(self) -> Any:
        """The watermark state machine (with a signal table), restored from the offsets; opens
        the next window of a snapshot in progress. Returns its connection."""
        if self.signal_table is None:
            return None
        conn = self._connect()
        self.incremental = incremental.incremental_snapshot(
            conn, self.signal_table, self.cfg.incremental_chunk_size,
            {n: (t.db, t.name, {c: t.columns[c] for c in self.specs[n].columns}) for n, t in self.tables.items()},
            {n: tuple(self.specs[n].key_columns) for n in self.tables},
            {n: row_normalizer({c: t.columns[c] for c in self.specs[n].columns}, self.cfg.zero_dates)
             for n, t in self.tables.items()},
        )  # fmt: skip
        self.incremental.restore(self._inc_state)
        if self.incremental.busy:
            self.incremental.open_next_window()
        return conn

    # --- positions and lag ---
    def lag(self, offsets: Offsets) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._thread is not None and self._last_event_ts is not None:
            out["binlog_seconds_behind"] = (
                0.0 if self._caught_up else max(0.0, time.time() - self._last_event_ts)
            )
        offset = offsets.get(PARTITION)
        if not offset or "start" not in offset:
            return out
        try:
            conn = self._connect()
        except CdcError:
            return out
        start = str(offset["start"])
        by_file = self.cfg.resume_by is ResumeBy.FILE
        try:
            mariadb = server.is_mariadb(conn)
            # 0 means the next start will fail: the binary logs holding the position were purged
            out["binlog_position_on_server"] = float(server.position_on_server(conn, start, mariadb, by_file))
            if mariadb and not by_file:
                current = MariadbGtids(server.current_gtids(conn, True))
                out["binlog_transactions_behind"] = float(current.distance(MariadbGtids(start)))
        except (pymysql.MySQLError, ValueError):
            pass
        finally:
            conn.close()
        return out


class _TxnAssembler:
    """Assembles transactions from binlog events and turns their rows into change events."""

    def __init__(
        self,
        source: MysqlBinlogSource,
        tracker: PositionTracker,
        resume: Resume | None,
        reader: BinLogStreamReader,
    ) -> None:
        self.src = source
        self.tracker = tracker
        self.resume = resume
        self.reader = reader
        self.txns = binlog.Transactions(tracker, reader, by_file=source.cfg.resume_by is ResumeBy.FILE)
        self.by_table = {(t.db, t.name): t for t in source.tables.values()}
        self.signal_table = source.signal_table
        self.mappers: dict[int, tuple[Any, RowMapper]] = {}  # table id -> (its TABLE_MAP table, mapper)
        self.chunk: list[ChangeEvent] = []

    def handle(self, event: Any) -> None:
        seen = self.txns.handle(event)
        if seen is Seen.ROWS:
            self._rows(event)
        elif seen is Seen.BEGIN:
            self._began()
        elif seen is Seen.COMMIT:
            self._committed()
            self._next_window()
        elif seen is Seen.IDLE:
            self._flush()
            if self.txns.txn is None:
                self.src._caught_up = True
            self._next_window()

    # --- the reader's event sink (cdc.mysql.reader.EventSink): its GTID, rows and XID events ---
    def mariadb_gtid(self, gtid: str, domain: int, server: int, seq: int, timestamp: int) -> None:
        self.txns.mariadb_gtid(gtid, domain, server, seq, timestamp)
        self._began()

    def rows(self, event: Any) -> bool:
        if self.txns.txn is None:  # rows without a GTID/BEGIN seen (file mode): as handle() does
            self.handle(event)
        else:
            self._rows(event)
        return self.src._stop.is_set()  # the stream loop sees a stop inside a large transaction

    def xid(self) -> None:
        if self.txns.commit():
            self._committed()
            self._next_window()

    def _began(self) -> None:
        self.src._last_event_ts = float(self.txns.timestamp)
        self.src._caught_up = False

    def _next_window(self) -> None:
        inc = self.src.incremental
        if inc is not None and inc.busy and inc.window is None:
            inc.open_next_window()

    def _committed(self) -> None:
        text = self.txns.statement
        if text:
            mapped = sorted({t.qualified for t in self.by_table.values() if t.name in text})
            if mapped:
                # The TABLE_MAP of the table's next row event is the truth: a mapped column it
                # lacks (or retyped) stops the connector there, before that row is produced.
                log.info("DDL on captured table(s) %s: %s", ", ".join(mapped), text[:200])
            self.txns.statement = ""
        if len(self.chunk) >= CHUNK:
            self._flush()
        elif not binlog.more_waiting(self.reader):
            self._flush()
            pause_caught_up()  # the next read then takes what was committed meanwhile

    def _mapper(self, event: Any) -> RowMapper | None:
        table_obj = self.reader.table_map.get(event.table_id)
        cached = self.mappers.get(event.table_id)
        if cached is not None and cached[0] is table_obj:
            return cached[1]
        table = self.by_table.get((event.schema, event.table))
        if table is None or table_obj is None:
            return None
        spec = self.src.specs[table.stream]
        self._flush()  # everything of the previous shape goes first
        mapper = build_mapper(
            table.stream, table.qualified, table_obj, spec.columns, spec.key_columns, table.columns,
            self.src.cfg.zero_dates,
        )  # fmt: skip
        self.mappers[event.table_id] = (table_obj, mapper)
        return mapper

    def _rows(self, event: Any) -> None:
        if (event.schema, event.table) == self.signal_table:
            if type(event) is rowevents.WriteRows:
                for row in event.rows:
                    self._signal(row["values"])
            return
        mapper = self._mapper(event)
        if mapper is None:
            return
        kind = type(event)
        stream, values, key_of, add = mapper.stream, mapper.mapped, mapper.key_of, self._add  # bound once
        if kind is not rowevents.UpdateRows and self.src.incremental is None:
            self._plain(stream, Op.CREATE if kind is rowevents.WriteRows else Op.DELETE, mapper, event.rows)
        elif kind is rowevents.WriteRows:
            for row in event.rows:
                after = values(row["values"], row.get("none_sources"))
                add(stream, Op.CREATE, key_of(after), None, after)
        elif kind is rowevents.DeleteRows:
            for row in event.rows:
                before = values(row["values"], row.get("none_sources"))
                add(stream, Op.DELETE, key_of(before), before, None)
        else:
            for row in event.rows:
                # an update row says why a value is None per image
                before = values(row["before_values"], row.get("before_none_sources"))
                after = values(row["after_values"], row.get("after_none_sources"))
                key = key_of(after)
                old_key = key_of(before)
                if old_key != key:  # a key change: the old key's delete first
                    add(stream, Op.DELETE, old_key, before, None)
                add(stream, Op.UPDATE, key, before, after)
        if len(self.chunk) >= CHUNK:
            self._flush()

    def _plain(self, stream: str, op: Op, mapper: RowMapper, rows: list[dict[str, Any]]) -> None:
        """The rows of an insert (CREATE) or delete (DELETE) without an incremental snapshot:
        what :meth:`_add` does per row, with the transaction's fields read once."""
        txns = self.txns
        txn = txns.txn
        assert txn is not None
        values, key_of, append = mapper.mapped, mapper.key_of, self.chunk.append
        start, ts_ms, skip, resume = txns.start, txns.timestamp * 1000, txns.skip, self.resume
        create = op is Op.CREATE
        for row in rows:
            image = values(row["values"], row.get("none_sources"))
            index = txns.index
            txns.index = index + 1
            if skip or (resume is not None and resume.drops(txn, index)):
                continue  # already committed downstream before a restart
            offset: Offset = {"phase": "stream", "start": start, "txn": txn, "i": index}
            if create:
                append(ChangeEvent(stream, op, key_of(image), image, PARTITION, offset, None, ts_ms, txn,
                                   {"gtid": txn}))  # fmt: skip
            else:
                append(ChangeEvent(stream, op, key_of(image), None, PARTITION, offset, image, ts_ms, txn,
                                   {"gtid": txn}))  # fmt: skip

    def _add(
        self,
        stream: str,
        op: Op,
        key: dict[str, Any],
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        txns = self.txns
        assert txns.txn is not None
        index = txns.next_index()
        if txns.skip or (self.resume is not None and self.resume.drops(txns.txn, index)):
            return  # already committed downstream before a restart
        offset: Offset = {"phase": "stream", "start": txns.start, "txn": txns.txn, "i": index}
        inc = self.src.incremental
        if inc is not None:
            inc.on_change(stream, tuple(key[k] for k in self.src.specs[stream].key_columns))
            if inc.busy:
                offset["inc"] = inc.state()
        self.chunk.append(
            ChangeEvent(
                stream, op, key, after, PARTITION, offset, before, txns.timestamp * 1000, txns.txn,
                {"gtid": txns.txn},
            )
        )  # fmt: skip

    def _signal(self, values: dict[str, Any]) -> None:
        """A signal-table row: a snapshot request or one of our watermarks."""
        inc = self.src.incremental
        if inc is None or self.txns.skip:
            return
        text = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in values.items()}
        chunk = inc.on_signal(str(text.get("type") or ""), text.get("data"))
        if chunk is not None and chunk.rows:
            self._emit_chunk(chunk)

    def _emit_chunk(self, chunk: Chunk) -> None:
        """The rows of a closed window, emitted where its high watermark is in the stream."""
        txns = self.txns
        assert txns.txn is not None
        key_cols = tuple(self.src.specs[chunk.stream].key_columns)
        last = len(chunk.rows) - 1
        for n, row in enumerate(chunk.rows):
            index = txns.next_index()
            if self.resume is not None and self.resume.drops(txns.txn, index):
                continue
            offset = {"phase": "stream", "start": txns.start, "txn": txns.txn, "i": index,
                      "inc": chunk.state_after if n == last else chunk.state_before}  # fmt: skip
            key = {k: row[k] for k in key_cols}
            self.chunk.append(
                ChangeEvent(chunk.stream, Op.READ, key, row, PARTITION, offset, None, txns.timestamp * 1000,
                            txns.txn, {"gtid": txns.txn, "incremental_snapshot": True})
            )  # fmt: skip
        if len(self.chunk) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self.chunk:
            chunk, self.chunk = self.chunk, []
            self.src._put(chunk)
