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
import select
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import pymysql
import sqlalchemy as sa
from pydantic import BaseModel
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)

from cdc.errors import CdcError, PositionLostError, SourceConfigError, SourceUnavailableError
from cdc.logsource import CHUNK, ReaderThread, SnapshotMode, SnapshotTable, run_snapshot
from cdc.masking import mask_dsn
from cdc.mysql import catalog as mysql_catalog
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
from connectors.sources.mysql_binlog import rowevents, server
from connectors.sources.mysql_binlog.config import BinlogConfig, BinlogStream, ResumeBy
from connectors.sources.mysql_binlog.decoding import RowMapper, build_mapper
from connectors.sources.mysql_binlog.positions import (
    FilePositions,
    MariadbGtids,
    MysqlGtids,
    PositionTracker,
    Resume,
    resume_of,
    split_file_pos,
)
from connectors.sources.mysql_binlog.preflight import preflight

log = logging.getLogger(__name__)

PARTITION = "binlog"
_ANONYMOUS = "00000000-0000-0000-0000-000000000000"
_CONTINUES = ("BEGIN", "SAVEPOINT", "ROLLBACK TO", "XA START", "XA END")
_EVENTS = [
    MariadbGtidEvent, GtidEvent, QueryEvent, XidEvent, RotateEvent, HeartbeatLogEvent,
    rowevents.WriteRows, rowevents.UpdateRows, rowevents.DeleteRows,
    rowevents.CachedTableMap,  # the library applies it to its table map; handle() ignores it
]  # fmt: skip
# 1236: the server cannot serve the requested position (binlog purged, GTID state too old)
_POSITION_LOST = 1236


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
            results += preflight(conn, self.cfg, self.mariadb)
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
        lost = self._position_lost(start, "purged")
        return [CheckResult(False, what, f"no: {lost.hint}")]

    # --- start ---
    def start(self, offsets: Offsets) -> None:
        offset = offsets.get(PARTITION)
        if not self.tables:
            self._load_tables()
        self._start_reader(self._run, (offset,), "cdc-binlog")

    def _run(self, offset: Offset | None) -> None:
        try:
            mode = self.cfg.snapshot_mode
            phase = offset.get("phase") if offset else None
            start: str | None = str(offset["start"]) if offset else None
            if mode.snapshots and phase != "stream":
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
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                if not self.mariadb:
                    # MySQL has no binlog_snapshot_* status: a brief global read lock pins the
                    # position while the snapshot opens (needs RELOAD; documented).
                    cur.execute("FLUSH TABLES WITH READ LOCK")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            position = self._snapshot_position(conn)
            if not self.mariadb:
                with conn.cursor() as cur:
                    cur.execute("UNLOCK TABLES")
            start = str(resume["start"]) if resume and "start" in resume else position
            log.info("snapshot at binlog position %s (streaming starts at %s)", position, start)
            plan = [
                SnapshotTable(
                    name, t.qualified, tuple(self.specs[name].key_columns), self._reader(conn, name)
                )
                for name, t in self.tables.items()
                if self.captures[name].snapshot
            ]
            total = server.count_rows(conn, [(t.db, t.name) for t in self.tables.values()])
            ok = run_snapshot(plan, PARTITION, resume, self._put, total=total, extra={"start": start})
            with conn.cursor() as cur:
                cur.execute("COMMIT")
            return start if ok else None
        finally:
            conn.close()

    def _snapshot_position(self, conn: Any) -> str:
        if self.mariadb:
            status = dict(server.rows(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'"))
            file, pos = str(status["Binlog_snapshot_file"]), int(status["Binlog_snapshot_position"])
            if self.cfg.resume_by is ResumeBy.FILE:
                return f"{file}:{pos}"
            return str(server.scalar(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos)) or "")
        if self.cfg.resume_by is ResumeBy.FILE:
            file, pos = server.master_status(conn)
            return f"{file}:{pos}"
        return server.current_gtids(conn, mariadb=False)

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
        if self.cfg.resume_by is ResumeBy.FILE:
            return FilePositions(*split_file_pos(start))
        return MariadbGtids(start) if self.mariadb else MysqlGtids(start)

    def _current_start(self) -> str:
        conn = self._connect()
        try:
            if self.cfg.resume_by is ResumeBy.FILE:
                file, pos = server.master_status(conn)
                return f"{file}:{pos}"
            return server.current_gtids(conn, self.mariadb)
        finally:
            conn.close()

    def _open(self, start: str) -> BinLogStreamReader:
        hb = float(self.cfg.heartbeat_interval)
        settings = {**self.settings.replication(), "read_timeout": max(30, int(hb * 4))}
        position: dict[str, Any]
        if self.cfg.resume_by is ResumeBy.FILE:
            file, pos = split_file_pos(start)
            # is_mariadb=True would make the library ignore the file and position and replay
            # from the server's FIRST binary log: MariaDB takes the plain COM_BINLOG_DUMP too.
            position = {"log_file": file, "log_pos": pos, "resume_stream": True, "is_mariadb": False}
        else:
            if not start and self.mariadb:
                raise SourceConfigError(
                    "the server has no GTID position yet (@@gtid_binlog_pos is empty)",
                    hint="write one transaction on the server, or set resume_by: file",
                )
            position = {"auto_position": start, "is_mariadb": self.mariadb}
        rowevents.install()
        return BinLogStreamReader(
            connection_settings=settings,
            server_id=self.cfg.server_id,
            blocking=True,
            only_schemas=sorted({t.db for t in self.tables.values()}),
            only_tables=sorted({t.name for t in self.tables.values()}),
            only_events=_EVENTS,
            slave_heartbeat=hb,
            enable_logging=False,
            **position,
        )

    def _stream(self, start: str | None, resume: Resume | None) -> None:
        if start is None:
            start = self._current_start()
            log.info("no stored position: streaming from the server's current position %s", start)
        tracker = self._tracker(start)
        reader = self._open(start)
        log.info("streaming the binlog from %s as replica server_id %d", start, self.cfg.server_id)
        handler = _TxnAssembler(self, tracker, resume, reader)
        try:
            while not self._stop.is_set():
                try:
                    event = reader.fetchone()
                except pymysql.MySQLError as exc:
                    if exc.args and exc.args[0] == _POSITION_LOST:
                        raise self._position_lost(
                            start, str(exc.args[1] if len(exc.args) > 1 else exc)
                        ) from None
                    raise
                if event is None:
                    continue
                handler.handle(event)
        finally:
            reader.close()

    def _position_lost(self, start: str, message: str) -> PositionLostError:
        return PositionLostError(
            f"the binlog position {start!r} is no longer on the server ({message})",
            hint="the binary logs holding it were purged (binlog_expire_logs_seconds): re-snapshot by deleting "
            "this connector's stored offsets (or use a new name), or set snapshot_mode: when_needed",
        )

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
        self.by_table = {(t.db, t.name): t for t in source.tables.values()}
        self.mappers: dict[int, tuple[Any, RowMapper]] = {}  # table id -> (its TABLE_MAP table, mapper)
        self.chunk: list[ChangeEvent] = []
        self.txn: str | None = None
        self.start = ""
        self.index = 0
        self.skip = False
        self.ts_ms: int | None = None

    def handle(self, event: Any) -> None:
        kind = type(event)
        if kind is rowevents.WriteRows or kind is rowevents.UpdateRows or kind is rowevents.DeleteRows:
            self._rows(event)
        elif kind is MariadbGtidEvent:
            self._begin(str(event.gtid), event.timestamp)
        elif kind is GtidEvent:
            gtid = str(event.gtid)
            self._begin(None if gtid.startswith(_ANONYMOUS) else gtid, event.timestamp)
        elif kind is XidEvent:
            self._commit()
        elif kind is QueryEvent:
            self._query(event)
        elif kind is HeartbeatLogEvent:
            self._flush()
            if self.txn is None:
                self.src._caught_up = True
        elif kind is RotateEvent and self.txn is None and isinstance(self.tracker, FilePositions):
            self.tracker.next_at(str(event.next_binlog), int(event.position))

    def _begin(self, gtid: str | None, timestamp: int) -> None:
        if self.src.cfg.resume_by is ResumeBy.FILE or gtid is None:
            if not isinstance(self.tracker, FilePositions):
                raise SourceConfigError(
                    "the server writes anonymous transactions (gtid_mode OFF) but resume_by is gtid",
                    hint="set resume_by: file, or enable GTIDs (gtid_mode=ON, enforce_gtid_consistency=ON)",
                )
            gtid = self.tracker.start()
        self.start = self.tracker.start()
        self.txn = gtid
        self.index = 0
        self.skip = self.tracker.applied(gtid)  # a replay of what is already behind us
        self.ts_ms = timestamp * 1000
        self.src._last_event_ts = float(timestamp)
        self.src._caught_up = False

    def _commit(self) -> None:
        if self.txn is None:
            return
        if not self.skip:  # a replayed transaction is already behind the tracked position
            self.tracker.commit(self.txn)
        if isinstance(self.tracker, FilePositions):
            self.tracker.next_at(str(self.reader.log_file), int(self.reader.log_pos))
        self.txn = None
        if len(self.chunk) >= CHUNK or not _more_waiting(self.reader):
            self._flush()

    def _query(self, event: Any) -> None:
        text = str(event.query).strip()
        upper = text[:16].upper()
        if self.txn is None and upper.startswith("BEGIN"):
            self._begin(None, event.timestamp)  # no GTID event: a server without GTIDs
            return
        if upper.startswith(_CONTINUES):
            return
        if not upper.startswith(("COMMIT", "ROLLBACK", "XA ")):
            mapped = sorted({t.qualified for t in self.by_table.values() if t.name in text})
            if mapped:
                # The TABLE_MAP of the table's next row event is the truth: a mapped column it
                # lacks (or retyped) stops the connector there, before that row is produced.
                log.info("DDL on captured table(s) %s: %s", ", ".join(mapped), text[:200])
        self._commit()  # DDL commits implicitly; COMMIT/ROLLBACK end non-transactional ones

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
        if self.txn is None:
            self._begin(None, event.timestamp)  # only in file mode without a GTID/BEGIN seen
        mapper = self._mapper(event)
        if mapper is None:
            return
        key_cols = mapper.key_columns
        kind = type(event)
        for row in event.rows:
            changes: list[tuple[Op, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]]
            sources = row.get("none_sources")
            if kind is rowevents.WriteRows:
                after = mapper.values(row["values"], sources)
                changes = [(Op.CREATE, {k: after[k] for k in key_cols}, None, after)]
            elif kind is rowevents.DeleteRows:
                before = mapper.values(row["values"], sources)
                changes = [(Op.DELETE, {k: before[k] for k in key_cols}, before, None)]
            else:
                # an update row says why a value is None per image
                before = mapper.values(row["before_values"], row.get("before_none_sources"))
                after = mapper.values(row["after_values"], row.get("after_none_sources"))
                key = {k: after[k] for k in key_cols}
                old_key = {k: before[k] for k in key_cols}
                changes = [(Op.DELETE, old_key, before, None)] if old_key != key else []
                changes.append((Op.UPDATE, key, before, after))
            for change in changes:
                self._add(mapper.stream, *change)
        if len(self.chunk) >= CHUNK:
            self._flush()

    def _add(
        self,
        stream: str,
        op: Op,
        key: dict[str, Any],
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        assert self.txn is not None
        index = self.index
        self.index += 1
        if self.skip or (self.resume is not None and self.resume.drops(self.txn, index)):
            return  # already committed downstream before a restart
        offset = {"phase": "stream", "start": self.start, "txn": self.txn, "i": index}
        self.chunk.append(
            ChangeEvent(
                stream, op, key, after, PARTITION, offset, before, self.ts_ms, self.txn, {"gtid": self.txn}
            )
        )

    def _flush(self) -> None:
        if self.chunk:
            chunk, self.chunk = self.chunk, []
            self.src._put(chunk)


def _more_waiting(reader: BinLogStreamReader) -> bool:
    """True when the stream socket already holds more bytes (so the hand-off can wait for them).

    Reads the stream connection's socket (a private attribute of the library); on any doubt it
    says False, which only makes a batch smaller."""
    conn = getattr(reader, "_stream_connection", None)
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return False
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(ready)
