"""Outbox relay, log mode on MySQL/MariaDB: the outbox table's inserts read from the binlog.

The relay registers as a replica (``server_id``) and reads the table's WRITE_ROWS events in
commit order, so each aggregate's events stay in order; updates and deletes of the table are
ignored (the application may delete its own row in the inserting transaction: the insert is
still in the binlog). Rows are decoded with their own TABLE_MAP like the mysql_binlog source
(:mod:`cdc.mysql.stream`, :mod:`cdc.mysql.decoding`).

MySQL has no server-side slot, so the position lives in the relay's offsets (partition
``binlog``): the restart position of the event's transaction plus its index in it
(:mod:`cdc.mysql.positions`). Without a stored stream position (first start, or a kill -9
before the first commit) the rows already in the table are read from one consistent snapshot
(in ``seq`` order) and the binlog is streamed from that snapshot's position, so nothing written
before the relay started, or by a relay that died, is missed.

The relay deletes the rows it published once the broker acknowledged them and their offsets
are durable (``acknowledge``). A kill -9 between that save and the delete would leave acknowledged
rows behind that the restarted stream (which starts after them) never sees again: at start-up
the relay notes the ids in the table and the binlog position, and deletes those ids the stream
did not publish again by the time it reaches that position (they were published before the
stored position). Delivery is at-least-once: consumers deduplicate by the ``id`` header.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pymysql
import sqlalchemy as sa

from cdc.errors import CdcError, PositionLostError, SourceConfigError, SourceUnavailableError
from cdc.handoff import EventHandoff, pause_caught_up
from cdc.masking import mask_dsn
from cdc.mysql import catalog, rowevents, server
from cdc.mysql import stream as binlog
from cdc.mysql.decoding import RowMapper, build_mapper
from cdc.mysql.positions import Resume, resume_of
from cdc.mysql.preflight import preflight
from cdc.mysql.stream import Seen
from cdc.mysql.types import row_normalizer
from cdc.outbox.table import COLUMNS
from cdc.plugin import ChangeEvent, CheckResult, ColumnInfo, Offset
from cdc.sql import engines

log = logging.getLogger(__name__)

CHUNK = 1000
PARTITION = "binlog"
_DELETE_BATCH = 500
_RETRIES = 5
_TRANSIENT = (1205, 1213)  # lock wait timeout, deadlock
# Updates and deletes (the relay's own) are skipped unparsed: only inserts are relayed.
_EVENTS = [e for e in binlog.EVENTS if e not in (rowevents.UpdateRows, rowevents.DeleteRows)]


class BinlogReader:
    """The reader thread of MySQL/MariaDB log mode; produces outbox events through ``to_event``
    and deletes the rows the broker acknowledged."""

    def __init__(
        self,
        dsn: str,
        table: str,
        server_id: int,
        by_file: bool,
        heartbeat: float,
        to_event: Callable[[dict[str, Any], str, Offset], ChangeEvent],
    ) -> None:
        self.dsn, self.table, self.server_id = dsn, table, server_id
        self.by_file, self.heartbeat = by_file, heartbeat
        self.to_event = to_event
        self.partition = PARTITION
        self.settings = server.Settings.parse(dsn)
        self.handoff = EventHandoff(50 * CHUNK)
        self.stop = threading.Event()
        self.columns: dict[str, ColumnInfo] = {}
        self.db = ""
        self.mariadb = True
        # (event number, row id) of every published row not deleted yet, in publication order
        self.pending: collections.deque[tuple[int, str]] = collections.deque()
        self._deleter = _Deleter(self)
        self._thread: threading.Thread | None = None

    def prepare(self) -> None:
        """Read the table's columns (the baseline its TABLE_MAP events are checked against)."""
        self.db, name = server.split_table(self.table, self.settings.database)
        engine = engines.create_engine(self.dsn, pool_size=1)
        try:
            with engine.connect() as conn:
                self.mariadb = "mariadb" in str(conn.exec_driver_sql("SELECT VERSION()").scalar()).lower()
                found = catalog.describe_table(conn, self.db, name)
        except sa.exc.SQLAlchemyError as exc:
            raise engines.translate(exc, "outbox table") from None
        finally:
            engine.dispose()
        self.name = name
        self.columns = {c: found[c] for c in COLUMNS}

    def check(self) -> list[CheckResult]:
        """The binlog preflight of the mysql_binlog source, for this relay's replica identity."""
        conn = self._connect()
        try:
            return preflight(
                conn, server_id=self.server_id, by_gtid=not self.by_file, mariadb=server.is_mariadb(conn)
            )
        finally:
            conn.close()

    def gauges(self, offset: Offset | None) -> dict[str, float]:
        """``binlog_position_on_server``: 0 when the binary logs holding the stored position are
        purged (the next start fails); empty without a stored stream position or a server."""
        if not offset or offset.get("phase") != "stream":
            return {}
        try:
            conn = self._connect()
        except CdcError:
            return {}
        try:
            mariadb = server.is_mariadb(conn)
            on_server = server.position_on_server(conn, str(offset["start"]), mariadb, self.by_file)
            return {"binlog_position_on_server": float(on_server)}
        except (pymysql.MySQLError, ValueError):
            return {}
        finally:
            conn.close()

    def start(self, offset: Offset | None) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(offset,), name="cdc-outbox-binlog", daemon=True
        )
        self._thread.start()

    def _connect(self) -> pymysql.connections.Connection[Any]:
        return server.connect(self.settings, self.dsn)

    def _run(self, offset: Offset | None) -> None:
        try:
            counter = _Counter()
            if offset is None or offset.get("phase") != "stream":
                # No stream position yet: what is in the table now is read first. A snapshot
                # interrupted by a crash is read again (its rows are still there: nothing is
                # deleted before the broker has it), and streaming starts at the FIRST one's
                # position so that rows inserted and deleted by the application in between are
                # not missed.
                taken = self._snapshot(counter, offset)
                if taken is None:
                    return
                self._stream(taken, None, counter, None)
            else:
                try:
                    self._stream(str(offset["start"]), resume_of(offset), counter, self._leftovers())
                except PositionLostError as exc:
                    raise PositionLostError(
                        exc.message,
                        hint="the rows not yet relayed are still in the outbox table: delete this relay's "
                        "stored offsets (or give it a new name) and it relays them from a snapshot of the table "
                        "(events the application deleted itself since the stored position are gone)",
                    ) from None
        except CdcError as exc:
            self.handoff.fail(exc)
        except pymysql.MySQLError as exc:
            self.handoff.fail(SourceUnavailableError(f"outbox log mode: {mask_dsn(str(exc))}"))
        except Exception as exc:  # surfaced by poll()
            self.handoff.fail(exc)

    # --- snapshot ---
    def _snapshot(self, counter: _Counter, resume: Offset | None) -> str | None:
        conn = self._connect()
        try:
            position = binlog.open_snapshot(conn, mariadb=self.mariadb, by_file=self.by_file)
            start = str(resume["start"]) if resume and "start" in resume else position
            log.info("outbox snapshot at binlog position %s (streaming starts at %s)", position, start)
            normalize = row_normalizer(self.columns, "error")
            rows: Iterable[dict[str, Any]] = server.read_chunks(
                conn, self.db, self.name, self.columns, ("seq",), None, CHUNK
            )
            chunk: list[ChangeEvent] = []
            for row in rows:
                n = counter.next()
                chunk.append(
                    self.to_event(
                        normalize(row), self.partition, {"phase": "snapshot", "start": start, "n": n}
                    )
                )
                self.pending.append((n, str(row["id"])))
                if len(chunk) >= CHUNK:
                    if not self.handoff.put(chunk, self.stop):
                        return None
                    chunk = []
            if chunk and not self.handoff.put(chunk, self.stop):
                return None
            with conn.cursor() as cur:
                cur.execute("COMMIT")
            return start
        finally:
            conn.close()

    def _leftovers(self) -> _Leftovers:
        """The ids in the table now and the binlog position after them (see the module doc)."""
        conn = self._connect()
        try:
            ids = {str(r[0]) for r in server.rows(
                conn, f"SELECT id FROM {server.quote(self.db)}.{server.quote(self.name)}"  # noqa: S608 - quoted
            )}  # fmt: skip
            # Read after the ids: a row visible to that read has its insert before this position.
            file, pos = server.master_status(conn)
        finally:
            conn.close()
        return _Leftovers(ids, (file, pos))

    # --- streaming ---
    def _stream(
        self, start: str, resume: Resume | None, counter: _Counter, leftovers: _Leftovers | None
    ) -> None:
        if not start:
            conn = self._connect()
            try:
                start = binlog.current_start(conn, by_file=self.by_file, mariadb=self.mariadb)
            finally:
                conn.close()
        tracker = binlog.tracker(start, by_file=self.by_file, mariadb=self.mariadb)
        reader = binlog.open_reader(
            self.settings, server_id=self.server_id, start=start, by_file=self.by_file, mariadb=self.mariadb,
            heartbeat=self.heartbeat, schemas=[self.db], tables=[self.name], events=_EVENTS,
        )  # fmt: skip
        log.info(
            "streaming outbox inserts from binlog position %s as replica server_id %d", start, self.server_id
        )
        txns = binlog.Transactions(tracker, reader, by_file=self.by_file)
        mapper: tuple[Any, RowMapper] | None = None
        chunk: list[ChangeEvent] = []
        try:
            while not self.stop.is_set():
                event = binlog.fetch(reader, start)
                if event is None:
                    continue
                seen = txns.handle(event)
                if seen is Seen.ROWS:
                    table_obj = reader.table_map.get(event.table_id)
                    if mapper is None or mapper[0] is not table_obj:
                        mapper = (table_obj, self._mapper(table_obj))
                    for row in event.rows:
                        index = txns.next_index()
                        values = mapper[1].values(row["values"], row.get("none_sources"))
                        if txns.skip or (resume is not None and resume.drops(str(txns.txn), index)):
                            continue  # already committed downstream before a restart
                        if leftovers is not None:  # published again: deleted after its new ack
                            leftovers.ids.discard(str(values["id"]))
                        n = counter.next()
                        offset = {"phase": "stream", "start": txns.start, "txn": txns.txn, "i": index, "n": n}
                        chunk.append(self.to_event(values, self.partition, offset))
                        self.pending.append((n, str(values["id"])))
                    if len(chunk) >= CHUNK:  # a large transaction travels in chunks
                        if not self.handoff.put(chunk, self.stop):
                            return
                        chunk = []
                elif seen is Seen.COMMIT or seen is Seen.IDLE:
                    if leftovers is not None and (
                        seen is Seen.IDLE or (str(reader.log_file), int(reader.log_pos)) >= leftovers.position
                    ):
                        self._deleter.delete(sorted(leftovers.ids), "acknowledged before a restart")
                        leftovers = None
                    if chunk and (
                        seen is Seen.IDLE or len(chunk) >= CHUNK or not binlog.more_waiting(reader)
                    ):
                        # handed over for want of more (not a heartbeat, not a full chunk)
                        caught_up = seen is not Seen.IDLE and len(chunk) < CHUNK
                        if not self.handoff.put(chunk, self.stop):
                            return
                        chunk = []
                        if caught_up:
                            pause_caught_up()  # the next read takes what was committed meanwhile
        finally:
            reader.close()

    def _mapper(self, table_obj: Any) -> RowMapper:
        qualified = f"{self.db}.{self.name}"
        if table_obj is None:
            raise SourceConfigError(f"a row event of {qualified} came without its TABLE_MAP")
        return build_mapper("outbox", qualified, table_obj, COLUMNS, ("id",), self.columns)

    # --- pipeline side ---
    def poll(self, timeout: float) -> list[ChangeEvent]:
        return self.handoff.take(timeout)

    def acknowledge(self, offset: Offset) -> None:
        """The broker has every event up to ``offset``: delete their rows."""
        upto = int(offset["n"])
        doomed: list[str] = []
        while self.pending and self.pending[0][0] <= upto:
            doomed.append(self.pending.popleft()[1])
        self._deleter.delete(doomed, "relayed")

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self._deleter.close()


