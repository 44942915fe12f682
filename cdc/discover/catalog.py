"""The tables of a live database that a selection names: keys, columns, comments and, on
PostgreSQL, inheritance children, partitions and replica identity.

Selection: ``schemas`` (default: PostgreSQL ``public``, MySQL/MariaDB the URL's database), then
``tables`` globs (default ``*``) minus ``exclude`` globs. A glob with a dot matches
``schema.table``, one without matches the table name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from cdc.pg.columns import load_columns


@dataclass
class Table:
    """One selected table as discovery found it."""

    schema: str
    name: str
    key: list[str]
    columns: list[str]
    comment: str | None = None
    column_comments: dict[str, str] = field(default_factory=dict)
    #: a NOT NULL unique index, where there is no primary key (a key a person may choose)
    unique_key: list[str] | None = None
    # PostgreSQL only
    oid: int | None = None
    partitioned: bool = False
    replica_identity: str | None = None  # d default, n nothing, f full, i index
    children: list[str] = field(default_factory=list)  # inheritance children (same schema)
    other_children: list[str] = field(default_factory=list)  # in another schema: children: cannot name them
    partitions: list[str] = field(default_factory=list)  # declarative partitions (any level)
    #: (schema, name) of the table or children whose UPDATE/DELETE a publication would break
    unsafe_identity: list[tuple[str, str]] = field(default_factory=list)
    pg_types: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (base, category)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def matches(schema: str, table: str, globs: Sequence[str]) -> bool:
    """Whether ``schema.table`` is named by one of ``globs`` (see the module docstring)."""
    return any(fnmatch.fnmatchcase(f"{schema}.{table}" if "." in g else table, g) for g in globs)


def _selected(schema: str, table: str, tables: Sequence[str], exclude: Sequence[str]) -> bool:
    return matches(schema, table, tables or ["*"]) and not matches(schema, table, exclude)


_PG_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relreplident, obj_description(c.oid, 'pg_class'),
       EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisprimary),
       c.relispartition OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)
ORDER BY n.nspname, c.relname
"""
_PG_CHILDREN = """
SELECT c.oid, n.nspname, c.relname, c.relispartition, c.relreplident,
       EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisprimary)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = %s ORDER BY c.relname
"""
_PG_KEY = """
SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.n
"""
_PG_UNIQUE = """
SELECT array_agg(a.attname ORDER BY k.n), bool_and(a.attnotnull)
FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid ORDER BY count(*), i.indexrelid
"""
_PG_COMMENTS = """
SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND col_description(a.attrelid, a.attnum) IS NOT NULL
"""


def _unsafe(replident: str, has_pk: bool) -> bool:
    return replident == "n" or (replident == "d" and not has_pk)


def postgres_tables(
    conn: sa.Connection, schemas: Sequence[str], tables: Sequence[str], exclude: Sequence[str]
) -> list[Table]:
    """The selected ordinary and partitioned tables; children and partitions attach to their
    parent instead of being tables of their own."""
    pg: Any = conn.connection.driver_connection
    out = []
    for oid, schema, name, kind, replident, comment, has_pk, is_child in pg.execute(
        _PG_TABLES, (list(schemas) or ["public"],)
    ).fetchall():
        if is_child or not _selected(schema, name, tables, exclude):
            continue
        columns = load_columns(pg, oid)
        t = Table(
            schema, name, [r[0] for r in pg.execute(_PG_KEY, (oid,))], list(columns), comment,
            dict(pg.execute(_PG_COMMENTS, (oid,)).fetchall()), oid=oid, partitioned=kind == "p",
            replica_identity=replident,
        )  # fmt: skip
        t.pg_types = {c.name: (c.base_name, c.category) for c in columns.values()}
        if not t.key:
            unique = [list(cols) for cols, notnull in pg.execute(_PG_UNIQUE, (oid,)) if notnull]
            t.unique_key = unique[0] if unique else None
        if kind != "p" and _unsafe(replident, has_pk):
            t.unsafe_identity.append((schema, name))
        _pg_children(pg, t, oid)
        out.append(t)
    return out


def _pg_children(pg: Any, t: Table, oid: int) -> None:
    queue = [oid]
    while queue:
        for child, schema, name, is_partition, replident, has_pk in pg.execute(
            _PG_CHILDREN, (queue.pop(0),)
        ).fetchall():
            if is_partition:  # published through the root (publish_via_partition_root)
                t.partitions.append(f"{schema}.{name}")
                queue.append(child)
            elif schema != t.schema:
                t.other_children.append(f"{schema}.{name}")
            else:
                t.children.append(name)
                if _unsafe(replident, has_pk):
                    t.unsafe_identity.append((schema, name))


_MY_TABLES = sa.text(
    "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_COMMENT FROM information_schema.tables "
    "WHERE TABLE_SCHEMA IN :schemas AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME"
).bindparams(sa.bindparam("schemas", expanding=True))
_MY_COLUMNS = sa.text(
    "SELECT COLUMN_NAME, COLUMN_COMMENT FROM information_schema.columns "
    "WHERE TABLE_SCHEMA = :schema AND TABLE_NAME = :table ORDER BY ORDINAL_POSITION"
)
_MY_KEYS = sa.text(
    "SELECT s.INDEX_NAME, s.COLUMN_NAME, c.IS_NULLABLE FROM information_schema.statistics s "
    "JOIN information_schema.columns c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME "
    "AND c.COLUMN_NAME = s.COLUMN_NAME "
    "WHERE s.TABLE_SCHEMA = :schema AND s.TABLE_NAME = :table AND s.NON_UNIQUE = 0 "
    "ORDER BY s.INDEX_NAME = 'PRIMARY' DESC, s.INDEX_NAME, s.SEQ_IN_INDEX"
)


def mysql_tables(
    conn: sa.Connection, schemas: Sequence[str], tables: Sequence[str], exclude: Sequence[str]
) -> list[Table]:
    """The selected base tables of MySQL/MariaDB databases (default: the connection's database)."""
    if not schemas:
        schemas = [str(conn.execute(sa.text("SELECT DATABASE()")).scalar())]
    out = []
    for schema, name, comment in conn.execute(_MY_TABLES, {"schemas": list(schemas)}).fetchall():
        if not _selected(schema, name, tables, exclude):
            continue
        where = {"schema": schema, "table": name}
        columns = conn.execute(_MY_COLUMNS, where).fetchall()
        indexes: dict[str, list[tuple[str, bool]]] = {}
        for index, column, nullable in conn.execute(_MY_KEYS, where):
            indexes.setdefault(str(index), []).append((str(column), str(nullable).upper() == "YES"))
        key = [c for c, _ in indexes.pop("PRIMARY", [])]
        unique = [[c for c, _ in cols] for cols in indexes.values() if not any(n for _, n in cols)]
        table = Table(str(schema), str(name), key, [str(c) for c, _ in columns], str(comment or "") or None)
        table.column_comments = {str(c): str(d) for c, d in columns if d}
        table.unique_key = None if key or not unique else unique[0]
        out.append(table)
    return out
