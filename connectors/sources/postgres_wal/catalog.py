"""What the WAL source needs to know of the database: tables, keys, identities, publications.

Publication safety: once a table without a primary key and with REPLICA IDENTITY DEFAULT (or
NOTHING) is in a publication that publishes updates or deletes, PostgreSQL rejects the
*application's own* UPDATE and DELETE on it. So such tables are refused before any publication
is created or altered, unless their stream is insert-only (those go to a separate
``<publication>_inserts`` publication that publishes inserts only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from cdc.errors import SourceConfigError
from cdc.pg.columns import Column, column_infos, load_columns, load_columns_of
from cdc.plugin import ColumnInfo


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
        return column_infos(self.columns.values())


def split_name(qualified: str) -> tuple[str, str]:
    schema, _, name = qualified.rpartition(".")
    return schema or "public", name


def load_table(conn: psycopg.Connection[Any], qualified: str, children: str | None = None) -> Table:
    schema, name = split_name(qualified)
    row = conn.execute(
        "SELECT c.oid, c.relreplident, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    ).fetchone()
    if row is None:
        raise missing_table(qualified)
    oid, replident, kind = int(row[0]), str(row[1]), str(row[2])
    columns = load_columns(conn, oid)
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
    _add_children(conn, table, children)
    return table


def _add_children(conn: psycopg.Connection[Any], table: Table, children: str | None) -> None:
    if children:
        pattern = re.compile(children)
        for child_oid, child_schema, child_name in conn.execute(
            "SELECT c.oid, n.nspname, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = %s ORDER BY c.relname",
            (table.oid,),
        ):
            if pattern.fullmatch(child_name):
                table.children.append((int(child_oid), child_schema, child_name))


def load_tables(
    conn: psycopg.Connection[Any], wanted: Sequence[tuple[str, str | None]]
) -> list[Table | None]:
    """``load_table`` of each (qualified name, children pattern) in ``wanted``, None for one
    that does not exist (the caller raises ``missing_table``), in three catalog queries for all
    of them (and one per table with a children pattern) instead of three per table: with 1,000
    streams those round trips, made twice (the connector and its capture process), took seconds
    of start-up."""
    names = [split_name(qualified) for qualified, _ in wanted]
    found: dict[tuple[str, str], tuple[int, str, str]] = {
        (str(nspname), str(relname)): (int(oid), str(replident), str(kind))
        for nspname, relname, oid, replident, kind in conn.execute(
            "SELECT n.nspname, c.relname, c.oid, c.relreplident, c.relkind "
            "FROM unnest(%s::text[], %s::text[]) AS w(nspname, relname) "
            "JOIN pg_namespace n ON n.nspname = w.nspname "
            "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.relname "
            "WHERE c.relkind IN ('r', 'p')",
            ([schema for schema, _ in names], [name for _, name in names]),
        )
    }
    oids = sorted({found[name][0] for name in names if name in found})
    columns = load_columns_of(conn, oids)
    keys: dict[int, list[str]] = {oid: [] for oid in oids}
    if oids:
        for relid, attname in conn.execute(
            "SELECT i.indrelid, a.attname FROM pg_index i "
            "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = ANY(%s::oid[]) AND i.indisprimary ORDER BY i.indrelid, k.n",
            (oids,),
        ):
            keys[int(relid)].append(attname)
    tables: list[Table | None] = []
    for (schema, name), (_, children) in zip(names, wanted, strict=True):
        if (schema, name) not in found:
            tables.append(None)
            continue
        oid, replident, kind = found[(schema, name)]
        # a copy per table: two streams of one table must not share a mutable children list
        table = Table(oid, schema, name, replident, tuple(keys[oid]), dict(columns[oid]), kind)
        _add_children(conn, table, children)
        tables.append(table)
    return tables


def missing_table(qualified: str) -> SourceConfigError:
    """The error of ``load_table`` for a table that does not exist."""
    return SourceConfigError(f"table {qualified!r} does not exist (or is not a table)")


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
