"""Reads one audited table's rows from the audit log: which ids may be published now, and their
row images as typed values.

Reading is in two steps. ``candidates`` lists the oldest unrelayed ids in id order (cheap: the
index alone) with whether each may be published yet; ``images`` then loads the chosen ids' row
images. PostgreSQL rebuilds each image on the server with ``jsonb_populate_record`` against the
table's own row type, read through the reflected column types, so values come out exactly as the
polling source reads the table; MySQL/MariaDB and SQLite images are decoded by ``cdc.audit.values``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from cdc.audit import values
from cdc.audit.catalog import LOG_TABLE, AuditedTable, inspect_table
from cdc.errors import SourceConfigError
from cdc.mysql import catalog as mysql_catalog
from cdc.mysql.types import row_normalizer
from cdc.pg import columns as pg_columns
from cdc.plugin import ColumnInfo, StreamSpec
from cdc.sql.columns import column_info


@dataclass(slots=True)
class Scan:
    """One listing of unrelayed ids."""

    ids: list[tuple[int, bool]]  # (audit id, may be published now), in id order
    xmin: int | None  # PostgreSQL: the listing snapshot's xmin (pg_snapshot_xmin)


@dataclass(slots=True)
class AuditRow:
    """One audit record with its images as typed column values."""

    id: int
    op: str  # c, u, d, t
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ts_ms: int | None
    txid: str | None


class TableReader:
    """The audit records of one stream's table."""

    def __init__(
        self, spec: StreamSpec, table_name: str, engine: sa.Engine, dialect: str, log_schema: str
    ) -> None:
        self.spec, self.engine, self.dialect = spec, engine, dialect
        with engine.connect() as conn:
            self.audited: AuditedTable = inspect_table(conn, table_name)
        try:
            self.table = sa.Table(
                self.audited.name,
                sa.MetaData(),
                schema=self.audited.schema if dialect == "postgresql" else None,
                autoload_with=engine,
                resolve_fks=False,
            )
        except sa.exc.NoSuchTableError:
            raise SourceConfigError(f"stream {spec.name!r}: table {table_name!r} does not exist") from None
        missing = [c for c in spec.columns if c not in self.table.c]
        if missing:
            raise SourceConfigError(
                f"stream {spec.name!r}: columns {missing} not found in {self.audited.qualified}",
                hint=f"available: {', '.join(self.table.c.keys())}",
            )
        self.names = list(spec.columns)
        prep = engine.dialect.identifier_preparer
        self.log = (
            f"{prep.quote_identifier(log_schema)}.{prep.quote_identifier(LOG_TABLE)}"
            if dialect == "postgresql"
            else prep.quote_identifier(LOG_TABLE)
        )
        self._q = prep.quote_identifier
        self._raw_log = self.log.replace("%", "%%")  # in the driver's own placeholder style
        self.mysql_columns: dict[str, ColumnInfo] = {}
        self.pg_columns: dict[str, ColumnInfo] = {}
        self._pg_decoders: dict[str, values.Decoder] | None = None
        if dialect == "postgresql":  # the catalog's view (domains, enums, tsvector), as the WAL source's
            with engine.connect() as conn:
                raw = conn.connection.driver_connection
                oid = conn.execute(
                    sa.text("SELECT CAST(:t AS regclass)::oid"), {"t": self._regclass()}
                ).scalar()
                catalog = pg_columns.load_columns(raw, int(oid))  # type: ignore[arg-type]
                self.pg_columns = pg_columns.column_infos(catalog.values())
                # the zone the driver gives timestamptz values in (the session's: UTC)
                tz = raw.info.timezone  # type: ignore[union-attr]
            self._pg_decoders = values.pg_decoders({n: catalog[n].type_oid for n in self.names}, tz)
        if dialect == "mysql":
            self._decoders = values.mysql_decoders(self.audited.columns)
            with engine.connect() as conn:
                self.mysql_columns = mysql_catalog.describe_table(conn, None, self.audited.name)
            # the shared contract's last word (SET order, BINARY padding, ENUM '', UUID case)
            self._canonical = row_normalizer({n: self.mysql_columns[n] for n in self.names})
        elif dialect == "sqlite":
            self._decoders = values.sqlite_decoders(self.table, engine.dialect)

    def describe(self) -> dict[str, ColumnInfo]:
        if self.mysql_columns or self.pg_columns:  # the catalogs' exact descriptions
            return dict(self.mysql_columns or self.pg_columns)
        return {c.name: column_info(c) for c in self.table.c}

    def _regclass(self) -> str:
        return f"{self._q(self.audited.schema)}.{self._q(self.audited.name)}"

    @property
    def _where(self) -> str:
        if self.dialect == "postgresql":
            return "table_schema = :s AND table_name = :t AND relayed_at IS NULL"
        return "table_name = :t AND relayed_at IS NULL"

    def candidates(self, conn: sa.Connection, limit: int) -> list[tuple[int, bool]]:
        """The oldest unrelayed ids, in id order, each with whether it may be published now."""
        return self.scan(conn, limit).ids

    def scan(self, conn: sa.Connection, limit: int, after: int = 0) -> Scan:
        """The oldest unrelayed ids above ``after``, in id order, each with whether it may be
        published now, and (PostgreSQL) the listing snapshot's xmin.

        PostgreSQL: only rows of transactions below the snapshot's xmin (every transaction that
        could still commit has an xid at or above it), the PgQ rule. Elsewhere every visible row.
        """
        params = {"s": self.audited.schema, "t": self.audited.name, "n": limit, "a": after}
        if self.dialect == "postgresql":
            # one row even when nothing is listed: the xmin still lets scan bounds mature
            sql = (
                "WITH s AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) "  # noqa: S608 - quoted names
                f"SELECT r.id, r.xid < s.xmin, s.xmin::text FROM s LEFT JOIN LATERAL (SELECT id, xid FROM {self._raw_log} "
                "WHERE table_schema = %(s)s AND table_name = %(t)s AND relayed_at IS NULL AND id > %(a)s "
                "ORDER BY id LIMIT %(n)s) r ON true ORDER BY r.id"
            )
            rows = _driver_rows(conn, sql, params)
            return Scan([(r[0], r[1]) for r in rows if r[0] is not None], int(rows[0][2]))
        sql = f"SELECT id, 1 FROM {self.log} WHERE {self._where} AND id > :a ORDER BY id LIMIT :n"  # noqa: S608 - quoted names
        return Scan([(int(r[0]), bool(r[1])) for r in conn.execute(sa.text(sql), params)], None)

    def images(self, conn: sa.Connection, ids: list[int]) -> list[AuditRow]:
        """The audit rows of ``ids`` (in id order) with typed before/after values."""
        return self.read(conn, ids)[0]

    def read(self, conn: sa.Connection, ids: list[int]) -> tuple[list[AuditRow], int | None]:
        """``images``, and (PostgreSQL) the reading transaction's own xid, assigned after the
        listing's snapshot was taken: greater than the xid of every transaction that drew an
        id at or below the highest id that listing saw (the source's scan bound)."""
        if self.dialect == "postgresql":
            return self._pg_images(conn, ids)
        sql = sa.text(
            f"SELECT id, op, {self._q('before')}, {self._q('after')}, ts FROM {self.log} "  # noqa: S608 - quoted names
            "WHERE id IN :ids ORDER BY id"
        ).bindparams(sa.bindparam("ids", expanding=True))
        out = []
        for r in conn.execute(sql, {"ids": ids}):
            before, after = values.parse_image(r[2]), values.parse_image(r[3])
            out.append(
                AuditRow(int(r[0]), str(r[1]), self._decode(before), self._decode(after), _ts_ms(r[4]), None)
            )
        return out, None

    def _decode(self, image: dict[str, Any] | None) -> dict[str, Any] | None:
        if image is None:
            return None
        if self.dialect == "mysql":
            return self._canonical(values.decode_mysql(image, self.names, self._decoders))
        return values.decode_sqlite(image, self.names, self._decoders)

    def _pg_images(self, conn: sa.Connection, ids: list[int]) -> tuple[list[AuditRow], int | None]:
        """The rows' images as text, decoded here when every column has a decoder (half the
        server's work of rebuilding them, a fifth less in-process: benchmarks/README.md); the
        rows holding a value the decoders are unsure of are rebuilt by the server."""
        decoders = self._pg_decoders
        if decoders is None:
            return self._pg_populate(conn, ids)
        sql = (
            "WITH me AS MATERIALIZED (SELECT pg_current_xact_id()::text AS me) "  # noqa: S608 - quoted names
            "SELECT me.me, a.id, a.op, a.xid::text, (extract(epoch FROM a.ts) * 1000)::bigint, "
            f"a.before::text, a.after::text FROM me, {self._raw_log} a WHERE a.id = ANY(%(ids)s) ORDER BY a.id"
        )
        names, decode = self.names, values.decode_pg
        out: list[AuditRow] = []
        unsure: list[int] = []
        rows = _driver_rows(conn, sql, {"ids": ids})
        for _, audit_id, op, xid, ts_ms, before_text, after_text in rows:
            try:
                before, after = decode(before_text, names, decoders), decode(after_text, names, decoders)
            except (ValueError, KeyError):  # UnsureValueError, or a column the image lacks
                unsure.append(audit_id)
                continue
            out.append(AuditRow(audit_id, op.strip(), before, after, ts_ms, xid))
        if unsure:
            out += self._pg_populate(conn, unsure)[0]
            out.sort(key=lambda row: row.id)
        return out, int(rows[0][0]) if rows else None

    def _pg_populate(self, conn: sa.Connection, ids: list[int]) -> tuple[list[AuditRow], int | None]:
        """The rows rebuilt by the server against the table's row type, loaded by the driver."""
        q = self._q
        rowtype = f"{q(self.audited.schema)}.{q(self.audited.name)}"
        # json/jsonb as their output text (::text), like the WAL and polling sources
        json_cols = {n for n in self.names if isinstance(self.table.c[n].type, sa.JSON)}
        picks = [
            f"{side}.{q(n)}{'::text' if n in json_cols else ''} AS {side}{i}"
            for side in "bn"
            for i, n in enumerate(self.names)
        ]
        typed = [
            sa.column(f"{side}{i}", sa.Text() if n in json_cols else self.table.c[n].type)
            for side in "bn"
            for i, n in enumerate(self.names)
        ]
        sql = sa.text(
            "WITH me AS MATERIALIZED (SELECT pg_current_xact_id()::text AS me) "  # noqa: S608 - quoted names
            f"SELECT me.me, a.id, a.op, a.xid::text, (extract(epoch FROM a.ts) * 1000)::bigint, "
            f"a.before IS NOT NULL, a.after IS NOT NULL, {', '.join(picks)} FROM me, {self.log} a "
            f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{rowtype}, a.before) b "
            f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{rowtype}, a.after) n "
            "WHERE a.id = ANY(:ids) ORDER BY a.id"
        ).columns(
            sa.column("me"),
            sa.column("id"),
            sa.column("op"),
            sa.column("xid"),
            sa.column("ts_ms"),
            sa.column("has_before"),
            sa.column("has_after"),
            *typed,
        )
        k = len(self.names)
        out = []
        me = None
        for r in conn.execute(sql, {"ids": ids}):
            me, row = r[0], tuple(r)[1:]
            before = dict(zip(self.names, row[6 : 6 + k], strict=True)) if row[4] else None
            after = dict(zip(self.names, row[6 + k :], strict=True)) if row[5] else None
            out.append(AuditRow(int(row[0]), str(row[1]).strip(), before, after, int(row[3]), str(row[2])))
        return out, int(me) if me is not None else None


def _driver_rows(conn: sa.Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    """The rows of ``sql`` (the driver's placeholders) from the driver's cursor, in the
    connection's transaction: the PostgreSQL hot paths skip SQLAlchemy's per-row processing."""
    if not conn.in_transaction():
        conn.begin()  # so that the caller's rollback ends the driver's transaction too
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _ts_ms(value: Any) -> int | None:
    """The audit row's time: MySQL TIMESTAMP (UTC session) or SQLite UTC text."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float | Decimal):
        return int(value * 1000)
    return None
