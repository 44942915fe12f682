"""The binlog read as transactions: opening the replication stream, restart positions, and the
transaction boundaries every binlog consumer needs (the mysql_binlog source, the outbox relay's
MySQL/MariaDB log mode).

:class:`Transactions` follows GTID / BEGIN ... XID / COMMIT (or a DDL statement) and keeps, for
the transaction being read, its id, the position streaming must restart from to receive it
again and the index of its next row, as :mod:`cdc.mysql.positions` describes. A consumer feeds
it every event and acts on what it says the event was.
"""

from __future__ import annotations

import select
from enum import Enum
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)

from cdc.errors import PositionLostError, SourceConfigError
from cdc.mysql import rowevents, server
from cdc.mysql.positions import FilePositions, MariadbGtids, MysqlGtids, PositionTracker, split_file_pos
from cdc.mysql.reader import FastStreamReader

ANONYMOUS = "00000000-0000-0000-0000-000000000000"
_CONTINUES = ("BEGIN", "SAVEPOINT", "ROLLBACK TO", "XA START", "XA END")
EVENTS = [
    MariadbGtidEvent, GtidEvent, QueryEvent, XidEvent, RotateEvent, HeartbeatLogEvent,
    rowevents.WriteRows, rowevents.UpdateRows, rowevents.DeleteRows,
    rowevents.CachedTableMap,  # the library applies it to its table map; consumers ignore it
]  # fmt: skip
ROW_EVENTS = (rowevents.WriteRows, rowevents.UpdateRows, rowevents.DeleteRows)
# 1236: the server cannot serve the requested position (binlog purged, GTID state too old)
POSITION_LOST = 1236


def tracker(start: str, *, by_file: bool, mariadb: bool) -> PositionTracker:
    """The position tracker for a restart position ``start``."""
    if by_file:
        return FilePositions(*split_file_pos(start))
    return MariadbGtids(start) if mariadb else MysqlGtids(start)


def current_start(conn: Any, *, by_file: bool, mariadb: bool) -> str:
    """The server's current position, as a restart position of the given kind."""
    if by_file:
        file, pos = server.master_status(conn)
        return f"{file}:{pos}"
    return server.current_gtids(conn, mariadb)


def open_reader(
    settings: server.Settings,
    *,
    server_id: int,
    start: str,
    by_file: bool,
    mariadb: bool,
    heartbeat: float,
    schemas: list[str],
    tables: list[str],
    events: list[type] | None = None,
) -> BinLogStreamReader:
    """A blocking replication stream from ``start`` (GTID state or file:pos) of the given tables,
    with this package's exact row-event decoders installed and the hot events read by
    :class:`~cdc.mysql.reader.FastStreamReader`. ``events``: the event classes to
    build (default :data:`EVENTS`); others are skipped unparsed."""
    connection = {**settings.replication(), "read_timeout": max(30, int(heartbeat * 4))}
    position: dict[str, Any]
    if by_file:
        file, pos = split_file_pos(start)
        # is_mariadb=True would make the library ignore the file and position and replay
        # from the server's FIRST binary log: MariaDB takes the plain COM_BINLOG_DUMP too.
        position = {"log_file": file, "log_pos": pos, "resume_stream": True, "is_mariadb": False}
    else:
        if not start and mariadb:
            raise SourceConfigError(
                "the server has no GTID position yet (@@gtid_binlog_pos is empty)",
                hint="write one transaction on the server, or set resume_by: file",
            )
        position = {"auto_position": start, "is_mariadb": mariadb}
    rowevents.install()
    return FastStreamReader(
        connection_settings=connection,
        server_id=server_id,
        blocking=True,
        only_schemas=sorted(set(schemas)),
        only_tables=sorted(set(tables)),
        only_events=EVENTS if events is None else events,
        slave_heartbeat=heartbeat,
        enable_logging=False,
        **position,
    )


def position_lost(start: str, message: str) -> PositionLostError:
    """The located error of a restart position the server no longer has."""
    return PositionLostError(
        f"the binlog position {start!r} is no longer on the server ({message})",
        hint="the binary logs holding it were purged (binlog_expire_logs_seconds): re-snapshot by deleting "
        "this connector's stored offsets (or use a new name), or set snapshot_mode: when_needed",
    )


def fetch(reader: BinLogStreamReader, start: str) -> Any:
    """The next event (None after a heartbeat-less timeout); a purged position -> PositionLostError."""
    try:
        return reader.fetchone()
    except pymysql.MySQLError as exc:
        if exc.args and exc.args[0] == POSITION_LOST:
            raise position_lost(start, str(exc.args[1] if len(exc.args) > 1 else exc)) from None
        raise


def more_waiting(reader: BinLogStreamReader) -> bool:
    """True when the stream socket already holds more bytes (so the hand-off can wait for them).

    Reads the stream connection's socket (a private attribute of the library); on any doubt it
    says False, which only makes a batch smaller."""
    if isinstance(reader, FastStreamReader):
        return reader.more_waiting()
    conn = getattr(reader, "_stream_connection", None)
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return False
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(ready)


class Seen(Enum):
    """What :meth:`Transactions.handle` found an event to be."""

    ROWS = "rows"  # a row event inside the current transaction
    BEGIN = "begin"  # a transaction started
    COMMIT = "commit"  # a transaction ended (XID, COMMIT, or a DDL's implicit commit)
    IDLE = "idle"  # a heartbeat: the server has nothing more right now
    OTHER = "other"


