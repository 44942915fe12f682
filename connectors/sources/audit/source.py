"""The audit relay: row changes recorded by generated audit triggers -> keyed change events.

**No late commit is missed.** The relay keeps no cursor: an audit row leaves the log (deleted,
or marked with ``relayed_at``) only after the broker acknowledged its events, and every read
starts again from the oldest unrelayed id. A transaction that took a low id and commits late is
simply read by the next poll. PostgreSQL additionally publishes only rows whose transaction id is
below the snapshot's xmin (``pg_snapshot_xmin(pg_current_snapshot())``, the PgQ/Londiste rule):
those transactions are finished, so the rows the relay publishes are final.

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
import time
from collections.abc import Sequence
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
from connectors.sources.audit.reader import AuditRow, TableReader

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
        self._n = 0
        self._next_read = 0.0
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
        now = time.monotonic()
        if now < self._next_read:
            time.sleep(min(timeout, self._next_read - now))
            return []
        events: list[ChangeEvent] = []
        try:
            with self.engine.connect() as conn:
                for spec in self.streams:
                    events += self._read(conn, spec)
            self._purge()
        except sa.exc.SQLAlchemyError as exc:
            self._forget_pending()
            raise engines.translate(exc, "audit relay") from None
        if not events:
            self._next_read = time.monotonic() + self.cfg.poll_interval
        return events

    def _forget_pending(self) -> None:
        """After a lost connection the runtime restarts from the log: nothing is in flight."""
        for name in self._pending:
            self._pending[name].clear()
            self._pending_ids[name].clear()

    def _read(self, conn: sa.Connection, spec: StreamSpec) -> list[ChangeEvent]:
        pending, in_flight = self._pending[spec.name], self._pending_ids[spec.name]
        room = min(self.cfg.batch_size, self.cfg.max_pending - len(pending))
        if room <= 0:
            return []
        reader = self._reader(spec.name)
        chosen: list[int] = []
        for audit_id, done in reader.candidates(conn, room + len(in_flight)):
            if audit_id in in_flight:
                continue
            if not done:
                break  # a finished-looking row above it may be of the same key: keep id order
            chosen.append(audit_id)
            if len(chosen) >= room:
                break
        if not chosen:
            conn.rollback()
            return []
        rows = reader.images(conn, chosen)
        conn.rollback()  # read-only; ends the snapshot
        events: list[ChangeEvent] = []
        for row in rows:
            events += self._events(spec, row)
            pending.append((self._n, row.id))
            in_flight.add(row.id)
        return events

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
        """The broker has these events: delete (or mark) exactly the audit rows behind them."""
        done: list[int] = []
        for partition, offset in offsets.items():
            name = partition.split(":", 1)[1]
            if name not in self._pending:
                continue
            upto = int(offset["n"])
            pending = self._pending[name]
            cut = 0
            while cut < len(pending) and pending[cut][0] <= upto:
                cut += 1
            ids = [audit_id for _, audit_id in pending[:cut]]
            del pending[:cut]
            self._pending_ids[name].difference_update(ids)
            done += ids
        if not done:
            return
        log_table = sa.table(
            LOG_TABLE, sa.column("id"), sa.column("relayed_at"), schema=self._schema_or_none()
        )
        try:
            with self.engine.begin() as conn:
                for i in range(0, len(done), 5000):
                    chunk = done[i : i + 5000]
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
        except sa.exc.SQLAlchemyError as exc:
            raise engines.translate(exc, "releasing relayed audit rows") from None

    def _schema_or_none(self) -> str | None:
        return self._log_schema() if self.dialect == "postgresql" else None

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
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
