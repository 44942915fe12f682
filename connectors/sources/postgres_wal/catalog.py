"""What the WAL source needs to know of the database: tables, keys, identities, publications.

Publication safety: once a table without a primary key and with REPLICA IDENTITY DEFAULT (or
NOTHING) is in a publication that publishes updates or deletes, PostgreSQL rejects the
*application's own* UPDATE and DELETE on it. So such tables are refused before any publication
is created or altered, unless their stream is insert-only (those go to a separate
``<publication>_inserts`` publication that publishes inserts only).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from cdc.errors import SourceConfigError
from cdc.plugin import ColumnInfo

_PY_TYPES: dict[str, type] = {
    "int2": int, "int4": int, "int8": int, "oid": int,
    "numeric": Decimal, "float4": float, "float8": float, "bool": bool,
    "text": str, "varchar": str, "bpchar": str, "name": str, "citext": str, "json": str, "jsonb": str,
    "tsvector": str, "xml": str, "inet": str, "cidr": str, "macaddr": str, "macaddr8": str,
    "money": str, "bit": str, "varbit": str,
    "bytea": bytes, "date": dt.date, "time": dt.time, "timetz": str,
    "timestamp": dt.datetime, "timestamptz": dt.datetime, "interval": tuple, "uuid": uuid.UUID,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_name: str  # format_type(): e.g. numeric(10,2), public.mpaa_rating, text[]
    base_name: str  # pg_type.typname after resolving domains
    category: str  # pg_type.typcategory of the base type (A array, E enum, ...)
    not_null: bool
    precision: int | None
    scale: int | None
    enum_labels: tuple[str, ...] | None


@dataclass(slots=True)
class Table:
    oid: int
    schema: str
    name: str
    replica_identity: str  # d default, n nothing, f full, i index
    key: tuple[str, ...]
    columns: dict[str, Column]
    kind: str  # r table, p partitioned
    children: list[tuple[int, str, str]] = field(default_factory=list)  # (oid, schema, name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column_infos(self) -> dict[str, ColumnInfo]:
        out = {}
        for c in self.columns.values():
            py = (
                list if c.category == "A" else str if c.category in ("E", "R") else _PY_TYPES.get(c.base_name)
            )
            out[c.name] = ColumnInfo(
                name=c.name,
                type_name=c.type_name,
                nullable=not c.not_null,
                python_type=py,
                precision=c.precision,
                scale=c.scale,
                timezone_aware={"timestamptz": True, "timestamp": False}.get(c.base_name),
                enum_labels=c.enum_labels,
            )
        return out


def split_name(qualified: str) -> tuple[str, str]:
    schema, _, name = qualified.rpartition(".")
    return schema or "public", name


_COLUMNS = """
WITH RECURSIVE base(oid, root) AS (
    SELECT t.oid, t.oid FROM pg_type t
    UNION ALL
    SELECT b.oid, t.typbasetype FROM base b JOIN pg_type t ON t.oid = b.root WHERE t.typtype = 'd'
)
SELECT a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), bt.typname, bt.typcategory,
       a.attnotnull, a.atttypmod, bt.oid,
       (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = bt.oid)
FROM pg_attribute a
JOIN LATERAL (SELECT root FROM base WHERE base.oid = a.atttypid
              AND NOT EXISTS (SELECT 1 FROM pg_type x WHERE x.oid = base.root AND x.typtype = 'd')) r ON true
JOIN pg_type bt ON bt.oid = r.root
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def _numeric_typmod(typmod: int) -> tuple[int | None, int | None]:
    if typmod < 4:
        return None, None
    value = typmod - 4
    return (value >> 16) & 0xFFFF, value & 0xFFFF


def load_table(conn: psycopg.Connection[Any], qualified: str, children: str | None = None) -> Table:
    schema, name = split_name(qualified)
    row = conn.execute(
        "SELECT c.oid, c.relreplident, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    ).fetchone()
    if row is None:
        raise SourceConfigError(f"table {qualified!r} does not exist (or is not a table)")
    oid, replident, kind = int(row[0]), str(row[1]), str(row[2])
    columns: dict[str, Column] = {}
    for attname, typoid, typename, basename, category, notnull, typmod, _bt, labels in conn.execute(
        _COLUMNS, (oid,)
    ):
        precision, scale = _numeric_typmod(int(typmod)) if basename == "numeric" else (None, None)
        columns[attname] = Column(
            attname, int(typoid), typename, basename, category, bool(notnull), precision, scale,
            tuple(labels) if labels else None,
        )  # fmt: skip
    key = tuple(
        r[0]
        for r in conn.execute(
            "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.n",
            (oid,),
        )
    )
    table = Table(oid, schema, name, replident, key, columns, kind)
    if children:
        pattern = re.compile(children)
        for child_oid, child_schema, child_name in conn.execute(
            "SELECT c.oid, n.nspname, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = %s ORDER BY c.relname",
            (oid,),
        ):
            if pattern.fullmatch(child_name):
                table.children.append((int(child_oid), child_schema, child_name))
    return table


def needs_identity(conn: psycopg.Connection[Any], table: Table) -> list[str]:
    """Tables (the table and its mapped children) whose UPDATE/DELETE would break once published."""
    unsafe = []
    candidates = [(table.oid, table.qualified)] + [(o, f"{s}.{n}") for o, s, n in table.children]
    for oid, qualified in candidates:
        row = conn.execute(
            "SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) "
            "FROM pg_class c WHERE c.oid = %s",
            (oid,),
        ).fetchone()
        assert row is not None
        replident, has_pk = row
        if replident == "n" or (replident == "d" and not has_pk):
            unsafe.append(qualified)
    return unsafe


def published_tables(conn: psycopg.Connection[Any], publication: str) -> set[str] | None:
    """Qualified names in the publication, or None when it does not exist."""
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
    if exists is None:
        return None
    rows = conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (publication,)
    ).fetchall()
    return {f"{s}.{t}" for s, t in rows}


def publication_statements(
    conn: psycopg.Connection[Any], publication: str, tables: list[str], *, inserts_only: bool
) -> list[sql.Composed]:
    """The statements that make ``publication`` contain ``tables`` (empty when it already does)."""
    if not tables:
        return []
    idents = [sql.Identifier(*split_name(t)) for t in sorted(tables)]
    current = published_tables(conn, publication)
    publish = "insert" if inserts_only else "insert, update, delete, truncate"
    if current is None:
        return [
            sql.SQL(
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = {}, publish_via_partition_root = true)"
            ).format(sql.Identifier(publication), sql.SQL(", ").join(idents), sql.Literal(publish))
        ]
    missing = [sql.Identifier(*split_name(t)) for t in sorted(tables) if t not in current]
    if not missing:
        return []
    return [
        sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
            sql.Identifier(publication), sql.SQL(", ").join(missing)
        )
    ]


def slot_info(conn: psycopg.Connection[Any], slot: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT plugin, slot_type, database, active, confirmed_flush_lsn::text, restart_lsn::text, wal_status, "
        "safe_wal_size, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, age(catalog_xmin) "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return None
    keys = ("plugin", "slot_type", "database", "active", "confirmed_flush_lsn", "restart_lsn", "wal_status",
            "safe_wal_size", "lag_bytes", "catalog_xmin_age")  # fmt: skip
    return dict(zip(keys, row, strict=True))
