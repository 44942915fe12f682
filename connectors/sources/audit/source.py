"""The audit relay: row changes recorded by generated audit triggers -> keyed change events.

**No late commit is missed.** The relay keeps no durable cursor: an audit row leaves the log
(deleted, or marked with ``relayed_at``) only after the broker acknowledged its events, and a
read lists the unrelayed ids from the oldest one that may still be unpublished. A transaction
that took a low id and commits late is simply read by the next poll. PostgreSQL additionally
publishes only rows whose transaction id is below the snapshot's xmin
(``pg_snapshot_xmin(pg_current_snapshot())``, the PgQ/Londiste rule): those transactions are
finished, so the rows the relay publishes are final.

**Scan bound (PostgreSQL, in memory).** Listing from the oldest unrelayed id re-lists the rows
still in flight on every read and walks the dead index entries relayed rows leave until vacuum.
So each stream keeps a cursor below which every unrelayed row is in flight, and reads start
above it; it moves only past ids no transaction can still add a row below (``_advance``: the
reader's own xid, taken after a listing, must fall below a later snapshot's xmin, and a listing
under that snapshot must have seen and published every row up to there). A restart or an error
starts again from the oldest row.

**Order per key: commit order.** Two transactions that change the same row serialize on its row
lock, so the later one's trigger inserts its audit row - and draws its id - after the earlier one
committed: per key, id order is commit order. Each read publishes visible rows in id order, and
on PostgreSQL stops at the first visible row that is not below xmin yet, so a row is never
published before a lower-id row of the same key (that row was visible and is either published
first or holds the read back). Rows still in flight are skipped by id, not re-published.

MySQL/MariaDB reads run in READ COMMITTED (REPEATABLE READ would take gap locks that block the
application's inserts). SQLite has one writer. One relay runs per audit log (a lease).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from pydantic import BaseModel

from cdc.audit.catalog import LOG_TABLE, default_schema, dialect_of
from cdc.audit.generator import Finding, Target, check_tables
from cdc.errors import SourceConfigError
from cdc.masking import mask_dsn
from cdc.plugin import (
    ChangeEvent,
    CheckResult,
    ColumnInfo,
    Lease,
    Offsets,
    Op,
    SourceConnector,
    StreamSpec,
)
from cdc.sql import engines, lease
from connectors.sources.audit.config import AuditConfig, AuditStream
from connectors.sources.audit.reader import AuditRow, Scan, TableReader

log = logging.getLogger(__name__)


class AuditRelay(SourceConnector):
    """Relays the audit log written by ``cdc migrations audit`` triggers, one stream per table."""

    config_model: ClassVar[type[BaseModel]] = AuditConfig
    stream_model: ClassVar[type[BaseModel]] = AuditStream
    # Reading is light next to converting and encoding (a query-based source), as for polling.
    encode_in_capture: ClassVar[bool] = True

    def __init__(self, config: BaseModel, streams: Sequence[StreamSpec]) -> None:
        super().__init__(config, streams)
        assert isinstance(config, AuditConfig)
        self.cfg = config
        self.captures = {s.name: AuditStream.model_validate(s.capture) for s in streams}
        self._engine: sa.Engine | None = None
        self._readers: dict[str, TableReader] = {}
        # per stream: [(n, audit id)] published and awaiting the broker, in publication order
        self._pending: dict[str, list[tuple[int, int]]] = {s.name: [] for s in streams}
        self._pending_ids: dict[str, set[int]] = {s.name: set() for s in streams}
        # PostgreSQL scan bound, per stream (see _advance): every unrelayed row at or below the
        # cursor is in flight, so reads start above it; (xid, id) bounds not yet mature; the
        # highest mature bound (every row at or below it is visible to any later snapshot)
        self._cursor: dict[str, int] = {s.name: 0 for s in streams}
        self._bounds: dict[str, list[tuple[int, int]]] = {s.name: [] for s in streams}
        self._final: dict[str, int] = {s.name: 0 for s in streams}
        self._n = 0
        self._next_read = 0.0
        self._releasing: Releaser | None = None
        self._conn: sa.Connection | None = None  # the reading connection
        self._conn_used = 0.0
        self._schema: str | None = None
        self._next_purge = 0.0

    # --- set-up ---
    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = engines.create_engine(self.cfg.url.secret, pool_size=4)
        return self._engine

    @property
    def dialect(self) -> str:
        return dialect_of(self.engine)

    def _log_schema(self) -> str:
        if self.cfg.audit_schema:
            return self.cfg.audit_schema
        with self.engine.connect() as conn:
            return default_schema(conn)

    def _reader(self, name: str) -> TableReader:
        if name not in self._readers:
            spec = next(s for s in self.streams if s.name == name)
            try:
                self._readers[name] = TableReader(
                    spec, self.captures[name].table, self.engine, self.dialect, self._log_schema()
                )
            except sa.exc.SQLAlchemyError as exc:
                raise engines.translate(exc, f"stream {name!r}") from None
        return self._readers[name]

    def describe(self) -> dict[str, dict[str, ColumnInfo]]:
        return {s.name: self._reader(s.name).describe() for s in self.streams}

    def _findings(self) -> list[Finding]:
        target = Target(
            self.engine, mask_dsn(self.cfg.url.secret), self.dialect, self._log_schema(), False, owned=False
        )
        try:
            return check_tables(target, [self._reader(s.name).audited for s in self.streams])
        except sa.exc.SQLAlchemyError as exc:
            raise engines.translate(exc, "checking the audit triggers") from None

    def check(self) -> list[CheckResult]:
        self.describe()
        results = [CheckResult(True, f"{LOG_TABLE} reachable; every stream's table resolves")]
        results += [CheckResult(f.ok, f.what, f.detail, f.warning) for f in self._findings()]
        return results

    def acquire_lease(self, connector_name: str) -> Lease:
        return lease.acquire(self.engine, f"audit:{connector_name}")

    def start(self, offsets: Offsets) -> None:
        for f in self._findings():
            if not f.ok and not f.warning:
                raise SourceConfigError(f.what, hint=f.detail)
            if not f.ok:
                log.warning("%s: %s", f.what, f.detail)
        # Offsets only number publications (the log itself is the truth); continue the count.
        self._n = max([int(o.get("n", 0)) for o in offsets.values()] + [0])

    # --- reading ---
    def poll(self, timeout: float) -> list[ChangeEvent]:
        self._released()
        now = time.monotonic()
        if now < self._next_read:
            time.sleep(min(timeout, self._next_read - now))
            return []
        if all(self._room(s.name) <= 0 for s in self.streams):
            # Every stream waits for the broker, whose acknowledgements arrive between polls:
            # look again soon, not after poll_interval (that is for an empty log).
            time.sleep(min(timeout, 0.005))
            return []
        events: list[ChangeEvent] = []
        try:
            if self._conn is not None and now - self._conn_used > 10:
                self._conn.close()  # idle a while: check out again, which pings the server
                self._conn = None
            if self._conn is None:  # kept between busy polls: each checkout pings first
                self._conn = self.engine.connect()
            self._conn_used = now
            for spec in self.streams:
                events += self._read(self._conn, spec)
            self._purge()
        except sa.exc.SQLAlchemyError as exc:
            self._forget_pending()
            self._drop_connection()
            raise engines.translate(exc, "audit relay") from None
        if not events:
            self._next_read = time.monotonic() + self.cfg.poll_interval
        return events

    def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.invalidate()  # never back into the pool: it may be broken
                conn.close()
            except sa.exc.SQLAlchemyError:
                log.debug("closing the audit relay's broken connection failed", exc_info=True)

    def _forget_pending(self) -> None:
        """After a lost connection the runtime restarts from the log: nothing is in flight."""
        for name in self._pending:
            self._pending[name].clear()
            self._pending_ids[name].clear()
            self._cursor[name], self._final[name] = 0, 0
            self._bounds[name].clear()

    def _room(self, name: str) -> int:
        """Rows the stream may read now: a batch, within the window of rows published and not
        yet acknowledged (max_pending). Acknowledged rows awaiting their release stay out of
        that window - the release latency would add to the broker's - within a second one."""
        unacknowledged, unreleased = len(self._pending[name]), len(self._pending_ids[name])
        return min(
            self.cfg.batch_size, self.cfg.max_pending - unacknowledged, 2 * self.cfg.max_pending - unreleased
        )

    def _read(self, conn: sa.Connection, spec: StreamSpec) -> list[ChangeEvent]:
        name = spec.name
        pending, in_flight = self._pending[name], self._pending_ids[name]
        room = self._room(name)
        if room <= 0:
            return []
        reader = self._reader(name)
        cursor = self._cursor[name]
        listed = room + sum(1 for i in in_flight if i > cursor)
        scan = reader.scan(conn, listed, cursor)
        chosen: list[int] = []
        for audit_id, done in scan.ids:
            if audit_id in in_flight:
                continue
            if not done:
                break  # a finished-looking row above it may be of the same key: keep id order
            chosen.append(audit_id)
            if len(chosen) >= room:
                break
        rows, own_xid = reader.read(conn, chosen) if chosen else ([], None)
        conn.rollback()  # read-only; ends the snapshot
        events: list[ChangeEvent] = []
        for row in rows:
            events += self._events(spec, row)
            pending.append((self._n, row.id))
            in_flight.add(row.id)
        if scan.xmin is not None:
            self._advance(name, scan, listed, own_xid)
        return events

    def _advance(self, name: str, scan: Scan, listed: int, own_xid: int | None) -> None:
        """PostgreSQL: move the stream's cursor past ids that no later read needs to list.

        Without a bound every read would list from the oldest unrelayed id: the ids still in
        flight again and again (a late row may commit below them), and the dead index entries
        of relayed rows until vacuum removes them. The bound: every writer of the log holds its
        xid before it draws an id (a trigger fires after its row change took one; the backfill
        takes one first) and ids are drawn in order, so every transaction that drew an id at or
        below the highest id a listing saw has an xid below the reader's own xid taken after
        that listing (``own_xid``). Once a later snapshot's xmin passes that xid, all of those
        transactions have ended: every row at or below that id is final - visible to this and
        every later snapshot, or rolled back. A listing under such a snapshot that reaches up
        to it sees each of those rows; once each is published (in flight), the cursor moves.
        """
        bounds = self._bounds[name]
        assert scan.xmin is not None
        while bounds and bounds[0][0] < scan.xmin:
            self._final[name] = max(self._final[name], bounds.pop(0)[1])
        if scan.ids and own_xid is not None:
            top = scan.ids[-1][0]
            if not bounds or top > bounds[-1][1]:
                bounds.append((own_xid, top))
        # The listing saw every row up to its last id (or all of them, when it was not full).
        reach = scan.ids[-1][0] if len(scan.ids) >= listed else self._final[name]
        upto, in_flight = min(self._final[name], reach), self._pending_ids[name]
        for audit_id, _ in scan.ids:
            if audit_id > upto:
                break
            if audit_id not in in_flight:  # listed but not published this time (batch full)
                upto = audit_id - 1
                break
        self._cursor[name] = max(self._cursor[name], upto)

    def _events(self, spec: StreamSpec, row: AuditRow) -> list[ChangeEvent]:
        """One audit record -> its events (a key change is a delete of the old key + the new row)."""
        keys = spec.key_columns

        def event(
            op: Op, image: dict[str, Any], before: dict[str, Any] | None, after: dict[str, Any] | None
        ) -> ChangeEvent:
            self._n += 1
            return ChangeEvent(
                spec.name, op, {k: image[k] for k in keys}, after, f"audit:{spec.name}", {"n": self._n},
                before=before, ts_ms=row.ts_ms, txid=row.txid, source={"audit_id": row.id},
            )  # fmt: skip

        if row.op in ("c", "r") and row.after is not None:  # r: a backfilled row
            return [event(Op.CREATE if row.op == "c" else Op.READ, row.after, None, row.after)]
        if row.op == "d" and row.before is not None:
            return [event(Op.DELETE, row.before, row.before, None)]
        if row.op == "u" and row.before is not None and row.after is not None:
            if any(row.before[k] != row.after[k] for k in keys):
                return [
                    event(Op.DELETE, row.before, row.before, None),
                    event(Op.CREATE, row.after, None, row.after),
                ]
            return [event(Op.UPDATE, row.after, row.before, row.after)]
        if row.op == "t":
            if self.cfg.on_truncate == "skip":
                log.warning(
                    "stream %s: TRUNCATE (audit id %d) skipped (on_truncate: skip)", spec.name, row.id
                )
                self._n += 1
                return []
            raise SourceConfigError(
                f"stream {spec.name!r}: the table was TRUNCATEd (audit id {row.id}); its rows' deletes are unknown",
                hint="re-snapshot the table downstream, then delete that audit row (or set on_truncate: skip)",
            )
        raise SourceConfigError(
            f"stream {spec.name!r}: audit id {row.id} has op {row.op!r} without its image"
        )

    # --- after the broker ---
    def acknowledge(self, offsets: Offsets) -> None:
        """The broker has these events: delete (or mark) exactly the audit rows behind them.

        PostgreSQL: off the reading thread; the rows stay in flight - never listed again - until
        their release committed. MySQL/MariaDB and SQLite: here, in batches as acknowledged (a
        merged InnoDB delete may scan and wait on an open transaction's row lock; SQLite has one
        writer)."""
        released: list[tuple[str, list[int]]] = []
        for partition, offset in offsets.items():
            name = partition.split(":", 1)[1]
            if name not in self._pending:
                continue
            upto = int(offset["n"])
            pending = self._pending[name]
            cut = 0
            while cut < len(pending) and pending[cut][0] <= upto:
                cut += 1
            if cut:
                released.append((name, [audit_id for _, audit_id in pending[:cut]]))
                del pending[:cut]
        if not released:
            return
        if self.dialect == "postgresql":
            self._releaser().put(released)
            return
        try:
            self._release([i for _, ids in released for i in ids])
        except sa.exc.SQLAlchemyError as exc:
            self._forget_pending()  # these rows stay in the log: list them again
            raise engines.translate(exc, "releasing relayed audit rows") from None
        for name, ids in released:
            self._pending_ids[name].difference_update(ids)

    def _release(self, ids: list[int]) -> None:
        """Delete (or mark) the audit rows ``ids`` in one transaction."""
        log_table = sa.table(
            LOG_TABLE, sa.column("id"), sa.column("relayed_at"), schema=self._schema_or_none()
        )
        ids.sort()  # index order
        with self.engine.begin() as conn:
            for i in range(0, len(ids), 5000):
                chunk = ids[i : i + 5000]
                # PostgreSQL: one array parameter, not a thousand (planning them costs more)
                match = (
                    log_table.c.id == sa.func.any(sa.cast(chunk, sa.ARRAY(sa.BigInteger)))
                    if self.dialect == "postgresql"
                    else log_table.c.id.in_(chunk)
                )
                if self.cfg.after_relay == "delete":
                    conn.execute(sa.delete(log_table).where(match))
                else:
                    conn.execute(
                        sa.update(log_table).where(match).values(relayed_at=sa.func.current_timestamp())
                    )

    def _releaser(self) -> Releaser:
        if self._releasing is None:
            self._releasing = Releaser(self._release)
        return self._releasing

    def _released(self) -> None:
        """Rows whose release committed leave the in-flight sets; a failed release stops the
        relay (its rows stay in the log: the restarted relay publishes them again)."""
        if self._releasing is None:
            return
        for name, ids in self._releasing.finished():
            self._pending_ids[name].difference_update(ids)
        if self._releasing.error is not None:
            error, self._releasing = self._releasing.error, None
            self._forget_pending()
            if isinstance(error, sa.exc.SQLAlchemyError):
                raise engines.translate(error, "releasing relayed audit rows") from None
            raise error

    def _schema_or_none(self) -> str | None:
        if self.dialect != "postgresql":
            return None
        if self._schema is None:
            self._schema = self._log_schema()
        return self._schema

    def _purge(self) -> None:
        """Mark mode with keep_marked: delete marked rows older than that, once a minute."""
        if (
            self.cfg.after_relay != "mark"
            or self.cfg.keep_marked is None
            or time.monotonic() < self._next_purge
        ):
            return
        self._next_purge = time.monotonic() + 60
        log_table = sa.table(LOG_TABLE, sa.column("relayed_at"), schema=self._schema_or_none())
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.cfg.keep_marked)
        # PostgreSQL compares aware values; MySQL sessions run in UTC; SQLite stores UTC text.
        bound: Any = cutoff if self.dialect == "postgresql" else cutoff.replace(tzinfo=None)
        if self.dialect == "sqlite":
            bound = cutoff.strftime("%Y-%m-%d %H:%M:%S")
        with self.engine.begin() as conn:
            conn.execute(sa.delete(log_table).where(log_table.c.relayed_at < bound))

    def lag(self, offsets: Offsets) -> dict[str, float]:
        try:
            log_table = sa.table(LOG_TABLE, sa.column("relayed_at"), schema=self._schema_or_none())
            with self.engine.connect() as conn:
                count = conn.execute(
                    sa.select(sa.func.count()).select_from(log_table).where(log_table.c.relayed_at.is_(None))
                ).scalar()
        except sa.exc.SQLAlchemyError:
            return {}
        return {"audit_rows": float(count or 0)}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._releasing is not None:  # acknowledged rows: released before the engine goes
            self._releasing.close()
            self._releasing = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class Releaser:
    """Releases (deletes or marks) acknowledged audit rows on its own thread and connection, so
    reading and encoding go on meanwhile (the database waits release the GIL). Batches queued
    while one runs are released together, in one transaction."""

    def __init__(self, release: Callable[[list[int]], None]) -> None:
        self._release = release
        self._todo: list[tuple[str, list[int]]] = []
        self._done: deque[tuple[str, list[int]]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="audit-release", daemon=True)
        self._thread.start()

    def put(self, released: list[tuple[str, list[int]]]) -> None:
        with self._cond:
            self._todo += released
            self._cond.notify_all()

    def finished(self) -> list[tuple[str, list[int]]]:
        """The (stream, ids) whose release committed since the last call."""
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._todo and not self._stop:
                    self._cond.wait()
                if not self._todo:
                    return
                batch, self._todo = self._todo, []
            try:
                self._release([i for _, ids in batch for i in ids])
            except BaseException as exc:  # handed to the reading thread, which stops
                self.error = exc
                return
            self._done.extend(batch)

    def close(self, timeout: float = 30.0) -> None:
        """Release what was queued, then stop."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
