"""One polled stream: builds its query, tracks its cursor, turns rows into change events."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from cdc.mysql import catalog as mysql_catalog
from cdc.mysql.types import ZeroDates, row_normalizer
from cdc.offsets import jsonvalues as cursorvalues
from cdc.plugin import ChangeEvent, ColumnInfo, Offset, Op, StreamSpec
from cdc.shaping.pushdown import pushdown
from cdc.sql import bounds, txsample
from cdc.sql.columns import column_info, pg_text
from connectors.sources.polling.config import Mode, PollingStream

log = logging.getLogger(__name__)


def _split_name(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


class _PollSkippedError(Exception):
    """This poll must not read (the bound is unknown right now)."""


class StreamReader:
    """Reads one stream's new rows strictly after its cursor and below the safe upper bound."""

    def __init__(
        self,
        spec: StreamSpec,
        capture: PollingStream,
        engine: sa.Engine,
        zone: dt.tzinfo,
        zero_dates: ZeroDates = "error",
        source_bounds: bounds.SourceBounds | None = None,
    ) -> None:
        self.spec = spec
        self.source_bounds = source_bounds
        self.capture = capture
        self.engine = engine
        self.zone = zone
        self.selectable = self._reflect()
        # MySQL/MariaDB tables and views: the catalog's exact column descriptions, values read
        # raw and made canonical by cdc.mysql.types (the contract every MySQL source shares).
        self.mysql_columns = self._mysql_catalog()
        self.ts_col = capture.timestamp_column
        self.inc_col = capture.incrementing_column
        wanted = list(dict.fromkeys([*spec.columns, *(c for c in (self.ts_col, self.inc_col) if c)]))
        missing = [c for c in wanted if c not in self.selectable.c]
        if missing:
            from cdc.errors import SourceConfigError

            raise SourceConfigError(
                f"stream {spec.name!r}: columns {missing} not found in {self.source_name}",
                hint=f"available: {', '.join(self.selectable.c.keys())}",
            )
        self.columns = wanted
        # Sessions run in UTC, so a MySQL TIMESTAMP arrives as naive UTC wall clock: the
        # normalizer attaches the zone (and makes SET, BIT, FLOAT, BINARY(n) values canonical).
        self._normalize = (
            row_normalizer({c: self.mysql_columns[c] for c in wanted if c in self.mysql_columns}, zero_dates)
            if self.mysql_columns
            else None
        )
        self.pushed = self._pushdown()
        self.last_ts: Any = None
        self.last_id: Any = None
        self.polls = 0
        self.resumed = False
        self._blocked_by: tuple[str, ...] = ()

    def _pushdown(self) -> list[sa.ColumnElement[bool]]:
        """The row filter's terms this query can apply exactly (cdc.shaping.pushdown). Only in
        modes where a row the query skips is one the runtime would have dropped: inserts only
        (incrementing), or bulk reads without key-set delete detection. In the timestamp modes an
        update that moves a row out of the filter must still be read, to become a delete."""
        mode, where = self.capture.mode, self.spec.where
        if where is None or not (
            mode is Mode.INCREMENTING or (mode is Mode.BULK and self.capture.delete_detection is None)
        ):
            return []
        columns = dict(self.selectable.c.items())
        pushed, kept = pushdown(where, columns, self.spec.field_map, self.engine.dialect.name)
        log.info(
            "stream %s: %d filter term(s) pushed into the query; in the runtime only: %s",
            self.spec.name, len(pushed), " and ".join(kept) or "nothing",
        )  # fmt: skip
        return pushed

    @property
    def source_name(self) -> str:
        return self.capture.table or "query"

    def _reflect(self) -> sa.FromClause:
        if self.capture.table:
            schema, table = _split_name(self.capture.table)
            try:
                with warnings.catch_warnings():
                    # MariaDB's UUID/INET types are unknown to SQLAlchemy; the catalog describes them
                    warnings.filterwarnings("ignore", "Did not recognize type", sa.exc.SAWarning)
                    # resolve_fks=False: the captured table alone; a dangling or invisible
                    # foreign-key target must not make the captured table look missing.
                    return sa.Table(
                        table, sa.MetaData(), schema=schema, autoload_with=self.engine, resolve_fks=False
                    )
            except sa.exc.NoSuchTableError:
                from cdc.errors import SourceConfigError

                raise SourceConfigError(
                    f"stream {self.spec.name!r}: table or view {self.capture.table!r} does not exist"
                ) from None
        assert self.capture.query is not None
        with self.engine.connect() as conn:
            result = conn.execute(sa.text(f"SELECT * FROM ({self.capture.query}) q WHERE 1 = 0"))  # noqa: S608 - the user's own query
            names = list(result.keys())
        return sa.text(self.capture.query).columns(*(sa.column(n) for n in names)).subquery("q")

    def _mysql_catalog(self) -> dict[str, ColumnInfo]:
        if self.engine.dialect.name not in ("mysql", "mariadb") or not self.capture.table:
            return {}
        schema, table = _split_name(self.capture.table)
        with self.engine.connect() as conn:
            return mysql_catalog.describe_table(conn, schema, table)

    def _column(self, name: str) -> sa.ColumnElement[Any]:
        """The select-list expression of a column: on MySQL/MariaDB the driver's value, untouched
        by SQLAlchemy's result processors (its TIME type folds an interval into a time of day,
        its reflected DOUBLE rounds to 10 decimal places, its SET returns an unordered set)."""
        col = self.selectable.c[name]
        info = self.mysql_columns.get(name)
        if info is None:
            if isinstance(col.type, sa.JSON) and self.engine.dialect.name == "postgresql":
                # json::text and jsonb::text are the types' output text, as the WAL source sends it
                return sa.cast(col, sa.Text()).label(name)
            # SQLAlchemy's range result processor expects psycopg Range objects, not the text
            return sa.type_coerce(col, sa.types.NullType()).label(name) if pg_text(col.type) else col
        expr: sa.ColumnElement[Any] = col
        if info.data_type == "float":
            # the text protocol renders FLOAT with 6 significant digits; as a DOUBLE it is exact
            expr = sa.cast(col, sa.Double())
        return sa.type_coerce(expr, sa.types.NullType()).label(name)

    @functools.cached_property
    def is_view(self) -> bool:
        """Whether the captured relation is a view (a custom query is not)."""
        if not self.capture.table:
            return False
        schema, table = _split_name(self.capture.table)
        return table in sa.inspect(self.engine).get_view_names(schema=schema)

    def describe(self) -> dict[str, ColumnInfo]:
        if self.mysql_columns:
            return dict(self.mysql_columns)
        # PostgreSQL and SQLite report every column of a view nullable, whatever its expression:
        # that says nothing, so the check does not warn about it (start() says so once, at info
        # level). A NULL that does arrive in a non-nullable field is still a row error.
        view = self.is_view
        out: dict[str, ColumnInfo] = {}
        for col in self.selectable.c:
            info = column_info(col) if isinstance(col, sa.Column) and col.table is not None else None
            if info is None:
                info = ColumnInfo(name=col.name, type_name="unknown (custom query)", nullable=True)
            elif view:
                info = dataclasses.replace(info, nullable=False)
            out[col.name] = info
        return out

    # --- cursor ---
    def restore(self, offset: Offset | None) -> None:
        if offset:
            self.last_ts = cursorvalues.decode(offset.get("ts"))
            self.last_id = cursorvalues.decode(offset.get("id"))
            self.polls = int(offset.get("polls", 0))
            self.resumed = True

    def _offset(self) -> Offset:
        # Raw driver values: the offset stores tag and encode them only when they commit.
        return {"ts": self.last_ts, "id": self.last_id, "polls": self.polls}

    # --- query ---
    def _precision(self) -> int:
        assert self.ts_col is not None
        t = self.selectable.c[self.ts_col].type
        p = (
            getattr(t, "fsp", None)
            if isinstance(t, mysql.DATETIME | mysql.TIMESTAMP)
            else getattr(t, "precision", None)
        )
        if p is None:
            p = 0 if self.engine.dialect.name in ("mysql", "mariadb") else 6
        return int(p)

    def _aware_ts(self) -> bool:
        assert self.ts_col is not None
        t = self.selectable.c[self.ts_col].type
        return bool(getattr(t, "timezone", False))

    def build_query(self, upper: dt.datetime | None) -> sa.Select[Any]:
        c = self.selectable.c
        query = sa.select(*(self._column(n) for n in self.columns))
        mode = self.capture.mode
        if self.ts_col and mode in (Mode.TIMESTAMP, Mode.TIMESTAMP_INCREMENTING):
            ts = c[self.ts_col]
            if upper is not None:
                query = query.where(ts < upper)
            if self.last_ts is not None:
                if mode is Mode.TIMESTAMP_INCREMENTING and self.inc_col:
                    inc = c[self.inc_col]
                    query = query.where(
                        sa.or_(ts > self.last_ts, sa.and_(ts == self.last_ts, inc > self.last_id))
                    )
                elif self.resumed:
                    # After a restart the last committed timestamp group may be incomplete:
                    # re-read it (duplicates, never a gap). Use timestamp+incrementing to avoid this.
                    query = query.where(ts >= self.last_ts)
                else:
                    query = query.where(ts > self.last_ts)
            query = query.order_by(ts, *([c[self.inc_col]] if self.inc_col else []))
        elif mode is Mode.INCREMENTING and self.inc_col:
            if self.last_id is not None:
                query = query.where(c[self.inc_col] > self.last_id)
            query = query.order_by(c[self.inc_col])
        if self.pushed:
            query = query.where(*self.pushed)
        return query

    def upper_bound(self, conn: sa.Connection, lag_window: float) -> dt.datetime | None:
        """The column-typed bound of this poll; raises _PollSkippedError when this poll must not read."""
        assert self.source_bounds is not None, "timestamp modes need the source's bounds"
        try:
            bound = self.source_bounds.compute(conn, lag_window)
        except txsample.StaleSampleError as exc:
            log.warning("stream %s: poll skipped: %s", self.spec.name, exc)
            raise _PollSkippedError from None
        if bound.upper is None:
            if bound.blocked_by != self._blocked_by:
                log.warning(
                    "stream %s: waiting for %s, open since before this process started: its rows may "
                    "carry any earlier timestamp, so nothing is read until it ends",
                    self.spec.name,
                    ", ".join(bound.blocked_by),
                )
            self._blocked_by = bound.blocked_by
            raise _PollSkippedError
        if self._blocked_by:
            log.info("stream %s: the transactions open at start-up ended; polling resumes", self.spec.name)
            self._blocked_by = ()
        return bounds.for_column(
            bound.upper, aware=self._aware_ts(), zone=self.zone, precision=self._precision()
        )

    def read(
        self, lag_window: float, fetch_size: int, progress: Callable[[int, int | None], None] | None = None
    ) -> Iterator[ChangeEvent]:
        """Yield this poll's events in cursor order, streaming with bounded memory."""
        with self.engine.connect() as conn:
            upper = None
            if self.capture.mode in (Mode.TIMESTAMP, Mode.TIMESTAMP_INCREMENTING):
                try:
                    upper = self.upper_bound(conn, lag_window)
                except _PollSkippedError:
                    return
            conn.commit()  # the bound is taken before the data snapshot (see cdc.sql.bounds)
            query = self.build_query(upper)
            total = None
            if progress is not None:
                total = conn.execute(
                    sa.select(sa.func.count()).select_from(query.order_by(None).subquery())
                ).scalar()
            result = conn.execution_options(stream_results=True, yield_per=fetch_size).execute(query)
            names = self.columns
            key_idx = [names.index(k) for k in self.spec.key_columns]
            ts_i = names.index(self.ts_col) if self.ts_col else -1
            id_i = names.index(self.inc_col) if self.inc_col else -1
            normalize = self._normalize
            mode = self.capture.mode
            initial = self.last_ts is None and self.last_id is None
            # Polling cannot tell an insert from an update: the initial load and bulk polls are
            # reads (r), incrementing polls are inserts (c), timestamp polls are upserts (u).
            op = (
                Op.READ
                if mode is Mode.BULK or initial
                else Op.CREATE
                if mode is Mode.INCREMENTING
                else Op.UPDATE
            )
            self.polls += 1
            stream, partition = self.spec.name, self.spec.name
            n = 0
            started = time.monotonic()
            for raw in result:
                if ts_i >= 0:
                    self.last_ts = raw[ts_i]
                if id_i >= 0:
                    self.last_id = raw[id_i]
                row = dict(zip(names, raw, strict=True))
                if normalize is not None:
                    row = normalize(row)
                key = {names[i]: row[names[i]] for i in key_idx}
                n += 1
                if progress is not None and n % 1000 == 0:
                    progress(n, total)
                yield ChangeEvent(stream, op, key, row, partition, self._offset(), ts_ms=None)
            if progress is not None:
                progress(n, total)
            self.resumed = False
            if n:
                log.debug("stream %s: %d rows in %.2fs", stream, n, time.monotonic() - started)

    def all_keys(self) -> set[tuple[Any, ...]]:
        """Every key present now, as the values the events carry."""
        keys = self.spec.key_columns
        with self.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=10_000).execute(
                sa.select(*(self._column(k) for k in keys))
            )
            if self._normalize is None:
                return {tuple(r) for r in rows}
            normalize = self._normalize
            return {tuple(normalize(dict(zip(keys, r, strict=True))).values()) for r in rows}
