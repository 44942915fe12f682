"""The PostgreSQL WAL source connector.

One reader thread owns the replication connection: it snapshots (when asked), then streams
pgoutput, answers keepalives at once, sends status updates at a fixed interval, and hands
decoded events to the pipeline through a bounded queue (a slow broker is back-pressure, while
status updates keep the walsender from timing out).

Positions: partition ``slot:<slot>``; during the snapshot the offset is
``{"phase": "snapshot", "relation": ..., "after": [key...], "done": [...]}``, while streaming
``{"phase": "stream", "commit": <commit LSN>, "i": <index in the transaction>}``. The slot is
confirmed only up to the END LSN of transactions whose every event is committed downstream
(confirming the commit's own LSN would replay that transaction on every reconnect); events at
or below the stored position are dropped on replay. When everything received is delivered and
no transaction is half-received, the keepalive's WAL position is confirmed too, so an idle
captured database does not pin WAL.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from pydantic import BaseModel

from cdc.errors import CdcError, PositionLostError, SourceConfigError, SourceUnavailableError
from cdc.logsource import CHUNK, ReaderThread, SnapshotMode, SnapshotTable, run_snapshot
from cdc.masking import mask_dsn
from cdc.pg import pgoutput as po
from cdc.pg.confirm import ConfirmTracker
from cdc.pg.logical import run_stream
from cdc.pg.replication import ReplicationConnection, XLogData, normal_connection
from cdc.pg.types import TypeMap
from cdc.plugin import (
    ChangeEvent,
    CheckResult,
    ColumnInfo,
    Offset,
    Offsets,
    Op,
    SourceConnector,
    StreamSpec,
    TransactionEnd,
)
from cdc.watermarks import WatermarkSnapshot, interrupted_snapshot_state, requested_streams
from connectors.sources.postgres_wal import catalog, snapshot
from connectors.sources.postgres_wal.config import UnchangedToast, WalConfig, WalStream
from connectors.sources.postgres_wal.decoding import RelationMapper, build_mapper
from connectors.sources.postgres_wal.incremental import incremental_snapshot

log = logging.getLogger(__name__)


class PostgresWalSource(ReaderThread, SourceConnector):
    """Streams committed changes from PostgreSQL's WAL via logical decoding (pgoutput)."""

    transaction_metadata = True

    config_model: ClassVar[type[BaseModel]] = WalConfig
    stream_model: ClassVar[type[BaseModel]] = WalStream
    #: the snapshot reads like a query (its rows eventified in the capture process, measured
    #: with benchmarks/bench_polling_initial_load.py --source wal: pickling each row's values
    #: and offset there and unpickling them here took more CPU than eventifying them)
    encode_snapshot_in_capture: ClassVar[bool] = True

    def __init__(self, config: BaseModel, streams: Sequence[StreamSpec]) -> None:
        super().__init__(config, streams)
        assert isinstance(config, WalConfig)
        self.cfg = config
        self.dsn = config.url.secret
        self.captures = {s.name: WalStream.model_validate(s.capture) for s in streams}
        self.specs = {s.name: s for s in streams}
        self.partition = f"slot:{config.slot}"
        self.tables: dict[str, catalog.Table] = {}
        self._init_reader(config.queue_events)
        self.confirm = ConfirmTracker()
        self._snapshot_started: float | None = None
        self._snapshot_pid = 0

    # --- catalog ---
    def _load_tables(self, conn: psycopg.Connection[Any]) -> None:
        # one set of catalog queries for every stream's table (see load_tables); the checks
        # and their errors come stream by stream, in order, as with one table at a time
        loaded = catalog.load_tables(conn, [(cap.table, cap.children) for cap in self.captures.values()])
        for (name, cap), table in zip(self.captures.items(), loaded, strict=True):
            if table is None:
                raise catalog.missing_table(cap.table)
            missing = [c for c in self.specs[name].columns if c not in table.columns]
            if missing:
                raise SourceConfigError(f"stream {name!r}: columns {missing} not found in {table.qualified}")
            self.tables[name] = table

    def describe(self) -> dict[str, dict[str, ColumnInfo]]:
        try:
            with normal_connection(self.dsn) as conn:
                self._load_tables(conn)
        except psycopg.Error as exc:
            raise SourceUnavailableError(f"describe: {mask_dsn(str(exc))}") from None
        return {name: table.column_infos() for name, table in self.tables.items()}

    def _unsafe_tables(self, conn: psycopg.Connection[Any]) -> list[str]:
        unsafe: list[str] = []
        for name, table in self.tables.items():
            if not self.captures[name].insert_only:
                unsafe += catalog.needs_identity(conn, table)
        return unsafe

    def _publication_plan(self, conn: psycopg.Connection[Any]) -> list[sql.Composed]:
        full: list[str] = [self.cfg.signal_table] if self.cfg.signal_table else []
        inserts: list[str] = []
        for name, table in self.tables.items():
            names = [table.qualified] + [f"{s}.{n}" for _, s, n in table.children]
            (inserts if self.captures[name].insert_only else full).extend(names)
        return catalog.publication_statements(
            conn, self.cfg.publication, full, inserts_only=False
        ) + catalog.publication_statements(
            conn, f"{self.cfg.publication}_inserts", inserts, inserts_only=True
        )

    def _publications(self) -> list[str]:
        pubs = []
        if any(not c.insert_only for c in self.captures.values()):
            pubs.append(self.cfg.publication)
        if any(c.insert_only for c in self.captures.values()):
            pubs.append(f"{self.cfg.publication}_inserts")
        return pubs

    def _refuse_unsafe(self, unsafe: list[str]) -> SourceConfigError:
        fixes = "; ".join(
            sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL")
            .format(sql.Identifier(*catalog.split_name(t)))
            .as_string()
            for t in unsafe
        )
        return SourceConfigError(
            f"tables without a primary key and with REPLICA IDENTITY DEFAULT/NOTHING: {', '.join(unsafe)}. "
            "In a publication that publishes updates/deletes, PostgreSQL would reject the application's own "
            "UPDATE and DELETE on them; nothing was published",
            hint=f"give them a primary key, or run: {fixes}; or mark their stream insert_only: true",
        )

    def _children_limits(self) -> str | None:
        """Why signal_table cannot cover every stream (inheritance children), or None."""
        parents = sorted(name for name, t in self.tables.items() if t.children)
        if not self.cfg.signal_table or not parents:
            return None
        return (
            f"streams {parents} capture inheritance children (children:): incremental snapshots read the "
            "parent table only, so an interrupted initial snapshot is NOT finished through signal_table's "
            "watermarks but re-read from current data (nothing lost; a key may briefly show an older value), "
            "and cdc snapshot does not re-read the children's rows"
        )

    def check(self) -> list[CheckResult]:
        self.describe()
        results = [CheckResult(True, "database reachable; every stream's table and columns resolve")]
        limits = self._children_limits()
        if limits:
            results.append(CheckResult(False, "signal_table with inheritance children", limits, warning=True))
        with normal_connection(self.dsn) as conn:
            level = conn.execute("SHOW wal_level").fetchone()
            ok = bool(level and level[0] == "logical")
            results.append(
                CheckResult(ok, "wal_level = logical", "" if ok else "set wal_level = logical and restart")
            )
            row = conn.execute(
                "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            ok = bool(row and row[0])
            results.append(
                CheckResult(ok, "REPLICATION privilege", "" if ok else "ALTER ROLE <user> WITH REPLICATION")
            )
            unsafe = self._unsafe_tables(conn)
            results.append(
                CheckResult(
                    not unsafe,
                    "publication safety (keys or replica identity)",
                    str(self._refuse_unsafe(unsafe)) if unsafe else "",
                )
            )
            plan = self._publication_plan(conn)
            detail = "; ".join(s.as_string(conn) for s in plan)
            if not plan:
                results.append(CheckResult(True, "publication", "up to date"))
            elif self.cfg.create_publication:
                results.append(CheckResult(True, "publication", f"the connector runs at start-up: {detail}"))
            else:
                results.append(
                    CheckResult(
                        False, "publication", f"create_publication is false: ask a DBA to run: {detail}"
                    )
                )
            slot = catalog.slot_info(conn, self.cfg.slot)
            results.append(
                CheckResult(
                    slot is None or slot["wal_status"] != "lost",
                    f"slot {self.cfg.slot}",
                    "missing (created at start)" if slot is None else f"{slot}",
                )
            )
        return results

    # --- start ---
    def start(self, offsets: Offsets) -> None:
        offset = offsets.get(self.partition)
        try:
            with normal_connection(self.dsn) as conn:
                if not self.tables:
                    self._load_tables(conn)
                unsafe = self._unsafe_tables(conn)
                if unsafe:
                    raise self._refuse_unsafe(unsafe)
                limits = self._children_limits()
                if limits:
                    log.warning("signal_table %s: %s", self.cfg.signal_table, limits)
                if self.cfg.signal_table:
                    conn.execute(
                        sql.SQL(
                            "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, type text NOT NULL, data text)"
                        ).format(sql.Identifier(*catalog.split_name(self.cfg.signal_table)))
                    )
                self._ensure_publications(conn)
                oids = {c.type_oid for t in self.tables.values() for c in t.columns.values()} | {25}
                self.types = TypeMap.load(conn, oids)
                slot = catalog.slot_info(conn, self.cfg.slot)
        except psycopg.Error as exc:
            raise SourceUnavailableError(f"start: {mask_dsn(str(exc))}") from None
        if self.cfg.snapshot_mode is SnapshotMode.WHEN_NEEDED and (
            (slot is not None and slot["wal_status"] == "lost")
            or (slot is None and offset is not None and offset.get("phase") == "stream")
        ):
            log.warning(
                "no usable position (slot %s %s): taking a new snapshot (snapshot_mode: when_needed)",
                self.cfg.slot,
                "missing" if slot is None else "invalidated",
            )
            if slot is not None:
                with normal_connection(self.dsn) as conn:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (self.cfg.slot,))
            slot, offset = None, None
        lost = self._position_lost(slot, offset)
        if lost is not None:
            raise lost
        self._resume = (
            (int(offset["commit"]), int(offset["i"])) if offset and offset.get("phase") == "stream" else None
        )
        self._inc_state: dict[str, Any] | None = offset.get("inc") if offset else None
        self._start_reader(self._run, (slot is None, offset), "cdc-wal")

    def _position_lost(self, slot: dict[str, Any] | None, offset: Offset | None) -> PositionLostError | None:
        """Why a start cannot resume from ``offset`` with the slot as it is, or None."""
        if slot is not None and slot["wal_status"] == "lost":
            return PositionLostError(
                f"replication slot {self.cfg.slot!r} was invalidated (wal_status lost)",
                hint="drop the slot, then re-snapshot (a new connector name, or delete its stored offsets)",
            )
        if slot is None and offset is not None and offset.get("phase") == "stream":
            return PositionLostError(
                f"replication slot {self.cfg.slot!r} is gone but a stream position is stored; "
                "starting fresh would silently skip every change since",
                hint="re-snapshot: delete this connector's stored offsets (or use a new name) to take a new snapshot",
            )
        return None

    def check_position(self, offsets: Offsets) -> list[CheckResult]:
        """Whether the slot still holds the committed stream position."""
        offset = offsets.get(self.partition)
        if not offset:
            return []
        try:
            with normal_connection(self.dsn) as conn:
                slot = catalog.slot_info(conn, self.cfg.slot)
        except psycopg.Error as exc:
            raise SourceUnavailableError(f"check: {mask_dsn(str(exc))}") from None
        what = (
            f"committed position ({offset.get('phase', 'stream')}) can be resumed from slot {self.cfg.slot}"
        )
        lost = self._position_lost(slot, offset)
        if lost is None:
            return [CheckResult(True, what)]
        if self.cfg.snapshot_mode is SnapshotMode.WHEN_NEEDED:
            return [
                CheckResult(
                    False, what, f"no, {lost.message}: the next start takes a new snapshot", warning=True
                )
            ]
        return [CheckResult(False, what, f"no, {lost.message}; {lost.hint}")]

    def _ensure_publications(self, conn: psycopg.Connection[Any]) -> None:
        plan = self._publication_plan(conn)
        if not plan:
            return
        statements = [s.as_string(conn) for s in plan]
        if not self.cfg.create_publication:
            raise SourceConfigError(
                "the publication does not cover the configured tables",
                hint="ask a DBA to run: " + "; ".join(statements),
            )
        try:
            for statement in plan:
                conn.execute(statement)
                log.info("publication: %s", statement.as_string(conn))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise SourceConfigError(
                f"no privilege to create or alter the publication: {exc}",
                hint="ask a DBA to run: " + "; ".join(statements),
            ) from None

    # --- the reader thread ---
    def _run(self, create_slot: bool, offset: Offset | None) -> None:
        repl: ReplicationConnection | None = None
        try:
            repl = ReplicationConnection(self.dsn)
            mode = self.cfg.snapshot_mode
            wants_snapshot = mode.snapshots
            if create_slot:
                if not self.cfg.create_slot:
                    raise SourceConfigError(
                        f"replication slot {self.cfg.slot!r} does not exist",
                        hint=f"ask a DBA to run: SELECT pg_create_logical_replication_slot('{self.cfg.slot}', 'pgoutput')",
                    )
                temporary = mode is SnapshotMode.INITIAL_ONLY and not self.cfg.keep_slot
                created = self._create_slot(repl, export=wants_snapshot, temporary=temporary)
                if wants_snapshot:
                    self._snapshot(created.snapshot_name, None)
            elif wants_snapshot and (offset is None or offset.get("phase") == "snapshot"):
                # The exported snapshot died with a previous process.
                resumable = self._interrupted_as_incremental(offset)
                if resumable is not None:
                    log.warning("resuming an interrupted snapshot as an incremental snapshot (watermarks)")
                    self._inc_state = resumable
                else:
                    log.warning("resuming an interrupted snapshot without its exported snapshot (see docs)")
                    self._snapshot(None, offset)
            if mode is SnapshotMode.INITIAL_ONLY:
                log.info("initial_only: snapshot done; not streaming")
                self._put([])
                return
            self._stream(repl)
        except CdcError as exc:
            self._handoff.fail(exc)
        except psycopg.Error as exc:
            self._handoff.fail(SourceUnavailableError(f"replication: {mask_dsn(str(exc))}"))
        except Exception as exc:  # surfaced by poll(), never swallowed
            self._handoff.fail(exc)
        finally:
            if repl is not None:
                repl.close()

    def _interrupted_as_incremental(self, offset: Offset | None) -> dict[str, Any] | None:
        """The rest of an interrupted snapshot as incremental-snapshot state (needs signal_table;
        inheritance children are read by the plain path)."""
        if not self.cfg.signal_table or any(t.children for t in self.tables.values()):
            return None
        streams = {n: t.qualified for n, t in self.tables.items() if self.captures[n].snapshot}
        return interrupted_snapshot_state(offset, streams)

    def signal(self, action: str, args: dict[str, Any]) -> str:
        """``execute-snapshot``: queue an incremental snapshot of the given streams (default all)."""
        streams = requested_streams(action, args, self.captures, self.cfg.signal_table, "public.cdc_signals")
        assert self.cfg.signal_table is not None
        ident = str(uuid.uuid4())
        with normal_connection(self.dsn) as conn:
            conn.execute(
                sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(
                    sql.Identifier(*catalog.split_name(self.cfg.signal_table))
                ),
                (ident, "execute-snapshot", json.dumps({"streams": streams})),
            )
        return ident

    def _create_slot(self, repl: ReplicationConnection, *, export: bool, temporary: bool) -> Any:
        """Create the slot; it waits for running write transactions, so name them on timeout."""
        done = threading.Event()

        def watchdog() -> None:
            if done.wait(60):
                return
            try:
                with normal_connection(self.dsn) as conn:
                    rows = conn.execute(
                        "SELECT pid, usename, state, now() - xact_start, left(query, 80) FROM pg_stat_activity "
                        "WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    ).fetchall()
                log.error(
                    "creating slot %s waits for these transactions to end (idle-in-transaction sessions block it): %s",
                    self.cfg.slot,
                    "; ".join(f"pid {r[0]} user {r[1]} {r[2]} for {r[3]}: {r[4]}" for r in rows),
                )
            except psycopg.Error:
                pass

        threading.Thread(target=watchdog, daemon=True).start()
        try:
            created = repl.create_slot(self.cfg.slot, export_snapshot=export, temporary=temporary)
        finally:
            done.set()
        log.info("created slot %s at %s", created.name, created.consistent_point)
        return created

    def _snapshot(self, snapshot_name: str | None, resume: Offset | None) -> None:
        conn = normal_connection(self.dsn)
        self._snapshot_started = time.monotonic()
        self._snapshot_pid = conn.info.backend_pid
        try:
            snapshot.begin_snapshot(conn, snapshot_name)
            relations: list[tuple[str, tuple[str, str], bool]] = []
            for name, table in self.tables.items():
                if not self.captures[name].snapshot:
                    continue
                relations.append((name, (table.schema, table.name), True))
                relations.extend((name, (s, n), False) for _, s, n in table.children)
            counted = [(s, n, only) for _, (s, n), only in relations]
            plan = [
                SnapshotTable(stream, f"{relation[0]}.{relation[1]}", tuple(self.specs[stream].key_columns),
                              self._table_reader(conn, stream, relation, only))
                for stream, relation, only in relations
            ]  # fmt: skip
            count = lambda: snapshot.count_rows(conn, counted)  # noqa: E731
            if not run_snapshot(plan, self.partition, resume, self._put, count=count):
                return
            conn.execute("COMMIT")
        finally:
            self._snapshot_started = None
            conn.close()

    def _table_reader(
        self, conn: psycopg.Connection[Any], stream: str, relation: tuple[str, str], only: bool
    ) -> Callable[[list[Any] | None], Iterable[dict[str, Any]]]:
        spec = self.specs[stream]

        def read(after: list[Any] | None) -> Iterable[dict[str, Any]]:
            return snapshot.read_table(
                conn, relation, self.tables[stream], spec.columns, tuple(spec.key_columns), self.types, after,
                self.cfg.snapshot_fetch_size, only,
            )  # fmt: skip

        return read

    def _stream(self, repl: ReplicationConnection) -> None:
        options = {"proto_version": "1", "publication_names": ",".join(self._publications())}
        if self.cfg.messages:
            options["messages"] = "true"
        by_name = {}
        for name, table in self.tables.items():
            by_name[table.qualified] = name
            for _, s, n in table.children:
                by_name[f"{s}.{n}"] = name
        reselect = normal_connection(self.dsn)
        self.incremental: WatermarkSnapshot | None = None
        if self.cfg.signal_table:
            self.incremental = incremental_snapshot(
                reselect, self.cfg.signal_table, self.cfg.incremental_chunk_size, self.tables,
                {n: self.specs[n].columns for n in self.tables},
                {n: tuple(self.specs[n].key_columns) for n in self.tables}, self.types,
            )  # fmt: skip
            self.incremental.restore(self._inc_state)
            if self.incremental.busy:
                self.incremental.open_next_window()
        handler = _TxnHandler(self, by_name, reselect)
        heartbeat = (
            (reselect, self.cfg.heartbeat_query, self.cfg.heartbeat_interval)
            if self.cfg.heartbeat_query
            else None
        )
        try:
            run_stream(
                repl, self.cfg.slot, options, self.confirm, handler, self._stop,
                status_interval=self.cfg.status_interval, queue_empty=self._handoff.empty, heartbeat=heartbeat,
                on_idle=handler.flush,
            )  # fmt: skip
        finally:
            reselect.close()

    def _emit(self, chunk: list[ChangeEvent]) -> None:
        last = chunk[-1].offset
        if self._put(chunk):
            self.confirm.emitted(int(last["commit"]), int(last["i"]))

    def _changes(
        self, mapper: RelationMapper, msg: Any, reselect: psycopg.Connection[Any]
    ) -> list[tuple[Op, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]]:
        key_cols = mapper.key_columns
        if isinstance(msg, po.Insert):
            after = mapper.values(msg.new)
            return [(Op.CREATE, {k: after[k] for k in key_cols}, None, after)]
        if isinstance(msg, po.Delete):
            old = mapper.values(msg.old)
            return [(Op.DELETE, {k: old[k] for k in key_cols}, old if msg.old_kind == "O" else None, None)]
        assert isinstance(msg, po.Update)
        after = mapper.values(msg.new)
        before = mapper.values(msg.old) if msg.old is not None else None
        missing = mapper.unchanged(after)
        if missing:
            filled = self._fill_toast(mapper, after, before, missing, reselect)
            if filled is None:
                return []  # the row is gone now; its delete follows in the stream
            after = filled
        key = {k: after[k] for k in key_cols}
        out: list[tuple[Op, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]] = []
        if before is not None:
            # 'K' (the key changed) or 'O' (REPLICA IDENTITY FULL: the old row on every update).
            old_key = {k: before[k] for k in key_cols}
            if old_key != key:  # the key changed: the old key is deleted
                out.append((Op.DELETE, old_key, before if msg.old_kind == "O" else None, None))
        out.append((Op.UPDATE, key, before if msg.old_kind == "O" else None, after))
        return out

    def _fill_toast(
        self,
        mapper: RelationMapper,
        after: dict[str, Any],
        before: dict[str, Any] | None,
        missing: list[str],
        reselect: psycopg.Connection[Any],
    ) -> dict[str, Any] | None:
        """An unchanged out-of-line value is never emitted as a value: take it from the old image
        (REPLICA IDENTITY FULL) or re-select it by key (policy reselect), else fail."""
        if before is not None and all(before.get(c) is not po.UNCHANGED_TOAST for c in missing):
            return {**after, **{c: before[c] for c in missing}}
        if self.captures[mapper.stream].unchanged_toast is UnchangedToast.FAIL:
            from cdc.errors import RowError

            raise RowError(mapper.stream, {k: after[k] for k in mapper.key_columns}, missing[0],
                           "an unchanged TOASTed value was not sent by the server (policy unchanged_toast: fail)")  # fmt: skip
        table = mapper.table
        key_cols = mapper.key_columns
        query = sql.SQL("SELECT {} FROM {} WHERE {}").format(
            sql.SQL(", ").join(self.types.as_text(c, table.columns[c].type_oid) for c in missing),
            sql.Identifier(mapper.relation.namespace, mapper.relation.name),
            sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key_cols),
        )
        row = reselect.execute(query, [after[k] for k in key_cols]).fetchone()
        if row is None:
            return None
        filled = dict(after)
        for c, raw in zip(missing, row, strict=True):
            filled[c] = (
                None
                if raw is None
                else self.types.loader(table.columns[c].type_oid, interval_as_tuple=True)(raw.encode())
            )
        return filled

    # --- positions ---
    def acknowledge(self, offsets: Offsets) -> None:
        offset = offsets.get(self.partition)
        if offset and offset.get("phase") == "stream":
            self.confirm.acknowledge(int(offset["commit"]), int(offset["i"]))

    def show_offset(self, offset: Offset) -> Offset:
        """Commit LSNs as PostgreSQL writes them (``16/B374D848``), not as integers."""
        return {k: po.format_lsn(v) if k == "commit" and isinstance(v, int) else v for k, v in offset.items()}

    def lag(self, offsets: Offsets) -> dict[str, float]:
        try:
            with normal_connection(self.dsn) as conn:
                slot = catalog.slot_info(conn, self.cfg.slot)
        except (psycopg.Error, CdcError):
            return {}
        if slot is None:
            return {}
        out = {"slot_lag_bytes": float(slot["lag_bytes"] or 0)}
        if slot["safe_wal_size"] is not None:
            out["slot_safe_wal_size_bytes"] = float(slot["safe_wal_size"])
        if slot["catalog_xmin_age"] is not None:
            out["slot_catalog_xmin_age_xids"] = float(slot["catalog_xmin_age"])
        started = self._snapshot_started
        if started is not None:
            # A running snapshot holds the database's xmin back (vacuum cannot clean behind it).
            out["snapshot_seconds"] = time.monotonic() - started
            try:
                with normal_connection(self.dsn) as conn:
                    row = conn.execute(
                        "SELECT age(backend_xmin) FROM pg_stat_activity WHERE pid = %s", (self._snapshot_pid,)
                    ).fetchone()
                if row and row[0] is not None:
                    out["snapshot_xmin_age_xids"] = float(row[0])
            except psycopg.Error:
                pass
        return out


