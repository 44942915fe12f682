"""What the generator and the relay need to know of an audited table: its columns and key.

Column types are read from each database's own catalog (PostgreSQL ``format_type``, MySQL
``COLUMN_TYPE``, SQLite's declared type) because the generated triggers and the value decoders
depend on the exact declared type, and a change of it is what makes MySQL/SQLite triggers stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import sqlalchemy as sa

from cdc.errors import SourceConfigError

#: every generated object's name starts with this, so it never collides with the application's
PREFIX = "cdc_audit"
LOG_TABLE = f"{PREFIX}_log"
REGISTRY_TABLE = f"{PREFIX}_tables"
PG_FUNCTION = f"{PREFIX}_capture"


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its name, declared type (lower case, as the catalog spells it) and MySQL data type."""

    name: str
    type: str
    data_type: str = ""  # MySQL DATA_TYPE (e.g. "decimal" for "decimal(10,2)"); else = type


@dataclass(frozen=True, slots=True)
class AuditedTable:
    """A table as the generator sees it."""

    schema: str  # PostgreSQL schema, MySQL database, SQLite "main"
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def signature(self) -> str:
        """The column list as stored in the registry: [[name, type], ...] in table order."""
        return json.dumps([[c.name, c.type] for c in self.columns])

    def digest(self) -> str:
        return hashlib.sha256(self.signature().encode()).hexdigest()[:16]


def dialect_of(bind: sa.Engine | sa.Connection) -> str:
    """postgresql, mysql (MySQL and MariaDB) or sqlite; anything else is refused."""
    name = bind.dialect.name
    name = "mysql" if name == "mariadb" else name
    if name not in ("postgresql", "mysql", "sqlite"):
        raise SourceConfigError(
            f"audit capture supports PostgreSQL, MySQL/MariaDB and SQLite, not {name!r}",
            hint="use a postgresql://, mysql:// or sqlite:/// URL",
        )
    return name


def default_schema(conn: sa.Connection) -> str:
    dialect = dialect_of(conn)
    if dialect == "postgresql":
        return str(conn.exec_driver_sql("SELECT current_schema()").scalar())
    if dialect == "mysql":
        name = conn.exec_driver_sql("SELECT DATABASE()").scalar()
        if not name:
            raise SourceConfigError("the MySQL URL names no database", hint="mysql://user@host/<database>")
        return str(name)
    return "main"


def split_name(conn: sa.Connection, name: str) -> tuple[str, str]:
    """``schema.table`` or ``table`` (in the connection's default schema)."""
    schema, _, table = name.rpartition(".")
    return (schema or default_schema(conn)), table


def inspect_table(conn: sa.Connection, name: str) -> AuditedTable:
    """Columns and primary key of ``name``; SourceConfigError if it is missing or has no key."""
    schema, table = split_name(conn, name)
    dialect = dialect_of(conn)
    if dialect == "postgresql":
        rows = conn.execute(
            sa.text(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
                "COALESCE(a.attnum = ANY(i.indkey), false) "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary "
                "WHERE n.nspname = :s AND c.relname = :t AND c.relkind IN ('r', 'p') "
                "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
            ),
            {"s": schema, "t": table},
        ).all()
        columns = [Column(r[0], r[1]) for r in rows]
        key = [r[0] for r in rows if r[2]]
    elif dialect == "mysql":
        rows = conn.execute(
            sa.text(
                "SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, COLUMN_KEY FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = :s AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION"
            ),
            {"s": schema, "t": table},
        ).all()
        columns = [Column(str(r[0]), str(r[1]).lower(), str(r[2]).lower()) for r in rows]
        key = [str(r[0]) for r in rows if r[3] == "PRI"]
    else:
        if schema != "main":
            raise SourceConfigError(f"table {name!r}: SQLite audit capture works on the main database only")
        rows = conn.exec_driver_sql(f"PRAGMA table_info({_sqlite_quote(table)})").all()
        columns = [Column(str(r[1]), str(r[2]).lower()) for r in rows]
        key = [str(r[1]) for r in sorted(rows, key=lambda r: r[5]) if r[5]]
    if not columns:
        raise SourceConfigError(
            f"table {schema}.{table} does not exist (or is not visible to this user)",
            hint="name an existing table with --table, schema-qualified where needed",
        )
    if not key:
        raise SourceConfigError(
            f"table {schema}.{table} has no primary key: audit events need a key",
            hint="add a primary key to the table",
        )
    return AuditedTable(schema, table, tuple(columns), tuple(key))


def _sqlite_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
