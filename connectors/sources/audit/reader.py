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
        self.mysql_columns: dict[str, ColumnInfo] = {}
        self.pg_columns: dict[str, ColumnInfo] = {}
        if dialect == "postgresql":  # the catalog's view (domains, enums, tsvector), as the WAL source's
            with engine.connect() as conn:
                raw = conn.connection.driver_connection
                oid = conn.execute(
                    sa.text("SELECT CAST(:t AS regclass)::oid"), {"t": self._regclass()}
                ).scalar()
                self.pg_columns = pg_columns.column_infos(pg_columns.load_columns(raw, int(oid)).values())  # type: ignore[arg-type]
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
        """The oldest unrelayed ids, in id order, each with whether it may be published now.

        PostgreSQL: only rows of transactions below the snapshot's xmin (every transaction that
        could still commit has an xid at or above it), the PgQ rule. Elsewhere every visible row.
        """
        params = {"s": self.audited.schema, "t": self.audited.name, "n": limit}
        if self.dialect == "postgresql":
            xmin = "WITH s AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) "
            sql = f"{xmin}SELECT id, xid < s.xmin FROM {self.log}, s WHERE {self._where} ORDER BY id LIMIT :n"  # noqa: S608 - quoted names
        else:
            sql = f"SELECT id, 1 FROM {self.log} WHERE {self._where} ORDER BY id LIMIT :n"  # noqa: S608 - quoted names
        return [(int(r[0]), bool(r[1])) for r in conn.execute(sa.text(sql), params)]

    def images(self, conn: sa.Connection, ids: list[int]) -> list[AuditRow]:
        """The audit rows of ``ids`` (in id order) with typed before/after values."""
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
        return out

    def _decode(self, image: dict[str, Any] | None) -> dict[str, Any] | None:
        if image is None:
            return None
        if self.dialect == "mysql":
            return self._canonical(values.decode_mysql(image, self.names, self._decoders))
        return values.decode_sqlite(image, self.names, self._decoders)

    def _pg_images(self, conn: sa.Connection, ids: list[int]) -> list[AuditRow]:
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
            f"SELECT a.id, a.op, a.xid::text, (extract(epoch FROM a.ts) * 1000)::bigint, "  # noqa: S608 - quoted names
            f"a.before IS NOT NULL, a.after IS NOT NULL, {', '.join(picks)} FROM {self.log} a "
            f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{rowtype}, a.before) b "
            f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{rowtype}, a.after) n "
            "WHERE a.id = ANY(:ids) ORDER BY a.id"
        ).columns(
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
        for r in conn.execute(sql, {"ids": ids}):
            row = tuple(r)
            before = dict(zip(self.names, row[6 : 6 + k], strict=True)) if row[4] else None
            after = dict(zip(self.names, row[6 + k :], strict=True)) if row[5] else None
            out.append(AuditRow(int(row[0]), str(row[1]).strip(), before, after, int(row[3]), str(row[2])))
        return out


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