class _TxnHandler:
    """Turns one transaction's pgoutput messages into change events, in chunks."""

    def __init__(
        self, source: PostgresWalSource, by_name: dict[str, str], reselect: psycopg.Connection[Any]
    ) -> None:
        self.source = source
        self.by_name = by_name
        self.reselect = reselect
        self.mappers: dict[int, RelationMapper | None] = {}
        self.chunk: list[ChangeEvent] = []
        self.commit_lsn = 0
        self.index = 0
        self.ts_ms: int | None = None
        self.xid = ""
        self.signal_loaders: dict[int, list[tuple[int, str]]] = {}
        self.in_txn = False
        self.txn_counts: dict[str, int] = {}  # change events of the open transaction per stream
        # Numbered changes and a TransactionEnd per transaction only for transaction metadata:
        # with single-row transactions, building and pickling the TransactionEnd cost the
        # capture process about 1.3 µs per event, and unpickling it the connector 0.7 µs.
        self.numbered = source.transaction_metadata_wanted

    def flush(self) -> None:
        if not self.chunk:
            return
        held = self._last_change() if self.in_txn and self.numbered else None
        if held is not None:
            # Inside a transaction its last change so far stays back (with what follows it):
            # the commit marks it txn_end.
            if held:
                self.source._emit(self.chunk[:held])
                self.chunk = self.chunk[held:]
            return
        self.source._emit(self.chunk)
        self.chunk = []

    def _last_change(self) -> int | None:
        """Index in the chunk of the open transaction's last change event (not a snapshot row)."""
        for i in range(len(self.chunk) - 1, -1, -1):
            event = self.chunk[i]
            if event.txn_order is not None and event.txid == self.xid:
                return i
        return None

    def __call__(self, msg: po.Message, frame: XLogData) -> None:
        src = self.source
        kind = type(msg)
        if kind is po.Begin:
            assert isinstance(msg, po.Begin)
            self.commit_lsn, self.index, self.ts_ms, self.xid = (
                msg.final_lsn,
                0,
                msg.commit_unix_ms,
                str(msg.xid),
            )
            self.in_txn, self.txn_counts = True, {}
        elif kind is po.Commit:
            assert isinstance(msg, po.Commit)
            last = self._last_change() if self.numbered else None
            self.in_txn = False
            if last is not None:
                end = TransactionEnd(self.xid, {"lsn": self.commit_lsn}, self.ts_ms, self.txn_counts)
                self.chunk[last].txn_end = end
            src.confirm.commit(self.commit_lsn, msg.end_lsn, self.index)
            # Small transactions are batched until the socket runs dry (run_stream's on_idle)
            # or the batch is full: one hand-off per batch, not one per transaction.
            if len(self.chunk) >= CHUNK:
                self.flush()
            inc = src.incremental
            if inc is not None and inc.busy and inc.window is None:
                inc.open_next_window()
        elif kind is po.Relation:
            assert isinstance(msg, po.Relation)
            qualified = f"{msg.namespace}.{msg.name}"
            if src.cfg.signal_table and qualified == ".".join(catalog.split_name(src.cfg.signal_table)):
                self.signal_loaders[msg.relation_id] = [(i, c.name) for i, c in enumerate(msg.columns)]
                return
            stream = self.by_name.get(qualified)
            if stream is not None:
                self.flush()  # everything before the shape change goes first
                self.mappers[msg.relation_id] = build_mapper(
                    stream, src.tables[stream], msg, src.specs[stream].columns,
                    tuple(src.specs[stream].key_columns), src.types,
                )  # fmt: skip
            else:
                self.mappers[msg.relation_id] = None
        elif kind is po.Insert or kind is po.Update or kind is po.Delete:
            assert isinstance(msg, po.Insert | po.Update | po.Delete)
            if msg.relation_id in self.signal_loaders:
                if isinstance(msg, po.Insert):
                    self._signal(msg)
                return
            mapper = self.mappers.get(msg.relation_id)
            if mapper is None:
                return
            for op, key, before, after in src._changes(mapper, msg, self.reselect):
                position = (self.commit_lsn, self.index)
                self.index += 1
                order = None
                if self.numbered:
                    counts = self.txn_counts
                    counts[mapper.stream] = counts.get(mapper.stream, 0) + 1
                    order = sum(counts.values())
                if src._resume is not None and position <= src._resume:
                    continue  # already committed downstream before a restart
                inc = src.incremental
                if inc is not None:
                    inc.on_change(mapper.stream, tuple(key[k] for k in mapper.key_columns))
                offset = {"phase": "stream", "commit": position[0], "i": position[1]}
                if inc is not None and inc.busy:
                    offset["inc"] = inc.state()
                self.chunk.append(
                    ChangeEvent(
                        mapper.stream,
                        op,
                        key,
                        after,
                        src.partition,
                        offset,
                        before,
                        self.ts_ms,
                        self.xid,
                        mapper.meta,
                        txn_order=order,
                    )
                )
            if len(self.chunk) >= CHUNK:
                self.flush()
        elif kind is po.LogicalMessage:
            log.info("logical decoding message: %r", msg)

    def _signal(self, msg: po.Insert) -> None:
        """A signal-table row: a snapshot request or one of our watermarks."""
        src = self.source
        inc = src.incremental
        if inc is None:
            return
        names = self.signal_loaders[msg.relation_id]
        row = {
            name: (raw.decode() if isinstance(raw, bytes) else None)
            for (i, name) in names
            for raw in [msg.new[i]]
        }
        chunk = inc.on_signal(row.get("type") or "", row.get("data"))
        if chunk is None or not chunk.rows:
            return
        key_cols = tuple(src.specs[chunk.stream].key_columns)
        last = len(chunk.rows) - 1
        for n, row_values in enumerate(chunk.rows):
            position = (self.commit_lsn, self.index)
            self.index += 1
            if src._resume is not None and position <= src._resume:
                continue
            offset = {"phase": "stream", "commit": position[0], "i": position[1],
                      "inc": chunk.state_after if n == last else chunk.state_before}  # fmt: skip
            key = {k: row_values[k] for k in key_cols}
            self.chunk.append(
                ChangeEvent(chunk.stream, Op.READ, key, row_values, src.partition, offset, None, self.ts_ms, self.xid,
                            {"incremental_snapshot": True})
            )  # fmt: skip
        if len(self.chunk) >= CHUNK:
            self.flush()