class _Counter:
    """Numbers the events of one run (acknowledge finds the published rows up to an offset by it)."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


class _Leftovers:
    """Ids in the table at start-up, and the binlog position reached after reading them."""

    def __init__(self, ids: set[str], position: tuple[str, int]) -> None:
        self.ids = ids
        self.position = position


class _Deleter:
    """Deletes outbox rows by id on one session (used by the pipeline and the reader thread)."""

    def __init__(self, reader: BinlogReader) -> None:
        self.reader = reader
        self.lock = threading.Lock()
        self.conn: pymysql.connections.Connection[Any] | None = None

    def delete(self, ids: list[str], why: str) -> None:
        if not ids:
            return
        r = self.reader
        table = f"{server.quote(r.db)}.{server.quote(r.name)}"
        with self.lock:
            for i in range(0, len(ids), _DELETE_BATCH):
                part = ids[i : i + _DELETE_BATCH]
                marks = ", ".join(["%s"] * len(part))
                self._execute(f"DELETE FROM {table} WHERE id IN ({marks})", part, why)  # noqa: S608 - quoted, bound
        if why != "relayed":
            log.info("deleted %d outbox rows %s", len(ids), why)

    def _execute(self, statement: str, args: list[str], why: str) -> None:
        for attempt in range(_RETRIES):
            try:
                if self.conn is None:
                    self.conn = self.reader._connect()
                    with self.conn.cursor() as cur:
                        # no gap locks against the application's inserts
                        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                with self.conn.cursor() as cur:
                    cur.execute(statement, args)
                return
            except pymysql.MySQLError as exc:
                if exc.args and exc.args[0] in _TRANSIENT and attempt + 1 < _RETRIES:
                    time.sleep(0.05 * (attempt + 1))  # a deadlock victim: InnoDB rolled it back; again
                    continue
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                raise SourceUnavailableError(f"deleting {why} outbox rows: {mask_dsn(str(exc))}") from None

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