class Transactions:
    """Transaction boundaries and restart positions of one binlog stream (the reader thread)."""

    def __init__(self, tracker: PositionTracker, reader: BinLogStreamReader, *, by_file: bool) -> None:
        self.tracker = tracker
        self.reader = reader
        self.by_file = by_file
        self.txn: str | None = None  # the transaction being read
        self.start = ""  # where streaming restarts to receive it again
        self.index = 0  # index of its next row
        self.skip = False  # a replay of a transaction already behind the tracked position
        self.timestamp = 0  # its binlog timestamp (seconds)
        self.statement = ""  # the text of the last non-transactional QUERY event (a DDL)

    def handle(self, event: Any) -> Seen:
        kind = type(event)
        if kind in ROW_EVENTS:
            if self.txn is None:
                self.begin(None, event.timestamp)  # only in file mode without a GTID/BEGIN seen
            return Seen.ROWS
        if kind is MariadbGtidEvent:
            fields = event.__dict__
            domain, server, seq = fields.get("domain_id"), fields.get("server_id"), fields.get("gtid_seq_no")
            if type(domain) is int and type(server) is int and type(seq) is int:
                self.mariadb_gtid(str(event.gtid), domain, server, seq, event.timestamp)
            else:
                self.begin(str(event.gtid), event.timestamp)
            return Seen.BEGIN
        if kind is GtidEvent:
            gtid = str(event.gtid)
            self.begin(None if gtid.startswith(ANONYMOUS) else gtid, event.timestamp)
            return Seen.BEGIN
        if kind is XidEvent:
            return Seen.COMMIT if self.commit() else Seen.OTHER
        if kind is QueryEvent:
            return self._query(event)
        if kind is HeartbeatLogEvent:
            return Seen.IDLE
        if kind is RotateEvent and self.txn is None and isinstance(self.tracker, FilePositions):
            self.tracker.next_at(str(event.next_binlog), int(event.position))
        return Seen.OTHER

    def mariadb_gtid(self, gtid: str, domain: int, server: int, seq: int, timestamp: int) -> None:
        """A MariaDB GTID event (``gtid`` is ``domain-server-seq`` of these numbers): a
        transaction starts."""
        tracker = self.tracker
        if type(tracker) is MariadbGtids:  # the event's numbers: the tracker parses no text
            tracker.known(gtid, domain, server, seq)
        self.begin(gtid, timestamp)

    def begin(self, gtid: str | None, timestamp: int) -> None:
        if self.by_file or gtid is None:
            if not isinstance(self.tracker, FilePositions):
                raise SourceConfigError(
                    "the server writes anonymous transactions (gtid_mode OFF) but resume_by is gtid",
                    hint="set resume_by: file, or enable GTIDs (gtid_mode=ON, enforce_gtid_consistency=ON)",
                )
            gtid = self.tracker.start()
        self.start = self.tracker.start()
        self.txn = gtid
        self.index = 0
        self.skip = self.tracker.applied(gtid)
        self.timestamp = timestamp

    def commit(self) -> bool:
        """The current transaction ended; False when none was open."""
        if self.txn is None:
            return False
        if not self.skip:  # a replayed transaction is already behind the tracked position
            self.tracker.commit(self.txn)
        # (an ABC's isinstance runs Python code: the usual MariaDB tracker answers first)
        if type(self.tracker) is not MariadbGtids and isinstance(self.tracker, FilePositions):
            self.tracker.next_at(str(self.reader.log_file), int(self.reader.log_pos))
        self.txn = None
        return True

    def next_index(self) -> int:
        """The index of the next row of the current transaction."""
        index = self.index
        self.index += 1
        return index

    def _query(self, event: Any) -> Seen:
        text = str(event.query).strip()
        upper = text[:16].upper()
        if self.txn is None and upper.startswith("BEGIN"):
            self.begin(None, event.timestamp)  # no GTID event: a server without GTIDs
            return Seen.BEGIN
        if upper.startswith(_CONTINUES):
            return Seen.OTHER
        self.statement = "" if upper.startswith(("COMMIT", "ROLLBACK", "XA ")) else text
        # DDL commits implicitly; COMMIT/ROLLBACK end non-transactional ones
        return Seen.COMMIT if self.commit() else Seen.OTHER


def open_snapshot(conn: Any, *, mariadb: bool, by_file: bool) -> str:
    """Start a consistent read-only snapshot on ``conn`` and return the binlog position it is at
    (a restart position of the given kind); the caller reads, then COMMITs.

    MariaDB reports the snapshot's binlog position itself (``binlog_snapshot_file`` /
    ``_position``), without a lock; MySQL has no such status: a brief global read lock pins the
    position while the snapshot opens (needs RELOAD)."""
    with conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if not mariadb:
            cur.execute("FLUSH TABLES WITH READ LOCK")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    if mariadb:
        status = dict(server.rows(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'"))
        file, pos = str(status["Binlog_snapshot_file"]), int(status["Binlog_snapshot_position"])
        if by_file:
            return f"{file}:{pos}"
        return str(server.scalar(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos)) or "")
    position = current_start(conn, by_file=by_file, mariadb=False)
    with conn.cursor() as cur:
        cur.execute("UNLOCK TABLES")
    return position
